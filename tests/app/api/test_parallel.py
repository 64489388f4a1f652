"""One job shared out over two real worker processes (``parallel: 2``): the same result as one worker,
cancel stops every part, a killed band is retried alone. Real Redis, uvicorn API, tiny model, CPU."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.app.conftest import Service, texture_png, wait_for
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
    assert [b["band"] for b in summary["parallel"]["bands"]] == [0, 1]
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
    reference = submit(clients["alice"], mosaics["alice"], step=5)
    one = wait_status(clients["alice"], reference["id"], "finished", "failed")
    np.testing.assert_allclose(heat(bob, two), heat(clients["alice"], one), atol=1e-6, rtol=0)
