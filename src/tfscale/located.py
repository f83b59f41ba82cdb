"""YAML with line numbers for config.py: parsing (safe constructs only, no duplicate keys),
`--set key=value` overrides, and a pydantic error turned into a ConfigError that names the
file, the line and the dotted field of the value at fault (or the `--set` that caused it)."""

from __future__ import annotations

import difflib
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tfscale.errors import ConfigError


class FieldAt(ValueError):
    """A rule across fields, broken at `loc` (relative to the model that checks it), so the
    error points at the line and field at fault, not at the model's first line."""

    def __init__(self, loc: tuple[Any, ...], message: str):
        super().__init__(message)
        self.loc = loc


class Tree:
    def __init__(self, data: dict[str, Any], node: yaml.Node):
        self.data, self.node = data, node


def parse(text: str, file: str) -> Tree:
    if not text.strip():
        raise ConfigError("file is empty; an experiment needs name, workload and groups", file=file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError):
            problem = f"{problem} (tags that construct objects are not allowed)"
        raise ConfigError(problem, file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None
    if node is None or data is None:
        raise ConfigError("file is empty; an experiment needs name, workload and groups", file=file)
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping of fields (name, workload, groups, ...), got {type(data).__name__}",
            file=file,
            line=node.start_mark.line + 1,
        )
    _reject_duplicate_keys(node, file, "")
    return Tree(data, node)


def _reject_duplicate_keys(node: yaml.Node, file: str, prefix: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = f"{prefix}{key.value}"
            if key.value in seen:
                raise ConfigError(
                    "key appears twice", field=name, file=file, line=key.start_mark.line + 1
                )
            seen.add(key.value)
            _reject_duplicate_keys(value, file, name + ".")
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _reject_duplicate_keys(value, file, f"{prefix[:-1]}[{i}].")


def _line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    line = node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(key)]
            if not match:
                break
            line, node = match[0][0].start_mark.line + 1, match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def first_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = _dotted(_data_loc(error["loc"]))
    if error["type"] == "extra_forbidden":
        return f"unknown field {field!r}; a range takes start, stop and factor"
    return f"{field}: {_message(error)}" if field else _message(error)


def _data_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds union branch names such as 'int' or 'list[int]' to locations
    return tuple(
        part for part in loc if isinstance(part, int) or not re.search(r"[\[\]]|^int$|^str$", part)
    )


def _message(error: dict[str, Any]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        return "use letters, digits, '_', '.' and '-' only, not starting with '.' or '-'"
    return (
        f"{msg} (got {error['input']!r})" if "input" in error and kind != "extra_forbidden" else msg
    )


def _known_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for key in loc:
        if isinstance(key, int):
            continue
        field = model.model_fields.get(key) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
        for arg in list(candidates):
            candidates += list(getattr(arg, "__args__", ()))
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not models:
            return []
        model = models[0]
    return list(model.model_fields)


def _cross_field_loc(error: dict[str, Any]) -> tuple[Any, ...]:
    """Where a model's own rule (FieldAt) was broken, below the model's location."""
    cause = error.get("ctx", {}).get("error")
    return cause.loc if isinstance(cause, FieldAt) else ()


def located(
    exc: ValidationError, tree: Tree, file: str, overridden: list[str], model: type[BaseModel]
) -> ConfigError:
    """The first of a model's validation errors as a ConfigError at the line of its field (or
    at the `--set` that caused it)."""
    # an unknown key first: it usually explains a "missing" one (a typo)
    errors = sorted(
        exc.errors(),
        key=lambda e: (e["type"] != "extra_forbidden", _line_of(tree.node, _data_loc(e["loc"]))),
    )
    error = errors[0]
    loc = _data_loc(error["loc"]) + _cross_field_loc(error)
    field = _dotted(loc) or None
    message = _message(error)
    if error["type"] == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        message = "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        if known:
            message += f"; known fields: {', '.join(known)}"
    for path in overridden:
        if field and (
            field == path
            or field.startswith((path + ".", path + "["))
            or path.startswith(field + ".")
        ):
            return ConfigError(message, field=f"--set {path}")
    return ConfigError(message, field=field, file=file, line=_line_of(tree.node, loc))


def apply_override(data: dict[str, Any], item: str) -> str:
    """Apply one `key.sub=value` (value read as YAML) to raw config data; return the key."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(
            f"expected KEY=VALUE such as workload.k=2048, got {item!r}", field="--set"
        )
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"value is not valid YAML: {exc}", field=f"--set {key}") from None
    parts = key.split(".")
    target = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(target.get(part, {}), dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a mapping", field=f"--set {key}")
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return key
