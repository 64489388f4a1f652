"""Path parameters the routes parse themselves: bounded integers.

Starlette's ``{name:int}`` matches any run of digits and converts it with ``int()``, which refuses more than
4,300 digits (Python's limit on decimal conversion) with an error that would become a 500. ``{name:index}``
matches at most ``INDEX_DIGITS`` digits, so a longer number matches no route and is a plain 404; a Deep
Zoom level, column or row is never near that bound.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

INDEX = "index"
"""The convertor's name in a route path: ``/{level:index}``."""
INDEX_DIGITS = 9
"""Longest accepted integer in a path (below 10**9)."""


class IndexConvertor(Convertor[int]):
    """A non-negative integer of at most ``INDEX_DIGITS`` digits."""

    regex = f"[0-9]{{1,{INDEX_DIGITS}}}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        value = int(value)
        if not 0 <= value < 10**INDEX_DIGITS:
            raise ValueError(f"a path index must be in 0..{10**INDEX_DIGITS - 1}, got {value}")
        return str(value)


register_url_convertor(INDEX, IndexConvertor())
