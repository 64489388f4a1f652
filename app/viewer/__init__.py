"""The viewer page the API serves at ``/``: plain HTML, CSS and JavaScript under ``static/``.

OpenSeadragon is not part of the repository: ``make viewer-assets`` installs the pinned version from the
npm registry into ``static/vendor/openseadragon/``.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
OPENSEADRAGON_JS = STATIC_DIR / "vendor" / "openseadragon" / "openseadragon.min.js"


def assets_installed() -> bool:
    """Whether OpenSeadragon has been installed beside the page."""
    return OPENSEADRAGON_JS.is_file()
