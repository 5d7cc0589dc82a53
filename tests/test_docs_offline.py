"""/docs and /redoc in Debian's Chromium with every request to another host refused: the pages render from
the server's own files and ask for nothing elsewhere (issue 14 row 29, issue 29)."""

import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory, synthetic_mlp_run):
    import socket

    import uvicorn

    from digitlab.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(synthetic_mlp_run), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def offline_page(server_url):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        blocked = []

        def only_local(route):
            if route.request.url.startswith(server_url + "/"):
                route.continue_()
            else:
                blocked.append((route.request.resource_type, route.request.url))
                route.abort()

        page.route("**/*", only_local)
        yield page, blocked
        browser.close()


def test_swagger_ui_renders_offline(offline_page, server_url):
    page, blocked = offline_page
    page.goto(f"{server_url}/docs")
    page.locator(".opblock-summary-path", has_text="/api/predict").first.wait_for(timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/predict" in paths and "/api/health" in paths
    assert blocked == []


def test_redoc_renders_offline(offline_page, server_url):
    page, blocked = offline_page
    page.goto(f"{server_url}/redoc")
    page.get_by_role("heading", name="digitlab").first.wait_for(timeout=20_000)
    assert page.get_by_text("/api/predict").first.is_visible()
    # ReDoc's sidebar shows its maker's logo from a CDN: the page asks for nothing outside the server.
    page.get_by_text("API docs by Redocly").wait_for(timeout=20_000)
    assert blocked == []
    assert page.locator('img[alt="redocly logo"]').count() == 0  # left out, not a broken image
