"""Every step of evasion-02's menu, at its extreme allowed values, runs: forward as deployed,
backward through BPDA, and exactly where a naive test differentiates it.

A `median` step once crashed every run ("No module named 'kornia'", exit 70): ART's torch
median needs kornia, which ART does not depend on. The exact median is now our own and
must match ART's deployed numpy one to the pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secureml import models
from secureml.families.evasion.config import BitDepthStep, GaussianNoiseStep, JpegStep, MedianStep, PreprocessPipeline
from secureml.families.evasion.pipeline import _median_exact, art_preprocessor, defended_model


def _extremes(step_type, field: str) -> list:
    """The step at the smallest and the largest value its schema allows."""
    info = step_type.model_fields[field].metadata
    low = next((m.ge for m in info if getattr(m, "ge", None) is not None), None)
    if low is None:  # gt: the smallest value a scenario author would write above it
        low = next(m.gt for m in info if getattr(m, "gt", None) is not None) + 1e-3
    high = next(m.le for m in info if getattr(m, "le", None) is not None)
    name = step_type.model_fields["name"].annotation.__args__[0]
    return [step_type(name=name, **{field: value}) for value in (low, high)]


MENU = [
    *_extremes(BitDepthStep, "bits"),
    *_extremes(MedianStep, "window"),
    *_extremes(JpegStep, "quality"),
    *_extremes(GaussianNoiseStep, "sigma"),
]


def test_the_menu_covers_every_step_at_both_ends():
    assert {step.name for step in MENU} == {"bit-depth", "median", "jpeg", "gaussian-noise"}
    assert [step.window for step in MENU if step.name == "median"] == [2, 7]
    assert [step.quality for step in MENU if step.name == "jpeg"] == [5, 95]


@pytest.mark.parametrize("mode", ["bpda", "exact"])
@pytest.mark.parametrize("step", MENU, ids=lambda s: "-".join(str(v) for v in s.model_dump().values()))
def test_every_menu_step_runs_forward_and_backward(step, mode):
    victim = models.build("cnn", (1, 28, 28), 10, seed=0).eval().requires_grad_(False)
    model = defended_model(victim, PreprocessPipeline(steps=[step]), seed=1, mode=mode, eot_samples=2)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    (gradient,) = torch.autograd.grad(logits.sum(), x)
    assert gradient.shape == x.shape and torch.isfinite(gradient).all()


@pytest.mark.parametrize("window", range(2, 8))
def test_the_exact_median_matches_arts_deployed_median_to_the_pixel(window):
    rng = np.random.default_rng(window)
    x = rng.uniform(size=(3, 1, 28, 28)).astype(np.float32)
    x[0, :, :5] = 0.0  # ties, as on MNIST's black background
    deployed, _ = art_preprocessor(MedianStep(name="median", window=window))(x)
    assert np.array_equal(_median_exact(window)(torch.from_numpy(x)).numpy(), deployed)


def test_a_median_step_runs_end_to_end_in_a_preprocess_run(tmp_path):
    from test_evasion_masking import _digits_variant, _run

    loaded = _digits_variant(tmp_path, "evasion-02")
    defence = tmp_path / "smooth.py"
    defence.write_text("def preprocess(tools):\n    return [tools.median(7), tools.jpeg(5), tools.bit_depth(8)]\n")
    evaluation = _run(loaded, defence).evaluation
    assert "mitigated.naive_robust_accuracy" in evaluation.metrics
    assert 0.0 <= evaluation.score.total <= 100.0
