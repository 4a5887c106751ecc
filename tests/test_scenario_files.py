"""Scenario files: every shipped file is valid, and every kind of bad input gets one
readable message naming the file, the field, what was expected and what was found."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import REPO, secureml
from secureml import scenario
from secureml.cli import cli
from secureml.errors import ConfigError

SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))


def _variant(tmp_path: Path, edit, name: str = "poisoning-01") -> Path:
    """A copy of poisoning-01 with `edit(dict)` applied, written where tests can break it."""
    data = yaml.safe_load((REPO / "scenarios" / "poisoning-01.yaml").read_text())
    data["mitigation"]["starter"] = str(REPO / "labs/poisoning-01/mitigation.py")
    data["mitigation"]["solution"] = str(REPO / "labs/poisoning-01/solution.py")
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _message(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        scenario.load(path)
    return caught.value.message()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_is_valid(path):
    loaded = scenario.load(path)
    assert loaded.id == path.stem
    assert loaded.starter_path.is_file() and loaded.solution_path.is_file()
    assert loaded.scoring_formula()


def test_check_command_accepts_all_shipped_scenarios():
    result = CliRunner().invoke(cli, ["check", *map(str, SHIPPED)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") == len(SHIPPED)


def test_unknown_key_names_file_line_field_and_suggests_the_spelling(tmp_path):
    path = _variant(tmp_path, lambda d: d["victim"].update(epoch=3))
    message = _message(path)
    assert str(path) in message
    assert re.search(r"poisoning-01\.yaml:\d+", message), message
    assert "victim.epoch" in message
    assert "unknown key" in message
    assert "did you mean 'epochs'" in message


def test_unknown_key_inside_a_tagged_attack_lists_that_attack_s_keys(tmp_path):
    path = _variant(tmp_path, lambda d: d["attack"].update(poison_fractoin=0.2))
    message = _message(path)
    assert "attack.poison_fractoin" in message
    assert "poison_fraction" in message


def test_missing_key_says_what_to_add(tmp_path):
    path = _variant(tmp_path, lambda d: d.pop("seed"))
    message = _message(path)
    assert "field 'seed'" in message
    assert "required key is missing" in message
    assert "add 'seed:'" in message


def test_wrong_type_shows_expected_and_found(tmp_path):
    path = _variant(tmp_path, lambda d: d["victim"].update(epochs="many"))
    message = _message(path)
    assert "victim.epochs" in message
    assert "expected: a valid integer" in message
    assert "found:    'many'" in message


def test_value_out_of_range_is_rejected(tmp_path):
    path = _variant(tmp_path, lambda d: d["attack"].update(poison_fraction=0.9))
    assert "attack.poison_fraction" in _message(path)


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    path = _variant(tmp_path, lambda d: d["dataset"].update(name="imagenet"))
    message = _message(path)
    assert "dataset.name" in message and "mnist-5k" in message and "'imagenet'" in message


def test_a_distortion_out_of_range_names_its_field(tmp_path):
    path = _variant(tmp_path, lambda d: d["dataset"].update(distort={"alpha": 34, "sigma": 0.5}))
    message = _message(path)
    assert "dataset.distort.sigma" in message and "0.5" in message


def test_unknown_architecture_lists_the_known_ones(tmp_path):
    path = _variant(tmp_path, lambda d: d["victim"].update(arch="vit"))
    message = _message(path)
    assert "victim.arch" in message and "cnn" in message


def test_unknown_attack_name_lists_the_attacks(tmp_path):
    path = _variant(tmp_path, lambda d: d["attack"].update(name="sleeper"))
    message = _message(path)
    assert "attack" in message and "badnets" in message and "clean-label" in message


def test_unknown_family_lists_the_families(tmp_path):
    path = _variant(tmp_path, lambda d: d.update(family="telepathy"))
    message = _message(path)
    assert "field 'family'" in message and "poisoning" in message


def test_target_class_beyond_the_dataset_is_rejected(tmp_path):
    path = _variant(tmp_path, lambda d: d["attack"].update(target_class=12))
    assert "target_class" in _message(path)


def test_the_function_is_the_familys_so_a_file_naming_one_is_told_to_drop_it(tmp_path):
    path = _variant(tmp_path, lambda d: d["mitigation"].update(function="harden"))
    message = _message(path)
    assert "mitigation.function" in message and "delete this line" in message and "did you mean" not in message


def test_every_scenario_names_its_owasp_ml_top_10_risk_by_family():
    expected = {"evasion": "ML01", "poisoning": "ML02", "inversion": "ML03", "membership": "ML04", "extraction": "ML05"}
    for loaded in scenario.load_all():
        assert loaded.owasp == expected[loaded.family.split("-")[0]], loaded.id


def test_an_unknown_owasp_id_is_refused_with_the_list(tmp_path):
    path = _variant(tmp_path, lambda d: d.update(owasp="ML11"))
    message = _message(path)
    assert "owasp" in message and "ML10" in message


def test_atlas_ids_are_checked(tmp_path):
    path = _variant(tmp_path, lambda d: d["atlas"].update(technique="T0020"))
    assert "atlas.technique" in _message(path)


def test_id_must_match_the_file_name(tmp_path):
    path = _variant(tmp_path, lambda d: None, name="renamed")
    message = _message(path)
    assert "field 'id'" in message and "renamed" in message


def test_duplicate_keys_are_errors_not_silently_overwritten(tmp_path):
    path = tmp_path / "poisoning-01.yaml"
    text = (REPO / "scenarios/poisoning-01.yaml").read_text()
    path.write_text(text.replace("seed: 1234", "seed: 1234\nseed: 99"))
    message = _message(path)
    assert "appears twice" in message and "seed" in message


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = tmp_path / "poisoning-01.yaml"
    path.write_text("id: poisoning-01\nvictim: [unclosed\n")
    message = _message(path)
    assert "not valid YAML" in message and "line" in message


def test_empty_file_is_explained(tmp_path):
    path = tmp_path / "poisoning-01.yaml"
    path.write_text("")
    assert "an empty file" in _message(path)


def test_several_problems_are_reported_together(tmp_path):
    def break_two(d):
        d["victim"]["epochs"] = -1
        d["dataset"]["train_size"] = "all"

    message = _message(_variant(tmp_path, break_two))
    assert "victim.epochs" in message and "dataset.train_size" in message


def test_unknown_scenario_id_suggests_a_close_one():
    with pytest.raises(ConfigError) as caught:
        scenario.load("poisoning-1")
    assert "did you mean 'poisoning-01'" in caught.value.message()


def test_bad_scenario_exits_2_without_traceback_and_debug_shows_one(tmp_path):
    path = _variant(tmp_path, lambda d: d["victim"].update(epoch=3))
    plain = secureml("show", str(path))
    assert plain.returncode == 2
    assert "victim.epoch" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = secureml("show", str(path), "--debug")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr


def test_check_reports_each_bad_file_and_exits_2(tmp_path):
    good = REPO / "scenarios/poisoning-01.yaml"
    bad = _variant(tmp_path, lambda d: d["victim"].update(arch="vit"))
    result = CliRunner().invoke(cli, ["check", str(good), str(bad)])
    assert result.exit_code == 2
    assert "victim.arch" in result.output


def test_hidden_overrides_are_validated_against_the_same_schema(tmp_path):
    loaded = scenario.load("poisoning-01")
    good = tmp_path / "hidden.yaml"
    good.write_text("seed: 7\nattack:\n  target_class: 3\n  trigger: {row: 1, col: 2}\n")
    variant = scenario.apply_overrides(loaded, good)
    assert variant.seed == 7 and variant.attack.target_class == 3
    assert (variant.attack.trigger.row, variant.attack.trigger.col) == (1, 2)
    assert variant.attack.poison_fraction == loaded.attack.poison_fraction
    assert variant.config_sha256() != loaded.config_sha256()
    bad = tmp_path / "bad.yaml"
    bad.write_text("attack:\n  target_klass: 3\n")
    with pytest.raises(ConfigError) as caught:
        scenario.apply_overrides(loaded, bad)
    assert "attack.target_klass" in caught.value.message()


def test_config_hash_ignores_recorded_expectations():
    loaded = scenario.load("poisoning-01")
    changed = loaded.model_copy(update={"expected": {}})
    assert changed.config_sha256() == loaded.config_sha256()
