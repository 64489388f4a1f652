"""The viewer's cost estimate reads a DICOM file's Pixel Spacing in the browser code (``pixelsize.js``), run
here by Node on files built by the tests: wherever the file puts it, as the service reads it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.worker.io.dicom.objects import confocal_single, phantom_pixels, save, wsm

SCRIPT = """
const { recordedPixelSizeUm } = await import(process.argv[1]);
const { readFileSync } = await import("node:fs");
const sizes = {};
for (const path of process.argv.slice(2)) {
  sizes[path] = await recordedPixelSizeUm(new Blob([readFileSync(path)]));
}
console.log(JSON.stringify(sizes));
"""


def test_the_page_reads_pixel_spacing_where_the_file_puts_it(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node missing: the viewer's assets need it (make viewer-assets)")
    pixels = phantom_pixels(64, 64)
    files = {
        "wsm.dcm": wsm(pixels),
        "single-top.dcm": confocal_single(pixels, spacing="top"),
        "single-per-frame.dcm": confocal_single(pixels, spacing="per-frame"),
    }
    not_square = confocal_single(pixels, spacing="top")
    not_square.PixelSpacing = ["0.0005", "0.001"]
    files["not-square.dcm"] = not_square
    paths = [str(save(ds, tmp_path / name)) for name, ds in files.items()]
    module = (REPO / "app" / "viewer" / "static" / "pixelsize.js").as_uri()
    proc = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, module, *paths],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    sizes = {Path(k).name: v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    assert sizes == {
        "wsm.dcm": 0.5,
        "single-top.dcm": 0.5,
        "single-per-frame.dcm": 0.5,
        "not-square.dcm": None,
    }
