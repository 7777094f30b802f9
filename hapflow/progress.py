"""Progress that reads well on a terminal and in a log file (SLURM).

On a terminal :func:`progress` is a tqdm bar; when stderr is a file or a pipe it writes a plain
log line every ``every_s`` seconds (and one at the end) instead of nothing, e.g.::

    shards: 120/480 genes (25%) after 62 s, about 186 s left

It takes the subset of tqdm's arguments hapflow uses, so ``tqdm(...)`` can be replaced by
``progress(...)`` in place::

    with progress(total=genes.height, desc="shards", unit="gene") as bar:
        for ...:
            bar.update(1)
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["progress", "LineProgress"]

log = logging.getLogger("hapflow.progress")


class LineProgress:
    """tqdm's ``update`` / ``close`` / iteration, as a log line every ``every_s`` seconds."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0,
                 every_s=30.0, disable=False, **_ignored):
        self.iterable = iterable
        self.total = total if total is not None else _len(iterable)
        self.desc, self.unit, self.n, self.every_s = desc, unit, initial, every_s
        self.disable = bool(disable)
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line(now)

    def set_postfix(self, *args, **kwargs):
        """tqdm compatibility; postfixes are not shown in log lines."""

    def _line(self, now):
        if self.disable:
            return
        elapsed = now - self.start
        text = f"{self.desc}: {self.n:,}"
        units = self.unit + ("es" if self.unit.endswith(("s", "sh", "ch", "x")) else "s")
        if self.total:
            text += f"/{self.total:,} {units} ({100 * self.n / self.total:.0f}%)"
        else:
            text += f" {units}"
        text += f" after {elapsed:.0f} s"
        if self.total and 0 < self.n < self.total:
            text += f", about {elapsed * (self.total - self.n) / self.n:.0f} s left"
        log.info(text)

    def close(self):
        if not self.closed:
            self.closed = True
            if self.n:
                self._line(time.monotonic())


def _len(iterable):
    try:
        return len(iterable)
    except TypeError:
        return None


def progress(iterable=None, total=None, desc="", unit="it", disable=None, every_s=30.0,
             **kwargs):
    """A tqdm bar on a terminal, else :class:`LineProgress` (plain lines every ``every_s`` s).

    ``disable=True`` shows nothing either way (e.g. ``--quiet``); ``None`` (tqdm's meaning:
    off when not a terminal) and ``False`` choose by where stderr goes.
    """
    if disable is True:
        return LineProgress(iterable, total, desc, unit, disable=True, **kwargs)
    if sys.stderr.isatty():
        from tqdm import tqdm  # only on a terminal: log files get LineProgress's lines

        return tqdm(iterable, total=total, desc=desc, unit=unit, **kwargs)
    return LineProgress(iterable, total, desc, unit, every_s=every_s, **kwargs)
