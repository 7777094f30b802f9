"""The ``hapflow`` command, and what every stage's command line shares.

::

    hapflow --version
    hapflow expression --config configs/demo.toml --workdir work/demo
    hapflow shard --config configs/demo.toml --workdir work/demo --set shard.group_size=32
    hapflow train --config configs/demo.toml --workdir work/demo
    hapflow SUBCOMMAND --help

Each subcommand is the stage's own ``python -m`` entry point (:data:`COMMANDS`), which stays.

Shared by every stage's ``main`` (:func:`run_cli`):

* one ``error: ...`` line and exit status 2 for bad input (a config error, a ``ValueError``
  from the library, any ``OSError`` with its path and cause), never a traceback; 130 on Ctrl-C;
* htslib's warnings (printed by cyvcf2 and pysam straight to file descriptor 2, e.g.
  ``[W::bcf_hdr_check_sanity] GL should be declared as Number=G`` for the demo VCF) captured and
  explained once per process (:func:`htslib_messages`);
* logging set up once (:func:`setup_logging`): INFO, or WARNING with ``--quiet``.

Nothing here imports numpy, torch or a stage at import time, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import sys
import threading

__all__ = ["COMMANDS", "main", "run_cli", "describe_error", "setup_logging",
           "htslib_messages", "add_common_arguments", "make_parser", "plain_doc"]

COMMANDS: dict[str, tuple[str, str]] = {
    "expression": ("prep.expression", "prepare the study's expression matrix"),
    "shard": ("prep.shard", "build personal haplotypes and write the study's shards"),
    "retarget": ("prep.retarget", "rewrite the targets table from new expression"),
    "verify": ("prep.verify", "verify a study's shards (checksums, members, tables)"),
    "haplotypes": ("prep.haplotypes", "write personal haplotypes as FASTA"),
    "simulate": ("prep.simulate", "simulate expression with planted causal variants"),
    "preview": ("loader.preview", "stream a few batches and report what the loader yields"),
    "train": ("train.run", "fine-tune Enformer on the study's shards"),
    "predict": ("train.predict", "predict expression with a fine-tuned model"),
    "convert-weights": ("train.convert_weights", "convert Enformer weights to safetensors"),
    "baselines": ("analysis.baselines", "fit the variant-based baselines (elastic net, ...)"),
    "evaluate": ("analysis.evaluate", "score predictors per gene and write the report"),
    "attribute": ("analysis.attribute", "revert personal variants in silico, rank their effects"),
    "demo": ("analysis.demo", "run the whole path on a study"),
}
"""Subcommand -> (module whose ``main(argv)`` it runs, one line of help)."""

ORDER = ("expression", "shard", "train", "predict", "baselines", "evaluate")
"""The usual order of a study's stages (shown by ``hapflow --help``)."""


# --------------------------------------------------------------------------------------------
# the hapflow command


def _usage() -> str:
    from hapflow import __version__

    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return (
        f"usage: hapflow SUBCOMMAND [options]   (hapflow {__version__})\n\n"
        "Fine-tune sequence-to-expression models (Enformer) on personal genomes and "
        "expression.\n\n"
        f"subcommands:\n{rows}\n\n"
        f"A study runs: {' -> '.join(ORDER)}.\n"
        "Every subcommand takes --config STUDY.toml, --workdir DIR (where it reads or writes a "
        "study),\n--set SECTION.KEY=VALUE to override a setting, and --quiet. "
        "'hapflow SUBCOMMAND --help' says more.\n"
        "Start with: hapflow demo --config configs/demo.toml --workdir work/demo\n"
    )


def main(argv: list[str] | None = None) -> int:
    """``hapflow SUBCOMMAND ...``: run that stage's ``main`` with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(), end="")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version", "version"):
        from hapflow import __version__

        print(f"hapflow {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"error: unknown subcommand {name!r}{hint}; one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


# --------------------------------------------------------------------------------------------
# shared by every stage's command line


def add_common_arguments(parser, sections: tuple[str, ...], config: bool = True,
                         workdir: bool = True, config_required: bool = True,
                         workdir_help: str = "study working directory") -> None:
    """Add ``--config``, ``--workdir``, ``--set`` and ``--quiet`` the same way everywhere."""
    names = ", ".join(f"[{s}]" for s in sections)
    if config:
        parser.add_argument("--config", required=config_required, metavar="STUDY.toml",
                            help=f"study settings file (reads {names})")
    if workdir:
        parser.add_argument("--workdir", required=True, metavar="DIR", help=workdir_help)
    if sections:
        parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                            help="override one setting of the study file (repeatable), e.g. "
                                 f"--set {sections[0]}.KEY=VALUE; sections: {', '.join(sections)}")
    parser.add_argument("--quiet", action="store_true",
                        help="print only warnings and errors")


_SPHINX = re.compile(r":(?:func|mod|class|meth|data|attr|obj|ref):`~?([^`]+)`")


def plain_doc(text: str | None) -> str:
    """A docstring as plain help text: Sphinx roles and double back-quotes removed."""
    if not text:
        return ""
    text = _SPHINX.sub(lambda m: m.group(1), text)
    return text.replace("``", "").replace("\\\\", "\\")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and shows each option's default when it has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "default" in text.lower() or default in (None, False, [])
                or default is argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: {default})"


def make_parser(prog: str, description: str, next_step: str | None = None,
                doc: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser in the shared style: plain description (``doc``, e.g. the module
    docstring, follows it), defaults shown, and what to run next as the epilog."""
    import textwrap

    text = textwrap.fill(description, 90)
    if doc is not None:
        text += f"\n\n{plain_doc(doc).strip()}"
    return argparse.ArgumentParser(prog=prog, description=text, formatter_class=HelpFormatter,
                                   epilog=f"Next: {next_step}" if next_step else None)


def setup_logging(quiet: bool = False, fmt: str = "%(levelname)s %(message)s",
                  rank: int = 0, **kwargs) -> None:
    """INFO (WARNING with ``quiet`` or on ranks other than 0) to stderr."""
    level = logging.WARNING if quiet or rank else logging.INFO
    logging.basicConfig(level=level, format=fmt, **kwargs)


def describe_error(err: BaseException) -> str:
    """One line for the user: an OSError names its path(s) and cause, others their message."""
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
    return " ".join(text.split("\n")[0].split()) if "\n" in text and len(text) > 400 else text


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, EOFError)
"""What a command reports as bad input (exit 2). Library errors subclass ValueError or OSError
(ConfigError, VcfError, ShardFormatError, ...); any other exception class defined in the
project's packages (e.g. prep.contigs.ContigError, a KeyError) is reported the same way."""

PACKAGES = ("hapflow", "prep", "loader", "train", "analysis")


def _is_ours(err: BaseException) -> bool:
    return type(err).__module__.split(".")[0] in PACKAGES


def run_cli(fn, argv=None, errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run a stage's ``fn(argv) -> int`` the way every command runs.

    Bad input (:data:`USER_ERRORS`, plus ``errors``) ends in one ``error: ...`` line on stderr
    and exit status 2; Ctrl-C in 130; htslib's warnings are captured and explained once.
    """
    with htslib_messages():
        try:
            return int(fn(argv) or 0)
        except USER_ERRORS + tuple(errors) as err:
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


# --------------------------------------------------------------------------------------------
# htslib's messages

_HTSLIB_LINE = re.compile(rb"^\[([WEID])::(\w+)\] ?(.*)$")
_HEADER_NOTE = ("note: htslib, the library that reads VCF/BCF and FASTA files, found that a "
                "VCF header does not follow the VCF specification to the letter: {text}. "
                "hapflow reads only CHROM, POS, REF, ALT and GT, so this does not affect the "
                "sequences; it is shown once per run.")
_OTHER_NOTE = "warning: htslib (the VCF/BCF/FASTA reader) says: {text} [{func}]"
_seen: set[bytes] = set()
_seen_lock = threading.Lock()
_header_noted = False


def _explain(line: bytes, out) -> None:
    """Write what a user should read for one htslib line (each distinct message once)."""
    global _header_noted
    match = _HTSLIB_LINE.match(line.rstrip(b"\r\n"))
    if match is None:
        out.write(line)
        return
    kind, func, text = match.group(1), match.group(2).decode(), match.group(3).decode(
        "utf-8", "replace")
    if kind == b"E":  # errors pass through unchanged: the error that follows may need them
        out.write(line)
        return
    with _seen_lock:
        key = line.rstrip()
        if key in _seen:
            return
        _seen.add(key)
        if func == "bcf_hdr_check_sanity":
            if _header_noted:
                return
            _header_noted = True
            out.write((_HEADER_NOTE.format(text=text) + "\n").encode())
            return
    out.write((_OTHER_NOTE.format(text=text, func=func) + "\n").encode())


def _pump(read_fd: int, write_fd: int) -> None:
    out = io.FileIO(write_fd, "wb", closefd=False)
    pending = b""
    with io.FileIO(read_fd, "rb", closefd=False) as src:
        while True:
            try:
                chunk = src.read(65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _explain(line + b"\n", out)
    if pending:
        _explain(pending, out)


@contextlib.contextmanager
def htslib_messages():
    """Filter what C libraries write to file descriptor 2 while the block runs.

    htslib (inside cyvcf2 and pysam) prints warnings straight to fd 2, bypassing Python. Here
    fd 2 becomes a pipe read by a thread: htslib's ``[W::...]`` lines are explained once each
    (header-sanity warnings in one plain note), everything else passes through unchanged.
    Python's own ``sys.stderr`` is pointed at the real stderr meanwhile (so tqdm still sees a
    terminal). Does nothing when ``sys.stderr`` is not the process's fd 2 (e.g. under pytest's
    capture) or on platforms without ``os.pipe``.
    """
    try:
        real = sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    old = sys.stderr
    sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=old.encoding,  # noqa: SIM115
                      errors=old.errors)
    thread = threading.Thread(target=_pump, args=(read_fd, saved), daemon=True,
                              name="htslib-messages")
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer (ours) goes: the thread sees EOF
        thread.join(timeout=2.0)
        mine, sys.stderr = sys.stderr, old
        # handlers that captured the temporary stream keep working on the real one
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is mine:
                handler.stream = old
        mine.close()
        if not thread.is_alive():  # else a child process still holds the pipe: leave both open
            os.close(read_fd)
            os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
