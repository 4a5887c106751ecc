"""Automatic variants: the same scenario with a new seed and new family secrets.

A defence tuned to the public scenario (the trigger it can see, the classes it was told
about) must not keep its score on a scenario it never saw. A variant is drawn from one
integer, the variant seed:

    rng = random.Random(variant_seed)
    overrides = {"seed": <drawn from rng>} + scenario.variant_overrides(rng)

and the overrides are deep-merged and validated exactly like a `--hidden` file, so a
variant is an ordinary, valid scenario. Each family's schema says which secrets its
variants change (poisoning: target class, trigger kind, colour and position; evasion: the
attacked test images).

Two parties draw variants, from different seeds:
- the grader, from a random variant seed it keeps to itself (stored in the gradebook);
- a trainee, with `secureml run ID --variant auto`, from `trainee_variant_seed(scenario)`
  (or `--variant-seed N`), to check a defence generalises before submitting.

Light on purpose: importing this module imports no numpy and no torch.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from secureml.randomness import derive_seed

if TYPE_CHECKING:
    from secureml.scenario import ScenarioBase

# Scenario seeds must lie in [0, 2**31) (ScenarioBase.seed).
SEED_LIMIT = 2**31
# Variants a grader draws before it gives up when each is refused. A variant is refused
# like any invalid scenario when, e.g., its backdoor did not take hold: poisoning-02's
# clean-label attack, with 7x7 checkerboards, missed on 1 of its variants 0-7 (it missed on
# 7 of them with 5x5 ones), and each refused draw costs a stage, so the grader stops early
# and says so.
DRAWS = 4


def trainee_variant_seed(scenario: ScenarioBase) -> int:
    """The variant seed `run --variant auto` uses: derived from the scenario's seed under a
    label of its own, so it is stable for a trainee and unrelated to the grader's random one."""
    return derive_seed(scenario.seed, "trainee-variant")


def variant_overrides(scenario: ScenarioBase, variant_seed: int) -> dict[str, Any]:
    """The overrides that turn `scenario` into its variant number `variant_seed`."""
    rng = random.Random(variant_seed)
    seed = rng.randrange(SEED_LIMIT)
    while seed == scenario.seed:  # a variant never trains on the public seed
        seed = rng.randrange(SEED_LIMIT)
    overrides = {"seed": seed, **scenario.variant_overrides(rng)}
    if scenario.variant_distortion is not None and scenario.dataset.distort is None:
        # Fresh data: no image the variant draws is a shipped one (`Distortion`). Drawn from
        # the variant's own seed, so it takes nothing from `rng` and the secrets stay as before.
        overrides["dataset"] = {**overrides.get("dataset", {}), "distort": dict(scenario.variant_distortion)}
    return overrides


def draw_variant(scenario: ScenarioBase, variant_seed: int) -> ScenarioBase:
    """The scenario with a new seed and new family secrets, validated like a `--hidden` file."""
    from secureml.loader import merge_overrides

    return merge_overrides(
        scenario,
        variant_overrides(scenario, variant_seed),
        origin=f"the automatic variant {variant_seed} of {scenario.id}",
    )


def first_valid_variant(
    scenario: ScenarioBase, variant_seed: int, build: Callable[[ScenarioBase], object]
) -> ScenarioBase:
    """The first variant drawn from `variant_seed` (then from seeds derived from it) that
    `build` accepts; `build` refuses one by raising ConfigError. The same seed always ends
    at the same variant, so every run of a gradebook meets the same one."""
    from secureml.errors import ConfigError

    refusals = []
    for draw in range(DRAWS):
        variant = draw_variant(scenario, variant_seed if draw == 0 else derive_seed(variant_seed, "redraw", draw))
        try:
            build(variant)
        except ConfigError as refused:
            refusals.append(refused.problem)
            continue
        return variant
    raise ConfigError(
        f"none of the {DRAWS} automatic variants drawn from seed {variant_seed} is valid",
        file=str(scenario.source or scenario.id),
        field="variant",
        expected="an automatic variant whose stage can be built",
        found="; ".join(refusals),
        fix="try another --variant-seed, or go without the variant (grade: --variant none)",
    )
