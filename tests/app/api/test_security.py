"""Hostile and careless requests against a real API under uvicorn (no worker needed): authentication
before the body is read, capped and checked JSON bodies, error headers, security headers, the failed
authentication limit (which never stops a valid token), credentials in URLs (refused, and redacted from the
access log), and the partial uploads of a killed API."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from app.api import VIEWER_STATIC
from app.api.middleware import FailureLimiter, failure_keys
from tests.app.conftest import TOKENS, Service, texture_png, wait_for

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKENS['alice']}"}
BIG_BODY = 64 * 1024**2


@pytest.fixture(scope="module")
def api(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API alone, with access logs on (so that their redaction can be read)."""
    svc = Service(dict(service_env, RCMSEG_ACCESS_LOG="true"), tmp_path_factory.mktemp("logs"))
    try:
        svc.start_api()
        yield svc
    finally:
        svc.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def chunks(total: int, size: int = 1024**2) -> Iterator[bytes]:
    block = b"{" + b" " * (size - 1)
    for _ in range(total // size):
        yield block


def test_an_unauthenticated_64_mib_body_is_refused_unread(api: Service) -> None:
    assert api.api is not None
    before = rss_bytes(api.api.pid)
    started = time.monotonic()
    for path in ("/v1/jobs", "/v1/mosaics"):
        # Announced: refused from the headers, the body never read.
        refused = httpx.post(
            f"{api.url}{path}",
            content=b"{" * BIG_BODY,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        # Streamed without a length: the same.
        streamed = httpx.post(f"{api.url}{path}", content=chunks(BIG_BODY), timeout=60)
        assert streamed.status_code == 401
    growth = rss_bytes(api.api.pid) - before
    print(f"RSS growth for 4 unauthenticated 64 MiB bodies: {growth / 1024**2:.1f} MiB "
          f"in {time.monotonic() - started:.1f} s")  # fmt: skip
    assert growth < 16 * 1024**2


def test_malformed_json_without_a_token_is_401(api: Service) -> None:
    response = httpx.post(f"{api.url}/v1/jobs", content=b"{not json", timeout=10)
    assert response.status_code == 401


def test_json_bodies_are_capped_and_checked(api: Service) -> None:
    with api.client("alice") as alice:
        big = alice.post("/v1/jobs", content=b" " * (65 * 1024), headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and big.json()["code"] == "payload_too_large"
        chunked = alice.post("/v1/jobs", content=chunks(2 * 1024**2, 16 * 1024))
        assert chunked.status_code == 413
        for body, expected in [
            (b'{"mosaic_id": "ab",,}', "not valid JSON"),
            (b'{"mosaic_id": "\xff\xfe"}', "not UTF-8"),
        ]:
            bad = alice.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
            assert bad.status_code == 422, bad.text
            error = bad.json()
            assert error["code"] == "invalid_parameter" and expected in error["message"]
            assert "field" not in error  # no character offset posing as a field


def test_error_responses_keep_their_headers(api: Service) -> None:
    with api.client("alice") as alice:
        wrong_method = alice.put("/v1/jobs")
        assert wrong_method.status_code == 405
        assert "GET" in wrong_method.headers["allow"]
        assert wrong_method.json()["code"] == "method_not_allowed"
    with api.client(None) as anonymous:
        missing = anonymous.get("/v1/mosaics")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"


def test_every_response_carries_the_security_headers(api: Service) -> None:
    with api.client("alice") as alice:
        responses = [alice.get("/"), alice.get("/healthz"), alice.get("/v1/jobs"), alice.get("/v1/nothing")]
        responses.append(httpx.get(f"{api.url}/v1/jobs", timeout=10))  # a 401
    for response in responses:
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", response.url
        csp = headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert headers["referrer-policy"] == "no-referrer"
    for owner_data in responses[2:]:
        assert owner_data.headers["cache-control"] == "no-store"


def test_head_works_under_uvicorn_as_get_does(api: Service) -> None:
    with api.client("alice") as alice:
        for path in ("/healthz", "/v1/jobs", "/", "/openapi.json"):
            got, head = alice.get(path), alice.head(path)
            assert head.status_code == got.status_code == 200, path
            assert head.content == b"" and head.headers["content-length"] == got.headers["content-length"]
    assert httpx.head(f"{api.url}/v1/jobs", timeout=30).status_code == 401  # the same gate


class _InlineFinder(HTMLParser):
    """Inline scripts, style elements and style or event-handler attributes: what the CSP blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.blocked.append("inline <script>")
        if tag == "style":
            self.blocked.append("<style>")
        self.blocked += [f"{tag} {n}=" for n in names if n == "style" or n.startswith("on")]


def test_the_viewer_page_has_nothing_the_csp_blocks(api: Service) -> None:
    page = httpx.get(f"{api.url}/", timeout=10)
    assert page.status_code == 200 and "rcmseg" in page.text
    finder = _InlineFinder()
    finder.feed(page.text)
    assert finder.blocked == []
    for script in re.findall(r'<script[^>]+src="([^"]+)"', page.text):
        assert not script.startswith(("http:", "https:", "//")), script  # this origin only
        assert httpx.get(f"{api.url}/{script}", timeout=10).status_code == 200, script
    for name in ("index.html",):
        assert (VIEWER_STATIC / name).is_file()


def test_what_is_public(api: Service) -> None:
    anonymous = {
        path: httpx.get(f"{api.url}{path}", timeout=10).status_code
        for path in ("/healthz", "/openapi.json", "/", "/docs", "/v1/models", "/v1/jobs", "/v1/mosaics")
    }
    assert anonymous == {
        "/healthz": 200,
        "/openapi.json": 200,
        "/": 200,
        "/docs": 404,  # off unless RCMSEG_API_DOCS
        "/v1/models": 401,
        "/v1/jobs": 401,
        "/v1/mosaics": 401,
    }


def test_the_schema_documents_what_the_gate_answers(api: Service) -> None:
    paths = httpx.get(f"{api.url}/openapi.json", timeout=10).json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            if path.startswith("/v1/"):
                assert {"401", "429", "503"} <= statuses, (method, path)
            if "requestBody" in operation:
                assert {"413", "422"} <= statuses, (method, path)


CREDENTIAL_PARAMS = [
    "token",
    "to%6Ben",  # the app decodes it as "token"
    "access_token",
    "api_key",
    "auth_token",
    "private_token",
    "bearer",
    "jwt",
    "x-api-key",
    "session_id",
    "passphrase",
    "t",
]


def test_credentials_in_the_url_are_refused_and_never_reach_the_log(api: Service) -> None:
    secret = "leaked-secret-0123456789"
    for name in CREDENTIAL_PARAMS:
        refused = httpx.get(f"{api.url}/v1/jobs?limit=1&{name}={secret}", timeout=10)
        assert refused.status_code == 400, (name, refused.text)
        assert refused.json()["code"] == "credential_in_url" and secret not in refused.text
    with api.client("alice") as alice:
        refused = alice.get("/v1/jobs?limit=1&access_token=" + secret)
        assert refused.status_code == 400 and "'access_token'" in refused.json()["message"]
        assert alice.get(f"/v1/jobs;token={secret}").status_code == 404  # a path parameter: no route
        assert alice.get("/v1/jobs?limit=1").status_code == 200
    expected = len(CREDENTIAL_PARAMS) + 2

    def logged() -> str | None:
        text = (api.logs / "api.log").read_text()
        return text if text.count("[redacted]") >= expected and "/v1/jobs?limit=1 " in text else None

    text = wait_for(logged, timeout=30, what="the access-log lines")
    assert secret not in text


def test_a_client_that_disconnects_mid_upload_is_an_info_line(api: Service) -> None:
    tmp = Path(api.env["RCMSEG_DATA_DIR"]) / "tmp"
    before = set(tmp.glob("upload-*.part"))
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/mosaics HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {TOKENS['alice']}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 1000000\r\n\r\n"
            + b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            + b"\x89PNG" * 1000
        )
        # The upload has begun once its partial file exists; only then is the disconnect one mid-upload.
        wait_for(lambda: set(tmp.glob("upload-*.part")) - before, timeout=30, what="the upload to begin")

    def logged() -> str | None:
        text = (api.logs / "api.log").read_text()
        return text if "client disconnected during POST /v1/mosaics" in text else None

    text = wait_for(logged, timeout=60, what="the disconnect to be logged")
    line = next(li for li in text.splitlines() if "client disconnected" in li)
    assert '"level": "info"' in line
    assert "Traceback" not in text and "unhandled error" not in text


def test_an_upload_in_the_wrong_field_says_the_file_field_is_missing(api: Service, tmp_path: Path) -> None:
    png = texture_png(tmp_path / "real-size.png", 400)
    with api.client("alice") as alice, png.open("rb") as fh:
        response = alice.post("/v1/mosaics", files={"upload": ("real-size.png", fh)})
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith("missing field 'file'")


def test_partial_uploads_of_a_killed_api_are_swept_at_its_next_start(api: Service) -> None:
    tmp = Path(api.env["RCMSEG_DATA_DIR"]) / "tmp"
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    sock.sendall(
        b"POST /v1/mosaics HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKENS['alice']}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 1000000\r\n\r\n"
        + b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        + b"\x89PNG" * 1000
    )
    partials = wait_for(lambda: list(tmp.glob("upload-*.part")), timeout=60, what="a partial upload")
    api.kill_api()
    sock.close()
    assert all(p.exists() for p in partials)  # the dead API left it behind
    api.start_api()
    assert not any(p.exists() for p in partials)


def test_failed_authentication_is_limited_but_valid_tokens_pass(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = dict(service_env, RCMSEG_AUTH_FAILURE_BURST="5", RCMSEG_AUTH_FAILURE_WINDOW_S="3600")
    svc = Service(env, tmp_path_factory.mktemp("logs"))
    try:
        svc.start_api()
        wrong = {"Authorization": "Bearer wrong-token-0123456789abcdef"}
        with httpx.Client(base_url=svc.url, timeout=10) as client:
            statuses = [client.get("/v1/jobs", headers=wrong).status_code for _ in range(8)]
            assert statuses == [401] * 5 + [429] * 3
            limited = client.get("/v1/jobs", headers=wrong)
            assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 3600
            assert limited.json()["code"] == "too_many_requests"
            other_wrong = {"Authorization": "Bearer another-wrong-token-0123456789"}
            assert client.get("/v1/jobs", headers=other_wrong).status_code == 429  # the address is limited
            assert client.get("/v1/jobs").status_code == 429  # and so is no token at all
            # A valid token from the same address is never limited by the failures of others there.
            for _ in range(3):
                assert client.get("/v1/jobs", headers=AUTH).status_code == 200
            assert client.get("/healthz").status_code == 200  # public routes are not limited
    finally:
        svc.stop()


def test_the_failure_limit_counts_per_address_and_per_credential_in_fixed_windows() -> None:
    now = [1000.0]
    limiter = FailureLimiter(burst=3, window_s=60, clock=lambda: now[0])
    proxy = failure_keys("10.0.0.1", "Bearer wrong-1")
    for _ in range(3):
        assert limiter.retry_after(*proxy) is None
        limiter.failed(*proxy)
    assert limiter.retry_after(*proxy) == 60
    # The same wrong credential from another address is limited by its own count...
    assert limiter.retry_after(*failure_keys("10.0.0.2", "Bearer wrong-1")) == 60
    # ...another credential from another address is not.
    assert limiter.retry_after(*failure_keys("10.0.0.2", "Bearer wrong-2")) is None
    now[0] += 45
    assert limiter.retry_after(*proxy) == 15  # the window is fixed: it closes 60 s after it opened
    now[0] += 15
    assert limiter.retry_after(*proxy) is None  # and the count starts again
    limiter.failed(*proxy)
    assert limiter.retry_after(*proxy) is None
    assert not any("wrong" in key for key in limiter.windows)  # credentials are kept by digest only
