"""Schemathesis over the OpenAPI schema against the real service (uvicorn API and a worker): every
operation, a bounded number of generated cases each, no server error and every answer as documented
(status, content type, body schema)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import TOKENS, Service
from tests.conftest import REPO

pytestmark = pytest.mark.slow

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = 50
"""Per operation and phase: some 1,200 cases in all, under a minute on two cores."""


@pytest.fixture(scope="module")
def fuzzed(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # Generated requests also try wrong tokens; the failure limit would soon answer everything with 429.
    env = dict(service_env, RCMSEG_AUTH_FAILURE_BURST="1000000")
    svc = Service(env, tmp_path_factory.mktemp("logs"))
    try:
        svc.start_worker("fuzz")
        svc.start_api()
        svc.wait_workers(1)
        yield svc
    finally:
        svc.stop()


def test_schemathesis_finds_no_failure(fuzzed: Service, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    command = [
        str(schemathesis), "run", f"{fuzzed.url}/openapi.json",
        "--checks", CHECKS,
        "--header", f"Authorization: Bearer {TOKENS['alice']}",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", "14",
        "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "30",
        "--workers", "1",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    cases = re.search(r"(\d+) generated", output)
    print(output[-1500:])
    assert cases is not None, output[-3000:]
    failures = re.search(r"found (\d+) unique failures?", output)
    print(f"schemathesis: {cases.group(1)} cases, {failures.group(1) if failures else 0} failures")
    assert run.returncode == 0 and failures is None, output[-6000:]
    assert int(cases.group(1)) >= 200
    api_log = (fuzzed.logs / "api.log").read_text()
    assert "unhandled error" not in api_log and "Traceback" not in api_log
