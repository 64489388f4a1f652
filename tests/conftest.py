"""Fixtures shared by the whole suite: real data, tiny real models, and a real Redis server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_TILE = SHARED_DATA / "rcm_tile_isic_16bit.png"


@pytest.fixture(scope="session", autouse=True)
def cpu_process() -> None:
    """Set this process up for networks on the CPU, as the worker and the command line do at start."""
    import torch

    from worker.engine.device import prepare_process

    prepare_process(torch.device("cpu"))


@pytest.fixture(scope="session")
def real_tile() -> Path:
    """The real 16-bit RCM tile shipped beside the repository (never copied into it)."""
    if not REAL_TILE.is_file():
        pytest.fail(f"real test tile missing: {REAL_TILE}")
    return REAL_TILE


def make_model_dir(
    path: Path,
    *,
    arch: str = "test_efficientnet",
    window: int = 64,
    pixel_size_um: float = 2.0,
    seed: int = 0,
) -> Path:
    """Write a random-weight model folder in the checkpoint format the engine loads."""
    import torch

    from models.card import ModelCard
    from models.network import create_network
    from worker.io.checkpoint import save_model

    torch.manual_seed(seed)
    net = create_network(arch, in_chans=1)
    card = ModelCard(
        name=f"random-{arch}",
        arch=arch,
        in_chans=1,
        num_classes=1,
        window=window,
        pixel_size_um=pixel_size_um,
        mean=[0.5],
        std=[0.25],
        positive_class="aspecific",
        threshold=0.5,
        training={"note": "random weights for tests"},
        metrics={},
    )
    save_model(path, net, card)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight timm ``test_efficientnet`` (about 0.1 M parameters) with 64 px windows."""
    return make_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def b2_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ``efficientnet_b2`` with the paper's 256 px windows at 2 um/px."""
    return make_model_dir(tmp_path_factory.mktemp("models") / "b2", arch="efficientnet_b2", window=256)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    """A private ``redis-server`` on a free loopback port, for as long as the block runs; yields the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
    args += ["--appendonly", "no", "--logfile", str(workdir / "redis.log")]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60  # generous: a loaded machine starts processes slowly
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port, stopped at the end of the session."""
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mounts a tmpfs of ``size`` bytes under ``tmp_path`` (a disk to fill), unmounted at the end; the test
    is skipped where mounting is not permitted (not root, or a container without the capability)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command here")
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)
