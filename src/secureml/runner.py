"""Running one scenario end to end: data, stage, mitigation, evaluation, provenance."""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secureml.families import family_of
from secureml.families.base import Evaluation, RunContext
from secureml.scenario import ScenarioBase
from secureml.timing import Stopwatch
from secureml.versions import environment, thread_count, versions


@dataclass
class RunResult:
    scenario: ScenarioBase
    evaluation: Evaluation
    mitigation: str | None
    data_sha256: str
    timings_s: dict[str, float]
    cache: dict[str, dict[str, int]]
    threads: int
    hidden_variant: bool = False
    # Where it ran: CPU model and flags, torch build, deterministic algorithms, source hash.
    environment: dict[str, Any] = field(default_factory=dict)
    # The seed an automatic variant was drawn from (`secureml.variants`), None when none ran.
    variant_seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        evaluation = self.evaluation
        return {
            "scenario": self.scenario.id,
            "family": self.scenario.family,
            "title": self.scenario.title,
            "owasp": self.scenario.owasp,
            "atlas_technique": self.scenario.atlas.technique,
            "mitigation": self.mitigation,
            "score": round(evaluation.score.total, 4),
            "score_parts": {name: _round(value) for name, value in evaluation.score.parts.items()},
            "score_method": evaluation.score.method,
            "score_capped_by": evaluation.score.capped_by,
            "metrics": {name: _round(value) for name, value in evaluation.metrics.items()},
            # What each metric is measured over: {"kind": "rate", "n": 1000, "items": "test images"}.
            "samples": {name: sample.to_json() for name, sample in evaluation.samples.items()},
            "rows": [
                {"condition": row.condition, "note": row.note, **{k: _round(v) for k, v in row.metrics.items()}}
                for row in evaluation.rows
            ],
            "feedback": list(evaluation.feedback),
            "flags": list(evaluation.flags),
            "pictures": {name: str(path) for name, path in evaluation.pictures.items()},
            # What the family measured besides the metrics (e.g. evasion's escalation).
            "details": json_safe(evaluation.details),
            "seed": self.scenario.seed,
            "config_sha256": self.scenario.config_sha256(),
            "data_sha256": self.data_sha256,
            "hidden_variant": self.hidden_variant,
            "variant": None if self.variant_seed is None else {"kind": "auto", "variant_seed": self.variant_seed},
            "versions": versions(),
            "threads": self.threads,
            "environment": self.environment,
            "timings_s": {name: round(value, 3) for name, value in self.timings_s.items()},
            "cache": self.cache,
        }


def _round(value: float) -> float:
    return round(float(value), 6)


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars and arrays as plain numbers and lists, tuples as lists, and
    NaN or infinite floats as None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def prepare_stage(scenario: ScenarioBase, ctx: RunContext, watch: Stopwatch | None = None):
    """Load the data and build the family's shared attack stage (cached)."""
    from secureml.datasets import load_split
    from secureml.models import resolve_device

    resolve_device(ctx.device)  # a device that is not there fails now, not after the data
    watch = watch or Stopwatch()
    with watch.stage("data"):
        split = load_split(scenario.dataset, scenario.seed, ctx.data_root)
    family = family_of(scenario)
    with watch.stage("prepare"):
        stage = family.prepare(scenario, split, ctx)
    return family, split, stage


@dataclass
class Prepared:
    """A scenario's stage, built once: e.g. while drawing an automatic variant, whose stage
    decides whether the variant is valid, and then run with the trainee's mitigation."""

    scenario: ScenarioBase
    family: Any
    split: Any
    stage: Any
    watch: Stopwatch

    @classmethod
    def build(cls, scenario: ScenarioBase, ctx: RunContext) -> Prepared:
        watch = Stopwatch()
        family, split, stage = prepare_stage(scenario, ctx, watch)
        return cls(scenario, family, split, stage, watch)


def run(
    scenario: ScenarioBase,
    *,
    mitigation: Path | Callable | None,
    ctx: RunContext,
    hidden_variant: bool = False,
    variant_seed: int | None = None,
    prepared: Prepared | None = None,
) -> RunResult:
    """Run the scenario with a trainee's mitigation (a file, a function object, or none) in
    this process. `prepared`: this scenario's stage, already built (`Prepared.build`)."""
    from secureml.mitigation import load_mitigation, run_in_process

    family = family_of(scenario)
    # A broken file fails before minutes of training, not after.
    loaded = load_mitigation(mitigation, family.function_name) if mitigation is not None else None
    if prepared is None or (prepared.scenario.config_sha256(), prepared.scenario.seed) != (
        scenario.config_sha256(), scenario.seed
    ):
        prepared = Prepared.build(scenario, ctx)
    family, split, stage, watch = prepared.family, prepared.split, prepared.stage, prepared.watch
    with watch.stage("mitigation"):
        if loaded is None:
            raw = family.no_mitigation(stage)
        else:
            with tempfile.TemporaryDirectory(prefix="secureml-inputs-") as folder:
                family.write_inputs(stage, Path(folder))
                raw = run_in_process(family, loaded.module, loaded.source, Path(folder))
    with watch.stage("evaluate"):
        outputs = family.check_outputs(stage, raw)
        evaluation = family.evaluate(stage, outputs, ctx)
    return RunResult(
        scenario=scenario,
        evaluation=evaluation,
        mitigation=loaded.label if loaded else None,
        data_sha256=split.sha256,
        timings_s=watch.total(),
        cache=ctx.cache.summary(),
        threads=thread_count(),
        hidden_variant=hidden_variant,
        environment=environment(ctx.device),
        variant_seed=variant_seed,
    )


@dataclass
class SeedSummary:
    """Each metric's mean and standard deviation over several seeds."""

    seeds: list[int]
    mean: dict[str, float]
    std: dict[str, float]
    results: list[RunResult] = field(repr=False, default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.results[0].scenario.id if self.results else None,
            "seeds": self.seeds,
            "mean": {name: _round(value) for name, value in self.mean.items()},
            "std": {name: _round(value) for name, value in self.std.items()},
            "runs": [result.to_json() for result in self.results],
        }


def summarise_seeds(results: list[RunResult]) -> SeedSummary:
    names = list(results[0].evaluation.metrics)
    mean, std = {}, {}
    for name in names:
        values = [result.evaluation.metrics[name] for result in results]
        mean[name] = statistics.fmean(values)
        std[name] = statistics.stdev(values) if len(values) > 1 else 0.0
    return SeedSummary([r.scenario.seed for r in results], mean, std, results)


def seeds_for(scenario: ScenarioBase, count: int) -> list[int]:
    """The scenario's seed, then the next ones: seed, seed + 1, ..."""
    return [scenario.seed + offset for offset in range(count)]
