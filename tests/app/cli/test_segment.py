"""``rcmseg segment`` as a user runs it: outputs on success, one line and exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvips

from app.cli import main
from tests.worker.io.test_mosaic import bad_files


def test_segment_the_real_tile(tmp_path: Path, tiny_model_dir: Path, real_tile: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "segment",
            str(real_tile),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--step",
            "48",
            "--sigma",
            "32",
            "--pixel-size",
            "2.0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["windows"]["total"] == 21 * 21
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["bit_depth"] == 16 and summary["sigma"] == 32.0
    assert "Traceback" not in proc.stderr
    # The same layers as the service writes: the heat pyramid beside the TIFFs, the mosaic's in pyramid/.
    layers = summary["layers"]
    assert (layers["mosaic"]["width"], layers["heat"]["width"], layers["heat"]["scale"]) == (1024, 1024, 1)
    assert layers["heatmap"]["rendered_from"] == layers["mask"]["rendered_from"] == "heat"
    for dzi in (out / "heat.dzi", out / "pyramid" / "mosaic.dzi"):
        assert 'Width="1024"' in dzi.read_text(), dzi
    assert (out / "heat_histogram.json").is_file() and (out / "pyramid" / "mosaic_files" / "10").is_dir()


def test_bad_files_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for label, (path, _error, words) in bad_files(tmp_path).items():
        out = tmp_path / f"out-{path.stem}"
        code = main(
            [
                "segment",
                str(path),
                "--model",
                str(tiny_model_dir),
                "--out",
                str(out),
                "--max-pixels",
                str(10**8),
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, label
        assert len(err) == 1 and str(path) in err[0] and words in err[0], (label, err)
        assert not out.exists()
        assert not list(tmp_path.glob(f".out-{path.stem}*"))


@pytest.mark.parametrize(
    "args",
    [["--step", "0"], ["--sigma", "-3"], ["--cam", "gradcam"], ["--threshold", "1.5"], ["--downsample", "x"]],
)
def test_bad_options_exit_2(tmp_path: Path, tiny_model_dir: Path, args: list[str]) -> None:
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(np.full((70, 70), 90, np.uint8)).pngsave(str(src))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        code = main(["segment", str(src), "--model", str(tiny_model_dir), "--out", str(out), *args])
        raise SystemExit(code)
    assert info.value.code == 2
    assert not out.exists()


def test_missing_model_field_is_named(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    card = json.loads((tiny_model_dir / "card.json").read_text())
    del card["window"]
    (broken / "card.json").write_text(json.dumps(card))
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(np.full((70, 70), 90, np.uint8)).pngsave(str(src))
    assert main(["segment", str(src), "--model", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "'window'" in capsys.readouterr().err


def test_weights_not_matching_the_arch_are_named(
    tmp_path: Path, tiny_model_dir: Path, b2_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    (mixed / "card.json").write_text((b2_model_dir / "card.json").read_text())
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(np.full((70, 70), 90, np.uint8)).pngsave(str(src))
    assert main(["segment", str(src), "--model", str(mixed), "--out", str(tmp_path / "o")]) == 2
    assert "do not match card.json field 'arch'" in capsys.readouterr().err
