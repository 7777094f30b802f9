"""Contig lookup: find a contig of an input in a FASTA's or VCF's names, aliases accepted.

Real files disagree (a TSS table says ``chr22``, the FASTA and VCF say ``22``); every lookup of a
contig goes through :func:`resolve_contig` so that they still meet. Which names are aliases of
each other is :func:`hapflow.names.contig_aliases` (``chr22`` = ``22``, ``chrM`` = ``MT``).
"""

from __future__ import annotations

from collections.abc import Iterable

from hapflow.names import contig_aliases

__all__ = ["ContigError", "resolve_contig"]


class ContigError(KeyError):
    """A contig name matches no name (or alias) in a file."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def resolve_contig(name: str, available: Iterable[str], source: str = "the file") -> str:
    """Return the name under which ``name`` appears in ``available``.

    Parameters
    ----------
    name : str
        The contig as written in the input (``chr22``, ``22``, ``chrM`` ...).
    available : iterable of str
        Contig names of a FASTA or VCF.
    source : str
        File name used in the error message.

    Raises
    ------
    ContigError
        If neither the name nor an alias is present.
    """
    names = list(available)
    pool = set(names)
    for alias in contig_aliases(name):
        if alias in pool:
            return alias
    shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
    raise ContigError(
        f"contig {name!r} (or its aliases {', '.join(contig_aliases(name)[1:])}) is not in "
        f"{source}, which has: {shown}. Check that the files use the same genome build."
    )
