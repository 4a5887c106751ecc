"""The `secureml` command line. Click commands only: parse, call, print.

Nothing heavy is imported at module level: `secureml --help`, `list`, `show` and `check`
never load torch or ART.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from secureml import __version__
from secureml.errors import SecuremlError

EXAMPLES = """
\b
Examples:
  secureml list
  secureml show poisoning-01
  secureml run poisoning-01 --mitigation labs/poisoning-01/mitigation.py
  secureml run poisoning-01 --mitigation my_defence.py --seeds 3 --json
  secureml verify --junit verify.xml
  secureml check scenarios/*.yaml

Add --debug anywhere to see a traceback when something fails.
"""


class Failed(click.ClickException):
    """An expected failure: one message, no traceback, the error's own exit code."""

    def __init__(self, error: SecuremlError) -> None:
        super().__init__(error.message())
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


def _debug() -> bool:
    return os.environ.get("SECUREML_DEBUG") == "1"


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="secureml")
def cli() -> None:
    """secureml: AI-security training labs with real attacks, real defences and honest scores.

    Trainees run a lab with `run`; instructors grade a workshop with `grade`;
    CI checks every scenario with `verify`.
    """


def main() -> None:
    """Entry point. `--debug` may appear anywhere; it turns failures into tracebacks."""
    argv = sys.argv[1:]
    if "--debug" in argv:
        argv = [arg for arg in argv if arg != "--debug"]
        os.environ["SECUREML_DEBUG"] = "1"
    try:
        cli.main(args=argv, prog_name="secureml", standalone_mode=True)
    except SystemExit:
        raise
    except SecuremlError as error:  # raised outside a command's own handling
        if _debug():
            raise
        Failed(error).show()
        sys.exit(error.exit_code)


def _fail(error: SecuremlError, as_json: bool = False):
    if _debug():
        traceback.print_exception(error)
    if as_json:
        click.echo(json.dumps({"error": error.message(), "exit_code": error.exit_code}))
    raise Failed(error)


def _internal(error: Exception, as_json: bool = False):
    """A bug, not bad input: still one message, and how to get the traceback."""
    if _debug():
        raise error
    message = f"internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)"
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": 70}))
    click.echo(message, err=True)
    sys.exit(70)


def _guard(as_json: bool = False):
    """Decorator body: map our errors to messages and exit codes."""

    class Guard:
        def __enter__(self):
            return self

        def __exit__(self, kind, error, tb):
            if error is None or isinstance(error, (click.exceptions.Exit, click.ClickException, SystemExit)):
                return False
            if isinstance(error, SecuremlError):
                _fail(error, as_json)
            if isinstance(error, KeyboardInterrupt):
                click.echo("interrupted", err=True)
                sys.exit(130)
            _internal(error, as_json)
            return False

    return Guard()


# --------------------------------------------------------------------------- list / show / check


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def list_command(as_json: bool) -> None:
    """List the scenarios: id, family, title, difficulty and MITRE ATLAS technique.

    \b
    Example:
      secureml list --json | jq '.[].id'
    """
    from secureml import report, scenario

    with _guard(as_json):
        scenarios = scenario.load_all()
        if as_json:
            click.echo(json.dumps([report.scenario_summary(s) for s in scenarios], indent=2))
        else:
            report.console().print(report.scenario_table(scenarios))


@cli.command()
@click.argument("scenario_id", metavar="ID|FILE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def show(scenario_id: str, as_json: bool) -> None:
    """Show a scenario: threat model, task, mitigation interface and scoring formula.

    \b
    Example:
      secureml show poisoning-01
    """
    from secureml import report, scenario

    with _guard(as_json):
        loaded = scenario.load(scenario_id)
        described = {
            **report.scenario_summary(loaded),
            "atlas_mitigation_name": loaded.atlas.mitigation_name,
            "summary": loaded.summary.strip(),
            "threat_model": loaded.threat_model.strip(),
            "task": loaded.task.strip(),
            "interface": loaded.mitigation_signature + "\n\n" + loaded.interface.strip(),
            "scoring": loaded.scoring_formula(),
            "seed": loaded.seed,
            "dataset": loaded.dataset.model_dump(),
            "victim": loaded.victim.model_dump(),
            "starter": str(loaded.starter_path),
            "solution": str(loaded.solution_path),
        }
        if as_json:
            click.echo(json.dumps(described, indent=2))
            return
        out = report.console()
        out.print(f"[bold]{loaded.id}[/bold]: {loaded.title}  ({loaded.family}, {loaded.difficulty})")
        out.print(
            f"ATLAS: {loaded.atlas.technique} {loaded.atlas.technique_name}; "
            f"mitigation {loaded.atlas.mitigation} {loaded.atlas.mitigation_name}\n"
        )
        for heading, key in (
            ("Summary", "summary"),
            ("Threat model", "threat_model"),
            ("Your task", "task"),
            ("Mitigation interface", "interface"),
            ("Scoring", "scoring"),
        ):
            out.print(f"[bold]{heading}[/bold]")
            out.print(described[key], markup=False, soft_wrap=True)
            out.print()
        out.print(f"Start from: {described['starter']}")
        out.print(f"Run it:     secureml run {loaded.id} --mitigation {described['starter']}")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def check(files: tuple[Path, ...], as_json: bool) -> None:
    """Validate scenario files (for scenario authors and CI). Exits 2 if any is invalid.

    \b
    Example:
      secureml check scenarios/*.yaml
    """
    from secureml import scenario
    from secureml.errors import ConfigError

    results = []
    for path in files:
        try:
            loaded = scenario.load(path)
            problems = _lab_file_problems(loaded)
            if problems:
                raise ConfigError(problems[0], file=str(path), field="mitigation")
            results.append({"file": str(path), "ok": True, "error": None})
        except SecuremlError as error:
            results.append({"file": str(path), "ok": False, "error": error.message()})
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for item in results:
            if item["ok"]:
                click.echo(f"ok      {item['file']}")
            else:
                click.echo(f"invalid {item['error']}", err=True)
    if not all(item["ok"] for item in results):
        sys.exit(2)


def _lab_file_problems(loaded) -> list[str]:
    """The starter and the solution exist and define the function (parsed, never run)."""
    import ast

    problems = []
    for role, path in (("starter", loaded.starter_path), ("solution", loaded.solution_path)):
        if not path.is_file():
            problems.append(f"the {role} file {path} does not exist")
            continue
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError as error:
            problems.append(f"the {role} file {path} has a syntax error at line {error.lineno}")
            continue
        names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        if loaded.mitigation.function not in names:
            problems.append(f"the {role} file {path} does not define {loaded.mitigation.function}()")
    return problems


# --------------------------------------------------------------------------- run


def _context(out_dir: Path | None, data_root: Path | None, device: str, no_cache: bool, quiet: bool):
    from secureml.cache import Cache
    from secureml.families.base import RunContext
    from secureml.progress import NO_PROGRESS, RichProgress

    progress = NO_PROGRESS if quiet else RichProgress()
    return RunContext(
        cache=Cache(enabled=not no_cache),
        data_root=data_root,
        device=device,
        progress=progress,
        out_dir=out_dir,
    )


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_options(function):
    options = [
        click.option("--seed", type=int, help="Override the scenario's seed."),
        click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Repeat over N seeds (seed, seed+1, ...) and report mean ± std."),
        click.option("--data-root", type=click.Path(path_type=Path), envvar="SECUREML_DATA",
                     help="Folder with torchvision datasets [env: SECUREML_DATA]."),
        click.option("--device", default="cpu", show_default=True,
                     help="cpu, cuda, or auto (CUDA when present)."),
        click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (recorded in results)."),
        click.option("--no-cache", is_flag=True, help="Recompute victims and attacks instead of reusing them."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON only (no tables, no progress bars)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@cli.command()
@click.argument("scenario_id", metavar="ID|FILE")
@click.option("--mitigation", type=click.Path(path_type=Path),
              help="Your mitigation file (start from the lab's mitigation.py). Omit to run without one.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Where results.json and pictures go [default: out/ID].")
@run_options
def run(scenario_id, mitigation, out_dir, seed, seeds, data_root, device, threads, no_cache, as_json) -> None:
    """Run a lab: build the victim, run the attack, run your mitigation, and score it.

    \b
    Examples:
      secureml run poisoning-01
      secureml run poisoning-01 --mitigation labs/poisoning-01/mitigation.py
      secureml run poisoning-01 --mitigation solution.py --seeds 3 --out results/
    """
    from secureml import report, runner, scenario

    with _guard(as_json):
        loaded = scenario.load(scenario_id)
        if seed is not None:
            loaded = loaded.with_seed(seed)
        out_dir = out_dir or Path("out") / loaded.id
        _set_threads(threads)
        ctx = _context(out_dir, data_root, device, no_cache, quiet=as_json)
        results = []
        with ctx.progress:
            for each_seed in runner.seeds_for(loaded, seeds):
                ctx.out_dir = out_dir if seeds == 1 else out_dir / f"seed-{each_seed}"
                results.append(runner.run(loaded.with_seed(each_seed), mitigation=mitigation, ctx=ctx))
        if seeds == 1:
            payload = results[0].to_json()
            report.write_json(out_dir / "results.json", payload)
        else:
            summary = runner.summarise_seeds(results)
            payload = summary.to_json()
            report.write_json(out_dir / "results.json", payload)
        if as_json:
            click.echo(json.dumps(payload, indent=2))
            return
        out = report.console()
        for result in results:
            report.print_result(result, out)
        if seeds > 1:
            report.print_seed_summary(summary, out)
        out.print(f"[dim]results: {out_dir / 'results.json'}[/dim]")


# --------------------------------------------------------------------------- verify


@cli.command()
@click.argument("scenario_ids", nargs=-1, metavar="[ID|FILE]...")
@click.option("--record", is_flag=True, help="Write the measured values into each scenario file.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@run_options
def verify(scenario_ids, record, junit, seed, seeds, data_root, device, threads, no_cache, as_json) -> None:
    """Check that scenarios reproduce the metrics recorded in their files, within tolerance.

    Each scenario runs with its recorded seed and its lab's reference solution.
    Exits 5 if any metric drifted.

    \b
    Examples:
      secureml verify
      secureml verify poisoning-01 --junit verify.xml
      secureml verify poisoning-02 --record
    """
    from secureml import report, runner, scenario
    from secureml import verify as verifying
    from secureml.errors import VerifyDrift

    with _guard(as_json):
        scenarios = [scenario.load(s) for s in scenario_ids] if scenario_ids else scenario.load_all()
        _set_threads(threads)
        ctx = _context(None, data_root, device, no_cache, quiet=as_json)
        checks, errors, recorded = [], {}, []
        with ctx.progress:
            for loaded in scenarios:
                if seed is not None:
                    loaded = loaded.with_seed(seed)
                try:
                    runs = [
                        runner.run(loaded.with_seed(s), mitigation=loaded.solution_path, ctx=ctx)
                        for s in runner.seeds_for(loaded, seeds)
                    ]
                except SecuremlError as error:
                    errors[loaded.id] = error.message()
                    continue
                metrics = runner.summarise_seeds(runs).mean
                if record:
                    recorded.append(str(verifying.record(loaded, metrics)))
                else:
                    checks += verifying.compare(loaded, metrics)
                    if not loaded.expected:
                        errors[loaded.id] = "no expected values recorded; run `secureml verify --record`"
        if junit:
            junit.write_text(verifying.junit_xml(checks, errors))
        drifted = [c for c in checks if not c.ok]
        if as_json:
            click.echo(json.dumps({
                "checks": [
                    {"scenario": c.scenario, "metric": c.metric, "expected": c.expected,
                     "found": c.found, "tolerance": c.tolerance, "ok": c.ok}
                    for c in checks
                ],
                "errors": errors,
                "recorded": recorded,
            }, indent=2))
        else:
            _print_checks(checks, errors, recorded, report.console())
        if (drifted or errors) and as_json:
            sys.exit(VerifyDrift.exit_code)  # the JSON above already says what drifted
        if drifted or errors:
            raise VerifyDrift(
                f"{len(drifted)} metric(s) drifted, {len(errors)} scenario(s) failed to run",
                fix="if the change is intended, record the new values with `secureml verify --record`",
            )


def _print_checks(checks, errors, recorded, out) -> None:
    from rich.table import Table

    if checks:
        table = Table(title="secureml verify", title_justify="left")
        for header in ("scenario", "metric", "expected", "found", "diff", "tolerance", ""):
            table.add_column(header, justify="right" if header in ("expected", "found", "diff", "tolerance") else "left")
        for c in checks:
            found = "missing" if c.found is None else f"{c.found:.4f}"
            table.add_row(
                c.scenario, c.metric, f"{c.expected:.4f}", found, f"{c.difference:+.4f}",
                f"{c.tolerance:g}", "[green]ok[/green]" if c.ok else "[red]DRIFT[/red]",
            )
        out.print(table)
    for scenario_id, message in errors.items():
        out.print(f"[red]{scenario_id}[/red]: {message}", markup=True)
    for path in recorded:
        out.print(f"recorded expected values in {path}")


if __name__ == "__main__":
    main()
