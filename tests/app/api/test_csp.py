"""The viewer page under the service's Content-Security-Policy, in headless Chromium: signing in,
uploading and drawing the mosaic's tiles with OpenSeadragon raise no CSP violation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.api.middleware import OPENSEADRAGON_STYLE
from tests.app.conftest import TOKENS, Service, running_service
from tests.app.viewer.helpers import OPENSEADRAGON_JS, chromium_page, require_browser_assets

pytestmark = pytest.mark.slow

COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


@pytest.fixture(scope="module")
def csp_service(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    require_browser_assets()
    with running_service(service_env, tmp_path_factory.mktemp("csp-logs")) as svc:
        yield svc


def test_the_viewer_works_under_the_csp(csp_service: Service, real_tile: Path, tmp_path: Path) -> None:
    console: list[str] = []
    with chromium_page(tmp_path / "profile") as page:
        page.add_init_script(COLLECT_VIOLATIONS)
        page.on("console", lambda message: console.append(message.text))
        response = page.goto(csp_service.url + "/")
        assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
        page.get_by_label("Access token").fill(TOKENS["alice"])
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="New job").wait_for()
        page.get_by_label("Mosaic (TIFF, PNG, JPEG or BMP)").set_input_files(str(real_tile))
        page.wait_for_function(
            "() => window.rcmseg && rcmseg.viewer && rcmseg.viewer.world.getItemCount() === 1"
            " && rcmseg.viewer.world.getItemAt(0).getFullyLoaded()",
            timeout=90_000,
        )
        violations = page.evaluate("() => window.__csp")
    assert violations == [], violations
    assert not [m for m in console if "Content Security Policy" in m], console


def test_the_style_the_csp_allows_by_hash_is_the_one_openseadragon_adds() -> None:
    vendored = OPENSEADRAGON_JS.read_text(encoding="utf-8")
    assert f'textContent="{OPENSEADRAGON_STYLE}"' in vendored  # a new release must be checked again
