"""Print `secureml run inversion-01` and `inversion-02` times with an empty and a warm cache,
then each attack on its own: MIFace over the 10 classes, and training an inversion network.

Target on a 2-core machine: under 60 s with a warm cache.
Usage: python bench/bench_inversion.py
The machine's load average is printed with the figures: on a shared 2-core machine,
other work slows torch's two threads far more than it slows one.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench_poisoning import REPO, run

SCENARIOS = ("inversion-01", "inversion-02")


def cli_times(scenario_id: str, cache: str, out: str) -> None:
    """Cold and warm, no mitigation; then the reference solution on the warm stage, which is
    what a trainee trying one idea after another waits for (their model is new each time)."""
    solution = str(REPO / "labs" / scenario_id / "solution.py")
    cold, first = run(scenario_id, None, cache, out)
    warm, second = run(scenario_id, None, cache, out)
    tried, third = run(scenario_id, solution, cache, out)
    print(f"secureml run {scenario_id}  (threads {first['threads']})")
    for label, wall, result in (
        ("cold cache, no mitigation:     ", cold, first),
        ("warm cache, no mitigation:     ", warm, second),
        ("warm cache, reference solution:", tried, third),
    ):
        print(f"  {label} {wall:5.1f} s wall  score {result['score']:5.1f}  stages {result['timings_s']}")


def attack_times(cache: str) -> None:
    """The two attacks alone, on the victims the CLI runs above left in `cache`."""
    import numpy as np
    import torch

    from secureml import runner, scenario
    from secureml.api_outputs import fit_view
    from secureml.cache import Cache
    from secureml.families.base import RunContext
    from secureml.families.inversion.attacks import MIFaceStarts, run_miface, train_inversion_net
    from secureml.families.inversion.family import ProtectTools
    from secureml.progress import NO_PROGRESS

    ctx = RunContext(cache=Cache(Path(cache)))
    # The first Adam in a process costs 1-1.5 s of lazy imports (ART-FACTS); not the attack's.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    white_box = scenario.load("inversion-01")
    _, split, stage = runner.prepare_stage(white_box, ctx)
    attack = white_box.attack
    # The scenario's own starts, then the one start ART-FACTS measured (blank, 1,000 steps).
    classes = split.num_classes
    blank_only = MIFaceStarts(np.zeros((classes, *split.shape), dtype=np.float32), np.arange(classes),
                              np.ones(classes, dtype=bool))
    for starts, steps in ((stage.starts, attack.max_iter), (blank_only, 1000)):
        start = time.perf_counter()
        run_miface(stage.victim, starts, stage.holdout.x_auxiliary, attack.model_copy(update={"max_iter": steps}),
                   num_classes=split.num_classes, progress=NO_PROGRESS)
        print(f"MIFace (ART), {split.num_classes} classes, {len(starts.labels) // split.num_classes} start(s) each, "
              f"{steps} steps: {time.perf_counter() - start:5.1f} s")

    query_only = scenario.load("inversion-02")
    _, _, stage = runner.prepare_stage(query_only, ctx)
    fold = stage.folds[0]
    outputs = ProtectTools.probabilities(stage.victim, fold.images)
    attack = query_only.attack
    for view in attack.views:
        start = time.perf_counter()
        train_inversion_net(fit_view(view, outputs)(outputs), fold.images, attack, seed=query_only.seed,
                            progress=NO_PROGRESS, view=view)
        print(f"inversion network (Yang et al.) reading {view}, {len(outputs)} auxiliary images x {attack.epochs} "
              f"epochs, hidden {attack.hidden}: {time.perf_counter() - start:5.1f} s  (torch threads "
              f"{torch.get_num_threads()}); the grader trains {len(attack.views) * len(stage.folds)} per API")


def main() -> None:
    print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        for scenario_id in SCENARIOS:
            cli_times(scenario_id, cache, out)
        attack_times(cache)
    print(f"load average after:  {' '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
