"""The curl walkthrough of docs/service.md, run as written (bash) against the real service: it ends with the
result's files, writes only into its scratch folder, and its poll loop stops on a job that ended otherwise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.app.conftest import TOKENS, Service, texture_png, upload_id, wait_for
from tests.conftest import REPO
from tests.generated_docs import WALKTHROUGH_PHANTOM_PX

SERVICE_MD = REPO / "docs" / "service.md"
DOC_URL = "URL=http://127.0.0.1:8000"


def walkthrough() -> str:
    """The first ``sh`` block under "Walkthrough with curl"."""
    text = SERVICE_MD.read_text(encoding="utf-8")
    section = text[text.index("## Walkthrough with curl") :]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "docs/service.md: no sh block under 'Walkthrough with curl'"
    return match.group(1)


def fresh_clone(root: Path) -> Path:
    """What the walkthrough expects of a clone's folder: the token of ``make serve`` and the virtualenv's
    ``rcmseg``."""
    clone = root / "clone"
    (clone / "data").mkdir(parents=True)
    (clone / "data" / "local-token").write_text(TOKENS["alice"] + "\n")
    (clone / ".venv" / "bin").mkdir(parents=True)
    (clone / ".venv" / "bin" / "rcmseg").symlink_to(Path(sys.executable).parent / "rcmseg")
    return clone


def run_bash(script: str, *, cwd: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.run(
        ["bash", "-eu", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_the_walkthrough_runs_as_written_in_a_scratch_folder(service: Service, tmp_path: Path) -> None:
    script = walkthrough()
    assert script.count(DOC_URL) == 1
    clone = fresh_clone(tmp_path)
    before = tree(clone)
    done = run_bash(script.replace(DOC_URL, f"URL={service.url}"), cwd=clone, tmp=tmp_path / "tmp")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"job [0-9a-f]+: finished\n", done.stdout), done.stdout

    assert tree(clone) == before  # nothing written into the clone
    [scratch] = (tmp_path / "tmp").iterdir()
    written = {p.name for p in scratch.iterdir()}
    expected = {"mosaic.json", "job.json", "try", "heatmap_tile.png", "mask_tile.png", "regions.geojson"}
    assert expected <= written
    mosaic = json.loads((scratch / "mosaic.json").read_text())
    assert (mosaic["width"], mosaic["height"]) == (WALKTHROUGH_PHANTOM_PX, WALKTHROUGH_PHANTOM_PX)
    assert json.loads((scratch / "regions.geojson").read_text())["type"] == "FeatureCollection"
    assert (scratch / "heatmap_tile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_poll_loop_stops_on_a_job_that_did_not_finish(service: Service, tmp_path: Path) -> None:
    """Step 3 alone, on a job canceled before it could finish: the loop ends at once, says so, prints the
    job's error and stops the walkthrough (under bash -e) instead of polling on."""
    script = walkthrough()
    loop = script[script.index("STATUS=queued") : script.index("# 4.")]
    setup = script[: script.index("# 1.")].replace(DOC_URL, f"URL={service.url}")
    with service.client("alice") as client:
        mosaic = upload_id(client, texture_png(tmp_path / "big.png", 1024, seed=7))
        job = client.post("/v1/jobs", json={"mosaic_id": mosaic, "step": 1, "pixel_size_um": 2}).json()
        client.delete(f"/v1/jobs/{job['id']}")
        wait_for(
            lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "canceled",
            timeout=120,
            what="the job to be canceled",
        )
    clone = fresh_clone(tmp_path)
    done = run_bash(f"{setup}\nJOB={job['id']}\n{loop}", cwd=clone, tmp=tmp_path / "tmp")
    assert done.returncode != 0, done.stdout + done.stderr
    assert f"job {job['id']}: canceled" in done.stdout
    assert "'code': 'canceled'" in done.stdout
