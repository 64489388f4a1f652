"""The data folder: mosaics stored by rename, per owner, deduplicated; retention deletes what expired."""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.storage import Storage, mosaic_id_for, sniff_format
from worker.io.mosaic import MosaicHeader

HEADER = MosaicHeader(width=10, height=20, bands=1, bit_depth=8, format="png")
SHA = "ab" * 32


def partial(storage: Storage, content: bytes = b"\x89PNG\r\n\x1a\npixels") -> Path:
    path = storage.new_partial()
    path.write_bytes(content)
    return path


def test_mosaics_are_stored_per_owner_and_deduplicated(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.ensure()
    record, created = storage.store_mosaic(
        "alice", partial(storage), sha256=SHA, header=HEADER, filename="a.png"
    )
    assert created and record.id == mosaic_id_for("alice", SHA) and record.size_bytes == 14
    folder = tmp_path / "uploads" / "alice" / record.id
    assert (folder / "source.png").read_bytes().startswith(b"\x89PNG") and (folder / "mosaic.json").is_file()

    again, created = storage.store_mosaic(
        "alice", partial(storage), sha256=SHA, header=HEADER, filename="b.png"
    )
    assert not created and again == record  # the first record (and file name) is kept
    bobs, created = storage.store_mosaic("bob", partial(storage), sha256=SHA, header=HEADER, filename="a.png")
    assert created and bobs.id != record.id
    assert list((tmp_path / "tmp").iterdir()) == []  # partial uploads were moved or deleted
    assert [m.id for m in storage.list_mosaics("alice")] == [record.id]

    assert storage.get_mosaic("bob", record.id) is None  # another owner's id is not found
    assert storage.get_mosaic("alice", "../bob/" + bobs.id) is None
    assert storage.get_mosaic("alice", record.id.upper()) is None
    assert storage.source_relpath("alice", record) == f"uploads/alice/{record.id}/source.png"

    assert storage.delete_mosaic("alice", record.id) and not folder.exists()
    assert not storage.delete_mosaic("alice", record.id)
    assert storage.get_mosaic("bob", bobs.id) is not None


def test_sniff_format_knows_image_signatures(tmp_path: Path) -> None:
    cases = {
        b"II*\x00rest": "tiff",
        b"MM\x00*": "tiff",
        b"II+\x00": "tiff",
        b"\x89PNG\r\n\x1a\n": "png",
        b"\xff\xd8\xff\xe0": "jpeg",
        b"BM\x00\x00": "bmp",
        b"hello": None,
        b"": None,
    }
    for content, expected in cases.items():
        path = tmp_path / "f"
        path.write_bytes(content)
        assert sniff_format(path) == expected, content


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_sweep_deletes_expired_data_and_stale_work_folders(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.ensure()
    old, _ = storage.store_mosaic("alice", partial(storage), sha256=SHA, header=HEADER, filename="a.png")
    new, _ = storage.store_mosaic(
        "alice", partial(storage), sha256="cd" * 32, header=HEADER, filename="b.png"
    )
    _age(tmp_path / "uploads" / "alice" / old.id / "mosaic.json", 1000)
    results = tmp_path / "results" / "alice"
    for name in ("a" * 32, "b" * 32, ".x.tmp-old", ".y.tmp-new"):
        (results / name).mkdir(parents=True)
        (results / name / "summary.json").write_text("{}")
    _age(results / ("a" * 32), 1000)
    _age(results / ".x.tmp-old", 500)
    stale_upload = storage.new_partial()
    _age(stale_upload, 7200)
    fresh_upload = storage.new_partial()

    report = storage.sweep(max_age_s=900, stale_work_s=300)

    assert (report.uploads, report.results, report.partial) == (1, 1, 2)
    assert storage.get_mosaic("alice", old.id) is None and storage.get_mosaic("alice", new.id) is not None
    assert sorted(p.name for p in results.iterdir()) == [".y.tmp-new", "b" * 32]
    assert not stale_upload.exists() and fresh_upload.exists()
    storage.touch_result("alice", "b" * 32)  # a reused result starts its retention period again
    assert storage.sweep(max_age_s=900, stale_work_s=300).results == 0
