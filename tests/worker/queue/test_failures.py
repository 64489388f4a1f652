"""The failure policy's wording and the job contract's progress formula (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.contract import Stage, SummaryFields, overall_progress
from worker.queue.failures import public_message


def test_a_public_message_names_files_and_never_their_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    message = (
        f"[Errno 17] File exists: '{data}/results/alice/.k.parts-j-x' (under {data}); "
        f"see {data}/uploads/alice/m1/source.png, or /etc/other"
    )
    public = public_message(message, [data])
    assert str(tmp_path) not in public
    assert public == (
        "[Errno 17] File exists: '.k.parts-j-x' (under the data folder); see source.png, or /etc/other"
    )


@pytest.mark.parametrize(
    ("stage", "done", "total", "expected"),
    [
        (Stage.READ, 0, 1, 0.0),
        (Stage.READ, 1, 1, 0.05),
        (Stage.WINDOWS, 0, 0, 0.05),
        (Stage.WINDOWS, 50, 100, 0.475),
        (Stage.WINDOWS, 150, 100, 0.9),
        (Stage.EXPORT, 1, 1, 1.0),
        ("windows", 1, 2, 0.475),  # a plain string names the same stage
    ],
)
def test_overall_progress_runs_through_the_stages(stage: str, done: int, total: int, expected: float) -> None:
    assert overall_progress(stage, done, total) == pytest.approx(expected)


def test_the_summary_fields_the_api_reads() -> None:
    summary = {
        "threshold": 0.24,
        "processing": {"downsample": 4},
        "input": {"format": "dicom"},
        "layers": ["heat"],
        "parallel": {"bands": [{"band": 0}, {"band": 1}]},
    }
    fields = SummaryFields.read(summary)
    assert (fields.threshold, fields.downsample, fields.input_format) == (0.24, 4, "dicom")
    assert fields.rendered and fields.bands == 2
    plain = SummaryFields.read({"threshold": 0.5, "parallel": None})
    assert (plain.downsample, plain.input_format, plain.rendered, plain.bands) == (1, None, False, 0)
    with pytest.raises(ValueError, match="threshold"):
        SummaryFields.read({"processing": {}})
