"""The study configuration: one TOML file, a section per stage, typed and checked as a whole.

The sections are the dataclasses of :mod:`hapflow.sections` (:data:`SECTIONS`); this module
reads them from TOML and the command line and writes them back:

* :func:`load_study` reads a whole study file into a :class:`StudyConfig` (one typed field per
  section) and checks the rules between sections (:func:`check_study`); :func:`load_config`
  reads one section (tests and tools);
* an unknown section (``[loadr]``) or key (``lenght``) is an error that suggests the near name;
* values have exact types: an integer setting given ``49152.5`` or ``true`` is an error, never
  truncated (a float setting accepts an integer);
* settings that must agree across sections are checked at load (:func:`check_study`):
  ``[loader] max_shift <= [shard] flank`` with ``shift_fill = "flank"``, ``[loader] length <=
  [haplotypes] length``, the files each ``[shard] splits`` mode needs, the ``[model] head`` each
  ``[train]`` loss term needs;
* overrides come from the command line as ``--set section.key=value``
  (:func:`split_overrides`); strings are parsed as the setting's type (``8``, ``0.5``,
  ``true``, ``a,b``, ``none``); they are applied once, when the study is loaded;
* :func:`save_config` writes resolved settings atomically; ``None`` is written as ``"none"`` so
  it survives a save/load round trip.

Every error is a :class:`ConfigError`. Relative paths inside a config file are resolved against
the directory holding the file, so a study folder can be moved as a whole. Nothing here imports
numpy, torch or a stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hapflow.io import atomic_write_text
from hapflow.sections import (
    LOSS_TERM_HEADS,
    SECTIONS,
    AttributeConfig,
    BaselinesConfig,
    ConfigError,
    EnformerDataConfig,
    EvaluateConfig,
    ExpressionConfig,
    HaplotypesConfig,
    LoaderConfig,
    ModelConfig,
    MpraConfig,
    ShardConfig,
    SimulateConfig,
    TrainConfig,
)

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "SECTIONS",
    "StudyConfig",
    "check_study",
    "load_study",
    "load_toml",
    "load_config",
    "split_overrides",
    "config_to_dict",
    "save_config",
]

NONE_TEXT = "none"
"""How ``None`` is written in a TOML file (TOML has no null); read back as ``None``."""


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML file into a dict; errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read (permission denied)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text: {err}") from None


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_path_field(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get("path"))


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str, parse: bool = False) -> Any:
    """Convert ``value`` to ``annotation``.

    With ``parse`` (command-line overrides), strings are parsed as the type. Otherwise (TOML
    values, typed Python overrides) a value must already have the type: an int setting takes
    an int only (not a float, not a bool, not a string), a float setting an int or a float, a
    str setting a str. ``"none"`` is None for optional settings either way.
    """
    text = parse and isinstance(value, str)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, annotation, key, parse, text)
    if origin is dict:
        return _coerce_table(value, annotation, key, text)
    if origin in (list, tuple):
        if text:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: {value!r} is not a list (e.g. [\"a\", \"b\"])")
        args = typing.get_args(annotation)
        items = [_coerce(v, args[0] if args else Any, key, text) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        args = typing.get_args(annotation)
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}"
                              + (_suggest(value, [a for a in args if isinstance(a, str)])
                                 if text else ""))
        return value
    if annotation in _SCALARS:
        return _SCALARS[annotation](value, key, text)
    if annotation is Path:
        return Path(_coerce_text(value, key, text))
    if annotation is Any:
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(annotation)}")


def _coerce_union(value: Any, annotation: Any, key: str, parse: bool, text: bool) -> Any:
    """An optional or either-or setting: ``none`` for None, else the first type that fits."""
    args = typing.get_args(annotation)
    if value is None or (isinstance(value, str) and value.strip().lower() == NONE_TEXT) or (
            text and value.strip().lower() in ("null", "")):
        if type(None) in args:
            return None
        if value is None:
            raise ConfigError(f"{key}: a value is required ({_type_name(annotation)})")
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key, parse)
        except ConfigError as err:
            errors.append(str(err).removeprefix(f"{key}: "))
    raise ConfigError(f"{key}: {value!r} is not a {_type_name(annotation)} "
                      f"({'; '.join(errors)})")


def _coerce_table(value: Any, annotation: Any, key: str, text: bool) -> dict:
    """A table setting; on the command line written ``a=1,b=0.5``."""
    if text:
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"{key}: {value!r} is not a table; write name=value,name=value")
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: {value!r} is not a table (e.g. {{ name = 1.0 }})")
    kt, vt = typing.get_args(annotation) or (str, Any)
    return {_coerce(k, kt, key, True): _coerce(v, vt, f"{key}.{k}", text)
            for k, v in value.items()}


def _coerce_bool(value: Any, key: str, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}: {value!r} is not a boolean (true or false)")


def _coerce_int(value: Any, key: str, text: bool) -> int:
    if text:
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not an integer") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: {value!r} is not an integer (an integer setting is never "
                      "rounded)")


def _coerce_float(value: Any, key: str, text: bool) -> float:
    if text:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not a number") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{key}: {value!r} is not a number")


def _coerce_text(value: Any, key: str, text: bool) -> str:
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    raise ConfigError(f"{key}: {value!r} is not text (write it in quotes)")


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_text}


def _resolve_path(value: Any, base: Path) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve_path(v, base) for v in value)
    text = str(value)
    if "://" in text or text.startswith("pipe:"):
        return text
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _check_sections(data: dict[str, Any], where: str, extra: tuple[str, ...] = ()) -> None:
    """Error on tables of ``data`` that are not study sections (with a did-you-mean)."""
    known = set(SECTIONS) | set(extra)
    for name, value in data.items():
        if name in known:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name} must be a section [{name}], found "
                                  f"{name} = {value!r}")
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{where}: unknown section [{name}]{_suggest(name, known)}; a "
                              f"study file has the sections {', '.join(SECTIONS)}")
        raise ConfigError(f"{where}: setting {name} = {value!r} is outside any section; put it "
                          f"under its section (e.g. [shard]){_suggest(name, known)}")


REMOVED_KEYS = {
    ("ShardConfig", "group_size"): "shard format 3 stores each gene's individuals as one record "
                                   "of variants, so there are no groups to size: delete the line",
}
"""Settings earlier versions read, by (section class, key): why each is gone and what to do."""


def _build(cls: type[T], raw: dict[str, Any], overrides: dict[str, Any] | None, base: Path,
           where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    removed = [k for k in unknown if (cls.__name__, k) in REMOVED_KEYS]
    if removed:
        raise ConfigError(f"{where}: {removed[0]} is no longer a setting: "
                          f"{REMOVED_KEYS[(cls.__name__, removed[0])]}")
    if unknown:
        hints_text = "".join(_suggest(u, fields) for u in unknown)
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}{hints_text}; "
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
            continue  # an unset command-line flag leaves the file's value alone
        if name not in fields:
            raise ConfigError(f"override {name}: {cls.__name__} has no such setting"
                              f"{_suggest(name, fields)}")
        value = _coerce(value, hints[name], f"override {name}", parse=isinstance(value, str))
        if _is_path_field(fields[name]) and value is not None:
            value = _resolve_path(value, Path("."))
        values[name] = value
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    section: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> T:
    """Build ``cls`` (a dataclass) from one TOML section plus overrides.

    Parameters
    ----------
    cls : dataclass type
        The stage's config class. Fields with ``metadata={"path": True}`` are paths and are
        resolved relative to the config file's folder.
    path : str or Path, optional
        The study TOML file. ``None`` means defaults plus overrides only.
    section : str, optional
        The TOML table to read (``"shard"``, ``"loader"``, ...); ``None`` reads the top level.
        The file's other tables must be study sections (:data:`SECTIONS`): a misspelt
        ``[loadr]`` is an error, not silently the defaults.
    overrides : dict, optional
        ``{field: value}`` applied last (strings are parsed, as from a command line);
        ``None`` values are ignored so unset CLI flags leave the file's value alone.

    Raises
    ------
    ConfigError
        An unknown section or key, a value of the wrong type or a missing required field.
    """
    raw: dict[str, Any] = {}
    base = Path(".")
    where = "defaults"
    if path is not None:
        data = load_toml(path)
        base = Path(path).resolve().parent
        where = f"{path}" + (f" [{section}]" if section else "")
        if section is not None:
            _check_sections(data, str(path), extra=(section,))
            data = data.get(section, {})
        else:
            data = {k: v for k, v in data.items() if not isinstance(v, dict)}
        raw.update(data)
    return _build(cls, raw, overrides, base, where)


def split_overrides(items: list[str], sections: tuple[str, ...] | None = None
                    ) -> dict[str, dict[str, str]]:
    """``["shard.seed=3"]`` -> ``{"shard": {"seed": "3"}, ...}`` (every section present).

    ``sections`` limits which sections a command accepts (default: every study section);
    a malformed item or another section is an error that names it.
    """
    allowed = tuple(sections) if sections is not None else tuple(SECTIONS)
    out: dict[str, dict[str, str]] = {s: {} for s in allowed}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. "
                              f"--set {allowed[0]}.seed=1")
        if section not in out:
            hint = _suggest(section, allowed)
            raise ConfigError(f"--set {item!r}: this command reads the section(s) "
                              f"{', '.join(allowed)}, not {section!r}{hint}")
        out[section][name.strip()] = value
    return out


def _in_play(study: StudyConfig, only: set[str] | None) -> set[str]:
    return set(study.present) if only is None else set(study.present) & only


def check_study(study: StudyConfig, only: set[str] | None = None) -> StudyConfig:
    """Check the rules that join sections; raise ConfigError naming both settings.

    A rule is checked when the sections it joins are both in play: written in the study file,
    overridden, or needed by the stage (``study.present``), and in ``only`` when given.
    """
    where = study.path or "the study settings"
    on = _in_play(study, only)
    h = study.haplotypes if "haplotypes" in on else None
    s = study.shard if "shard" in on else None
    lo = study.loader if "loader" in on else None
    m = study.model if "model" in on else None
    t = study.train if "train" in on else None
    if lo is not None and h is not None and lo.length is not None and lo.length > h.length:
        raise ConfigError(f"{where}: [loader] length = {lo.length} is longer than the "
                          f"stored windows, [haplotypes] length = {h.length}; the loader "
                          "only crops")
    if lo is not None and s is not None and lo.shift_fill == "flank" and lo.max_shift > s.flank:
        raise ConfigError(f"{where}: [loader] max_shift = {lo.max_shift} needs at least "
                          f"that many stored flank bases, but [shard] flank = {s.flank}; "
                          'raise flank, lower max_shift, or set shift_fill = "N"')
    if s is not None:
        needs = {"file": ("splits_file",), "paper": ("splits_file", "gene_classes")}
        for key in needs.get(s.splits, ()):
            value = getattr(s, key)
            if value is None:
                raise ConfigError(f'{where}: [shard] splits = "{s.splits}" needs [shard] '
                                  f"{key}" + (" (the paper's sample_splits.csv and "
                                              "gene_class.csv, in data/paper/)"
                                              if s.splits == "paper" else ""))
            if "://" not in str(value) and not Path(value).exists():
                raise ConfigError(f"{where}: [shard] {key} = {value} does not exist")
    if t is not None and m is not None:
        for term in t.loss_terms:
            head = LOSS_TERM_HEADS[term]
            if head is not None and m.head != head:
                raise ConfigError(f"{where}: [train] term {term!r} needs [model] head = "
                                  f"{head!r}, but head = {m.head!r}")
    return study


@dataclass(frozen=True)
class StudyConfig:
    """A whole study file, one typed field per section.

    Build it with :func:`load_study`. Every section is there: as written in the file, else its
    defaults; ``present`` says which sections the file wrote, an override set or the stage
    needs (the cross-section rules of :func:`check_study` join only those).
    """

    haplotypes: HaplotypesConfig = field(default_factory=HaplotypesConfig)
    """[haplotypes]: inputs and options of the haplotype engine."""
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)
    """[expression]: the expression matrix to prepare."""
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    """[simulate]: simulated expression on real genotypes."""
    shard: ShardConfig = field(default_factory=ShardConfig)
    """[shard]: targets, splits and shard layout."""
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    """[loader]: how shards become batches."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """[model]: trunk, head and what trains."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """[train]: how to fine-tune."""
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    """[baselines]: variant-based baselines."""
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    """[evaluate]: per-gene scores and the report."""
    attribute: AttributeConfig = field(default_factory=AttributeConfig)
    """[attribute]: in-silico reversion of variants."""
    enformer_data: EnformerDataConfig = field(default_factory=EnformerDataConfig)
    """[enformer_data]: Enformer's own training data (Basenji2 TFRecords) for joint training."""
    mpra: MpraConfig = field(default_factory=MpraConfig)
    """[mpra]: MPRA variant effects for joint training."""
    present: frozenset[str] = frozenset()
    """Sections written in the file, overridden or needed by the stage."""
    path: str | None = None
    """The file it was read from (None: defaults only)."""

    def sections(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """``{section: config}`` of ``names`` (default: the present sections), in file order."""
        wanted = self.present if names is None else set(names)
        return {s: getattr(self, s) for s in SECTIONS if s in wanted}

    def replace(self, **sections: Any) -> StudyConfig:
        """A copy with some sections replaced (they count as present); rules are re-checked."""
        new = dataclasses.replace(self, **sections,
                                  present=self.present | frozenset(sections))
        return check_study(new)

    def save(self, path: str | os.PathLike, names: tuple[str, ...] | None = None) -> None:
        """Write sections (default: the present ones) as one resolved TOML file, atomically."""
        save_config(self.sections(names), path)


def load_study(
    path: str | os.PathLike | None,
    overrides: dict[str, dict[str, Any]] | None = None,
    need: tuple[str, ...] = (),
) -> StudyConfig:
    """Read and check a whole study file.

    Parameters
    ----------
    path : str or Path or None
        The study TOML; ``None``: defaults plus overrides.
    overrides : dict, optional
        ``{section: {key: value}}`` (e.g. from :func:`split_overrides`), applied last.
    need : tuple of str
        Sections the caller uses: they count as present (their rules are checked) even when
        the file lacks them.

    Every section present in the file (or given overrides) is built and type-checked, the others
    get their defaults; then the cross-section rules run (:func:`check_study`): on the file as
    written, and with the overrides applied among the ``need`` sections (a ``--length`` given
    to one stage is not held against a section that stage does not read).

    Raises
    ------
    ConfigError
        An unknown section or key, a wrong type, a rule between sections broken.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    data: dict[str, Any] = {}
    base = Path(".")
    if path is not None:
        data = load_toml(path)
        base = Path(path).resolve().parent
        _check_sections(data, str(path))
    for section in (*need, *overrides):
        if section not in SECTIONS:
            raise ConfigError(f"unknown section {section!r}{_suggest(section, SECTIONS)}")
    present = frozenset(s for s in SECTIONS if s in need or s in data or s in overrides)
    name = None if path is None else str(path)

    def build(with_overrides: bool) -> StudyConfig:
        built = {}
        for section in present:
            where = f"{path} [{section}]" if path is not None else f"[{section}]"
            built[section] = _build(SECTIONS[section], data.get(section, {}),
                                    overrides.get(section) if with_overrides else None, base,
                                    where)
        return StudyConfig(**built, present=present, path=name)

    study = build(with_overrides=True)
    if overrides:
        # the file must hold together by itself; the overrides only with what this stage uses
        check_study(build(with_overrides=False))
        return check_study(study, only=set(need) | set(overrides) if need else None)
    return check_study(study)


def config_to_dict(config: Any, keep_none: bool = False) -> dict[str, Any]:
    """A TOML/JSON-friendly dict of a config dataclass (paths as strings, tuples as lists).

    ``None`` values are left out unless ``keep_none`` (then they stay ``None``).
    """

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()
            if keep_none or v is not None}


def _toml_value(v: Any) -> str:
    if v is None:
        return f'"{NONE_TEXT}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(str(k))


def save_config(configs: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``{section: config_dataclass}`` as a TOML file, atomically.

    Every field is written, ``None`` as ``"none"``, so :func:`load_config` reads back exactly
    the saved values (not the defaults).
    """
    lines: list[str] = []
    for section, cfg in configs.items():
        lines.append(f"[{section}]")
        for k, v in config_to_dict(cfg, keep_none=True).items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    atomic_write_text(path, "\n".join(lines))
