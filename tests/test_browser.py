"""The drawing page in Debian's Chromium through Playwright, against the real server (uvicorn on loopback)
and the fast CNN trained on real MNIST: digits drawn with pointer strokes like a person would.

Screenshots go to the session's `artifacts` directory under pytest's temporary directory.
"""

import math
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAD = 280  # the pad's canvas px; strokes below are given in these units

# Strokes as a person draws them, in pad px: a list of strokes, each a list of (x, y) points.
STROKES = {
    1: [[(146, 45), (140, 140), (134, 236)]],
    7: [[(70, 62), (140, 60), (208, 64), (165, 150), (118, 238)]],  # the bar, then down-left without lifting
    0: [[(140 + 62 * math.sin(2 * math.pi * t / 48), 140 - 92 * math.cos(2 * math.pi * t / 48)) for t in range(50)]],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(trained_run):
    import uvicorn

    from digitlab.serve import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(trained_run), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url):
    """The page, with every request it makes recorded: all must go to our server."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    # The browser logs a failed fetch (a 4xx) as a console error; those are tested on purpose, not errors.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 4" not in m.text else None)
    page.goto(server_url + "/")
    page.wait_for_selector("#bars li")
    yield page
    elsewhere = [url for url in requests if not url.startswith((server_url, "blob:", "data:"))]
    assert not elsewhere, elsewhere
    assert not errors
    context.close()


def draw(page, strokes) -> None:
    """Pointer strokes on #pad with the mouse; points in pad px, moved through in small steps."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / PAD
    for stroke in strokes:
        points = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(x, y, steps=6)
        page.mouse.up()


def draw_by_touch(page, strokes) -> None:
    """The same with a finger: touch events through the DevTools protocol, which become pointer events."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / PAD
    for stroke in strokes:
        points = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]
        (x0, y0), rest = points[0], points[1:]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
        for (xa, ya), (xb, yb) in zip(points, rest):
            for k in range(1, 7):
                x, y = xa + (xb - xa) * k / 6, ya + (yb - ya) * k / 6
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def shown_result(page) -> dict:
    """Wait for the answer to the pad as it is now, then read what the page shows."""
    page.wait_for_selector('#result[data-state="done"]', timeout=20_000)
    return page.evaluate("""() => {
        const seen = document.getElementById("seen");
        const px = seen.getContext("2d").getImageData(0, 0, seen.width, seen.height).data;
        let lit = 0;
        for (let i = 0; i < px.length; i += 4) lit += px[i] > 0;
        return {
            digit: document.getElementById("digit").textContent,
            confidence: document.getElementById("confidence").textContent,
            top: document.querySelector("#bars li.top .name").textContent,
            bars: document.querySelectorAll("#bars li").length,
            unsure: !document.getElementById("unsure").hidden,
            seenLit: lit / (px.length / 4),
        };
    }""")


def test_drawn_digits_are_recognised(page, artifacts):
    for digit in (1, 7, 0):
        page.click("#clear")
        assert page.locator("#result").get_attribute("data-state") == "empty"
        assert page.locator("#digit").text_content() == "?"
        draw(page, STROKES[digit])
        shown = shown_result(page)
        page.screenshot(path=str(artifacts / f"draw-{digit}.png"), animations="disabled")
        assert shown["digit"] == str(digit), shown
        assert shown["top"] == str(digit) and shown["bars"] == 10 and not shown["unsure"]
        assert shown["confidence"].endswith("%")
        assert 0.05 < shown["seenLit"] < 0.6  # the 28x28 image the model got is drawn, ink on black


def test_upload_an_image(page, mnist, tmp_path, artifacts):
    from PIL import Image

    path = tmp_path / "mnist-test-0.png"
    Image.fromarray(mnist.x_test[0]).resize((140, 140)).save(path)  # white ink on black: polarity is handled
    page.set_input_files("#upload", str(path))
    shown = shown_result(page)
    page.screenshot(path=str(artifacts / "upload.png"), animations="disabled")
    assert shown["digit"] == str(int(mnist.y_test[0]))


def test_unsure_answer_shows_the_reason_and_clear_empties_the_result(page, artifacts):
    # The server's answer is replaced by a canned unsure one: whether a scribble is unsure depends on the model.
    probabilities = [0.02] * 10
    probabilities[9], probabilities[4] = 0.55, 0.27
    unsure = {
        "digit": None,
        "label": None,
        "confidence": 0.55,
        "probabilities": probabilities,
        "top3": [
            {"digit": 9, "label": "9", "probability": 0.55},
            {"digit": 4, "label": "4", "probability": 0.27},
            {"digit": 0, "label": "0", "probability": 0.02},
        ],
        "unsure": True,
        "reason": "confidence 0.550 is below the threshold 0.850",
        "model": {"name": "canned", "architecture": "cnn"},
        "preprocessed": [[0] * 28] * 28,
    }
    page.route("**/api/predict", lambda route: route.fulfill(json=unsure))
    draw(page, STROKES[1])
    shown = shown_result(page)
    page.screenshot(path=str(artifacts / "unsure.png"), animations="disabled")
    assert shown["digit"] == "?" and shown["unsure"] and shown["top"] == "9", shown
    assert page.locator("#unsure").text_content() == (
        "Not sure: confidence 0.550 is below the threshold 0.850. Best guess 9."
    )
    assert shown["confidence"] == "55.0%"
    page.click("#clear")
    assert page.locator("#result").get_attribute("data-state") == "empty"
    assert page.locator("#digit").text_content() == "?"
    assert page.locator("#confidence").text_content() == "–"
    assert page.locator("#unsure").is_hidden()


def test_uploading_a_non_image_shows_the_servers_reason(page, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not really a PNG")
    page.set_input_files("#upload", str(path))
    page.wait_for_selector('#result[data-state="error"]', timeout=20_000)
    assert "not an image" in page.locator("#status").text_content()
    assert page.locator("#digit").text_content() == "?"


def test_phone_width_and_touch(browser, server_url, artifacts):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True, is_mobile=True
    )
    page = context.new_page()
    page.goto(server_url + "/")
    page.wait_for_selector("#bars li")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    draw_by_touch(page, STROKES[7])
    shown = shown_result(page)
    page.screenshot(path=str(artifacts / "phone-7.png"), full_page=True, animations="disabled")
    assert shown["digit"] == "7", shown
    assert page.evaluate("window.scrollY") == 0  # the finger drew; it did not scroll the page
    context.close()
