"""Contig-name aliases: ``chr22`` <-> ``22``, ``chrM`` <-> ``MT``.

Real files disagree (a TSS table says ``chr22``, the FASTA and VCF say ``22``); every lookup of a
contig goes through :func:`resolve_contig` so that they still meet.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ContigError", "contig_aliases", "resolve_contig"]


class ContigError(KeyError):
    """A contig name matches no name (or alias) in a file."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def contig_aliases(name: str) -> list[str]:
    """Names that denote the same contig as ``name``, ``name`` first.

    >>> contig_aliases("chr22")
    ['chr22', '22']
    >>> contig_aliases("MT")
    ['MT', 'chrM', 'M', 'chrMT']
    """
    out = [name]
    bare = name[3:] if name.lower().startswith("chr") else name
    if bare.upper() in ("M", "MT"):
        candidates = ["MT", "chrM", "M", "chrMT"]
    else:
        candidates = [bare, "chr" + bare]
    for c in candidates:
        if c not in out:
            out.append(c)
    return out


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
