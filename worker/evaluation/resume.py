"""What an evaluation keeps as it goes, so that a stopped run resumes where it stopped.

Each (pass, mosaic) result is one file in ``{out}/work/``: the score histogram of every sigma, the heat
previews (for the figures) and the pass record (timings), written whole (a temporary file renamed over the
name) as soon as the mosaic is done. The patch-level scores are kept the same way. A rerun into the same
folder loads every result whose fingerprint matches and computes the rest, as WSInfer skips finished
slides.

A fingerprint is the SHA-256 of what the result depends on: the model (weight hash and the card's
inference fields), the mosaic (content hashes of its image and label files, its pixel size and the
downsampling factor), the pass (method, mode, step, the sigmas in px) and the parameters that change a
heat map or a histogram (precision, ScoreCAM speed options, bins). Whatever else changes (bootstrap,
seed, the split's other mosaics) reuses the results; a changed parameter that does matter redoes exactly
the results it touches.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics.roc import ScoreHistogram
from worker.datasets.annotated import AnnotatedMosaic
from worker.datasets.table import PatchTable
from worker.evaluation.protocol import EvalParams, PassRecord, PassSpec
from worker.io.checkpoint import LoadedModel
from worker.io.files import file_sha256
from worker.params import DENSE_IDENTITY

log = logging.getLogger(__name__)

WORK_DIR = "work"
"""The folder inside an evaluation's output that holds the kept results."""
STATE_FILE = "state.json"
TMP_PREFIX = ".tmp-"
PATCH_FILE = "patches.npz"


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def model_fingerprint(model: LoadedModel) -> str:
    """The weights and the card fields that decide what the network sees (not its defaults or metrics)."""
    card = model.card
    return _digest(
        {
            "weights": model.weights_sha256,
            "arch": card.arch,
            "in_chans": card.in_chans,
            "window": card.window,
            "pixel_size_um": card.pixel_size_um,
            "mean": list(card.mean),
            "std": list(card.std),
        }
    )


def mosaic_fingerprint(mosaic: AnnotatedMosaic, processing_um: float) -> str:
    return _digest(
        {
            "image": file_sha256(mosaic.image),
            "labels": file_sha256(mosaic.labels),
            "pixel_size_um": mosaic.pixel_size_um,
            "downsample": mosaic.downsample(processing_um),
        }
    )


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` whole or not at all: a synced temporary file renamed over the name."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


@dataclass
class KeptPass:
    """One mosaic's results of one pass: a histogram and (with panels) a heat preview per sigma."""

    histograms: list[ScoreHistogram]
    previews: list[np.ndarray] | None
    record: PassRecord


class ResultStore:
    """The kept results of one evaluation folder, checked against fingerprints before use."""

    def __init__(self, out: Path, model: LoadedModel, params: EvalParams) -> None:
        self.folder = out / WORK_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f"{TMP_PREFIX}*"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)
        self.params = params
        self.processing_um = model.card.pixel_size_um
        self.model = model_fingerprint(model)
        self._mosaics: dict[str, str] = {}
        self.reused: list[str] = []
        write_atomic(
            self.folder / STATE_FILE,
            (json.dumps({"model": self.model, "params": repr(params)}, indent=1) + "\n").encode(),
        )

    def _mosaic(self, mosaic: AnnotatedMosaic) -> str:
        if mosaic.name not in self._mosaics:
            self._mosaics[mosaic.name] = mosaic_fingerprint(mosaic, self.processing_um)
        return self._mosaics[mosaic.name]

    def pass_fingerprint(self, spec: PassSpec, mosaic: AnnotatedMosaic) -> str:
        p = self.params
        payload: dict[str, Any] = {
            "model": self.model,
            "mosaic": self._mosaic(mosaic),
            "pass": [spec.cam, spec.mode, spec.step, spec.sigmas_px],
            "precision": p.precision,
            "scorecam": [p.scorecam_top_k, p.scorecam_skip_below] if spec.cam == "scorecam" else None,
            "n_bins": p.n_bins,
        }
        if spec.mode == "dense":  # the dense engine's settings (exact passes keep their fingerprints)
            payload["dense"] = DENSE_IDENTITY
        return _digest(payload)

    def pass_path(self, spec: PassSpec, mosaic: AnnotatedMosaic) -> Path:
        return self.folder / f"{spec.cam}-{spec.mode}-step{spec.step}" / f"{mosaic.name}.npz"

    def _matches(self, path: Path, fingerprint: str) -> bool:
        if not path.is_file():
            return False
        try:
            with np.load(path) as data:
                return str(data["fingerprint"]) == fingerprint
        except (OSError, ValueError, KeyError):
            log.warning("%s: unreadable kept result, computed again", path)
            return False

    def has_pass(self, spec: PassSpec, mosaic: AnnotatedMosaic) -> bool:
        """Whether this mosaic's results of ``spec`` are kept, for these inputs, with what the run needs."""
        path = self.pass_path(spec, mosaic)
        if not self._matches(path, self.pass_fingerprint(spec, mosaic)):
            return False
        if not self.params.panels:
            return True
        with np.load(path) as data:
            return "preview_0" in data.files

    def load_pass(self, spec: PassSpec, mosaic: AnnotatedMosaic) -> KeptPass:
        path = self.pass_path(spec, mosaic)
        with np.load(path) as data:
            hists = [
                ScoreHistogram.from_counts(p, n)
                for p, n in zip(data["positive"], data["negative"], strict=True)
            ]
            previews = None
            if self.params.panels:
                previews = [data[f"preview_{i}"].astype(np.float32) for i in range(len(hists))]
            record = PassRecord(**json.loads(str(data["record"])))
        self.reused.append(f"{spec.cam}/{spec.mode}/step{spec.step}/{mosaic.name}")
        return KeptPass(histograms=hists, previews=previews, record=record)

    def save_pass(self, spec: PassSpec, mosaic: AnnotatedMosaic, kept: KeptPass) -> None:
        path = self.pass_path(spec, mosaic)
        path.parent.mkdir(exist_ok=True)
        arrays = {
            "fingerprint": np.array(self.pass_fingerprint(spec, mosaic)),
            "record": np.array(json.dumps(asdict(kept.record))),
            "positive": np.stack([h.positive for h in kept.histograms]),
            "negative": np.stack([h.negative for h in kept.histograms]),
        }
        for i, heat in enumerate(kept.previews or []):
            arrays[f"preview_{i}"] = heat.astype(np.float16)
        write_atomic(path, _npz_bytes(arrays))

    def patch_fingerprint(self, table: PatchTable) -> str:
        rows = [list(map(str, table.mosaic)), np.asarray(table.x).tolist(), np.asarray(table.y).tolist()]
        return _digest({"model": self.model, "rows": rows, "precision": self.params.precision})

    def load_patches(self, table: PatchTable) -> tuple[np.ndarray, float] | None:
        """Kept patch probabilities and the seconds they took, if kept for this table and model."""
        path = self.folder / PATCH_FILE
        if not self._matches(path, self.patch_fingerprint(table)):
            return None
        with np.load(path) as data:
            self.reused.append("patches")
            return data["prob"], float(data["seconds"])

    def save_patches(self, table: PatchTable, prob: np.ndarray, seconds: float) -> None:
        arrays = {
            "fingerprint": np.array(self.patch_fingerprint(table)),
            "prob": np.asarray(prob, dtype=np.float64),
            "seconds": np.array(seconds),
        }
        write_atomic(self.folder / PATCH_FILE, _npz_bytes(arrays))


def is_evaluation_folder(out: Path) -> bool:
    """Whether ``out`` holds an evaluation's kept results (a rerun into it resumes)."""
    return (out / WORK_DIR / STATE_FILE).is_file()
