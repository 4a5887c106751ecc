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
@click.option("--variant", type=click.Choice(["auto"]),
              help="Run an automatic variant: a new seed and new secrets (target, trigger, attacked "
                   "images...), drawn like the grader's but from another seed.")
@click.option("--variant-seed", type=click.IntRange(min=0),
              help="Draw the variant from this seed instead of your own default one (implies --variant auto).")
@run_options
def run(scenario_id, mitigation, out_dir, variant, variant_seed, seed, seeds, data_root, device, threads,
        no_cache, as_json) -> None:
    """Run a lab: build the victim, run the attack, run your mitigation, and score it.

    Graded runs also meet an automatic variant you never see; --variant auto draws one of
    your own, so you can check that a defence generalises before you submit it.

    \b
    Examples:
      secureml run poisoning-01
      secureml run poisoning-01 --mitigation labs/poisoning-01/mitigation.py
      secureml run poisoning-01 --mitigation solution.py --seeds 3 --out results/
      secureml run poisoning-01 --mitigation solution.py --variant auto
      secureml run poisoning-01 --mitigation solution.py --variant-seed 42
    """
    from secureml import report, runner, scenario

    with _guard(as_json):
        loaded = scenario.load(scenario_id)
        if variant_seed is not None or variant:
            if seed is not None:
                raise click.UsageError("--seed and --variant both set the seed; choose the variant with --variant-seed N.")
            from secureml import variants

            variant_seed = variants.trainee_variant_seed(loaded) if variant_seed is None else variant_seed
            loaded = variants.draw_variant(loaded, variant_seed)
        if seed is not None:
            loaded = loaded.with_seed(seed)
        out_dir = out_dir or Path("out") / loaded.id
        _set_threads(threads)
        ctx = _context(out_dir, data_root, device, no_cache, quiet=as_json)
        results = []
        if variant_seed is not None and not as_json:
            report.console().print(
                f"automatic variant {variant_seed} of {loaded.id}: seed {loaded.seed}, other secrets drawn afresh"
            )
        with ctx.progress:
            for each_seed in runner.seeds_for(loaded, seeds):
                ctx.out_dir = out_dir if seeds == 1 else out_dir / f"seed-{each_seed}"
                results.append(
                    runner.run(loaded.with_seed(each_seed), mitigation=mitigation, ctx=ctx, variant_seed=variant_seed)
                )
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


# --------------------------------------------------------------------------- grade

# The gradebook's export formats (secureml.gradebook.EXPORT_FORMATS), spelled out so that
# `--help` imports nothing; tests/test_grade.py checks that the two lists agree.
GRADE_EXPORT_FORMATS = ("csv", "json", "gradescope", "html")

_UNSAFE_WARNING = """\
WARNING: --unsafe: bubblewrap isolation is unavailable here ({problem}).
WARNING: Submissions run as ordinary subprocesses of this user, with rlimits only. They can
WARNING: read your files, the test set and the gradebook, and use the network.
WARNING: Grade only code you trust this way."""


def _export_options(function):
    options = [
        click.option("--export", "export_format", type=click.Choice(GRADE_EXPORT_FORMATS),
                     help="Also write the grades: csv (LMS import), json, gradescope "
                          "(a folder of results.json) or html (a self-contained report)."),
        click.option("--output", type=click.Path(path_type=Path),
                     help="Where --export writes [default: SCENARIO-grades.FORMAT, "
                          "or the folder SCENARIO-gradescope]."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _export_grades(rows, export_format: str | None, output: Path | None, scenario_id: str | None) -> list[Path]:
    from secureml import gradebook

    if export_format is None:
        if output is not None:
            raise click.UsageError("--output needs --export FORMAT (csv, json, gradescope or html).")
        return []
    if output is None:
        stem = scenario_id or "all"
        output = Path(f"{stem}-gradescope" if export_format == "gradescope" else f"{stem}-grades.{export_format}")
    return gradebook.export(rows, export_format, output)


@cli.command()
@click.argument("scenario_id", metavar="ID|FILE")
@click.argument("submissions", type=click.Path(exists=True, path_type=Path))
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("gradebook.db"),
              show_default=True, help="The gradebook (SQLite); created if missing.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Grade N submissions at once, in parallel processes.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Wall-clock seconds each submission may run.")
@click.option("--memory", "memory_mb", type=click.IntRange(min=256), default=4096, show_default=True,
              help="Memory limit of each submission in MB (importing torch takes ~500).")
@_export_options
@click.option("--hidden", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A YAML file of overrides the trainees never saw (seed, trigger, target...). "
                   "Rows record that a hidden variant was used, not what it was. A submission "
                   "has one row per gradebook: use another --db to keep its public grade too.")
@click.option("--regrade", is_flag=True, help="Grade every submission again, even those already graded.")
@click.option("--unsafe", is_flag=True,
              help="Where bubblewrap is unavailable, run submissions WITHOUT isolation.")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="SECUREML_DATA",
              help="Folder with torchvision datasets [env: SECUREML_DATA].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (no progress bar, no table).")
def grade(scenario_id, submissions, db, jobs, timeout_s, memory_mb, export_format, output, hidden,
          regrade, unsafe, data_root, as_json) -> None:
    """Grade every trainee's mitigation for a scenario, each in its own sandbox.

    SUBMISSIONS is a folder with one NAME.py file or NAME/ folder (holding
    mitigation.py) per trainee, or a zip of such a folder. The attack and the victim
    are built once and shared; each submission runs isolated (no network, read-only
    view of its inputs only, limits on time, memory and processes) and is scored by
    the grader. Each row is stored as soon as it is graded; a re-run grades only new
    or changed submissions. Exits 7 if trainee code cannot be isolated here (see
    --unsafe), 8 if the grader itself failed on some submission (re-run to retry).

    \b
    Examples:
      secureml grade poisoning-01 submissions/ --jobs 2
      secureml grade poisoning-01 submissions.zip --db course.db --export csv --output grades.csv
      secureml grade poisoning-01 submissions/ --hidden hidden/poisoning-01.yaml --regrade
      secureml grade poisoning-01 submissions/ --timeout 120 --memory 2048 --json
    """
    # Before torch loads OpenMP. With several jobs this process shares the cores with its
    # workers, and idle threads should sleep instead of spinning at barriers: that made
    # building poisoning-01's stage 2x faster on a busy 2-core machine (87 s -> 40 s).
    # Alone on the machine, spinning is faster: evasion-03's stage took 18 s spinning and
    # 49 s sleeping (its HopSkipJump queries one image at a time).
    if jobs > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from secureml import grade as grading
    from secureml import gradebook, report, scenario
    from secureml.progress import NO_PROGRESS, RichProgress
    from secureml.sandbox import Limits

    with _guard(as_json):
        if output is not None and export_format is None:
            raise click.UsageError("--output needs --export FORMAT (csv, json, gradescope or html).")
        loaded = scenario.load(scenario_id)
        variant = scenario.apply_overrides(loaded, hidden) if hidden else None
        if grading.resolve_isolation(unsafe):
            from secureml.sandbox import isolation_problem

            click.secho(_UNSAFE_WARNING.format(problem=isolation_problem()), err=True, fg="red", bold=True)
        settings = grading.GradeSettings(
            limits=Limits(timeout_s=timeout_s, memory_mb=memory_mb),
            data_root=data_root, jobs=jobs, regrade=regrade, unsafe=unsafe,
        )
        stage_progress = NO_PROGRESS if as_json else RichProgress()
        bar = grading.NO_GRADE_PROGRESS if as_json else grading.RichGradeProgress()
        with gradebook.Gradebook.open(db) as book:
            outcome = grading.grade_workshop(loaded, submissions, book, settings, hidden=variant,
                                             stage_progress=stage_progress, progress=bar)
            exported = _export_grades(book.latest(loaded.id), export_format, output, loaded.id)
        if as_json:
            click.echo(json.dumps(grading.report_json(outcome, gradebook_path=db, exported=exported), indent=2))
        else:
            out = report.console()
            for note in outcome.notes:
                out.print(f"[yellow]note:[/yellow] {note}")
            if outcome.graded:
                title = f"secureml grade {loaded.id}" + (" (hidden variant)" if variant else "")
                out.print(grading.rows_table(outcome.graded, title))
            counts = ", ".join(f"{status} {count}" for status, count in sorted(outcome.counts().items()))
            out.print(f"graded {len(outcome.graded)}" + (f" ({counts})" if counts else "")
                      + f", skipped {len(outcome.skipped)} already graded"
                      + ("" if regrade else " (--regrade grades them again)" if outcome.skipped else "")
                      + f" in {outcome.wall_s:.1f} s; isolation: {outcome.isolation}")
            out.print(f"[dim]gradebook: {db}[/dim]")
            for path in exported:
                out.print(f"[dim]exported: {path}[/dim]")
        if outcome.infra_errors:
            if as_json:
                sys.exit(grading.GradingIncomplete.exit_code)
            raise grading.GradingIncomplete(
                f"the grader failed on {len(outcome.infra_errors)} submission(s) "
                f"({', '.join(row.trainee for row in outcome.infra_errors)})",
                fix="run the same command again: rows with infra-error are graded again",
            )


@cli.command("gradebook")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("gradebook.db"),
              show_default=True, help="The gradebook written by `secureml grade`.")
@click.option("--scenario", "scenario_id", help="Only this scenario [default: every scenario].")
@_export_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def gradebook_command(db, scenario_id, export_format, output, as_json) -> None:
    """Show or export the stored grades, without running anything.

    Shows the newest row of each trainee. csv, gradescope and html exports cover one
    scenario: pick it with --scenario when the gradebook holds several.

    \b
    Examples:
      secureml gradebook
      secureml gradebook --db course.db --scenario poisoning-01 --export html --output report.html
      secureml gradebook --export gradescope --output gradescope/
      secureml gradebook --json | jq '.[] | {trainee, score, status}'
    """
    from secureml import gradebook, report
    from secureml import grade as grading

    with _guard(as_json):
        if not db.is_file():
            raise gradebook.GradebookError(
                f"there is no gradebook at {db}",
                fix="grade first with `secureml grade ID SUBMISSIONS --db FILE`, or pass --db",
            )
        with gradebook.Gradebook.open(db) as book:
            scenario_ids = [scenario_id] if scenario_id else book.scenario_ids()
            rows = [row for each in scenario_ids for row in book.latest(each)]
        if scenario_id and not rows:
            raise gradebook.GradebookError(
                f"the gradebook {db} holds no rows for scenario '{scenario_id}'",
                fix="run `secureml gradebook` to see which scenarios it holds",
            )
        export_scenario = scenario_ids[0] if len(scenario_ids) == 1 else None
        if export_format not in (None, "json") and export_scenario is None:
            raise gradebook.GradebookError(
                f"the gradebook {db} holds {len(scenario_ids)} scenarios "
                f"({', '.join(scenario_ids)}), and a {export_format} export covers one",
                fix="pick one with --scenario ID",
            )
        exported = _export_grades(rows, export_format, output, export_scenario)
        if as_json:
            click.echo(gradebook.render_json(rows), nl=False)
            return
        out = report.console()
        if not rows:
            out.print(f"The gradebook {db} is empty.")
        for each in scenario_ids:
            out.print(grading.rows_table([row for row in rows if row.scenario_id == each],
                                         f"gradebook: {each}", show_graded_at=True))
        for path in exported:
            out.print(f"[dim]exported: {path}[/dim]")


if __name__ == "__main__":
    main()
