"""Debian machine-readable copyright files (DEP-5): which licence covers which file.

A package's ``usr/share/doc/<package>/copyright`` in the format of
https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/ is a series of
paragraphs separated by blank lines; each holds ``Field: value`` lines, a value going on
over lines that start with a space or tab. The first paragraph (with ``Format``) is the
header; every paragraph with ``Files`` is a files paragraph: whitespace-separated
patterns, its ``Copyright`` holders and its ``License`` (short name on the first line).

Patterns are relative to the *source* tree: ``*`` matches any run of characters,
``/`` included, ``?`` one character, and ``\\*``, ``\\?``, ``\\\\`` the literal
characters. The **last** paragraph whose pattern matches a file is the one that applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FilesParagraph:
    """One ``Files`` paragraph: ``patterns``, ``copyright`` (holders, lines joined by
    ``"; "``) and ``licence`` (the short name, e.g. ``"CC-BY-SA-3.0"``)."""

    patterns: tuple[str, ...]
    copyright: str
    licence: str


def _paragraphs(text: str) -> list[dict[str, str]]:
    """Paragraphs as ``{lower-case field: value}``; continuation lines joined with newlines."""
    out, fields, last = [], {}, None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if fields:
                out.append(fields)
            fields, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            last = name.strip().lower()
            fields[last] = value.strip()
    return out


def parse_copyright(text: str) -> list[FilesParagraph] | None:
    """The files paragraphs of a DEP-5 copyright file, in order; None when ``text`` is not
    in that format (no ``Format`` header naming copyright-format)."""
    paras = _paragraphs(text)
    if not paras or "copyright-format" not in paras[0].get("format", "").lower():
        return None
    files = []
    for p in paras:
        if "files" not in p:
            continue
        patterns = tuple(p["files"].split())
        holders = "; ".join(x.strip() for x in p.get("copyright", "").splitlines() if x.strip())
        licence = p.get("license", "").splitlines()[0].strip() if p.get("license") else ""
        files.append(FilesParagraph(patterns, holders, licence))
    return files


def pattern_regex(pattern: str) -> re.Pattern:
    """The compiled regular expression of one DEP-5 ``Files`` pattern (module docstring)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*?\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def matching(paragraphs: list[FilesParagraph], path: str) -> list[FilesParagraph]:
    """Every paragraph with a pattern matching ``path`` (source-tree relative, POSIX), in
    file order; by the format the last one applies."""
    path = path[2:] if path.startswith("./") else path
    return [p for p in paragraphs if any(pattern_regex(pat).fullmatch(path) for pat in p.patterns)]


def specific_matches(paragraphs: list[FilesParagraph], path: str) -> list[FilesParagraph]:
    """The matching paragraphs that no other match refines, in file order.

    Pattern ``a`` *refines* ``b`` when ``b``, read as a pattern, matches the text of ``a``
    and not the reverse (``images/land/*-harro*`` refines ``images/land/*`` and ``*``).
    A paragraph matched only through patterns some other match refines is a general
    rule the file format lets later, narrower paragraphs override; what is left are the
    narrowest rules, usually one. Several left (``images/land/mountain1*`` and
    ``images/land/*-harro*`` both match ``mountain19-harro.jpg``) means the file's
    patterns overlap and the format's last-match rule is a guess. For one pattern text
    in several paragraphs, the last counts.
    """
    path = path[2:] if path.startswith("./") else path
    hits = {}
    for i, p in enumerate(paragraphs):
        for pat in p.patterns:
            if pattern_regex(pat).fullmatch(path):
                hits[pat] = i  # a later paragraph with the same pattern replaces an earlier one

    def refines(a: str, b: str) -> bool:
        return a != b and bool(pattern_regex(b).fullmatch(a)) and not pattern_regex(a).fullmatch(b)

    keep = sorted({i for pat, i in hits.items() if not any(refines(other, pat) for other in hits)})
    return [paragraphs[i] for i in keep]


def paragraph_for(paragraphs: list[FilesParagraph], path: str) -> FilesParagraph | None:
    """The paragraph that applies to ``path`` by the format (the last match), or None."""
    found = matching(paragraphs, path)
    return found[-1] if found else None
