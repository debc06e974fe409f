"""Config machinery: frozen dataclasses per stage, loaded from YAML, with `key=value` overrides.

Each stage defines its own config dataclass beside its code (e.g. `rlhf.policy.ppo.PPOConfig`).
Fields carry attribute docstrings (a string literal right after the field); `field_docs` reads them
for `--help` and for the commented YAML that `save_config` writes beside every run.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from rlhf.data import atomic_write

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass, by field name (the string literal after each field)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value against a field's type annotation."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    defaults = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for k, v in data.items():
        f = defaults[k]
        if isinstance(v, dict) and dataclasses.is_dataclass(hints[k]):
            # A partial nested section overrides the field's own default, not the nested class's.
            base = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(base):
                v = _deep_merge(to_dict(base), v)
        kwargs[k] = _coerce(v, hints[k], f"{where}.{k}" if where else k)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def _deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, section by section (a partial nested override keeps the parent's defaults)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    data[parts[-1]] = value


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (), **values: Any
) -> T:
    """Build `cls` from defaults <- YAML file <- `key=value` overrides <- keyword values.

    Overrides use dotted keys for nested sections (`reward.batch_size=8`); values are parsed as YAML
    scalars, so `lr=1e-5`, `lora=false` and `stop=[a,b]` all work.
    """
    data: dict = {}
    src = "config"
    if path is not None:
        path = Path(path)
        src = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys to values")
        data = loaded
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected key=value")
        key, raw = ov.split("=", 1)
        try:
            val = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            val = raw
        _set_dotted(data, key.strip(), val)
    for key, val in values.items():
        if val is not None:
            _set_dotted(data, key, val)
    return _build(cls, data, src if path is not None else "")


def to_dict(cfg: Any) -> dict:
    """Plain-YAML-friendly dict (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def dump_config(cfg: Any) -> str:
    """YAML text of a config with each field's docstring as a comment above it."""
    lines: list[str] = [f"# {type(cfg).__name__} (resolved)"]

    def emit(obj: Any, indent: int) -> None:
        docs = field_docs(type(obj))
        pad = "  " * indent
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if f.name in docs:
                lines.append(f"{pad}# {docs[f.name]}")
            if dataclasses.is_dataclass(v):
                lines.append(f"{pad}{f.name}:")
                emit(v, indent + 1)
            else:
                text = yaml.safe_dump({f.name: to_dict(v)}, default_flow_style=True, width=10**6)
                lines.append(pad + text.strip().removeprefix("{").removesuffix("}"))

    emit(cfg, 0)
    return "\n".join(lines) + "\n"


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config (commented YAML) atomically; returns the path."""
    path = Path(path)
    with atomic_write(path) as fh:
        fh.write(dump_config(cfg))
    return path
