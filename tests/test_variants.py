"""Automatic variants: a seed draws a new, valid scenario with other secrets, cheaply, and
`secureml run --variant auto` runs one and says so in its results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, run_json, secureml
from secureml import scenario, variants

SHIPPED = sorted(path.stem for path in (REPO / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("scenario_id", SHIPPED)
def test_every_shipped_scenario_draws_valid_variants_with_a_new_seed(scenario_id):
    loaded = scenario.load(scenario_id)
    drawn = [variants.draw_variant(loaded, variant_seed) for variant_seed in range(40)]
    for variant in drawn:
        assert type(variant) is type(loaded) and variant.id == loaded.id
        assert variant.seed != loaded.seed
        assert variant.source == loaded.source, "lab files must still resolve"
    assert len({variant.config_sha256() for variant in drawn}) == len(drawn)


@pytest.mark.parametrize("scenario_id", SHIPPED)
def test_variants_distort_the_data_where_a_defence_could_look_its_inputs_up(scenario_id):
    # Poisoning filters a training set, extraction answers queries and membership trains on
    # members: on the public lab those are shipped images, which a trainee has. A variant's
    # are distorted afresh, from the variant's own seed; poisoning's more mildly, where its
    # reference holds (secureml.variants).
    loaded = scenario.load(scenario_id)
    variant = variants.draw_variant(loaded, 11)
    strength = {"extraction": scenario.VARIANT_DISTORTION, "membership": scenario.VARIANT_DISTORTION,
                "poisoning": scenario.MILD_VARIANT_DISTORTION}.get(loaded.family)
    if strength is not None:
        assert loaded.dataset.distort is None
        assert variant.dataset.distort.model_dump() == strength
        assert variant.dataset.model_dump(exclude={"distort"}) == loaded.dataset.model_dump(exclude={"distort"})
    else:
        assert variant.dataset == loaded.dataset


@pytest.mark.slow
@pytest.mark.parametrize(("scenario_id", "gaming"), [
    ("extraction-01", "extraction_pristine_lookup.py"),
    ("poisoning-01", "poisoning_pristine_lookup.py"),
])
def test_a_lookup_in_the_shipped_dataset_scores_near_zero_on_a_variant(scenario_id, gaming, tmp_path):
    # On the public lab each lookup scores 100 (tests/gaming/README.md): an API that answers
    # only the queries it finds in the shipped dataset, a filter that keeps only the images it
    # finds there. A graded run also meets a variant, whose distorted images match no shipped
    # one, and scores the lower.
    result = run_json(scenario_id, "--mitigation", str(REPO / "tests" / "gaming" / gaming), "--variant", "auto",
                      out=tmp_path)
    assert result["variant"]["kind"] == "auto"
    assert result["score"] <= 10, result["metrics"]


def test_a_variant_seed_always_draws_the_same_variant():
    loaded = scenario.load("poisoning-01")
    assert variants.draw_variant(loaded, 5) == variants.draw_variant(loaded, 5)
    assert variants.draw_variant(loaded, 5) != variants.draw_variant(loaded, 6)


@pytest.mark.parametrize("scenario_id", ["poisoning-01", "poisoning-02"])
def test_poisoning_variants_never_keep_the_public_target_and_move_the_trigger(scenario_id):
    loaded = scenario.load(scenario_id)
    drawn = [variants.draw_variant(loaded, variant_seed).attack for variant_seed in range(200)]
    assert all(attack.target_class != loaded.attack.target_class for attack in drawn)
    assert len({attack.target_class for attack in drawn}) == 9
    positions = {(attack.trigger.row, attack.trigger.col) for attack in drawn}
    assert len(positions) > 50, "triggers must not sit in a few guessable places"


def test_badnets_variants_draw_every_look_bright_grey_dark_and_blended_anywhere():
    # A filter written for one look (bright marks in a corner, checkerboards) meets the others
    # on most graded variants. Each look took hold at 10% poison and the lab's reference
    # finds each of them (poisoning/config.py, LOOKS).
    loaded = scenario.load("poisoning-01")
    drawn = [variants.draw_variant(loaded, variant_seed).attack.trigger for variant_seed in range(200)]
    assert {trigger.kind for trigger in drawn} == {"checker", "pattern", "square", "blend"}
    values = {getattr(trigger, "pixel_value", None) for trigger in drawn}
    assert {0.0, 0.5, 1.0} <= values, "dark, mid-grey and bright marks"
    assert any(trigger.kind == "blend" and trigger.alpha >= 0.2 for trigger in drawn)
    bright = [t for t in drawn if t.kind != "blend" and t.pixel_value == 1.0]
    assert len(bright) < 0.75 * len(drawn), "most variants are not a bright mark"
    marks = [t for t in drawn if t.kind != "blend"]
    centre = [t for t in marks if 8 <= t.row <= 16 and 8 <= t.col <= 16]
    corners = [t for t in marks if t.row in (0, 24) and t.col in (0, 24)]
    assert centre, "some triggers sit in the middle of the digit, not near an edge"
    assert len(corners) < 20, "the public corner is no better a guess than anywhere else"


def test_evasion_variants_attack_other_test_images():
    loaded = scenario.load("evasion-01")
    variant = variants.draw_variant(loaded, 3)
    assert loaded.evaluation.subset_seed is None
    assert variant.evaluation.subset_seed is not None
    assert variant.evaluation.subset == loaded.evaluation.subset


def test_miface_variants_start_from_other_noise_and_step_otherwise():
    """A model shaped around the public attack's noise scales or step size meets others.
    Measured on variants 0-11: the reference scored 100 on each, the starter and the
    dead-units gaming submission 0."""
    loaded = scenario.load("inversion-01")
    drawn = [variants.draw_variant(loaded, seed).attack for seed in range(40)]
    assert len({tuple(attack.noise_scales) for attack in drawn}) > 30
    assert {attack.learning_rate for attack in drawn} == {0.05, 0.1, 0.2}
    assert {attack.auxiliary_samples for attack in drawn} == {2, 3}
    assert all(0.1 <= low <= 0.3 and 0.4 <= high <= 0.6 for low, high in (a.noise_scales for a in drawn))
    assert all(attack.max_iter == loaded.attack.max_iter for attack in drawn)


def test_the_trainees_variant_seed_is_stable_and_not_the_scenario_seed():
    loaded = scenario.load("poisoning-01")
    assert variants.trainee_variant_seed(loaded) == variants.trainee_variant_seed(loaded)
    assert variants.trainee_variant_seed(loaded) != loaded.seed


def test_drawing_a_variant_imports_no_numpy_or_torch():
    probe = (
        "import sys\n"
        "from secureml import scenario, variants\n"
        "variants.draw_variant(scenario.load('poisoning-01'), 1)\n"
        "print(','.join(m for m in ('numpy', 'torch', 'art') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_run_refuses_both_seed_and_variant(tmp_path):
    result = secureml("run", "poisoning-01", "--variant", "auto", "--seed", "3", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "--variant-seed" in result.stderr and "Traceback" not in result.stderr


def _tiny_poisoning(tmp_path):
    tiny = tmp_path / "poisoning-01.yaml"
    text = (REPO / "scenarios" / "poisoning-01.yaml").read_text().replace("../labs/", f"{REPO}/labs/")
    text = text.replace("train_size: 4000", "train_size: 1200").replace("test_size: 1000", "test_size: 300")
    text = text.replace("epochs: 6", "epochs: 2").replace(
        "baselines: [activation-defence, spectral-signature]", "baselines: []"
    )
    tiny.write_text(text[: text.index("expected:")])
    return tiny


def test_run_variant_auto_runs_a_variant_and_records_its_seed(tmp_path):
    tiny = _tiny_poisoning(tmp_path)
    payload = run_json(str(tiny), "--variant", "auto", out=tmp_path / "a")
    public = scenario.load(tiny)
    expected_seed = variants.trainee_variant_seed(public)
    assert payload["variant"] == {"kind": "auto", "variant_seed": expected_seed}
    assert payload["seed"] == variants.draw_variant(public, expected_seed).seed != public.seed
    chosen = run_json(str(tiny), "--variant-seed", "11", out=tmp_path / "b")
    assert chosen["variant"]["variant_seed"] == 11
    assert chosen["config_sha256"] == variants.draw_variant(public, 11).config_sha256()
    assert json.loads((tmp_path / "b" / "results.json").read_text())["variant"]["variant_seed"] == 11


def test_run_variant_auto_redraws_a_variant_that_cannot_be_built_as_the_grader_does(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from secureml import runner
    from secureml.cli import cli

    tiny = _tiny_poisoning(tmp_path)
    public = scenario.load(tiny)
    first = variants.draw_variant(public, 11)
    prepare = runner.prepare_stage

    def refuse_the_first_draw(variant):
        if variant.config_sha256() == first.config_sha256():
            raise scenario.ConfigError("the backdoor did not take hold", field="attack")

    built = []

    def prepare_stage(variant, ctx, watch=None):
        built.append(variant.config_sha256())
        refuse_the_first_draw(variant)
        return prepare(variant, ctx, watch)

    monkeypatch.setattr(runner, "prepare_stage", prepare_stage)
    result = CliRunner().invoke(cli, ["run", str(tiny), "--variant-seed", "11", "--json", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    expected = variants.first_valid_variant(public, 11, refuse_the_first_draw)
    assert payload["config_sha256"] == expected.config_sha256() != first.config_sha256()
    assert built == [first.config_sha256(), expected.config_sha256()], "the accepted variant's stage is built once"
    assert payload["variant"]["variant_seed"] == 11


def test_an_override_that_changes_the_trigger_kind_replaces_the_trigger(tmp_path):
    loaded = scenario.load("poisoning-01")
    hidden = tmp_path / "hidden.yaml"
    hidden.write_text("attack:\n  trigger: {kind: blend, row: 0, col: 0, size: 28, alpha: 0.2}\n")
    trigger = scenario.apply_overrides(loaded, hidden).attack.trigger
    assert trigger.kind == "blend" and not hasattr(trigger, "pixel_value")
    hidden.write_text("attack:\n  trigger: {row: 0, col: 0}\n")
    moved = scenario.apply_overrides(loaded, hidden).attack.trigger
    assert moved.kind == "pattern" and moved.pixel_value == loaded.attack.trigger.pixel_value


def test_a_trigger_outside_the_image_names_the_field_and_the_limit(tmp_path):
    loaded = scenario.load("poisoning-01")
    hidden = tmp_path / "hidden.yaml"
    hidden.write_text("attack:\n  trigger: {kind: checker, size: 5, row: 25, col: 0}\n")
    with pytest.raises(scenario.ConfigError) as caught:
        scenario.apply_overrides(loaded, hidden)
    assert "attack.trigger must fit inside the 28x28 images" in caught.value.message()
    assert "row <= 23" in caught.value.message()


@pytest.mark.parametrize(
    ("arguments", "environment", "meets_a_variant"),
    [([], {}, True), (["--variant", "none"], {}, False), ([], {"SECUREML_GRADE_VARIANT": "none"}, False),
     (["--variant-seed", "5"], {"SECUREML_GRADE_VARIANT": "none"}, True)],
)
def test_grade_meets_an_automatic_variant_unless_told_none(arguments, environment, meets_a_variant, tmp_path,
                                                           monkeypatch):
    from click.testing import CliRunner

    from secureml import grading
    from secureml.cli import cli

    graded_with = []

    def grade_workshop(loaded, submissions, book, settings, **options):
        graded_with.append(settings)
        raise SystemExit(0)  # the settings are all this test needs: grade nothing

    monkeypatch.setattr(grading, "grade_workshop", grade_workshop)
    monkeypatch.delenv("SECUREML_GRADE_VARIANT", raising=False)
    (tmp_path / "alice.py").write_text("def sanitize(x, y, tools):\n    return list(range(len(y)))\n")
    command = ["grade", "poisoning-01", str(tmp_path), "--db", str(tmp_path / "g.db"), "--unsafe", *arguments]
    CliRunner().invoke(cli, command, env=environment)
    (settings,) = graded_with
    assert settings.automatic_variant is meets_a_variant
    assert settings.variant_seed == (5 if "--variant-seed" in arguments else None)


def test_a_refused_variant_gives_way_to_the_next_one_drawn_from_the_same_seed():
    # A variant's stage refuses it (ConfigError) when, e.g., its backdoor did not take hold:
    # poisoning-02's clean-label attack missed on 7 of its variants 0-7.
    loaded = scenario.load("poisoning-02")
    tried = []

    def build(variant):
        tried.append(variant.config_sha256())
        if len(tried) % 3:  # refuse two, accept the third
            raise scenario.ConfigError("the backdoor did not take hold", field="attack")

    chosen = variants.first_valid_variant(loaded, 7, build)
    assert chosen.config_sha256() == tried[2] and len(set(tried)) == 3
    assert tried[0] == variants.draw_variant(loaded, 7).config_sha256()
    assert variants.first_valid_variant(loaded, 7, build) == chosen, "the same seed ends at the same variant"

    def refuse_all(variant):
        raise scenario.ConfigError("the backdoor did not take hold", field="attack")

    with pytest.raises(scenario.ConfigError) as caught:
        variants.first_valid_variant(loaded, 7, refuse_all)
    message = caught.value.message()
    assert f"none of the {variants.DRAWS} automatic variants" in message and "did not take hold" in message
    assert "--variant none" in message
