"""A real Orthanc PACS with its DICOMweb plugin for the tests: its own loopback ports, storage folder and
configuration, started as a subprocess and stopped at the end."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import wait_for
from tests.conftest import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 60.0


class Orthanc:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> Path:
        path = self.root / "orthanc.json"
        config = {
            "Name": "rcmseg-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.port,
            "DicomPort": free_port(),
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    def start(self) -> None:
        log = (self.root / "orthanc.log").open("ab")
        self.proc = subprocess.Popen([str(ORTHANC), str(self.config())], stdout=log, stderr=log)
        wait_for(self._up, timeout=START_TIMEOUT_S, what="Orthanc to answer /dicom-web/studies")

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"Orthanc exited with {self.proc.returncode}; see {self.root}/orthanc.log")
        try:
            return httpx.get(f"{self.dicomweb}/studies", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def instances(self) -> list[str]:
        """The Orthanc ids of every stored instance."""
        return list(httpx.get(f"{self.url}/instances", timeout=10).json())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def running_orthanc(root: Path) -> Iterator[Orthanc]:
    if not ORTHANC.is_file() or not DICOMWEB_PLUGIN.is_file() or shutil.which("dciodvfy") is None:
        pytest.fail("Orthanc, its DICOMweb plugin or dicom3tools missing: run make system-deps")
    root.mkdir(parents=True, exist_ok=True)
    orthanc = Orthanc(root)
    try:
        orthanc.start()
        yield orthanc
    finally:
        orthanc.stop()
