"""One pattern for every command line: a small declarative description, parsed the same way.

A stage's command module holds a :class:`Command` and a ``run`` function, nothing else::

    COMMAND = Command(
        prog="python -m prep.shard",
        summary="Build every (gene, individual)'s haplotype windows and write the shards.",
        reads=("haplotypes", "shard"),
        workdir="study working directory (writes DIR/shards)",
        options=(
            Option("--part", metavar="K/N", help="build only part K of N"),
            Option("--length", type=int, setting="haplotypes.length", help="window length"),
        ),
        next_step="python -m train.run --config C --workdir DIR",
    )

    def run(call: Call) -> None:
        run_shard(call.study, call.workdir, parse_part(call.args.part))

    def main(argv=None) -> int:
        return run_command(COMMAND, run, argv)

Every command then has ``--config STUDY.toml`` (when it reads a study), ``--workdir DIR``
(when it reads or writes one), ``--set SECTION.KEY=VALUE`` for the sections it reads, and
``--quiet``. An :class:`Option` with a ``setting`` is a shorthand for ``--set``: the study is
loaded once, with every override applied, and handed to ``run`` as an object
(:class:`Call`). A ``--set`` the command does not read is an error, never ignored: a section
outside ``reads``, or a key a :class:`Keys` rule of the command leaves out (a command that
reads only part of a section says which keys, and why, e.g.::

    keys=(Keys("haplotypes", only=("unphased", "ref_mismatch", "seed"), when="vcf",
               why="a run's windows are made as its training windows were"),)

:func:`run_command` also gives every command the same behaviour on failure: one ``error: ...``
line and exit status 2 for bad input (a :class:`ValueError` or :class:`OSError`, or any
exception class of hapflow's packages), 130 on Ctrl-C, htslib's warnings explained once
(:mod:`hapflow.htslib`), and log lines that carry the time.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from hapflow.config import ConfigError, StudyConfig, load_study, split_overrides
from hapflow.htslib import htslib_messages
from hapflow.layout import Workdir
from hapflow.sections import SECTIONS

__all__ = ["Option", "Keys", "Command", "Call", "run_command", "build_parser", "parse_command",
           "setup_logging", "describe_error", "plain_doc", "LOG_FORMAT", "LOG_DATE"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
"""Every command's log lines: date and time, level, message."""
LOG_DATE = "%Y-%m-%d %H:%M:%S"
"""The date and time of a log line."""


@dataclass(frozen=True)
class Option:
    """One command-line option beyond the shared ``--config``, ``--workdir``, ``--set``,
    ``--quiet``.

    Attributes
    ----------
    flags : str
        ``"--part"`` (with aliases: ``"--run", "--run-name"``) or a positional name.
    help : str
    setting : str, optional
        ``"section.key"``: a given value overrides that study setting (like ``--set``); the
        section must be one the command reads.
    type : callable, optional
        ``int``, ``float``; default text.
    choices, metavar, default, required, dest
        As in :meth:`argparse.ArgumentParser.add_argument`.
    switch : bool
        A flag without a value (True when given, else ``default``).
    repeat : bool
        The option may be given several times; its value is the list of them (``default``
        when never given).
    nargs : str, optional
        For positionals: ``"?"`` (optional) or ``"*"``.
    """

    flags: tuple[str, ...]
    help: str
    setting: str | None = None
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None
    metavar: str | None = None
    default: Any = None
    required: bool = False
    dest: str | None = None
    switch: bool = False
    repeat: bool = False
    nargs: str | None = None

    def __init__(self, *flags: str, help: str, **kwargs: Any):
        object.__setattr__(self, "flags", tuple(flags))
        object.__setattr__(self, "help", help)
        for name in ("setting", "type", "choices", "metavar", "default", "dest", "nargs"):
            object.__setattr__(self, name, kwargs.pop(name, None))
        object.__setattr__(self, "required", kwargs.pop("required", False))
        object.__setattr__(self, "switch", kwargs.pop("switch", False))
        object.__setattr__(self, "repeat", kwargs.pop("repeat", False))
        if kwargs:
            raise TypeError(f"Option {flags}: unknown field(s) {', '.join(kwargs)}")

    @property
    def name(self) -> str:
        """The attribute of the parsed arguments that holds the value."""
        if self.dest:
            return self.dest
        long = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        return long.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Keys:
    """Which keys of a section a command reads, when it does not read all of them.

    A command's rules for one section all apply: a key is read when every rule lets it. A
    ``--set`` (or a flag with a ``setting``) of a key a rule leaves out is an error naming the
    key and ``why``.

    Attributes
    ----------
    section : str
        A section of the command's ``reads``.
    why : str
        Why the other keys are not read, e.g. "a run's windows are made as its training
        windows were (DIR/runs/RUN/data.json)".
    only : tuple of str, optional
        The keys read (every other key of the section is not); ``()``: none of them.
    skips : tuple of str
        Keys not read (the others are), instead of ``only``.
    when, unless : str, optional
        The rule holds only when the option of that name (its :attr:`Option.name`) is given,
        or only when it is not (e.g. ``unless="vcf"``: without ``--vcf``).
    """

    section: str
    why: str
    only: tuple[str, ...] | None = None
    skips: tuple[str, ...] = ()
    when: str | None = None
    unless: str | None = None

    def applies(self, args: argparse.Namespace | None) -> bool:
        """Whether the rule holds for these arguments (None: for some arguments)."""
        if args is None:
            return self.when is None and self.unless is None
        if self.when is not None and not _given(getattr(args, self.when, None)):
            return False
        return self.unless is None or not _given(getattr(args, self.unless, None))

    def leaves_out(self, key: str) -> bool:
        """Whether the rule leaves ``key`` out."""
        return key not in self.only if self.only is not None else key in self.skips

    def condition(self) -> str:
        """`` with --run``, `` without --vcf`` or nothing."""
        if self.when is not None:
            return f" with --{self.when.replace('_', '-')}"
        if self.unless is not None:
            return f" without --{self.unless.replace('_', '-')}"
        return ""


def _given(value: Any) -> bool:
    return value is not None and value is not False and value != []


@dataclass(frozen=True)
class Command:
    """What a command is: its name, what it reads and writes, its own options.

    Attributes
    ----------
    prog : str
        How it is run, e.g. ``"python -m prep.shard"``.
    summary : str
        One sentence: what it does (first line of ``--help``; ``hapflow --help`` lists it).
    reads : tuple of str
        The study sections it reads: loaded (with defaults where the file lacks them),
        checked, overridable with ``--set``.
    keys : tuple of Keys
        For sections it reads only in part: which keys, and why the others are not read.
    config : "required", "optional" or "none"
        Whether ``--config`` must be given (optional: flags and defaults can stand in).
    workdir : str, optional
        Help of ``--workdir`` (what it reads and writes there); None: no ``--workdir``.
    workdir_required : bool
    options : tuple of Option
    next_step : str, optional
        What to run next (the epilog of ``--help``).
    doc : str, optional
        Shown under the summary in ``--help`` (e.g. the module docstring's examples).
    """

    prog: str
    summary: str
    reads: tuple[str, ...] = ()
    keys: tuple[Keys, ...] = ()
    config: Literal["required", "optional", "none"] = "required"
    workdir: str | None = None
    workdir_required: bool = True
    options: tuple[Option, ...] = ()
    next_step: str | None = None
    doc: str | None = None

    @property
    def name(self) -> str:
        """``train.predict`` of ``python -m train.predict``."""
        return self.prog.split()[-1]

    def refusal(self, section: str, key: str, args: argparse.Namespace | None = None
                ) -> str | None:
        """Why the command does not read ``[section] key`` (None: it does).

        ``args``: the parsed arguments, for rules that hold with or without an option; None
        judges by the rules that always hold.
        """
        if section not in self.reads:
            return (f"{self.name} does not read the section [{section}]; it reads "
                    f"{', '.join(f'[{s}]' for s in self.reads) or 'no study section'}")
        rules = [r for r in self.keys if r.section == section and r.applies(args)]
        leaving = [r for r in rules if r.leaves_out(key)]
        if not leaving:
            return None
        # a key the command never reads is explained by its general rule, before a rule of an
        # option given (e.g. --run)
        rule = min(leaving, key=lambda r: r.when is not None or r.unless is not None)
        text = f"{self.name} does not read [{section}] {key}{rule.condition()}: {rule.why}"
        read = [k for k in _section_keys(section) if not any(r.leaves_out(k) for r in rules)]
        return text + (f" (it reads [{section}] {', '.join(read)})" if read else "")

    def reads_key(self, section: str, key: str, args: argparse.Namespace | None = None) -> bool:
        """Whether a ``--set section.key=...`` reaches what the command does."""
        return self.refusal(section, key, args) is None

    def partly(self, section: str) -> str:
        """How the command reads ``section`` in words: ``""`` (every key) or, e.g.,
        ``"only unphased, ref_mismatch, seed with --vcf"``."""
        parts = []
        for rule in (r for r in self.keys if r.section == section):
            if rule.only is not None:
                what = f"only {', '.join(rule.only)}" if rule.only else "none"
            else:
                what = f"not {', '.join(rule.skips)}"
            parts.append(what + rule.condition())
        return "; ".join(parts)


def _section_keys(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


@dataclass
class Call:
    """One invocation of a command: its arguments, the loaded study and the workdir.

    ``sets``: the settings given on the command line (``--set`` and flags with a
    ``setting``), ``{section: {key: value as given}}``; their values as read are in ``study``.
    """

    args: argparse.Namespace
    study: StudyConfig
    workdir: Workdir | None
    sets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def given(self, section: str) -> dict[str, Any]:
        """``{key: value}`` of the ``section`` settings given on the command line, as the
        study holds them (parsed and checked)."""
        config = getattr(self.study, section)
        return {key: getattr(config, key) for key in self.sets.get(section, {})}


_SPHINX = re.compile(r":(?:func|mod|class|meth|data|attr|obj|ref):`~?([^`]+)`")


def plain_doc(text: str | None) -> str:
    """A docstring as plain help text: Sphinx roles and double back-quotes removed."""
    if not text:
        return ""
    text = _SPHINX.sub(lambda m: m.group(1), text)
    return text.replace("``", "").replace("\\\\", "\\")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and shows each option's default when it has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "default" in text.lower() or default in (None, False, [])
                or default is argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: {default})"


def build_parser(command: Command) -> argparse.ArgumentParser:
    """The command's ArgumentParser: its options plus the shared ones."""
    text = textwrap.fill(command.summary, 90)
    if command.doc:
        text += f"\n\n{plain_doc(command.doc).strip()}"
    parser = argparse.ArgumentParser(
        prog=command.prog, description=text, formatter_class=_HelpFormatter,
        epilog=f"Next: {command.next_step}" if command.next_step else None)
    names = ", ".join(f"[{s}]" for s in command.reads)
    if command.config != "none":
        parser.add_argument("--config", required=command.config == "required",
                            metavar="STUDY.toml", help="study settings file"
                            + (f" (reads {names})" if names else ""))
    if command.workdir is not None:
        parser.add_argument("--workdir", required=command.workdir_required, metavar="DIR",
                            help=command.workdir)
    if command.reads:
        sections = ", ".join(s + (f" ({command.partly(s)})" if command.partly(s) else "")
                             for s in command.reads)
        parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                            help="override one setting of the study file (repeatable), e.g. "
                                 f"--set {command.reads[0]}.KEY=VALUE; sections: {sections}")
    for option in command.options:
        _add(parser, option)
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    return parser


def _add(parser: argparse.ArgumentParser, option: Option) -> None:
    kwargs: dict[str, Any] = {"help": option.help}
    if option.switch:
        kwargs["action"] = "store_true"
        kwargs["default"] = option.default
    else:
        if option.repeat:
            kwargs["action"] = "append"
        for key in ("type", "choices", "metavar", "default", "nargs"):
            if getattr(option, key) is not None:
                kwargs[key] = getattr(option, key)
    positional = not option.flags[0].startswith("-")
    if not positional:
        kwargs["dest"] = option.name
        if option.required:
            kwargs["required"] = True
    parser.add_argument(*option.flags, **kwargs)


def _overrides(command: Command, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` of ``--set`` and the flags with a ``setting``; a key the
    command does not read is a ConfigError naming it (an unknown key is left to the study's
    loading, which suggests the nearest)."""
    sets = split_overrides(getattr(args, "set", []), command.reads) if command.reads else {}
    flags = {}
    for option in command.options:
        if option.setting is None:
            continue
        value = getattr(args, option.name)
        if value is None:
            continue
        section, _, key = option.setting.partition(".")
        assert section in command.reads, f"{command.prog}: {option.setting} is not read"
        sets.setdefault(section, {})[key] = value
        flags[(section, key)] = option.flags[0]
    for section, items in sets.items():
        known = set(_section_keys(section))
        for key in items:
            why = command.refusal(section, key, args) if key in known else None
            if why is not None:
                flag = flags.get((section, key))
                given = f"{flag}" if flag else f"--set {section}.{key}"
                raise ConfigError(f"{given}: {why}")
    return {s: v for s, v in sets.items() if v}


def parse_command(command: Command, argv: list[str] | None = None) -> Call:
    """Parse ``argv``, set up logging, load the study once (with every override applied)."""
    args = build_parser(command).parse_args(argv)
    setup_logging(args.quiet, rank=int(os.environ.get("RANK", "0") or 0))
    config = getattr(args, "config", None)
    sets = _overrides(command, args)
    study = load_study(config, sets, need=command.reads)
    workdir = getattr(args, "workdir", None)
    return Call(args=args, study=study, workdir=Workdir(workdir) if workdir else None,
                sets=sets)


def run_command(command: Command, run: Callable[[Call], int | None],
                argv: list[str] | None = None) -> int:
    """Parse and run a command the way every hapflow command runs (see the module docstring).

    Returns the exit status: ``run``'s (0 when it returns None), 2 for bad input, 130 on
    Ctrl-C; ``--help`` and argument errors exit through argparse (0 and 2).
    """
    with htslib_messages():
        try:
            return int(run(parse_command(command, argv)) or 0)
        except USER_ERRORS as err:
            print(f"error: {describe_error(err)}", file=sys.stderr)
            return 2
        except Exception as err:
            if not _is_ours(err):
                raise  # a bug: the traceback is what a report needs
            print(f"error: {describe_error(err)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted (outputs already finished are kept; re-run to resume)",
                  file=sys.stderr)
            return 130


def setup_logging(quiet: bool = False, rank: int = 0) -> None:
    """INFO (WARNING with ``quiet`` or on ranks other than 0) to stderr, every line timed."""
    level = logging.WARNING if quiet or rank else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATE)


def describe_error(err: BaseException) -> str:
    """One line for the user: an OSError names its path(s) and cause, others their message (a
    long message of several lines joined into one, every line kept)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        where = str(err.filename)
        if err.filename2 is not None:
            where += f" -> {err.filename2}"
        cause = err.strerror[0].lower() + err.strerror[1:]
        return f"{where}: {cause}"
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str):
        text = err.args[0].strip()  # str(KeyError) would be the repr, quotes and all
    else:
        text = str(err).strip() or type(err).__name__
    # a long message of several lines becomes one line: nothing after its first line is lost
    return " ".join(text.split()) if "\n" in text and len(text) > 400 else text


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, EOFError)
"""What a command reports as bad input (exit 2). Library errors subclass ValueError or OSError
(ConfigError, VcfError, ShardFormatError, ...); any other exception class defined in the
project's packages (e.g. prep.contigs.ContigError, a KeyError) is reported the same way."""

PACKAGES = ("hapflow", "prep", "loader", "train", "analysis")


def _is_ours(err: BaseException) -> bool:
    return type(err).__module__.split(".")[0] in PACKAGES
