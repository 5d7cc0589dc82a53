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

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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


def arc(cu, cv, ru, rv, start, stop, n=24) -> list[tuple[float, float]]:
    """Points on an ellipse from angle `start` to `stop` in degrees; 90 is down, as on the screen."""
    angles = (math.radians(start + (stop - start) * k / n) for k in range(n + 1))
    return [(cu + ru * math.cos(a), cv + rv * math.sin(a)) for a in angles]


def eight(n=48) -> list[tuple[float, float]]:
    """One stroke from the top round a smaller upper loop, through the waist, round a wider lower one."""
    points = []
    for k in range(n + 1):
        t = 2 * math.pi * k / n
        v = 0.5 - 0.5 * math.cos(t)
        points.append((math.sin(2 * t) * (0.75 if v < 0.5 else 0.95), v))
    return points


# Every digit as a person writes it, in a frame of its own: u from -1 (left) to 1 (right), v from 0 (top)
# to 1 (bottom); `glyph` places it on a pad, upright or slanted.
GLYPHS = {
    0: [arc(0, 0.5, 1, 0.5, -90, 280)],
    1: [[(0.2, 0), (0.05, 0.5), (-0.1, 1)]],
    2: [arc(0, 0.27, 0.9, 0.27, 180, 380) + [(-1, 1), (1.05, 1)]],
    3: [arc(0, 0.25, 0.8, 0.25, -150, 90) + arc(0, 0.75, 0.95, 0.25, -90, 160)],
    4: [[(0.3, 0), (-0.95, 0.65), (1, 0.65)], [(0.5, 0.15), (0.5, 1)]],
    5: [[(-0.6, 0), (-0.75, 0.45)] + arc(0, 0.69, 0.95, 0.29, -145, 160), [(-0.6, 0), (0.9, 0)]],
    6: [[(0.75, 0), (0.15, 0.1), (-0.5, 0.33), (-0.85, 0.55)] + arc(0, 0.72, 0.92, 0.28, 180, -180)],
    7: [[(-0.9, 0), (1, 0), (-0.15, 1)]],
    8: [eight()],
    9: [arc(0.05, 0.27, 0.85, 0.27, 0, -360) + [(0.85, 0.6), (0.6, 1)]],
}


def glyph(digit, cx, top, height, half_width, slant=0.0) -> list[list[tuple[float, float]]]:
    """GLYPHS[digit] in pad px: `height` px tall from `top`, centred on `cx`, sheared by `slant` px to the
    right per px of height (the top leans right, as in most people's writing)."""
    return [
        [(cx + u * half_width + slant * (0.5 - v) * height, top + v * height) for u, v in stroke]
        for stroke in GLYPHS[digit]
    ]


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


def to_client(page, selector):
    """A function from a canvas's own px to the page's CSS px: the canvas is scaled by CSS, inside its border."""
    box = page.locator(selector).bounding_box()
    border, width = page.evaluate(
        "(s) => { const c = document.querySelector(s); return [c.clientLeft, c.width]; }", selector
    )
    scale = (box["width"] - 2 * border) / width
    return lambda x, y: (box["x"] + border + x * scale, box["y"] + border + y * scale)


def draw(page, strokes, selector="#pad") -> None:
    """Pointer strokes on a pad with the mouse; points in the pad's px, moved through in small steps."""
    at = to_client(page, selector)
    for stroke in strokes:
        points = [at(x, y) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(x, y, steps=6)
        page.mouse.up()


def draw_by_touch(page, strokes, selector="#pad") -> None:
    """The same with a finger: touch events through the DevTools protocol, which become pointer events."""
    cdp = page.context.new_cdp_session(page)
    at = to_client(page, selector)
    for stroke in strokes:
        points = [at(x, y) for x, y in stroke]
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
            top: document.querySelector("#bars li.top .name")?.textContent ?? null,
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


def canned(probabilities, unsure=False, reason=None) -> dict:
    """An answer of /api/predict as the server sends it, for probabilities given in class order."""
    order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
    best = order[0]
    return {
        "digit": None if unsure else best,
        "label": None if unsure else str(best),
        "confidence": probabilities[best],
        "probabilities": probabilities,
        "top3": [{"digit": i, "label": str(i), "probability": probabilities[i]} for i in order[:3]],
        "unsure": unsure,
        "reason": reason,
        "model": {"name": "canned", "architecture": "cnn"},
        "preprocessed": [[0] * 28] * 28,
    }


def spread(**peaks) -> list[float]:
    """Ten probabilities: the named classes (d5=0.516) as given, the rest sharing what is left."""
    probabilities = [0.0] * 10
    for name, p in peaks.items():
        probabilities[int(name[1:])] = p
    rest = (1 - sum(peaks.values())) / (10 - len(peaks))
    return [p if p else rest for p in probabilities]


UNSURE = canned(spread(d5=0.516, d6=0.3), unsure=True, reason="confidence 0.516 is below the threshold 0.756")
SURE = canned(spread(d7=0.973))


def answer_with(page, answers: dict) -> None:
    """Answer /api/predict with answers["now"], which the test changes as it goes."""
    page.route("**/api/predict", lambda route: route.fulfill(json=answers["now"]))


def seen_box(page) -> dict:
    return page.locator("#seen").bounding_box()


def test_unsure_answer_is_plain_words_and_moves_nothing(page, artifacts):
    # Canned answers: whether a scribble is unsure depends on the model.
    answers = {"now": UNSURE}
    answer_with(page, answers)
    before = seen_box(page)
    draw(page, STROKES[1])
    shown = shown_result(page)
    page.screenshot(path=str(artifacts / "unsure.png"), animations="disabled")
    assert shown["digit"] == "?" and shown["unsure"] and shown["top"] is None, shown
    assert page.locator("#unsure").text_content() == "Not sure — maybe 5 or 6"  # the top two classes
    assert shown["confidence"] == "–"  # no confidence shown as if it were an answer's
    assert seen_box(page) == before  # the message's space is kept while there is none: no jump

    page.click("#clear")
    assert page.locator("#result").get_attribute("data-state") == "empty"
    assert page.locator("#digit").text_content() == "?"
    assert page.locator("#confidence").text_content() == "–"
    assert page.locator("#unsure").is_hidden()
    assert seen_box(page) == before

    answers["now"] = SURE
    draw(page, STROKES[7])
    shown = shown_result(page)
    assert shown["digit"] == "7" and shown["top"] == "7" and shown["confidence"] == "97.3%", shown
    assert page.locator("#unsure").is_hidden()
    assert seen_box(page) == before


@pytest.mark.parametrize(
    "reason, preprocessed",
    [("no ink found in the image", [[0] * 28] * 28), ("the mark is not a digit", None)],
)
def test_no_answer_shows_only_the_reason(page, reason, preprocessed):
    # The API's answer when there is no digit to give: nulls and a reason.
    nothing = {**UNSURE, "confidence": None, "probabilities": None, "top3": None, "reason": reason}
    nothing["preprocessed"] = preprocessed
    answer_with(page, {"now": nothing})
    draw(page, STROKES[1])
    shown = shown_result(page)
    assert shown["digit"] == "?" and shown["confidence"] == "–" and shown["top"] is None, shown
    assert page.locator("#unsure").text_content() == reason[0].upper() + reason[1:]
    assert not page.locator("#bars").is_visible()  # no bars: there are no probabilities to show
    assert page.locator("#announce").text_content() == reason[0].upper() + reason[1:] + "."


def tab_through(page) -> list[dict]:
    """Tab through the page: each control focused in turn, with the outline it (or the label standing for
    an invisible input: the file input, the mode radios) draws."""
    visited = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focus = page.evaluate("""() => {
            const el = document.activeElement;
            if (el === document.body) return null;
            const drawn = el.id === "upload" || el.type === "radio" ? document.querySelector(`label[for="${el.id}"]`) : el;
            const style = getComputedStyle(drawn);
            return {name: el.id || el.getAttribute("href"), style: style.outlineStyle, width: style.outlineWidth};
        }""")
        if focus is None or (visited and focus["name"] == visited[0]["name"]):
            break
        visited.append(focus)
    return visited


def test_every_control_shows_keyboard_focus(page):
    visited = tab_through(page)
    assert [f["name"] for f in visited] == ["mode-digit", "clear", "upload", "/docs"], visited
    for focus in visited:
        assert focus["style"] != "none" and float(focus["width"].removesuffix("px")) >= 2, focus


def announced(page) -> list[str]:
    """The text of every live region a screen reader reads out (none hidden from it)."""
    return page.evaluate("""() => [...document.querySelectorAll("[aria-live]")]
        .filter((el) => getComputedStyle(el).display !== "none" && getComputedStyle(el).visibility !== "hidden")
        .map((el) => el.textContent)""")


def test_the_whole_answer_is_announced(page):
    answers = {"now": SURE}
    answer_with(page, answers)
    draw(page, STROKES[7])
    shown_result(page)
    assert "7, confidence 97.3%." in announced(page)
    page.click("#clear")
    answers["now"] = UNSURE
    draw(page, STROKES[1])
    shown_result(page)
    assert "Not sure — maybe 5 or 6 (confidence 0.516 is below the threshold 0.756)." in announced(page)


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


PHONES = [(320, 568), (375, 667), (390, 844), (844, 390), (667, 375)]  # CSS px, portrait and landscape


def phone(browser, server_url, width, height):
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=2, has_touch=True, is_mobile=True
    )
    page = context.new_page()
    page.goto(server_url + "/")
    page.wait_for_selector("#bars li")
    return context, page


@pytest.mark.parametrize("width, height", PHONES, ids=[f"{w}x{h}" for w, h in PHONES])
def test_phone_layout_fits_pad_answer_and_clear(browser, server_url, artifacts, width, height):
    context, page = phone(browser, server_url, width, height)
    draw_by_touch(page, STROKES[7])
    shown = shown_result(page)
    page.screenshot(path=str(artifacts / f"phone-{width}x{height}.png"), animations="disabled")
    assert shown["digit"] == "7", shown  # drawn on the scaled pad, the model still gets a 7
    assert page.evaluate("[window.scrollX, window.scrollY]") == [0, 0]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for selector in ("#pad", "#result .verdict", "#clear"):
        box = page.locator(selector).bounding_box()
        inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width
        assert inside and box["y"] + box["height"] <= height, (selector, box)
    # The pad is scaled by CSS only: its drawing resolution, and so the model's input, is unchanged.
    assert page.evaluate("[pad.width, pad.height]") == [PAD, PAD]
    box = page.locator("#pad").bounding_box()
    assert box["width"] == box["height"]
    context.close()


def test_pointer_lands_where_it_touches_on_a_scaled_pad(browser, server_url):
    context, page = phone(browser, server_url, 320, 568)
    box = page.locator("#pad").bounding_box()
    assert box["width"] < PAD  # the pad is shown smaller than its drawing resolution
    border = page.evaluate("pad.clientLeft")
    inner = box["width"] - 2 * border
    page.mouse.click(box["x"] + border + 70 * inner / PAD, box["y"] + border + 210 * inner / PAD)
    ink = page.evaluate("""([x, y]) => pad.getContext("2d").getImageData(x, y, 1, 1).data[0]""", [70, 210])
    mirrored = page.evaluate("""([x, y]) => pad.getContext("2d").getImageData(x, y, 1, 1).data[0]""", [210, 70])
    assert (ink, mirrored) == (0, 255)  # black where the pointer went down, white elsewhere
    context.close()


# --- Digit mode: people's digits, and marks that are not digits -----------------------------------------

SLANT = 0.45  # px to the right per px of height: the slant at which a large 6 was once read as a 5


@pytest.mark.parametrize("digit", range(10))
def test_large_slanted_digit_is_read_right(page, artifacts, digit):
    # 220 of the pad's 280 px tall, leaning right by SLANT: a person's quick handwriting, not MNIST's.
    draw(page, glyph(digit, cx=140, top=30, height=220, half_width=55, slant=SLANT))
    shown = shown_result(page)
    page.screenshot(path=str(artifacts / f"slanted-{digit}.png"), animations="disabled")
    assert shown["digit"] == str(digit) and not shown["unsure"], shown


def filled_pad() -> list[list[tuple[float, float]]]:
    """One stroke zigzagging across the whole pad, its passes closer than the stroke is wide."""
    return [[(8 if k % 2 else PAD - 8, 8 + 12 * k) for k in range(23)]]


MARKS = {
    "tap at the centre": [[(140, 140)]],
    "dot off-centre": [[(60, 210), (62, 211)]],
    "short tick": [[(120, 150), (132, 138)]],
    "filled pad": filled_pad(),
}


@pytest.mark.parametrize("mark", MARKS)
def test_a_mark_that_is_not_a_digit_gets_no_digit(page, mark):
    replies = []
    page.on("response", lambda r: replies.append(r) if r.url.endswith("/api/predict") else None)
    draw(page, MARKS[mark])
    shown = shown_result(page)
    answer = replies[-1].json()  # requests go one at a time: the last answers the pad as it is shown
    reason = page.locator("#unsure").text_content()
    assert answer["confidence"] is None and answer["top3"] is None, answer["reason"]  # the API: no digit
    assert shown["digit"] == "?" and shown["confidence"] == "–" and shown["top"] is None, shown
    assert reason == answer["reason"][0].upper() + answer["reason"][1:]  # the reason, in words
    assert not page.locator("#bars").is_visible()  # no bars: there are no probabilities to show


# --- Number mode --------------------------------------------------------------------------------------

NUMBER_PAD = (840, 280)  # the number pad's drawing resolution, px


def number_strokes(text, top=45, height=190, half_width=55, pitch=193, left=130):
    """Strokes writing `text` on the number pad, one upright digit every `pitch` px from `left`."""
    return [s for k, c in enumerate(text) for s in glyph(int(c), left + pitch * k, top, height, half_width)]


def number_mode(page) -> None:
    page.click('label[for="mode-number"]')
    assert page.locator("#number-pad").is_visible() and not page.locator("#pad").is_visible()


def shown_reading(page) -> dict:
    """Wait for the reading of the number pad as it is now, then read what the page shows."""
    page.wait_for_selector('#number-result[data-state="done"]', timeout=20_000)
    return page.evaluate("""() => {
        const lit = (c) => {
            const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < px.length; i += 4) n += px[i] > 0;
            return n / (px.length / 4);
        };
        const rect = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        return {
            text: document.getElementById("number-text").textContent,
            confidence: document.getElementById("number-confidence").textContent,
            message: document.getElementById("number-unsure").hidden ? null : document.getElementById("number-unsure").textContent,
            announced: document.getElementById("number-announce").textContent,
            pad: rect(document.getElementById("number-pad")),
            boxes: [...document.querySelectorAll("#number-boxes .box")].map((b) => ({
                digit: b.dataset.digit,
                tag: b.querySelector(".tag").textContent,
                unsure: b.classList.contains("unsure"),
                border: getComputedStyle(b).borderTopStyle,
                rect: rect(b),
            })),
            crops: [...document.querySelectorAll("#crops canvas")].map(lit),
        };
    }""")


def test_number_pad_reads_2026_as_it_is_written(page, artifacts):
    number_mode(page)
    draw(page, number_strokes("20"), "#number-pad")
    assert shown_reading(page)["text"] == "20"  # read at each pause, before the number is finished
    draw(page, number_strokes("2026")[len(number_strokes("20")) :], "#number-pad")
    shown = shown_reading(page)
    page.screenshot(path=str(artifacts / "number-2026.png"), animations="disabled")
    assert shown["text"] == "2026", shown
    assert [b["digit"] for b in shown["boxes"]] == ["2", "0", "2", "6"], shown["boxes"]
    # Each box lies over its own digit's ink: inside the pad, around the centre the digit was written at.
    at = to_client(page, "#number-pad")
    x0, y0, x1, y1 = shown["pad"]
    for k, b in enumerate(shown["boxes"]):
        left, top, right, bottom = b["rect"]
        assert x0 <= left < right <= x1 and y0 <= top < bottom <= y1, b
        centre, _ = at(130 + 193 * k, 0)
        assert left < centre < right, (k, b)
        assert b["tag"].startswith(b["digit"]) and b["tag"].endswith("%") and b["border"] == "solid", b
    assert len(shown["crops"]) == 4 and all(0.05 < lit < 0.6 for lit in shown["crops"]), shown["crops"]
    assert shown["confidence"].endswith("%") and shown["message"] is None, shown
    assert shown["announced"] == f"Read 2026, confidence {shown['confidence']}."
    assert shown["announced"] in announced(page)

    page.keyboard.press("Escape")  # Escape clears the pad of the mode shown
    assert page.locator("#number-result").get_attribute("data-state") == "empty"
    assert page.locator("#number-boxes .box").count() == 0 and page.locator("#crops canvas").count() == 0
    assert page.locator("#number-text").text_content() == "–"


def test_number_mode_says_why_there_is_no_reading_and_marks_unsure_digits(page):
    answers = {}
    page.route("**/api/read", lambda route: route.fulfill(json=answers["now"]))
    number_mode(page)
    answers["now"] = {
        "text": None, "lines": [], "confidence": None, "unsure": True, "reason": "no ink found in the image",
        "digits": [], "size": list(NUMBER_PAD), "model": {"name": "canned", "architecture": "cnn"},
    }  # fmt: skip
    draw(page, [[(400, 140)]], "#number-pad")
    shown = shown_reading(page)
    assert shown["text"] == "–" and shown["confidence"] == "–" and not shown["boxes"] and not shown["crops"]
    assert shown["message"] == "No ink found in the image" and shown["announced"] == "No ink found in the image."

    page.click("#number-clear")
    crop = [[255 if 8 < x < 20 and 4 < y < 24 else 0 for x in range(28)] for y in range(28)]
    reason = "digit 2: confidence 0.412 is below the threshold 0.756"
    answers["now"] = {
        **answers["now"], "text": "17", "lines": ["17"], "confidence": 0.39, "reason": reason,
        "digits": [
            {"digit": 1, "confidence": 0.95, "box": [100, 40, 160, 240], "line": 0, "unsure": False, "preprocessed": crop},
            {"digit": 7, "confidence": 0.412, "box": [300, 40, 420, 240], "line": 0, "unsure": True, "preprocessed": crop},
        ],
    }  # fmt: skip
    draw(page, number_strokes("17"), "#number-pad")
    shown = shown_reading(page)
    assert shown["text"] == "17" and shown["confidence"] == "39.0%", shown
    assert [(b["tag"], b["unsure"], b["border"]) for b in shown["boxes"]] == [
        ("1 95.0%", False, "solid"),
        ("7? 41.2%", True, "dashed"),
    ]
    assert shown["message"] == f"Not sure — {reason}"
    assert shown["announced"] == f"Not sure: read 17 ({reason})."
    # The boxes are the reply's image px scaled to the pad as shown: 300/840 of its width from its left.
    at = to_client(page, "#number-pad")
    assert shown["boxes"][1]["rect"][0] == pytest.approx(at(300, 40)[0], abs=1)
    assert shown["boxes"][1]["rect"][1] == pytest.approx(at(300, 40)[1], abs=1)


def test_number_mode_shows_keyboard_focus_and_leaves_digit_mode_as_it_was(page):
    number_mode(page)
    page.reload()  # the address names the mode: a reload opens it, with nothing focused yet
    page.wait_for_selector("#number-pad")
    assert page.locator("#number-pad").is_visible() and page.locator("#mode-number").is_checked()
    visited = tab_through(page)
    assert [f["name"] for f in visited] == ["mode-number", "number-clear", "/docs"], visited
    for focus in visited:
        assert focus["style"] != "none" and float(focus["width"].removesuffix("px")) >= 2, focus
    page.focus("#mode-number")
    page.keyboard.press("ArrowLeft")  # the arrow keys choose the mode
    assert page.locator("#pad").is_visible() and not page.locator("#number-pad").is_visible()
    draw(page, STROKES[7])
    assert shown_result(page)["digit"] == "7"


NUMBER_PHONES = [(390, 844), (320, 568), (844, 390)]  # CSS px, portrait and landscape


@pytest.mark.parametrize("width, height", NUMBER_PHONES, ids=[f"{w}x{h}" for w, h in NUMBER_PHONES])
def test_number_pad_and_its_reading_fit_a_phone(browser, server_url, artifacts, width, height):
    context, page = phone(browser, server_url, width, height)
    page.tap('label[for="mode-number"]')
    assert page.evaluate(
        "[document.getElementById('number-pad').width, document.getElementById('number-pad').height]"
    ) == list(NUMBER_PAD)
    draw_by_touch(page, number_strokes("2026"), "#number-pad")
    shown = shown_reading(page)
    page.screenshot(path=str(artifacts / f"number-phone-{width}x{height}.png"), animations="disabled")
    assert shown["text"] == "2026" and len(shown["boxes"]) == 4, shown  # drawn on the scaled pad, still read
    assert page.evaluate("[window.scrollX, window.scrollY]") == [0, 0]  # the finger drew; nothing scrolled
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for selector in ("#number-pad", "#number-result .reading", "#number-clear"):
        box = page.locator(selector).bounding_box()
        inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width
        assert inside and box["y"] + box["height"] <= height, (selector, box)
    box = page.locator("#number-pad").bounding_box()
    assert box["width"] < NUMBER_PAD[0] and box["width"] == pytest.approx(3 * box["height"], abs=1)
    context.close()
