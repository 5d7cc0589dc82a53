"""/docs and /redoc in Debian's Chromium with every request to another host refused: the pages render from
the server's own files and ask for nothing elsewhere (issue 14 row 29, issue 29)."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server_url(serve_app, synthetic_mlp_run):
    from digitlab.serve import create_app

    return serve_app(create_app(synthetic_mlp_run))


@pytest.fixture
def offline_page(browser, server_url):
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
    page.close()


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
