"""One job shared out over two real worker processes (``parallel: 2``): the same result as one worker,
cancel stops every part, a killed band is retried alone. Real Redis, uvicorn API, tiny model, CPU."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.app.conftest import Service, texture_png, upload_id, wait_for
from worker.contract import MetaKey

pytestmark = pytest.mark.slow

TINY = {"pixel_size_um": 2.0}
TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def clients(service: Service) -> Iterator[dict[str, httpx.Client]]:
    with service.client("alice") as alice, service.client("bob") as bob:
        yield {"alice": alice, "bob": bob}


@pytest.fixture(scope="module")
def mosaics(clients: dict[str, httpx.Client], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same 400 x 400 mosaic uploaded by alice and by bob (results are per owner)."""
    path = texture_png(tmp_path_factory.mktemp("mosaics") / "m.png", 400)
    ids = {}
    for owner, client in clients.items():
        with path.open("rb") as fh:
            response = client.post("/v1/mosaics", files={"file": ("m.png", fh)})
        assert response.status_code in (200, 201), response.text
        ids[owner] = response.json()["id"]
    return ids


def submit(client: httpx.Client, mosaic_id: str, **params: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"mosaic_id": mosaic_id, **TINY, **params})
    assert response.status_code == 202, response.text
    return dict(response.json())


def view(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/jobs/{job_id}").json())


def wait_status(client: httpx.Client, job_id: str, *statuses: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = view(client, job_id)
        return body if body["status"] in statuses else None

    return dict(wait_for(reached, timeout=TIMEOUT_S, what=f"job {job_id} to be {'/'.join(statuses)}"))


def heat(client: httpx.Client, body: dict[str, Any]) -> np.ndarray:
    response = client.get(body["result"]["heatmap_tiff"])
    assert response.status_code == 200
    return np.asarray(pyvips.Image.new_from_buffer(response.content, "").numpy(), dtype=np.float32)


def band_files(service: Service, owner: str, job_id: str) -> list[Path]:
    """The band files written so far for the result that job ``job_id`` computes (by any job)."""
    return sorted(f for folder in parts_folders(service, owner, job_id) for f in folder.glob("band-*.json"))


def parts_folders(service: Service, owner: str, job_id: str) -> list[Path]:
    """The parts folders beside the result of job ``job_id`` (of any job computing that result)."""
    redis = Redis.from_url(service.env["REDIS_URL"])
    key = Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta[MetaKey.RESULT_KEY]
    results = Path(service.env["RCMSEG_DATA_DIR"]) / "results" / owner
    return sorted(p for p in results.glob(f".{key}.parts*") if p.is_dir())


def parts(service: Service, job_id: str) -> list[Job]:
    redis = Redis.from_url(service.env["REDIS_URL"])
    merge = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    ids = merge.meta[MetaKey.PARTS]
    return [Job.fetch(i, connection=redis, serializer=JSONSerializer) for i in ids]


@pytest.mark.parametrize(
    "params",
    [{"step": 24, "sigma": 16.0}, {"step": 48, "cam": "scorecam"}, {"mode": "dense", "sigma": 32.0}],
    ids=["cam", "scorecam", "dense"],
)
def test_two_workers_give_the_one_worker_result(
    clients: dict[str, httpx.Client], mosaics: dict[str, str], params: dict[str, Any]
) -> None:
    alice, bob = clients["alice"], clients["bob"]
    one = wait_status(alice, submit(alice, mosaics["alice"], **params)["id"], "finished", "failed")
    shared = submit(bob, mosaics["bob"], parallel=2, **params)
    assert shared["parallel"] == 2
    two = wait_status(bob, shared["id"], "finished", "failed")
    assert one["status"] == two["status"] == "finished", (one["error"], two["error"])
    np.testing.assert_allclose(heat(bob, two), heat(alice, one), atol=1e-6, rtol=0)
    assert two["windows_total"] is not None and two["windows_done"] == two["windows_total"]
    summary = two["result"]["summary"]
    # dense mode's bands are rows of 1536 px tiles: a 400 px mosaic has one (``parallel`` is a ceiling)
    ran = [0] if params.get("mode") == "dense" else [0, 1]
    assert [b["band"] for b in summary["parallel"]["bands"]] == ran and two["parallel"] == len(ran)
    assert summary["windows"]["total"] == one["result"]["summary"]["windows"]["total"]
    # the same request again is the same job, as for a plain job
    again = bob.post("/v1/jobs", json={"mosaic_id": mosaics["bob"], **TINY, "parallel": 2, **params})
    assert again.status_code == 200 and again.json()["id"] == shared["id"] and again.json()["reused"]


def test_cancel_stops_every_part(
    service: Service, clients: dict[str, httpx.Client], mosaics: dict[str, str]
) -> None:
    alice = clients["alice"]
    job_id = submit(alice, mosaics["alice"], step=3, parallel=2)["id"]
    wait_for(
        lambda: (view(alice, job_id)["windows_done"] or 0) > 0, timeout=TIMEOUT_S, what="bands computing"
    )
    assert view(alice, job_id)["status"] == "running"
    assert alice.delete(f"/v1/jobs/{job_id}").status_code == 202
    body = wait_status(alice, job_id, "canceled", "failed", "finished")
    assert body["status"] == "canceled" and body["error"]["code"] == "canceled"
    wait_for(
        lambda: all(p.get_status(refresh=True) in ("failed", "canceled") for p in parts(service, job_id)),
        timeout=60,
        what="every band to stop",
    )
    quick = submit(alice, mosaics["alice"], step=60)["id"]  # both workers are free again
    assert wait_status(alice, quick, "finished", "failed")["status"] == "finished"


def test_a_killed_band_is_retried_alone(
    service: Service, clients: dict[str, httpx.Client], mosaics: dict[str, str]
) -> None:
    bob = clients["bob"]
    shared = submit(bob, mosaics["bob"], step=5, parallel=2)

    def both_running() -> list[Job] | None:
        jobs = parts(service, shared["id"])
        running = all(
            j.get_status() == "started" and (j.meta.get(MetaKey.WINDOWS_DONE) or 0) > 0 for j in jobs
        )
        return jobs if running else None

    band0, band1 = wait_for(both_running, timeout=TIMEOUT_S, what="both bands computing")
    victim = str(band1.worker_name)
    service.kill_worker(victim)  # SIGKILL mid-band
    service.start_worker("w3")
    two = wait_status(bob, shared["id"], "finished", "failed")
    assert two["status"] == "finished", two["error"]
    band0.refresh()
    band1.refresh()
    assert band0.meta[MetaKey.ATTEMPTS] == 1  # the other band was kept, not computed again
    assert band1.meta[MetaKey.ATTEMPTS] == 2
    assert two["attempts"] == 2  # the job counts its band's retry
    reference = submit(clients["alice"], mosaics["alice"], step=5)
    one = wait_status(clients["alice"], reference["id"], "finished", "failed")
    np.testing.assert_allclose(heat(bob, two), heat(clients["alice"], one), atol=1e-6, rtol=0)


def one_worker_heat(clients: dict[str, httpx.Client], mosaics: dict[str, str], **params: Any) -> np.ndarray:
    """Alice's one-worker heatmap of the mosaic with ``params`` (the reference of every shared-out job)."""
    alice = clients["alice"]
    one = wait_status(alice, submit(alice, mosaics["alice"], **params)["id"], "finished", "failed")
    assert one["status"] == "finished", one["error"]
    return heat(alice, one)


def asked_again(
    service: Service, bob: httpx.Client, mosaic_id: str, ended: dict[str, Any], **params: Any
) -> dict[str, Any]:
    """The job ``ended`` asked again with two bands: a new job that finishes; the ended job's parts
    folder is gone by then or soon after."""
    again = submit(bob, mosaic_id, parallel=2, **params)
    assert again["id"] != ended["id"] and not again["reused"]
    done = wait_status(bob, again["id"], "finished", "failed")
    assert done["status"] == "finished", done["error"]
    wait_for(
        lambda: not parts_folders(service, "bob", ended["id"]),
        timeout=60,
        what="the parts folders of the ended jobs to be removed",
    )
    return done


def test_bands_of_a_deleted_job_never_reach_the_same_job_asked_again(
    service: Service, clients: dict[str, httpx.Client], mosaics: dict[str, str]
) -> None:
    """Three bands, deleted once two are written; the same job asked with two bands gives the one-worker
    heatmap, not a mix of the two jobs' bands."""
    bob, params = clients["bob"], {"step": 4, "threshold": 0.44}
    first = submit(bob, mosaics["bob"], parallel=3, **params)
    wait_for(
        lambda: len(band_files(service, "bob", first["id"])) >= 2, timeout=TIMEOUT_S, what="two bands written"
    )
    assert bob.delete(f"/v1/jobs/{first['id']}").status_code == 202
    ended = wait_status(bob, first["id"], "canceled", "failed", "finished")
    assert ended["status"] == "canceled", ended
    assert ended["error"]["message"] != "canceled before it started"
    again = asked_again(service, bob, mosaics["bob"], ended, **params)
    np.testing.assert_allclose(
        heat(bob, again), one_worker_heat(clients, mosaics, **params), atol=1e-6, rtol=0
    )


def test_a_failed_job_asked_again_gives_the_one_worker_result(
    service: Service, clients: dict[str, httpx.Client], tmp_path: Path
) -> None:
    """Its mosaic deleted while its bands compute: the bands stop at once and the job fails ``mosaic_gone``;
    the mosaic uploaded again and the job asked again with two bands gives the one-worker heatmap."""
    bob, params = clients["bob"], {"step": 4, "sigma": 20.0}
    png = texture_png(tmp_path / "again.png", 400, seed=7)
    mosaic = upload_id(bob, png)
    first = submit(bob, mosaic, parallel=3, **params)
    wait_for(
        lambda: (view(bob, first["id"])["windows_done"] or 0) > 0, timeout=TIMEOUT_S, what="bands computing"
    )
    assert bob.delete(f"/v1/mosaics/{mosaic}").status_code in (200, 204)
    ended = wait_status(bob, first["id"], "failed", "canceled", "finished")
    assert ended["status"] == "failed" and ended["error"]["code"] == "mosaic_gone", ended
    wait_for(
        lambda: all(
            p.get_status(refresh=True) in ("failed", "canceled") for p in parts(service, first["id"])
        ),
        timeout=60,
        what="every band to stop",
    )
    assert upload_id(bob, png) == mosaic
    again = asked_again(service, bob, mosaic, ended, **params)
    alice = clients["alice"]
    reference = {"alice": upload_id(alice, png)}
    np.testing.assert_allclose(
        heat(bob, again), one_worker_heat(clients, reference, **params), atol=1e-6, rtol=0
    )


def test_a_job_whose_band_was_killed_twice_asked_again_gives_the_one_worker_result(
    service: Service, clients: dict[str, httpx.Client], mosaics: dict[str, str]
) -> None:
    """A band killed with its worker, retried, killed again (no retry left): the job fails
    ``worker_lost``, its parts folder is removed, and the job asked again gives the one-worker heatmap."""
    bob, params = clients["bob"], {"step": 4, "sigma": 24.0}
    first = submit(bob, mosaics["bob"], parallel=3, **params)

    def band_running(attempt: int) -> Job | None:
        for job in parts(service, first["id"]):
            if (
                job.get_status() == "started"
                and job.meta.get(MetaKey.ATTEMPTS) == attempt
                and (job.meta.get(MetaKey.WINDOWS_DONE) or 0) > 0
            ):
                return job
        return None

    victim = wait_for(lambda: band_running(1), timeout=TIMEOUT_S, what="a band computing")
    service.kill_worker(str(victim.worker_name))
    service.start_worker(f"w-{uuid.uuid4().hex[:6]}")

    def retried() -> Job | None:
        victim.refresh()
        running = victim.get_status() == "started" and victim.meta.get(MetaKey.ATTEMPTS) == 2
        return victim if running and (victim.meta.get(MetaKey.WINDOWS_DONE) or 0) > 0 else None

    wait_for(retried, timeout=TIMEOUT_S, what="the killed band computing again")
    assert view(bob, first["id"])["attempts"] == 2  # the job shows its band's retry
    service.kill_worker(str(victim.worker_name))
    service.start_worker(f"w-{uuid.uuid4().hex[:6]}")
    ended = wait_status(bob, first["id"], "failed", "canceled", "finished")
    assert ended["status"] == "failed" and ended["error"]["code"] == "worker_lost", ended
    again = asked_again(service, bob, mosaics["bob"], ended, **params)
    np.testing.assert_allclose(
        heat(bob, again), one_worker_heat(clients, mosaics, **params), atol=1e-6, rtol=0
    )


def test_parallel_is_a_ceiling(clients: dict[str, httpx.Client], tmp_path: Path) -> None:
    """A 100 px mosaic has two window rows at step 64: three bands asked, two run, the summary says so."""
    bob = clients["bob"]
    mosaic = upload_id(bob, texture_png(tmp_path / "small.png", 100, seed=3))
    done = wait_status(bob, submit(bob, mosaic, step=64, parallel=3)["id"], "finished", "failed")
    assert done["status"] == "finished", done["error"]
    assert [b["band"] for b in done["result"]["summary"]["parallel"]["bands"]] == [0, 1]
