"""Reading the config: TOML file, ``--set`` overrides, validation, a ``key.path: message`` per problem."""

from __future__ import annotations

import copy
import difflib
import logging
import re
import tomllib
import types
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from edge.config.models import Config
from edge.errors import ConfigError

logger = logging.getLogger(__name__)

_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SET_HINT = "expected key.path=value, e.g. detector.conf=0.3 or camera.path=/data/x"
_HIDDEN_FIELDS = {"password"}  # accepted only to be rejected with a hint; never suggest it
_OPERATORS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_TYPE_MESSAGES = {
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be a string (in quotes)", "list_type": 'must be a list, e.g. ["a", "b"]',
    "tuple_type": 'must be a list, e.g. ["a", "b"]', "path_type": "must be a path (a string)",
    "finite_number": "must be a finite number",
}
_OPERATOR_KEYS = {
    "greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


class InvalidConfigError(ConfigError):
    """The config could not be loaded; ``problems`` holds one ``key.path: message`` line each."""

    def __init__(self, problems: Sequence[str], *, source: str = "") -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
        self.source = source


def load_config(path: Path, *, overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate a TOML config file.

    Args:
        path: the TOML file.
        overrides: ``key.path=value`` strings (``--set``), applied before validation; the value is read
            as a TOML value when it parses as one, else taken as a bare string.

    Raises:
        InvalidConfigError: (a ConfigError) the file is missing or not TOML, an override is malformed,
            or values are invalid; ``problems`` lists them.
    """
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise InvalidConfigError([f"{path}: no such file"], source=str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise InvalidConfigError([f"{path}: invalid TOML: {err}"], source=str(path)) from err
    except OSError as err:
        raise InvalidConfigError([f"{path}: cannot read: {err.strerror or err}"], source=str(path)) from err
    config = config_from_dict(data, overrides=overrides, source=str(path))
    logger.debug("config %s loaded (%d overrides)", path, len(overrides))
    return config


def config_from_dict(data: Mapping[str, Any], *, overrides: Sequence[str] = (), source: str = "") -> Config:
    """Validate an already-parsed config table, after applying ``--set`` overrides to a copy.

    Raises:
        InvalidConfigError: an override is malformed or values are invalid.
    """
    data = copy.deepcopy(dict(data))
    problems: list[str] = []
    overridden: set[str] = set()
    for text in overrides:
        try:
            overridden.add(apply_override(data, text))
        except ValueError as err:
            problems.append(f"--set {text!r}: {err}")
    if problems:
        raise InvalidConfigError(problems, source=source)
    from edge.config.profiles import ProfileError, apply_profile

    try:  # [device] profile: its keys fill in what the file and --set leave out
        data = apply_profile(data)
    except ProfileError as err:
        raise InvalidConfigError([f"device.profile: {err}"], source=source) from None
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        problems = [format_error(error, data, overridden=overridden) for error in err.errors()]
        raise InvalidConfigError(problems, source=source) from None


def parse_override_value(text: str) -> Any:
    """A ``--set`` value: a TOML value when it parses as one (``0.3``, ``["a"]``, ``"x"``), else the text."""
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # A value with a newline could smuggle in more keys; then it is no single TOML value.
    return parsed["v"] if parsed.keys() == {"v"} else text


def apply_override(data: dict[str, Any], text: str) -> str:
    """Set ``key.path=value`` in ``data``, creating missing tables; returns the key path.

    Raises:
        ValueError: the text is not ``key.path=value``, or a key on the way is not a table.
    """
    key_text, sep, value_text = text.partition("=")
    keys = key_text.strip().split(".")
    if not sep or not all(_KEY.fullmatch(key) for key in keys):
        raise ValueError(_SET_HINT)
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"{'.'.join(keys[:depth + 1])} is a value, not a table")
        node = child
    node[keys[-1]] = parse_override_value(value_text.strip())
    return ".".join(keys)


# --- turning pydantic errors into `key.path: message` ------------------------------------------------


def format_error(error: ErrorDetails, data: Mapping[str, Any], *, overridden: Set[str] = frozenset()) -> str:
    """One ``key.path: message`` line for one pydantic error."""
    loc = _strip_tags(list(error["loc"]), data)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("type")
    path = _render(loc)
    if kind == "config_problem":
        at = str(ctx.get("at", ""))
        path = f"{path}.{at}" if path and at else path or at
    message = _message(error, loc, data)
    if kind == "string_type" and path in overridden:
        message += f" (quote it: --set '{path}=\"...\"')"
    return f"{path}: {message}" if path else message


def _message(error: ErrorDetails, loc: list[str | int], data: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        return "unknown key" + _key_hint(loc, data)
    if kind == "missing":
        if len(loc) == 1:
            return f"missing: add a [{loc[0]}] section"
        return "missing (required)"
    if kind == "union_tag_not_found":
        return f"missing: one of {', '.join(repr(tag) for tag in _union_tags(loc[:-1], data))}"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags')} (got {_show(ctx.get('tag'))})"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "config_problem":
        return error["msg"]
    if kind in _OPERATORS:
        return f"must be {_OPERATORS[kind]} {_show(ctx.get(_OPERATOR_KEYS[kind]))} (got {_show(value)})"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')} (got {_show(value)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a table (got {_show(value)})"
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]} (got {_show(value)})"
    message = error["msg"].replace("Input should be ", "must be ")
    return f"{message[:1].lower()}{message[1:]} (got {_show(value)})"


def _strip_tags(loc: list[Any], data: Mapping[str, Any]) -> list[str | int]:
    """Drop the ``type`` tag pydantic inserts into the location of a discriminated union member."""
    node: Any = data
    out: list[str | int] = []
    for item in loc:
        if isinstance(node, Mapping) and item == node.get("type") and item not in node:
            continue
        out.append(item)
        if isinstance(node, Mapping) and isinstance(item, str):
            node = node.get(item)
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            node = node[item]
        else:
            node = None
    return out


def _render(loc: Sequence[str | int]) -> str:
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else f".{item}" if text else str(item)
    return text


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Annotated:  # a discriminated union, possibly inside an Optional
        return _models(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [model for arg in get_args(annotation) for model in _models(arg)]
    return []


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    return str(get_args(field.annotation)[0])


def _candidates(
        path: Sequence[str | int], data: Mapping[str, Any],
) -> tuple[type[BaseModel] | None, list[type[BaseModel]]]:
    """The model at ``path`` (chosen by the data's ``type`` for a union) and its union siblings."""
    model: type[BaseModel] = Config
    node: Any = data
    siblings: list[type[BaseModel]] = []
    for key in path:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return None, []
        node = node.get(key) if isinstance(node, Mapping) else None
        options = _models(field.annotation)
        tag = node.get("type") if isinstance(node, Mapping) else None
        chosen = [option for option in options if len(options) == 1 or _tag(option) == tag]
        if not chosen:
            return None, []
        model, siblings = chosen[0], [option for option in options if option is not chosen[0]]
    return model, siblings


def _union_tags(loc: Sequence[str | int], data: Mapping[str, Any]) -> list[str]:
    """The ``type`` values allowed for the union section at ``loc``."""
    parent, _ = _candidates(loc[:-1], data)
    field = parent.model_fields.get(str(loc[-1])) if parent is not None and loc else None
    tags = [_tag(model) for model in _models(field.annotation)] if field is not None else []
    return [tag for tag in tags if tag is not None]


def _key_hint(loc: Sequence[str | int], data: Mapping[str, Any]) -> str:
    key = loc[-1] if loc else ""
    model, siblings = _candidates(loc[:-1], data)
    if model is None or not isinstance(key, str):
        return ""
    allowed = [name for name in model.model_fields if name not in _HIDDEN_FIELDS]
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    owners = [_tag(sibling) for sibling in siblings if key in sibling.model_fields]
    if owners:
        return f" (only for type = {' or '.join(repr(owner) for owner in owners)})"
    return f" (allowed: {', '.join(allowed)})"
