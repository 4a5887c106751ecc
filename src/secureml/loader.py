"""Loading scenario files: YAML with the line of every key, validation against the family's
schema, hidden-variant overrides, and errors that point at the offending line.

The schema lives in `secureml.scenario`; the families' schemas in `secureml.families`. This
module sits above both, so neither imports it back.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from secureml import paths
from secureml.errors import ConfigError, ConfigErrors
from secureml.families import FAMILIES
from secureml.scenario import ScenarioBase
from secureml.text import truncate

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


def load(id_or_path: str | Path) -> ScenarioBase:
    """Load and validate one scenario; raises ConfigError/ConfigErrors naming file and field."""
    path = paths.resolve(str(id_or_path))
    raw, lines = read_yaml(path)
    return validate(raw, lines, path)


def load_all() -> list[ScenarioBase]:
    return [load(path) for path in paths.scenario_files()]


# libyaml's safe loader when PyYAML was built with it (the wheels are): the same documents,
# errors and marks, in a fraction of the time (`secureml list` reads every scenario file).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML safely; also return the line of each key path and reject duplicate keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the file ({error.strerror})", file=str(path)) from error
    except UnicodeDecodeError as error:
        raise ConfigError("the file is not UTF-8 text", file=str(path)) from error
    try:
        parser = SAFE_LOADER(text)
        try:
            node = parser.get_single_node()  # parsed once: the lines come from the node
            data = parser.construct_document(node) if node is not None else None
        finally:
            parser.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            f"not valid YAML{where}: {problem}",
            file=str(path),
            fix="check indentation and quoting near that line",
        ) from error
    lines: dict[tuple, int] = {}
    duplicates: list[ConfigError] = []
    _index_lines(node, (), lines, duplicates, str(path))
    if duplicates:
        raise ConfigErrors(duplicates)
    return data, lines


def _index_lines(node, prefix: tuple, lines: dict, duplicates: list, file: str) -> None:
    if node is None:
        return
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            path = (*prefix, key)
            if key in seen:
                duplicates.append(
                    ConfigError(
                        f"key '{key}' appears twice (line {key_node.start_mark.line + 1})",
                        file=file,
                        field=_dotted(path),
                        fix="keep one of them; YAML would silently use the last",
                    )
                )
            seen.add(key)
            lines[path] = key_node.start_mark.line + 1
            _index_lines(value_node, path, lines, duplicates, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*prefix, index), lines, duplicates, file)


def validate(raw: Any, lines: Mapping[tuple, int], path: Path) -> ScenarioBase:
    """Validate parsed YAML against its family's schema; `lines` maps key paths to lines."""
    file = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            "the file must be a mapping of keys to values",
            file=file,
            expected="a YAML mapping (id: ..., title: ..., family: ...)",
            found=type(raw).__name__ if raw is not None else "an empty file",
        )
    family = raw.get("family")
    if family not in FAMILIES:
        raise ConfigError(
            "unknown or missing family",
            file=_with_line(file, lines, ("family",)),
            field="family",
            expected="one of: " + ", ".join(sorted(FAMILIES)),
            found=repr(family),
            fix="set 'family:' to one of the families above",
        )
    schema = FAMILIES[family].schema
    try:
        scenario = schema.model_validate(raw)
    except ValidationError as error:
        raise ConfigErrors(
            [_explain(item, schema, raw, lines, file) for item in error.errors()]
        ) from error
    if scenario.id != path.stem:
        raise ConfigError(
            "the id must match the file name",
            file=_with_line(file, lines, ("id",)),
            field="id",
            expected=repr(path.stem),
            found=repr(scenario.id),
            fix=f"rename the file to {scenario.id}.yaml or set id: {path.stem}",
        )
    return scenario.model_copy(update={"source": path.resolve()})


def apply_overrides(scenario: ScenarioBase, overrides_path: Path) -> ScenarioBase:
    """Deep-merge a hidden-variant overrides file into a scenario and validate the result."""
    overrides, lines = read_yaml(overrides_path)
    return merge_overrides(scenario, overrides, origin=str(overrides_path), lines=lines)


def merge_overrides(
    scenario: ScenarioBase, overrides: Any, *, origin: str, lines: Mapping[tuple, int] | None = None
) -> ScenarioBase:
    """Deep-merge overrides (a `--hidden` file's or an automatic variant's) into a scenario and
    validate the result with the scenario's own schema.

    origin: where the overrides came from, named in errors (a file, or a variant).
    """
    if not isinstance(overrides, dict):
        raise ConfigError(
            "the overrides must be a mapping",
            file=origin,
            expected="keys of the scenario schema, e.g. 'seed: 7' or 'attack: {target_class: 3}'",
            found=type(overrides).__name__,
        )
    for forbidden in ("id", "family"):
        if forbidden in overrides:
            raise ConfigError(
                f"'{forbidden}' cannot be overridden",
                file=origin,
                field=forbidden,
                fix="a hidden variant changes how the scenario runs, not which scenario it is",
            )
    base = scenario.model_dump(mode="json", exclude={"source"})
    merged = _deep_merge(base, overrides)
    merged_scenario = validate(merged, lines or {}, scenario.source or Path(origin))
    return merged_scenario.model_copy(update={"source": scenario.source})


# Keys that say which member of a union a section is (`attack.name`, `trigger.kind`).
_UNION_TAGS = ("name", "kind", "method")


def _deep_merge(base: dict, update: Mapping) -> dict:
    """Merge `update` into `base`, mapping by mapping. A section whose union tag changes
    (e.g. a trigger's `kind`) is replaced, not merged: the old member's keys would not fit."""
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        changes_member = isinstance(value, Mapping) and isinstance(old, dict) and any(
            tag in value and tag in old and value[tag] != old[tag] for tag in _UNION_TAGS
        )
        if isinstance(value, Mapping) and isinstance(old, dict) and not changes_member:
            merged[key] = _deep_merge(old, value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- error text

# Keys older scenario files have that the schema no longer reads: the fix says why.
RETIRED_KEYS = {
    "mitigation.function": "delete this line: the family declares the function the trainee "
    "writes (`secureml show ID` prints it), so the scenario file no longer names it",
}


def _explain(item: ErrorDetails, schema: type[BaseModel], raw: Any, lines, file: str) -> ConfigError:
    """Turn one pydantic error into: file:line, dotted field, expected, found, fix."""
    loc = _strip_union_tags(schema, raw, tuple(item["loc"]))
    field = _dotted(loc)
    kind = item["type"]
    where = _with_line(file, lines, loc)
    if kind == "extra_forbidden":
        known = _known_keys(schema, raw, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        fix = f"did you mean '{close[0]}'?" if close else "remove it"
        if field in RETIRED_KEYS:
            fix = RETIRED_KEYS[field]
        return ConfigError(
            "unknown key",
            file=where,
            field=field,
            expected="one of: " + ", ".join(known),
            found=repr(loc[-1]),
            fix=fix,
        )
    if kind == "missing":
        return ConfigError(
            "required key is missing",
            file=_with_line(file, lines, loc[:-1]),
            field=field,
            expected=_describe_type(schema, raw, loc),
            found="nothing",
            fix=f"add '{loc[-1]}:' "
            + (f"under '{_dotted(loc[:-1])}'" if loc[:-1] else "at the top level"),
        )
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        context = item.get("ctx", {})
        tag_field = str(context.get("discriminator", "name")).strip("'")
        return ConfigError(
            "unknown or missing kind",
            file=where,
            field=_dotted((*loc, tag_field)),
            expected="one of: " + str(context.get("expected_tags", "")).replace("'", ""),
            found=repr(context.get("tag")),
            fix=f"set '{tag_field}' to one of the values above",
        )
    message = item["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    expected = message.removeprefix("Input should be ").removeprefix("String should ")
    # "a valid integer, unable to parse string as an integer" -> "a valid integer"
    expected = expected.split(", unable to")[0]
    return ConfigError(
        "invalid value",
        file=where,
        field=field or "(the scenario as a whole)",
        expected=expected,
        found=_short_repr(item.get("input")),
        fix=f"set '{field}' to {expected}" if field else "see the expected value above",
    )


def _strip_union_tags(schema, raw, loc: tuple) -> tuple:
    """Discriminated unions add the tag to the error path; people never wrote it, drop it."""
    cleaned: list = []
    model: Any = schema
    value: Any = raw
    for part in loc:
        fields = _fields_of(model, value)
        if fields is not None and isinstance(part, str) and part not in fields:
            variants = _union_variants(model)
            if variants and part in variants:
                model = variants[part]
                continue
        cleaned.append(part)
        model, value = _descend(model, value, part)
    return tuple(cleaned)


def _union_variants(annotation) -> dict[str, type[BaseModel]] | None:
    members = _union_members(annotation)
    if not members:
        return None
    variants: dict[str, type[BaseModel]] = {}
    for member in members:
        for name, info in member.model_fields.items():
            tag = typing.get_args(info.annotation)
            if typing.get_origin(info.annotation) is Literal and name in _UNION_TAGS:
                for value in tag:
                    variants[value] = member
    return variants


def _union_members(annotation) -> list[type[BaseModel]]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [
            arg
            for arg in typing.get_args(annotation)
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        ]
    return []


def _unwrap(annotation):
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _fields_of(model, value) -> dict | None:
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_fields
    members = _union_members(model)
    if members and isinstance(value, dict):
        for member in members:
            for name, info in member.model_fields.items():
                if typing.get_origin(info.annotation) is Literal and value.get(name) in typing.get_args(
                    info.annotation
                ):
                    return member.model_fields
    return None


def _descend(model, value, part):
    model = _unwrap(model)
    child_value = value.get(part) if isinstance(value, dict) else None
    fields = _fields_of(model, value)
    if fields is not None and part in fields:
        return fields[part].annotation, child_value
    origin = typing.get_origin(model)
    if origin in (dict, Mapping) and typing.get_args(model):
        return typing.get_args(model)[1], child_value
    if origin in (list, tuple) and typing.get_args(model):
        item = value[part] if isinstance(value, list) and isinstance(part, int) and part < len(value) else None
        return typing.get_args(model)[0], item
    return None, child_value


def _known_keys(schema, raw, loc: tuple) -> list[str]:
    model: Any = schema
    value: Any = raw
    for part in loc:
        model, value = _descend(model, value, part)
    fields = _fields_of(model, value)
    if fields is None:
        return []
    return [name for name, info in fields.items() if not info.exclude]


def _describe_type(schema, raw, loc: tuple) -> str:
    model: Any = schema
    value: Any = raw
    for part in loc:
        model, value = _descend(model, value, part)
    info_description = None
    parent: Any = schema
    parent_value: Any = raw
    for part in loc[:-1]:
        parent, parent_value = _descend(parent, parent_value, part)
    fields = _fields_of(parent, parent_value)
    if fields and loc and loc[-1] in fields:
        info_description = fields[loc[-1]].description
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        text = "a mapping with keys: " + ", ".join(_known_keys(schema, raw, loc))
    elif _union_members(model):
        variants = _union_variants(model) or {}
        text = "a mapping whose 'name' is one of: " + ", ".join(sorted(variants))
    else:
        text = getattr(model, "__name__", None) or str(model).replace("typing.", "")
    return f"{text} ({info_description})" if info_description else text


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _with_line(file: str, lines: Mapping[tuple, int], loc: tuple) -> str:
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return f"{file}:{line}"
    return file


def _short_repr(value: Any, limit: int = 80) -> str:
    return truncate(repr(value), limit)
