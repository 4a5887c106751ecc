"""Input-transform defences from ART, put in front of a victim as one torch model.

The grader builds the pipeline from validated, declarative steps (never from trainee code)
and attacks the whole of it, adaptively (Athalye et al., "Obfuscated Gradients Give a False
Sense of Security", 2018):

- BPDA: each ART preprocessor runs forward as it is deployed; the backward pass uses ART's
  own `estimate_gradient` (the identity for squeezing, smoothing, JPEG and noise).
- EOT: when a step is randomised, the attacked model averages the class probabilities of
  `eot_samples` draws, so gradients follow the expectation over the randomness.

`exact` mode is what a naive evaluation sees: the true derivative of each step, where one
exists (zero for rounding and for JPEG, the median's own derivative for smoothing), and a
single random draw. It is only used to show a trainee the robustness they would have
believed in.

ART's PyTorchClassifier chains at most one numpy preprocessor, so the steps are wrapped
here as torch autograd functions and the classifier sees a plain torch model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secureml.families.evasion.config import RANDOMISED_STEPS
from secureml.randomness import derive_seed, numpy_global_seed

if TYPE_CHECKING:
    from secureml.families.evasion.config import PreprocessPipeline


def art_preprocessor(step) -> Any:
    """The ART defence for one validated step, configured for NCHW images in [0, 1]."""
    from art.defences.preprocessor import (
        FeatureSqueezing,
        GaussianAugmentation,
        JpegCompression,
        SpatialSmoothing,
    )

    if step.name == "bit-depth":
        return FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=step.bits, apply_fit=False, apply_predict=True)
    if step.name == "median":
        return SpatialSmoothing(
            window_size=step.window, channels_first=True, clip_values=(0.0, 1.0), apply_fit=False, apply_predict=True
        )
    if step.name == "jpeg":
        return JpegCompression(
            clip_values=(0.0, 1.0), quality=step.quality, channels_first=True,
            apply_fit=False, apply_predict=True, verbose=False,
        )
    if step.name == "gaussian-noise":
        # augmentation=False: replace each input by a noisy copy instead of appending copies.
        return GaussianAugmentation(
            sigma=step.sigma, augmentation=False, clip_values=(0.0, 1.0), apply_fit=False, apply_predict=True
        )
    raise ValueError(f"unknown preprocessing step '{step.name}'")


def _median_exact(window: int):
    """The median filter in torch, so autograd gives its true derivative (naive mode only).

    ART's own torch version (SpatialSmoothingPyTorch) needs kornia, which ART does not
    depend on (ART-FACTS: every `median` step crashed). This one matches what is deployed,
    ART's SpatialSmoothing, to the pixel: scipy's median_filter with mode="reflect" (the
    edge pixel repeated, numpy's "symmetric"), its window offsets for even sizes, and its
    rank (the upper of the two middle values of an even window).
    """
    import torch

    before = window // 2
    after = window - 1 - before
    rank = (window * window) // 2 + 1  # kthvalue counts from 1

    def symmetric(size: int) -> torch.Tensor:
        index = torch.arange(-before, size + after)
        index = torch.where(index < 0, -index - 1, index)
        return torch.where(index >= size, 2 * size - index - 1, index)

    def median(x):
        height, width = x.shape[-2:]
        padded = x.index_select(-2, symmetric(height)).index_select(-1, symmetric(width))
        patches = padded.unfold(-2, window, 1).unfold(-2, window, 1)
        return patches.reshape(*patches.shape[:-2], window * window).kthvalue(rank, dim=-1).values

    return median


def _step_function():
    import torch

    class ArtStep(torch.autograd.Function):
        """Forward: the ART preprocessor on numpy. Backward: its gradient estimate (BPDA),
        or zero when `exact` (the derivative of a step function, or no derivative at all)."""

        @staticmethod
        def forward(ctx, x, preprocessor, exact_zero: bool):
            ctx.preprocessor = preprocessor
            ctx.exact_zero = exact_zero
            ctx.save_for_backward(x)
            output, _ = preprocessor(x.detach().cpu().numpy())
            return torch.from_numpy(output.astype("float32", copy=False)).to(x.device)

        @staticmethod
        def backward(ctx, grad):
            if ctx.exact_zero:
                return torch.zeros_like(grad), None, None
            (x,) = ctx.saved_tensors
            estimate = ctx.preprocessor.estimate_gradient(x.detach().cpu().numpy(), grad.detach().cpu().numpy())
            return torch.from_numpy(estimate.astype("float32", copy=False)).to(grad.device), None, None

    return ArtStep


def defended_model(victim, pipeline: PreprocessPipeline, *, seed: int, mode: str = "bpda", eot_samples: int = 1):
    """A torch model: the pipeline's steps, then the victim.

    mode: "bpda" (the grader's adaptive attacks) or "exact" (what naive autograd sees).
    eot_samples: draws averaged per forward pass when the pipeline is randomised.
    """
    import torch
    from torch import nn

    art_step = _step_function()

    class DefendedModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.victim = victim
            self.steps = list(pipeline.steps)
            self.preprocessors = [art_preprocessor(step) for step in self.steps]
            self.exact_median = {
                index: _median_exact(step.window)
                for index, step in enumerate(self.steps)
                if mode == "exact" and step.name == "median"
            }
            self.randomised = pipeline.randomised
            self.draws = 1 if mode == "exact" or not self.randomised else eot_samples
            self.reseed(seed)

        def reseed(self, value: int) -> None:
            """Restart the random draws, so an evaluation can be repeated exactly."""
            self._seed = value
            self._calls = 0

        def transform(self, x):
            for index, (step, preprocessor) in enumerate(zip(self.steps, self.preprocessors, strict=True)):
                if index in self.exact_median:
                    x = self.exact_median[index](x)
                    continue
                exact_zero = mode == "exact" and step.name not in RANDOMISED_STEPS
                if step.name in RANDOMISED_STEPS:
                    # ART draws noise from numpy's global generator; give each call its own seed.
                    self._calls += 1
                    with numpy_global_seed(derive_seed(self._seed, "draw", self._calls)):
                        x = art_step.apply(x, preprocessor, exact_zero)
                else:
                    x = art_step.apply(x, preprocessor, exact_zero)
            return x

        def forward(self, x):
            if self.draws == 1:
                return self.victim(self.transform(x))
            batch = x.shape[0]
            repeated = x.repeat(self.draws, *([1] * (x.dim() - 1)))
            logits = self.victim(self.transform(repeated))
            probabilities = torch.softmax(logits, dim=1).view(self.draws, batch, -1).mean(dim=0)
            # Log of the mean probability: the EOT model's logits (Athalye et al., 2018).
            return torch.log(probabilities.clamp_min(1e-12))

    return DefendedModel().eval()
