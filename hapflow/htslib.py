"""htslib's messages: what C libraries print to file descriptor 2, explained once.

htslib (inside cyvcf2 and pysam) prints warnings straight to fd 2, bypassing Python, e.g.
``[W::bcf_hdr_check_sanity] GL should be declared as Number=G`` for the demo VCF.
:func:`htslib_messages` filters them while a command runs: header-sanity warnings become one
plain note, other warnings one line each (once per distinct message), both logged (so they
carry the time, as every log line does); errors pass unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading

__all__ = ["htslib_messages"]

log = logging.getLogger("hapflow.htslib")

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
            log.warning(_HEADER_NOTE.format(text=text))
            return
    log.warning(_OTHER_NOTE.format(text=text, func=func))


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

