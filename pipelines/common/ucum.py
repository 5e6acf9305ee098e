"""UCUM syntax check (The Unified Code for Units of Measure, §2 "Syntax Rules", case-sensitive ``c/s`` form).

``ucum_ok("mm[Hg]")`` is True, ``ucum_ok("mmHg")`` False. The atoms and prefixes are those of UCUM 2.2
(``data/ucum-atoms.txt``, from ``ucum-essence.xml``): a simple unit is an atom, or a prefix followed by a
metric atom; a component is a simple unit with an optional exponent, an annotation ``{...}``, a factor,
or a parenthesised term; a term joins components with ``.`` and ``/`` and may start with ``/``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

__all__ = ["ucum_ok"]


@lru_cache(maxsize=1)
def _atoms() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    text = resources.files("pipelines.common").joinpath("data/ucum-atoms.txt").read_text(encoding="ascii")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    prefixes, metric, other = (frozenset(line.split("\t")) for line in lines[:3])
    return prefixes, metric, other


_EXPONENT = re.compile(r"^(.*?[^0-9+\-])([+\-]?[0-9]+)$")


def _split(term: str) -> list[str] | None:
    """Split a term at top-level ``.``/``/`` (outside ``[]``, ``{}``, ``()``); keeps the operators."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(term):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
            if depth < 0:
                return None
        elif ch in "./" and depth == 0:
            parts.append(term[start:i])
            parts.append(ch)
            start = i + 1
    if depth != 0:
        return None
    parts.append(term[start:])
    return parts


def _simple(unit: str) -> bool:
    prefixes, metric, other = _atoms()
    if unit in metric or unit in other:
        return True
    return any(unit[:n] in prefixes and unit[n:] in metric for n in (1, 2) if len(unit) > n)


def _component(comp: str) -> bool:
    if not comp:
        return False
    if comp.endswith("}"):
        brace = comp.find("{")
        if brace < 0 or "}" in comp[brace + 1 : -1] or not comp[brace + 1 : -1].isascii():
            return False
        comp = comp[:brace]
        if not comp:
            return True  # an annotation alone ("{score}")
    if comp.isdigit():
        return True  # factor
    if comp.startswith("(") and comp.endswith(")"):
        return _term(comp[1:-1])
    if _simple(comp):
        return True
    m = _EXPONENT.match(comp)
    return m is not None and _simple(m.group(1))


def _term(term: str) -> bool:
    parts = _split(term)
    if parts is None:
        return False
    if parts[0] == "" and len(parts) > 1 and parts[1] == "/":
        parts = parts[2:]  # leading "/" (main-term)
    return all(_component(p) for p in parts[::2])


def ucum_ok(code: str) -> bool:
    """True when ``code`` is a syntactically valid UCUM expression built from UCUM atoms."""
    if not code or not code.isascii() or any(ch.isspace() for ch in code) or len(code) > 200:
        return False
    return _term(code)
