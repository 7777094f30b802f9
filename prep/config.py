"""Typed, TOML-backed configuration shared by every hapflow stage.

One study configuration file holds a section per stage (``[haplotypes]``, ``[expression]``,
``[shard]``, ``[loader]``, ``[train]``, ...). Each stage declares a frozen dataclass whose fields
carry their defaults and a docstring line; :func:`load_config` reads the stage's section, rejects
unknown keys, applies ``--key value`` style CLI overrides and returns the typed object.
:func:`save_config` writes the resolved config next to a stage's outputs (atomically).

Relative paths inside a config file are resolved against the directory holding the file, so a
study folder can be moved as a whole.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "load_toml",
    "load_config",
    "config_to_dict",
    "save_config",
    "atomic_write_bytes",
    "atomic_write_text",
    "workdir_layout",
]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which key and why."""


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML file into a dict; errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def _is_path_field(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get("path"))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (from TOML or a CLI string) to ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        last_err = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except (ConfigError, ValueError, TypeError) as err:
                last_err = err
        raise ConfigError(f"{key}: cannot read {value!r} as {annotation}: {last_err}")
    if origin is dict:
        if isinstance(value, str):  # a CLI value: "a=1,b=0.5"
            pairs = [p.partition("=") for p in value.split(",") if p.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ConfigError(f"{key}: {value!r} is not a table; write name=value,name=value")
            value = {k.strip(): v.strip() for k, _, v in pairs}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: {value!r} is not a table (e.g. {{ name = 1.0 }})")
        kt, vt = args if args else (str, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        inner = args[0] if args else str
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: {value!r} is not a boolean (true/false)")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not an integer") from None
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not a number") from None
    if annotation is str:
        return str(value)
    if annotation is Path:
        return Path(value)
    if annotation is Any:
        return value
    raise ConfigError(f"{key}: unsupported config type {annotation}")


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    section: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> T:
    """Build ``cls`` (a dataclass) from a TOML section plus overrides.

    Parameters
    ----------
    cls : dataclass type
        The stage's config class. Fields with ``metadata={"path": True}`` are paths and are
        resolved relative to the config file's folder.
    path : str or Path, optional
        The study TOML file. ``None`` means defaults plus overrides only.
    section : str, optional
        The TOML table to read (``"shard"``, ``"loader"``, ...); ``None`` reads the top level.
    overrides : dict, optional
        ``{field: value}`` applied last (values may be strings, as from a command line);
        ``None`` values are ignored so unset CLI flags leave the file's value alone.

    Raises
    ------
    ConfigError
        An unknown key, a value of the wrong type or a missing required field.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    raw: dict[str, Any] = {}
    base = Path(".")
    where = "defaults"
    if path is not None:
        data = load_toml(path)
        base = Path(path).resolve().parent
        where = f"{path}" + (f" [{section}]" if section else "")
        if section is not None:
            data = data.get(section, {})
            if not isinstance(data, dict):
                raise ConfigError(f"{where}: expected a table, found {type(data).__name__}")
        else:
            data = {k: v for k, v in data.items() if not isinstance(v, dict)}
        raw.update(data)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; "
            f"{cls.__name__} accepts {', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        value = _coerce(value, hints[name], f"{where}: {name}")
        if _is_path_field(fields[name]) and value is not None:
            value = _resolve_path(value, base)
        values[name] = value
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in fields:
            raise ConfigError(f"override {name}: {cls.__name__} has no such setting")
        value = _coerce(value, hints[name], f"override {name}")
        if _is_path_field(fields[name]) and value is not None:
            value = _resolve_path(value, Path("."))
        values[name] = value
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def _resolve_path(value: Any, base: Path) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve_path(v, base) for v in value)
    text = str(value)
    if "://" in text:
        return text
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def config_to_dict(config: Any) -> dict[str, Any]:
    """A TOML/JSON-friendly dict of a config dataclass (paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items() if v is not None}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def save_config(configs: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``{section: config_dataclass}`` as a TOML file, atomically."""
    lines: list[str] = []
    for section, cfg in configs.items():
        lines.append(f"[{section}]")
        for k, v in config_to_dict(cfg).items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    atomic_write_text(path, "\n".join(lines))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def workdir_layout(workdir: str | os.PathLike) -> dict[str, Path]:
    """The one documented layout of a study's working directory.

    ``DIR/shards`` (prep.shard output), ``DIR/runs/NAME`` (training runs), ``DIR/predictions``
    and ``DIR/report`` (analysis), ``DIR/expression`` (prep.expression output).
    """
    root = Path(workdir)
    return {
        "root": root,
        "expression": root / "expression",
        "shards": root / "shards",
        "runs": root / "runs",
        "predictions": root / "predictions",
        "report": root / "report",
    }
