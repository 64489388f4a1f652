"""The pixel label codes every tool and file uses (the paper's annotation classes)."""

from __future__ import annotations

LABEL_CODES: dict[int, str] = {
    0: "unlabelled",
    1: "background",
    2: "artifact",
    3: "meshwork",
    4: "nested",
    5: "ring",
    6: "aspecific",
}
"""Pixel label codes used by every tool and file. Benign = 1..5, aspecific = 6, 0 is ignored."""

ASPECIFIC = 6
BENIGN_CODES = (1, 2, 3, 4, 5)
