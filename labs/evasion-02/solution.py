"""Reference solution for evasion-02 (instructors' copy).

Binarise the input: ART FeatureSqueezing with bit_depth=1 (Xu et al., 2018, used exactly
this for MNIST). Why it survives an adaptive attacker where 4 bits do not:

- With 16 grey levels (4 bits) the levels are 1/15 apart, far closer than epsilon = 0.3:
  whatever the attacker adds survives the rounding. The defence only zeroes PGD's
  gradient, which BPDA restores, so it falls to ~0.
- With one bit, a pixel changes only if it crosses 0.5. MNIST pixels are almost all near
  0 or 1 (only ~6% lie between 0.2 and 0.8, measured on mnist-5k), so an L-inf attacker
  with epsilon = 0.3 can flip only the few grey pixels on the edges of the strokes. The
  defence removes the attacker's budget instead of hiding the gradient; BPDA, EOT and
  Square all confirm it (robust accuracy ~0.7 at epsilon 0.3).

It stops working once epsilon reaches 0.5: then every pixel can be flipped (see the
robust-accuracy curve). A median filter after binarising did not help (measured: 0.65).
"""


def preprocess(tools):
    return [tools.bit_depth(1)]
