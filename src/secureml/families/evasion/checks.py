"""Gradient-masking red flags, after RobustBench's list (Croce et al., 2021, section 4.2) and
Carlini et al., "On Evaluating Adversarial Robustness" (2019).

Pure functions of measured numbers: each returns the text of a flag, or None. A flagged
result is marked "needs review"; the score itself already takes the worst case over the
suite, gradient-free attack included, so masking rarely pays.
"""

from __future__ import annotations

from collections.abc import Sequence


def gradient_free_beats_white_box(
    white_box_accuracy: float, gradient_free_accuracy: float, margin: float
) -> str | None:
    if gradient_free_accuracy < white_box_accuracy - margin:
        return (
            f"gradient-free attack beats the white-box ones: robust accuracy {gradient_free_accuracy:.3f} "
            f"against {white_box_accuracy:.3f} for all gradient attacks together. The gradients the "
            "white-box attacks follow are misleading (masked or obfuscated), not absent of weakness."
        )
    return None


def gradient_free_still_finds_more(share: float, margin: float) -> str | None:
    """After escalation: the gradient-free attacks fool images every white-box attack missed."""
    if share > margin:
        return (
            f"even after escalation, the gradient-free attacks fool {100 * share:.0f}% of the attacked "
            "images that every white-box attack (transfer and BPDA through a smoothed surrogate "
            "included) leaves robust: the gradients still mislead. The score counts those images as fooled."
        )
    return None


def bad_gradients(share: float, threshold: float) -> str | None:
    if share > threshold:
        return (
            f"the loss gradient is zero, NaN or infinite for {100 * share:.0f}% of the checked images "
            "(ART loss_gradient_check). Gradient attacks then stall, which looks like robustness but "
            "is not: other attacks, or the same attack with a different loss, still get through."
        )
    return None


def randomness_changes_results(disagreement: float, tolerance: float) -> str | None:
    if disagreement > tolerance:
        return (
            f"the model is randomised: two evaluations of the same adversarial images disagree on "
            f"{100 * disagreement:.1f}% of them. An image counts as robust only if it survives both; "
            "the attacks averaged gradients over random draws (EOT) to see through the noise."
        )
    return None


def accuracy_does_not_fall(
    epsilons: Sequence[float], accuracies: Sequence[float], *, tolerance: float, largest_epsilon_accuracy: float
) -> str | None:
    """Robust accuracy must fall as epsilon grows, and be near zero at a very large epsilon."""
    # Each point with the next: the [1:] copies are one shorter on purpose.
    rises = [
        (small, large)
        for small, large, before, after in zip(epsilons, epsilons[1:], accuracies, accuracies[1:], strict=False)
        if after > before + tolerance
    ]
    if rises:
        small, large = rises[0]
        return (
            f"robust accuracy rises from epsilon {small:g} to {large:g}: a stronger attacker should "
            "never do worse, so the attack is being misled (gradient masking)."
        )
    if accuracies and accuracies[-1] > largest_epsilon_accuracy:
        return (
            f"robust accuracy is still {accuracies[-1]:.3f} at epsilon {epsilons[-1]:g}, where the "
            "attacker can change the image almost at will: the attack is not working, not the defence."
        )
    return None
