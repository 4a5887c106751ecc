"""The `secureml` command line. Click commands only: parse, call, print.

Nothing heavy is imported at module level: `secureml --help`, `list`, `show` and `check`
never load torch or ART.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shlex
import sys
import traceback
from pathlib import Path

import click

from secureml import __version__, gradebook
from secureml.errors import ConfigError, SecuremlError, VerifyDrift
from secureml.gradebook import EXPORT_FORMATS, GRADESCOPE_VISIBILITIES, ExportOptions
from secureml.models import DEVICES
from secureml.roster import load_roster

EXAMPLES = """
\b
Examples:
  secureml list
  secureml show poisoning-01
  secureml lab poisoning-01
  secureml run poisoning-01 --mitigation poisoning-01/mitigation.py
  secureml run poisoning-01 --mitigation my_defence.py --seeds 3 --json
  secureml verify --junit verify.xml
  secureml autograder poisoning-01 --out autograder.zip
  secureml check scenarios/*.yaml
  secureml doctor

Add --debug anywhere to see a traceback when something fails.
"""


class Failed(click.ClickException):
    """An expected failure: one message, no traceback, the error's own exit code."""

    def __init__(self, error: SecuremlError) -> None:
        super().__init__(error.message())
        # click declares exit_code a ClassVar; a Failed carries the code of its own error.
        self.exit_code = error.exit_code  # type: ignore[misc]

    def show(self, file=None) -> None:
        from secureml.report import safe_text

        # Messages may quote trainee names or zip entries: no control character gets through.
        click.echo(f"error: {safe_text(self.message)}", err=True)


def _debug() -> bool:
    return os.environ.get("SECUREML_DEBUG") == "1"


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="secureml")
def cli() -> None:
    """secureml: AI-security training labs with real attacks, real defences and honest scores.

    Trainees get a lab with `lab` and run it with `run`; instructors grade a workshop
    with `grade`; CI checks every scenario with `verify`.
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
    with _guard(as_json):
        _print_scenarios(as_json)


def _print_scenarios(as_json: bool) -> None:
    from secureml import loader, report
    from secureml.api import list_labs

    if as_json:
        click.echo(json.dumps(list_labs(), indent=2))
    else:
        report.console().print(report.scenario_table(loader.load_all()))


@cli.command()
@click.argument("scenario_id", metavar="ID|FILE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def show(scenario_id: str, as_json: bool) -> None:
    """Show a scenario: threat model, task, mitigation interface and scoring formula.

    \b
    Example:
      secureml show poisoning-01
    """
    from secureml import loader, report

    with _guard(as_json):
        loaded = loader.load(scenario_id)
        described = {
            **report.scenario_summary(loaded),
            "atlas_mitigation_name": loaded.atlas.mitigation_name,
            "summary": loaded.summary.strip(),
            "threat_model": loaded.threat_model.strip(),
            "task": loaded.task.strip(),
            "interface": loaded.trainee_call.describe() + "\n\n" + loaded.interface.strip(),
            "scoring": loaded.scoring_formula(),
            "seed": loaded.seed,
            "dataset": loaded.dataset.model_dump(),
            "victim": loaded.victim.model_dump(),
            "starter": str(loaded.starter_path),
            # None where the content holds no solutions (an installed wheel)
            "solution": str(loaded.solution_path) if loaded.solution_path.is_file() else None,
        }
        if as_json:
            click.echo(json.dumps(described, indent=2))
            return
        out = report.console()
        out.print(f"[bold]{loaded.id}[/bold]: {loaded.title}  ({loaded.family}, {loaded.difficulty})")
        out.print(
            f"OWASP ML Top 10: {loaded.owasp} {loaded.owasp_name}\n"
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
        out.print(f"Start from: secureml lab {loaded.id}   (copies the handout and the starter into ./{loaded.id})")
        out.print(f"Run it:     secureml run {loaded.id} --mitigation {loaded.id}/mitigation.py")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def check(files: tuple[Path, ...], as_json: bool) -> None:
    """Validate scenario files (for scenario authors and CI). Exits 2 if any is invalid.

    \b
    Example:
      secureml check scenarios/*.yaml
    """
    from secureml import loader

    results = []
    for path in files:
        try:
            loaded = loader.load(path)
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
        if loaded.trainee_call.name not in names:
            problems.append(f"the {role} file {path} does not define {loaded.trainee_call.name}()")
    return problems


# --------------------------------------------------------------------------- lab


@cli.command()
@click.argument("scenario_id", required=False, metavar="[ID|FILE]")
@click.argument("folder", required=False, type=click.Path(path_type=Path), metavar="[DIR]")
@click.option("--force", is_flag=True, help="Overwrite lab files that already exist in DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def lab(scenario_id, folder, force, as_json) -> None:
    """Get a lab to work on: its handout, starter mitigation.py and pictures, in DIR.

    DIR defaults to ./ID. Existing files are never overwritten without --force.
    Without ID, lists the labs (as `secureml list`).

    \b
    Examples:
      secureml lab
      secureml lab poisoning-01
      secureml lab poisoning-01 ~/labs/backdoor --force
    """
    from secureml import loader
    from secureml.lab import write_lab

    with _guard(as_json):
        if scenario_id is None:
            _print_scenarios(as_json)
            return
        loaded = loader.load(scenario_id)
        written = write_lab(loaded, folder if folder is not None else Path(loaded.id), force=force)
        if as_json:
            click.echo(json.dumps(written.to_json(), indent=2))
            return
        click.echo(f"Wrote lab {loaded.id} to {written.folder}/: " + ", ".join(p.name for p in written.files))
        click.echo(f"Read {written.folder / 'README.md'}, edit {written.mitigation}, then run:\n")
        click.echo(f"  {written.next_command}\n")
        for notebook in written.notebooks:
            click.echo(f"Or work in Jupyter: jupyter lab {shlex.quote(str(notebook))}")


# --------------------------------------------------------------------------- run


def _context(out_dir: Path | None, data_root: Path | None, device: str, no_cache: bool, quiet: bool):
    from secureml.cache import Cache
    from secureml.families.base import RunContext
    from secureml.progress import NO_PROGRESS, RichProgress

    progress = NO_PROGRESS if quiet else RichProgress()
    return RunContext(
        cache=Cache(reuse=not no_cache),
        data_root=data_root,
        device=device,
        progress=progress,
        out_dir=out_dir,
    )


def _set_threads(threads: int | None) -> None:
    from secureml.versions import set_threads

    set_threads(threads)


def _run_options(*, seed: bool, seeds_help: str, threads=None):
    """The options `run` and `verify` share (`verify` always runs the recorded seed, and
    may check several thread counts)."""

    def decorate(function):
        options = [
            *([click.option("--seed", type=int, help="Override the scenario's seed.")] if seed else []),
            click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help=seeds_help),
            *_SHARED_OPTIONS,
            threads or click.option("--threads", type=click.IntRange(min=1),
                                    help="torch CPU threads (recorded in results)."),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


_SHARED_OPTIONS = [
    click.option("--data-root", type=click.Path(path_type=Path), envvar="SECUREML_DATA",
                 help="Folder with torchvision datasets [env: SECUREML_DATA]."),
    click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
                 help="Where torch runs: cpu, cuda, or auto (CUDA when present)."),
    click.option("--no-cache", is_flag=True,
                 help="Recompute victims and attacks instead of reusing them "
                 "(the fresh results replace the cached ones)."),
    click.option("--json", "as_json", is_flag=True, help="Print JSON only (no tables, no progress bars)."),
]
run_options = _run_options(seed=True, seeds_help="Repeat over N seeds (seed, seed+1, ...) and report mean ± std.")


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

    Graded runs may also meet an automatic variant you never see (`grade --variant auto`);
    --variant auto draws one of your own, so you can check that a defence generalises
    before you submit it.

    \b
    Examples:
      secureml run poisoning-01
      secureml run poisoning-01 --mitigation labs/poisoning-01/mitigation.py
      secureml run poisoning-01 --mitigation solution.py --seeds 3 --out results/
      secureml run poisoning-01 --mitigation solution.py --variant auto
      secureml run poisoning-01 --mitigation solution.py --variant-seed 42
    """
    from secureml import loader, report, runner

    with _guard(as_json):
        loaded = loader.load(scenario_id)
        if variant_seed is not None or variant:
            if seed is not None:
                raise click.UsageError(
                    "--seed and --variant both set the seed; choose the variant with --variant-seed N."
                )
            from secureml import variants

            variant_seed = variants.trainee_variant_seed(loaded) if variant_seed is None else variant_seed
        if seed is not None:
            loaded = loaded.with_seed(seed)
        out_dir = out_dir or Path("out") / loaded.id
        _set_threads(threads)
        ctx = _context(out_dir, data_root, device, no_cache, quiet=as_json)
        prepared: list[runner.Prepared] = []
        if variant_seed is not None:
            # As the grader draws it: a variant whose stage cannot be built (e.g. its backdoor
            # did not take hold) gives way to the next one drawn from the same seed. The
            # accepted variant's stage is kept for its run.
            with ctx.progress:
                loaded = variants.first_valid_variant(
                    loaded, variant_seed, lambda variant: prepared.append(runner.Prepared.build(variant, ctx))
                )
        results = []
        if variant_seed is not None and not as_json:
            report.console().print(
                f"automatic variant {variant_seed} of {loaded.id}: seed {loaded.seed}, other secrets drawn afresh"
            )
        with ctx.progress:
            for each_seed in runner.seeds_for(loaded, seeds):
                ctx.out_dir = out_dir if seeds == 1 else out_dir / f"seed-{each_seed}"
                results.append(
                    runner.run(loaded.with_seed(each_seed), mitigation=mitigation, ctx=ctx, variant_seed=variant_seed,
                               prepared=prepared[-1] if prepared else None)
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
@click.option("--record", is_flag=True,
              help="Write the measured values, tolerances, sample sizes and sources into each scenario file.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@click.option("--instructor", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="A clone of secureml holding the reference solutions [default: SECUREML_HOME, "
                   "or the checkout secureml runs from or is run in].")
@_run_options(
    seed=False,
    seeds_help="Also run the next N-1 seeds and show each metric's spread over them.",
    threads=click.option("--threads", type=click.IntRange(min=1), multiple=True,
                         help="torch CPU threads. Repeat it (--threads 1 --threads 2) to check each "
                              "count; the cache is then not read."),
)
def verify(scenario_ids, record, junit, instructor, seeds, data_root, device, threads, no_cache,
           as_json) -> None:
    """Check that scenarios reproduce the metrics recorded in their files, within tolerance.

    Each scenario runs with its recorded seed and its lab's reference solution, and every
    metric is compared with the `expected:` block of its file: value, tolerance, sample
    size and where the tolerance came from (binomial spread for rates, spread measured
    over seeds for derived numbers). Exits 5 if any metric drifted.

    With --seeds N the next N-1 seeds run too, and the table shows whether each tolerance
    covers 3 SD of the spread they measure; with --record those spreads set the tolerances
    of derived metrics. Cached victims and attack results are reused only under a key
    that carries the config, data, seed, package versions and a hash of the code that
    computed them; --no-cache recomputes everything (CI does).

    \b
    Examples:
      secureml verify
      secureml verify --no-cache --threads 1 --junit verify-1.xml
      secureml verify poisoning-01 --seeds 5
      secureml verify poisoning-02 --record --seeds 5 --threads 1 --threads 2
    """
    from secureml import loader, paths, report, versions
    from secureml import verify as verifying

    with _guard(as_json):
        paths.use_instructor_dir(instructor)
        scenarios = [loader.load(s) for s in scenario_ids] if scenario_ids else loader.load_all()
        for loaded in scenarios:
            paths.require_solution(loaded)  # before any run: one clear message, nothing faked
        thread_counts = tuple(dict.fromkeys(threads)) or (None,)
        no_cache = no_cache or len(thread_counts) > 1
        ctx = _context(None, data_root, device, no_cache, quiet=as_json)
        with ctx.progress:
            outcome = verifying.verify_scenarios(
                scenarios, ctx, seeds=seeds, thread_counts=thread_counts, record_values=record
            )
        checks, errors, recorded = outcome.checks, outcome.errors, [str(path) for path in outcome.recorded]
        provenance = {
            **versions.environment(device),
            "threads": ",".join(map(str, thread_counts)) if len(thread_counts) > 1 else versions.thread_count(),
            "versions": versions.versions(),
            "cache": "not read (--no-cache): every result was computed in this run"
            if no_cache else _cache_note(ctx.cache.summary()),
        }
        if junit:
            junit.write_text(verifying.junit_xml(checks, errors, provenance))
        drifted = [c for c in checks if not c.ok]
        if as_json:
            click.echo(json.dumps({
                "checks": [c.to_json() for c in checks],
                "errors": errors,
                "recorded": recorded,
                "runs": outcome.runs,
                "environment": provenance,
            }, indent=2))
        else:
            _print_checks(checks, errors, recorded, provenance, report.console())
        if (drifted or errors) and as_json:
            sys.exit(VerifyDrift.exit_code)  # the JSON above already says what drifted
        if drifted or errors:
            raise VerifyDrift(
                f"{len(drifted)} metric(s) drifted, {len(errors)} scenario(s) failed to run"
                + "".join(f"\n  {c.describe()}" for c in drifted),
                fix="if the change is intended, record the new values with `secureml verify --record`",
            )


def _cache_note(summary: dict[str, dict[str, int]]) -> str:
    reused = {kind: counts["hits"] for kind, counts in summary.items() if counts["hits"]}
    if not reused:
        return "nothing reused: every result was computed in this run"
    return "reused " + ", ".join(f"{kind} {count}" for kind, count in reused.items()) + " (--no-cache recomputes)"


def _print_checks(checks, errors, recorded, provenance, out) -> None:
    from rich.markup import escape

    from secureml import verify as verifying

    if checks:
        out.print(verifying.checks_table(checks))
    for check in checks:
        if not check.ok:
            out.print(f"[red]DRIFT[/red] {escape(check.describe())}")
        elif check.covered is False:
            out.print(
                f"[yellow]note:[/yellow] {escape(check.name)} of {check.scenario}: tolerance "
                f"{check.expected.tolerance:.3g} is narrower than {verifying.Z:g} SD over {check.spread.over} "
                f"({verifying.Z * check.spread.sd:.3g}); record it again with --record and the same --seeds/--threads"
            )
    for scenario_id, message in errors.items():
        out.print(f"[red]{scenario_id}[/red]: {escape(message)}")
    for path in recorded:
        out.print(f"recorded expected values in {path}")
    cpu, build = provenance["cpu"], provenance["torch"]
    out.print(
        f"[dim]{provenance['threads']} threads, {escape(str(cpu['model']))}, torch {build['version']} "
        f"({build['build']}, deterministic algorithms {'on' if build['deterministic_algorithms'] else 'off'}); "
        f"cache: {provenance['cache']}[/dim]"
    )


# --------------------------------------------------------------------------- grade

# The gradebook's export formats: the registry's names (secureml.gradebook imports only the
# standard library, so `--help` stays instant).
GRADE_EXPORT_FORMATS = tuple(EXPORT_FORMATS)
_LMS_EXPORT_FORMATS = tuple(name for name, spec in EXPORT_FORMATS.items() if "roster" in spec.options)

_UNSAFE_WARNING = """\
WARNING: --unsafe: bubblewrap isolation is unavailable here ({problem}; see `secureml doctor`).
WARNING: Submissions run as ordinary subprocesses of this user, with rlimits only. They can
WARNING: read your files, the test set and the gradebook, and use the network.
WARNING: Grade only code you trust this way."""


def _export_options(function):
    options = [
        click.option("--export", "export_format", type=click.Choice(GRADE_EXPORT_FORMATS),
                     help="Also write the grades: csv (LMS import), json, gradescope "
                          "(a folder of results.json), html (a self-contained report), canvas or "
                          "moodle (their gradebook imports; need --roster)."),
        click.option("--output", type=click.Path(path_type=Path),
                     help="Where --export writes [default: SCENARIO-grades.csv, SCENARIO-canvas.csv, "
                          "... or the folder SCENARIO-gradescope]."),
        click.option("--roster", type=click.Path(dir_okay=False, path_type=Path),
                     help="For canvas and moodle: a CSV mapping each trainee to the platform "
                          "(trainee,name,lms_id,sis_user_id,sis_login_id,section,email)."),
        click.option("--assignment-id", help="For canvas: the assignment's number in Canvas "
                                             "(its column becomes 'TITLE (ID)')."),
        click.option("--assignment-title", help="For canvas and moodle: the assignment's name "
                                                "[default: the scenario id]."),
        click.option("--points", type=click.FloatRange(min=0, min_open=True), default=100.0,
                     show_default=True, help="For canvas and moodle: what the assignment is worth; "
                                             "a score of 87.5/100 becomes 0.875 x points."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _export_settings(roster_path: Path | None, assignment_id: str | None, assignment_title: str | None,
                     points: float):
    """The export options of the command line, the roster read and checked."""
    roster = load_roster(roster_path) if roster_path is not None else None
    return ExportOptions(roster=roster, assignment_id=assignment_id, assignment_title=assignment_title,
                         points=points)


def _export_grades(rows, export_format: str | None, output: Path | None, scenario_id: str | None,
                   options) -> list[Path]:
    if export_format is None:
        if output is not None:
            raise click.UsageError(f"--output needs --export FORMAT ({', '.join(GRADE_EXPORT_FORMATS)}).")
        if options != gradebook.ExportOptions():
            raise click.UsageError(f"--roster, --assignment-id, --assignment-title and --points need "
                                   f"--export {' or '.join(_LMS_EXPORT_FORMATS)}.")
        return []
    if output is None:
        output = Path(gradebook.EXPORT_FORMATS[export_format].default_output.format(scenario=scenario_id or "all"))
    written = gradebook.export(rows, export_format, output, options)
    if options.roster is not None:
        _print_roster_notes(gradebook.match_roster(rows, options.roster), options.roster.source)
    return written


def _print_roster_notes(matched, roster_path: Path) -> None:
    """Say on stderr who the export could not pair, so that nobody is silently missing."""
    from secureml.report import safe_text

    if matched.unlisted:
        click.echo(f"note: {len(matched.unlisted)} graded trainee(s) have no line in {roster_path}: "
                   f"{safe_text(', '.join(matched.unlisted))}. They are listed last as "
                   "'not in the roster: NAME'; add them to the roster, or match them in the import.",
                   err=True)
    if matched.without_submission:
        click.echo(f"note: {len(matched.without_submission)} trainee(s) of the roster have no graded "
                   f"submission and an empty grade (not a zero): "
                   f"{safe_text(', '.join(matched.without_submission))}.", err=True)


@cli.command()
@click.argument("scenario_id", metavar="ID|FILE")
@click.argument("submissions", type=click.Path(exists=True, path_type=Path))
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("gradebook.db"),
              show_default=True, help="The gradebook (SQLite); created if missing.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Grade N submissions at once, in parallel processes.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds each submission may run: wall clock minus any time it waited for a "
                   "CPU others held (the wall clock itself stops at 3x).")
@click.option("--memory", "memory_mb", type=click.IntRange(min=256), default=4096, show_default=True,
              help="Memory limit of each submission in MB (importing torch takes ~500).")
@_export_options
@click.option("--hidden", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A YAML file of overrides the trainees never saw (seed, trigger, target...). "
                   "Rows record that a hidden variant was used, not what it was. A submission "
                   "has one row per gradebook: use another --db to keep its public grade too.")
@click.option("--variant", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
              envvar="SECUREML_GRADE_VARIANT", show_envvar=True,
              help="auto: also grade every submission on an automatic variant (a new seed and new "
                   "secrets) and keep the lower score. Its seed is drawn at random the first time a "
                   "scenario is graded into --db, and kept there. none: the public scenario only.")
@click.option("--variant-seed", type=click.IntRange(min=0), metavar="N",
              help="Draw the automatic variant from this seed (implies --variant auto).")
@click.option("--regrade", is_flag=True, help="Grade every submission again, even those already graded.")
@click.option("--unsafe", is_flag=True,
              help="Where bubblewrap is unavailable, run submissions WITHOUT isolation.")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="SECUREML_DATA",
              help="Folder with torchvision datasets [env: SECUREML_DATA].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (no progress bar, no table).")
def grade(scenario_id, submissions, db, jobs, timeout_s, memory_mb, export_format, output, roster,
          assignment_id, assignment_title, points, hidden, variant, variant_seed, regrade, unsafe,
          data_root, as_json) -> None:
    """Grade every trainee's mitigation for a scenario, each in its own sandbox.

    SUBMISSIONS is a folder with one NAME.py file or NAME/ folder (holding
    mitigation.py) per trainee, or a zip of such a folder. The attack and the victim
    are built once and shared; each submission runs isolated (no network, read-only
    view of its inputs only, limits on time, memory and processes) and is scored by
    the grader. Every submission also meets an automatic variant of the scenario
    (another seed and other secrets, drawn from a seed kept in the gradebook and shown
    to nobody), and its grade is the lower of the two scores (--variant none: the
    public scenario only). Each row is stored as soon as it is graded; a re-run grades
    only new or changed submissions. Runs as root or as a normal user (`secureml doctor`
    says how submissions will be isolated). Exits 7 if trainee code cannot be isolated
    here (see --unsafe), 8 if the grader itself failed on some submission (re-run to retry).

    \b
    Examples:
      secureml grade poisoning-01 submissions/ --jobs 2
      secureml grade poisoning-01 submissions.zip --db course.db --export csv --output grades.csv
      secureml grade poisoning-01 submissions/ --export canvas --roster roster.csv --assignment-id 4321
      secureml grade poisoning-01 submissions/ --hidden hidden/poisoning-01.yaml --regrade
      secureml grade evasion-01 submissions/ --variant none
      secureml grade poisoning-01 submissions/ --timeout 120 --memory 2048 --json
    """
    # Before torch loads OpenMP. With several jobs this process shares the cores with its
    # workers, and idle threads should sleep instead of spinning at barriers: that made
    # building poisoning-01's stage 2x faster on a busy 2-core machine (87 s -> 40 s).
    # Alone on the machine, spinning is faster: evasion-03's stage took 18 s spinning and
    # 49 s sleeping (its HopSkipJump queries one image at a time).
    if jobs > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _stacks_on_sigusr1()
    from secureml import grading, loader, report
    from secureml.progress import NO_PROGRESS, RichProgress
    from secureml.sandbox import Limits

    with _guard(as_json):
        if output is not None and export_format is None:
            raise click.UsageError(f"--output needs --export FORMAT ({', '.join(GRADE_EXPORT_FORMATS)}).")
        # Read the roster first: a bad roster is found before the grading, not after it.
        export_settings = _export_settings(roster, assignment_id, assignment_title, points)
        loaded = loader.load(scenario_id)
        hidden_variant = loader.apply_overrides(loaded, hidden) if hidden else None
        if grading.resolve_isolation(unsafe):
            from secureml.sandbox import isolation_problem

            click.secho(_UNSAFE_WARNING.format(problem=isolation_problem()), err=True, fg="red", bold=True)
        settings = grading.GradeSettings(
            limits=Limits(timeout_s=timeout_s, memory_mb=memory_mb),
            data_root=data_root, jobs=jobs, regrade=regrade, unsafe=unsafe,
            automatic_variant=variant == "auto" or variant_seed is not None, variant_seed=variant_seed,
        )
        stage_progress = NO_PROGRESS if as_json else RichProgress()
        bar = grading.NO_GRADE_PROGRESS if as_json else report.RichGradeProgress()
        with gradebook.Gradebook.open(db) as book:
            outcome = grading.grade_workshop(loaded, submissions, book, settings, hidden=hidden_variant,
                                             stage_progress=stage_progress, progress=bar)
            exported = _export_grades(book.latest(loaded.id), export_format, output, loaded.id,
                                      export_settings)
        if as_json:
            click.echo(json.dumps(report.report_json(outcome, gradebook_path=db, exported=exported), indent=2))
        else:
            out = report.console()
            for note in outcome.notes:  # "skipped NAME: ..." quotes trainees' file names
                out.print(f"[yellow]note:[/yellow] {report.safe_markup(note)}")
            if outcome.graded:
                title = (f"secureml grade {loaded.id}" + (" (hidden variant)" if hidden_variant else "")
                         + (", each also on an automatic variant" if outcome.automatic_variant else ""))
                out.print(report.rows_table(outcome.graded, title))
            counts = ", ".join(f"{status} {count}" for status, count in sorted(outcome.counts().items()))
            out.print(f"graded {len(outcome.graded)}" + (f" ({counts})" if counts else "")
                      + f", skipped {len(outcome.skipped)} already graded"
                      + ("" if regrade else " (--regrade grades them again)" if outcome.skipped else "")
                      + f" in {outcome.wall_s:.1f} s; isolation: {report.safe_markup(outcome.isolation)}")
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


def _stacks_on_sigusr1() -> None:
    """`kill -USR1 PID` makes a grading run print every thread's Python stack on stderr and
    go on: a run that seems stuck can say where. (test_grade asks a grader that did not stop
    on Ctrl-C, which CI saw a few times and never alone.)"""
    import faulthandler
    import signal

    if not hasattr(signal, "SIGUSR1"):
        return
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        pass  # stderr is no file (the command runs inside another program, e.g. click's test runner)


@cli.command("gradebook")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("gradebook.db"),
              show_default=True, help="The gradebook written by `secureml grade`.")
@click.option("--scenario", "scenario_id", help="Only this scenario [default: every scenario].")
@_export_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def gradebook_command(db, scenario_id, export_format, output, roster, assignment_id, assignment_title,
                      points, as_json) -> None:
    """Show or export the stored grades, without running anything.

    Shows the newest row of each trainee. Every export but json covers one scenario: pick
    it with --scenario when the gradebook holds several. canvas and moodle write their
    gradebook imports: one line per trainee of the --roster (an empty grade for those
    without a submission), then any graded trainee the roster lacks.

    \b
    Examples:
      secureml gradebook
      secureml gradebook --db course.db --scenario poisoning-01 --export html --output report.html
      secureml gradebook --export gradescope --output gradescope/
      secureml gradebook --export canvas --roster roster.csv --assignment-id 4321 --points 20
      secureml gradebook --export moodle --roster roster.csv --output moodle.csv
      secureml gradebook --json | jq '.[] | {trainee, score, status}'
    """
    from secureml import report

    with _guard(as_json):
        export_settings = _export_settings(roster, assignment_id, assignment_title, points)
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
        exported = _export_grades(rows, export_format, output, export_scenario, export_settings)
        if as_json:
            click.echo(report.json_for_terminal(gradebook.render_json(rows)), nl=False)
            return
        out = report.console()
        if not rows:
            out.print(f"The gradebook {report.safe_markup(str(db))} is empty.")
        for each in scenario_ids:
            out.print(report.rows_table([row for row in rows if row.scenario_id == each],
                                        f"gradebook: {each}", show_graded_at=True))
        for path in exported:
            out.print(f"[dim]exported: {path}[/dim]")


# --------------------------------------------------------------------------- Gradescope


@cli.command()
@click.argument("scenario_id", metavar="ID|FILE")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("autograder.zip"),
              show_default=True, help="The bundle to upload to Gradescope.")
@click.option("--hidden", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Grade on this hidden variant (overrides trainees never see), as `grade --hidden`.")
@click.option("--visibility", type=click.Choice(GRADESCOPE_VISIBILITIES), default="visible", show_default=True,
              help="When trainees see their results on Gradescope.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds the trainee's code may run (as `grade --timeout`); keep it well under the "
                   "assignment's own autograder timeout.")
@click.option("--memory", "memory_mb", type=click.IntRange(min=256), default=4096, show_default=True,
              help="Memory limit of the trainee's code in MB (as `grade --memory`).")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The secureml wheel to install on Gradescope [default: dist/ of the clone, "
                   "from `make wheel`].")
@click.option("--variant", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
              help="auto: also grade on an automatic variant, as `grade` does; its seed is drawn at "
                   "random now and kept in the bundle. none: the public scenario only.")
@click.option("--variant-seed", type=click.IntRange(min=0), metavar="N",
              help="Draw the automatic variant from this seed (implies --variant auto).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def autograder(scenario_id, out, hidden, visibility, timeout_s, memory_mb, wheel, variant, variant_seed,
               as_json) -> None:
    """Build a Gradescope autograder bundle that grades a scenario like `secureml grade`.

    The zip holds setup.sh (installs Python, bubblewrap, the secureml wheel with the CPU
    build of torch, and builds the scenario's victim and attack once), run_autograder
    (grades each submission in the sandbox and writes results.json: the score, a test
    per score part, feedback, leaderboard), the wheel, the scenario and the hidden
    variant (and the automatic variant's seed, as under `grade`; --variant none for none).
    Upload it under the assignment's Configure Autograder.

    \b
    Examples:
      make wheel && secureml autograder poisoning-01 --out autograder.zip
      secureml autograder poisoning-01 --hidden scenarios/hidden/poisoning-01.yaml --visibility after_published
    """
    from secureml import autograder as bundles
    from secureml import loader

    with _guard(as_json):
        loaded = loader.load(scenario_id)
        if variant == "auto" and variant_seed is None:
            variant_seed = secrets.randbelow(2**62)  # kept in the bundle, shown to no trainee
        settings = bundles.AutograderSettings(visibility=visibility, timeout_s=timeout_s, memory_mb=memory_mb,
                                              variant_seed=variant_seed)
        built = bundles.build_bundle(loaded, out, wheel=bundles.find_wheel(wheel), hidden=hidden,
                                     settings=settings)
        if as_json:
            click.echo(json.dumps({"bundle": str(built.path), "size_bytes": built.size_bytes,
                                   "files": built.files, "wheel": str(built.wheel)}, indent=2))
            return
        click.echo(f"Wrote {built.path} ({built.size_bytes / 2**20:.1f} MiB): {', '.join(built.files)}")
        click.echo("Upload it on Gradescope: the assignment's Configure Autograder, Zip file upload.\n"
                   "In its Autograder Settings give it at least 2 CPUs, 6 GB of memory and a timeout "
                   f"of {max(10, 2 * timeout_s / 60 + 5):.0f} minutes or more, then use Test Autograder "
                   "with the lab's reference solution before you release the assignment.")


@cli.command("run-autograder")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path), default=Path("/autograder"))
@click.option("--prepare", is_flag=True, help="Build the scenario's victim and attack into the cache "
                                              "(setup.sh does this once) instead of grading.")
def run_autograder(root: Path, prepare: bool) -> None:
    """Grade the submission of a Gradescope autograder run (what the bundle's run_autograder does).

    Reads ROOT/source (the unpacked bundle) and ROOT/submission, grades with `secureml
    grade` in its sandbox, and writes ROOT/results/results.json, also when the trainee's
    code or the grader fails. Exits non-zero only when it cannot write results.json.

    \b
    Example:
      secureml run-autograder /autograder
    """
    from secureml import autograder as bundles

    with _guard():
        if prepare:
            bundles.prepare(root)
            return
        results = bundles.run(root)
        click.echo(f"results: {root / 'results' / 'results.json'} (score {results['score']:g})")


# --------------------------------------------------------------------------- doctor


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (for CI).")
def doctor(as_json: bool) -> None:
    """Check what grading needs here, and which isolation `grade` will use.

    Prints each capability (bubblewrap and its version, user namespaces, seccomp, the
    cgroup version and its writable controllers, root or not), what was found, the
    isolation mode and what enforces each limit, and the fix for each gap. Exits 7 when
    trainee code cannot be isolated here.

    \b
    Examples:
      secureml doctor
      secureml doctor --json | jq .mode
    """
    from rich.table import Table

    from secureml import isolation, report

    with _guard(as_json):
        found = isolation.capabilities(probe_user_namespaces=True)
        checks = isolation.doctor_checks(found)
        if as_json:
            click.echo(json.dumps({
                "mode": found.mode,
                "can_isolate": found.mode is not None,
                "problem": found.problem,
                "limits": dict(found.limits) if found.mode else {},
                "checks": [{"name": c.name, "ok": c.ok, "found": c.found, "fix": c.fix} for c in checks],
            }, indent=2))
        else:
            table = Table(title="secureml doctor", title_justify="left")
            for header in ("check", "", "found", "fix"):
                table.add_column(header, overflow="fold")
            for check in checks:
                table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]missing[/red]",
                              report.safe_cell(check.found), report.safe_cell(check.fix))
            out = report.console()
            out.print(table)
            if found.mode is None:
                problem = report.safe_markup(found.problem or "")
                out.print(f"[red]grade cannot isolate trainee code here:[/red] {problem}")
            else:
                out.print(f"grade will isolate trainee code with [bold]{found.mode}[/bold].")
        if found.mode is None:
            from secureml.grading import IsolationUnavailable

            sys.exit(IsolationUnavailable.exit_code)


if __name__ == "__main__":
    main()
