"""``rcmseg submit`` against the real service (API under uvicorn, two workers, the tiny model): three files
with one bad, the results on disk, the table and the exit status; a re-run downloads nothing new, and a
result deleted locally comes back from the job the service already has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips

from app.client import RcmsegClient
from tests.app.conftest import TOKENS, Service, texture_png
from tests.conftest import REPO

RESULT = {"summary.json", "regions.geojson", "heatmap.tif", "submit.json"}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two good mosaics and a truncated PNG (and a label map, which is not a mosaic)."""
    folder = tmp_path_factory.mktemp("batch")
    texture_png(folder / "first.png", 200, seed=1)
    texture_png(folder / "first_labels.png", 200, seed=4)
    texture_png(folder / "second.png", 160, seed=2)
    whole = texture_png(folder / "whole.png", 256, seed=3).read_bytes()
    (folder / "whole.png").unlink()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return folder


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKENS["alice"] + "\n")
    return path


def submit(service: Service, token_file: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "app.cli", "submit", "--server", service.url]
    command += ["--token-file", str(token_file), "--poll-s", "0.2", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def rows(stdout: str) -> dict[str, str]:
    """Table rows by mosaic file name."""
    return {line.split()[0]: line for line in stdout.splitlines()[1:] if line.split()}


def counts(service: Service) -> tuple[int, int]:
    """How many mosaics and jobs alice has on the service."""
    with RcmsegClient(service.url, TOKENS["alice"]) as client:
        mosaics = len(client.list_mosaics())
    with service.client("alice") as http:
        jobs = len(http.get("/v1/jobs").json()["jobs"])
    return mosaics, jobs


def test_three_files_one_bad_then_a_rerun_that_downloads_nothing(
    service: Service, batch: Path, token_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    with service.client("alice") as http:  # the service's own words for the bad file
        refused = http.post(
            "/v1/mosaics", files={"file": ("truncated.png", (batch / "truncated.png").read_bytes())}
        )
    assert refused.status_code == 422
    said = refused.json()["message"].split(" (")[0]  # libvips's detail in brackets may vary
    assert said.startswith("truncated.png: ")
    message = said.removeprefix("truncated.png: ")

    done = submit(service, token_file, batch, "--out", out)
    assert done.returncode == 1, done.stderr
    table = rows(done.stdout)
    assert "downloaded" in table["first.png"] and "downloaded" in table["second.png"]
    assert "failed (unreadable_mosaic)" in table["truncated.png"] and message in table["truncated.png"]
    assert f"truncated.png: {message}" in done.stderr  # also said as it happened
    assert table["truncated.png"].count("truncated.png") == 1  # the file named once, in its column
    assert done.stderr.count("truncated.png") == 1
    assert done.stdout.splitlines()[-1] == "2 of 3 mosaics with a result"  # the label map left out
    assert "HTTP Request" not in done.stderr  # httpx's request log is for --verbose

    assert sorted(p.name for p in out.iterdir()) == ["first", "second"]
    for name in ("first", "second"):
        folder = out / name
        assert {p.name for p in folder.iterdir()} == RESULT
        summary = json.loads((folder / "summary.json").read_text())
        record = json.loads((folder / "submit.json").read_text())
        assert record["request"] == {"model": None, "step": None, "sigma": None}  # the card's defaults
        assert record["model"] == "tiny" and record["source"] == str(batch / f"{name}.png")
        assert summary["aspecific_area_fraction"] is not None
        heat = pyvips.Image.new_from_file(str(folder / "heatmap.tif"))
        assert heat.width > 0 and heat.height > 0
        assert json.loads((folder / "regions.geojson").read_text())["type"] == "FeatureCollection"
        assert f"{100 * summary['aspecific_area_fraction']:.2f} %" in table[f"{name}.png"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    before = counts(service)

    again = submit(service, token_file, batch, "--out", out)
    assert again.returncode == 1
    table = rows(again.stdout)
    assert "already downloaded" in table["first.png"] and "already downloaded" in table["second.png"]
    assert message in table["truncated.png"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    assert counts(service) == before  # nothing uploaded, nothing submitted

    first_job = json.loads((out / "first" / "submit.json").read_text())["job_id"]
    for path in (out / "first").iterdir():
        path.unlink()
    (out / "first").rmdir()
    third = submit(service, token_file, batch / "first.png", "--out", out)
    assert third.returncode == 0, third.stderr
    assert "downloaded (job reused)" in rows(third.stdout)["first.png"]
    assert json.loads((out / "first" / "submit.json").read_text())["job_id"] == first_job
    assert counts(service) == before  # the mosaic found in the list, the job the earlier one


def test_options_reach_the_job_and_errors_of_the_service_are_its_own(
    service: Service, batch: Path, token_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    done = submit(service, token_file, batch / "second.png", "--out", out, "--step", "16", "--sigma", "none")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "second" / "submit.json").read_text())
    assert record["params"]["step"] == 16 and record["params"]["sigma"] == "none"
    assert "(job reused)" not in done.stdout

    unknown = submit(service, token_file, batch / "second.png", "--out", out, "--model", "nope")
    assert unknown.returncode == 1
    assert "failed (invalid_parameter)" in unknown.stdout
    assert "model: 'nope' is not a model of the zoo" in unknown.stdout  # as the service says it

    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-a-token-of-this-service\n")
    refused = submit(service, wrong, batch / "second.png", "--out", tmp_path / "other")
    with service.client(None) as http:
        said = http.get("/v1/mosaics", headers={"Authorization": "Bearer not-a-token-of-this-service"})
    assert said.status_code == 401
    assert (
        refused.returncode == 2
        and refused.stderr.strip() == f"rcmseg submit: error: {said.json()['message']} for {service.url}"
    )
    assert not (tmp_path / "other").exists()  # stopped before the first upload: nothing created

    away = submit(
        service,
        token_file,
        batch / "second.png",
        "--out",
        tmp_path / "other",
        "--server",
        "http://127.0.0.1:9",
    )
    assert away.returncode == 2 and "cannot reach http://127.0.0.1:9" in away.stderr
    assert not (tmp_path / "other").exists()

    missing = submit(service, tmp_path / "no-such-file", batch, "--out", out)
    assert missing.returncode == 2 and "cannot read the token file" in missing.stderr
