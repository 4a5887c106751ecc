"""Your mitigation for evasion-02: choose input transforms placed in front of the victim.

Run it:    secureml run evasion-02 --mitigation labs/evasion-02/mitigation.py
Read:      labs/evasion-02/README.md

This starter runs, and a naive PGD test calls it robust, but it scores about 0: squeezing
to 4 bits breaks PGD's gradient (rounding has derivative zero) and removes nothing the
attacker cannot put back. Try tools.evaluate(steps) to see both numbers.
"""


def preprocess(tools):
    """Return a list of at most tools.max_steps steps, applied in order before the victim.

    tools.bit_depth(bits)        ART FeatureSqueezing: 2**bits grey levels
    tools.median(window)         ART SpatialSmoothing: window x window median filter
    tools.jpeg(quality)          ART JpegCompression
    tools.gaussian_noise(sigma)  ART GaussianAugmentation at prediction time (randomised)
    tools.evaluate(steps)        -> clean, naive-PGD and BPDA-PGD accuracy on tools.x_val
    tools.epsilon                the attacker's budget per pixel (L-inf)
    """
    steps = [tools.bit_depth(4)]
    # print(tools.evaluate(steps))  # uncomment to compare the naive and the BPDA numbers
    return steps
