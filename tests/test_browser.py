"""The drawing page in Debian's Chromium through Playwright, against the real server (uvicorn on loopback)
and the fast CNN trained on real MNIST: digits drawn with pointer strokes like a person would.

Screenshots go to the session's `artifacts` directory under pytest's temporary directory.
"""

import math

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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


@pytest.fixture(scope="module")
def server_url(serve_app, trained_run):
    from digitlab.serve import create_app

    return serve_app(create_app(trained_run))


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


def draw(page, strokes, selector="#pad", steps=6) -> None:
    """Pointer strokes on a pad with the mouse; points in the pad's px, each moved to in `steps` steps."""
    at = to_client(page, selector)
    for stroke in strokes:
        points = [at(x, y) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(x, y, steps=steps)
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


UNSURE = canned(
    spread(d5=0.516, d6=0.3), unsure=True, reason="unsure: 5 or 6 (confidence 0.516, below the threshold 0.756)"
)
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
    assert page.locator("#unsure").text_content() == "Not sure: a 5 or a 6?"  # the top two classes
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
            const drawn = el.type === "file" || el.type === "radio" ? document.querySelector(`label[for="${el.id}"]`) : el;
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
    assert "Not sure: a 5 or a 6? Confidence 51.6%." in announced(page)


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
    if shown["unsure"]:  # the fast preset, trained on MNIST as it is, may doubt a digit this slanted; never mistake it
        assert str(digit) in page.locator("#unsure").text_content(), shown
    else:
        assert shown["digit"] == str(digit), shown


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

NUMBER_PAD = (840, 280)  # the number pad's drawing resolution at its shortest (one line), px


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
    size = page.evaluate("[document.getElementById('number-pad').width, document.getElementById('number-pad').height]")
    answers["now"] = {
        "text": None, "lines": [], "confidence": None, "unsure": True, "reason": "no ink found in the image",
        "digits": [], "size": size, "model": {"name": "canned", "architecture": "cnn"},
    }  # fmt: skip
    draw(page, [[(400, 140)]], "#number-pad")
    shown = shown_reading(page)
    assert shown["text"] == "–" and shown["confidence"] == "–" and not shown["boxes"] and not shown["crops"]
    assert shown["message"] == "No ink found in the image" and shown["announced"] == "No ink found in the image."

    page.click("#number-clear")
    crop = [[255 if 8 < x < 20 and 4 < y < 24 else 0 for x in range(28)] for y in range(28)]
    reason = "the 2nd digit: confidence 0.412 is below the threshold 0.756"  # names no two digits
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
    assert shown["message"] == "Not sure of the second digit: is it a 7?"  # plain words, from the digit's flag
    assert shown["announced"] == "Read 17. Not sure of the second digit: is it a 7?"
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
    assert [f["name"] for f in visited] == ["mode-number", "number-clear", "number-upload", "/docs"], visited
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
    # The pad keeps its 840 px across; its height follows the room on the screen, one line to a square.
    pad_w, pad_h = page.evaluate(
        "[document.getElementById('number-pad').width, document.getElementById('number-pad').height]"
    )
    assert pad_w == NUMBER_PAD[0] and NUMBER_PAD[1] <= pad_h <= NUMBER_PAD[0], (pad_w, pad_h)
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
    inner_w, inner_h = box["width"] - 4, box["height"] - 4  # inside its 2 px border
    assert inner_w < NUMBER_PAD[0] and inner_w * pad_h == pytest.approx(inner_h * pad_w, rel=0.01)
    context.close()


# --- One page at a desktop's size for the pad, the server's trouble, plain words and screen sizes ------
# The tests below share one page load (module scope), in order: each leaves the page as the next expects.

DESK = (1280, 900)
DARK = 100  # of 255: a screenshot pixel this dark or darker is ink


class Desk:
    def __init__(self, page, requests, errors):
        self.page, self.requests, self.errors = page, requests, errors


@pytest.fixture(scope="module")
def desk(browser, server_url):
    """The page at 1280x900 with the server's waits shortened (a 2 s timeout, /api/health asked every
    0.2 s once the server is down); every request it makes and every script error recorded."""
    context = browser.new_context(viewport=dict(zip(("width", "height"), DESK)))
    page = context.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server_url + "/")
    page.wait_for_selector("#bars li")
    page.evaluate("() => { SERVER.timeoutMs = 2000; SERVER.pollMs = 200; }")
    yield Desk(page, requests, errors)
    context.close()


def pad_url(page, selector="#pad") -> str:
    return page.evaluate("(s) => document.querySelector(s).toDataURL()", selector)


def small_targets(page) -> list:
    """Every visible control (buttons, the labels standing for the mode radios and the file inputs, links)
    less than 44 CSS px wide or tall."""
    return page.evaluate("""() => [...document.querySelectorAll("button, label, a")]
        .map((el) => [el.id || el.htmlFor || el.textContent, el.getBoundingClientRect()])
        .filter(([, r]) => r.width > 0 && r.height > 0 && (r.width < 44 || r.height < 44))
        .map(([name, r]) => [name, Math.round(r.width), Math.round(r.height)])""")


def test_desk_empty_pad_has_a_hint_an_empty_preview_and_large_targets(desk, artifacts):
    page = desk.page
    page.screenshot(path=str(artifacts / "desk-empty-1280x900.png"), animations="disabled")
    assert page.locator(".draw .hint").is_visible()
    assert page.evaluate("getComputedStyle(seen).backgroundColor") == "rgba(0, 0, 0, 0)"  # no black square
    assert page.locator("#pad").bounding_box()["width"] >= 400  # a desktop's pad, not a phone's
    assert page.locator("#undo").is_disabled() and page.locator("#redo").is_disabled()
    assert small_targets(page) == []


def test_undo_and_redo_by_key_and_button(desk):
    page = desk.page
    draw(page, STROKES[1])
    assert shown_result(page)["digit"] == "1"
    assert not page.locator(".draw .hint").is_visible()
    one = pad_url(page)
    draw(page, [[(40, 150), (240, 130)]])  # a stray stroke across the 1
    shown_result(page)
    assert 15 <= ink_across(page, "#pad", 60, 148) <= 22  # the pen: 18 px of the pad's 280
    both = pad_url(page)
    assert both != one
    page.keyboard.press("Control+z")
    assert pad_url(page) == one  # the stroke is gone, the rest as it was
    assert shown_result(page)["digit"] == "1"  # and the pad is read again
    page.keyboard.press("Control+Shift+z")
    assert pad_url(page) == both
    shown_result(page)
    page.click("#undo")
    page.click("#undo")
    assert page.locator("#result").get_attribute("data-state") == "empty"
    assert page.locator(".draw .hint").is_visible() and page.locator("#undo").is_disabled()
    page.click("#redo")
    assert pad_url(page) == one and shown_result(page)["digit"] == "1"
    page.click("#clear")
    assert page.locator("#redo").is_disabled()


TIMING = """() => {
    window.timing = {};
    const fetch = window.fetch;
    window.fetch = (url, ...rest) => {
        if (String(url).endsWith("/api/predict") && !timing.asked) timing.asked = performance.now();
        return fetch(url, ...rest);
    };
    new MutationObserver(() => {
        if (!spinner.hidden && !timing.spun) timing.spun = performance.now();
    }).observe(document.getElementById("spinner"), { attributes: true });
}"""


def test_server_slow_stopped_and_back(desk):
    page = desk.page
    page.evaluate(TIMING)
    stalled = []
    page.route("**/api/predict", lambda route: stalled.append(route))  # never answered: a server that hangs
    draw(page, STROKES[7])
    page.wait_for_selector("#spinner", state="visible", timeout=5_000)
    timing = page.evaluate("timing")
    assert 290 <= timing["spun"] - timing["asked"] <= 800, timing  # the spinner after 300 ms, not at once
    page.wait_for_selector("#retry", state="visible", timeout=5_000)
    assert page.locator("#status").text_content() == "The server did not answer within 2 s."
    assert page.locator("#spinner").is_hidden()
    page.unroute("**/api/predict")
    page.click("#retry")
    assert shown_result(page)["digit"] == "7"

    down = lambda route: route.abort("connectionrefused")  # noqa: E731
    page.route("**/api/predict", down)
    page.route("**/api/health", down)
    page.click("#clear")
    draw(page, STROKES[1])
    page.wait_for_selector('#result[data-state="error"]', timeout=5_000)
    assert page.locator("#status").text_content() == (
        "The server stopped: is digitlab serve running? The drawing is read again once it is back."
    )
    assert page.locator("#status code").text_content() == "digitlab serve"
    page.wait_for_timeout(600)  # /api/health asked and refused a few times: still the message
    assert page.locator("#result").get_attribute("data-state") == "error"
    page.unroute("**/api/predict")
    page.unroute("**/api/health")
    assert shown_result(page)["digit"] == "1"  # read again with no new ink
    assert page.locator("#status").text_content() == ""
    page.click("#clear")


def test_digit_mode_points_to_number_and_the_address_switches_modes(desk):
    page = desk.page
    reason = "looks like 2 digits side by side: use `digitlab read` for numbers"
    nothing = {**UNSURE, "confidence": None, "probabilities": None, "top3": None, "reason": reason}
    page.route("**/api/predict", lambda route: route.fulfill(json=nothing))
    draw(page, STROKES[1])
    shown_result(page)
    assert page.locator("#unsure").text_content() == "Two digits here: switch to Number"
    page.click("#to-number")
    assert page.locator("#number-pad").is_visible() and page.evaluate("location.hash") == "#number"
    page.unroute("**/api/predict")
    page.evaluate("location.hash = ''")
    page.wait_for_selector("#pad", state="visible")
    assert page.locator("#number-pad").is_hidden()
    page.evaluate("location.hash = '#number'")
    page.wait_for_selector("#number-pad", state="visible")
    assert page.locator("#mode-number").is_checked() and page.locator("#pad").is_hidden()
    assert small_targets(page) == []


def rects_overlapping(page) -> list:
    """Pairs of the Number pad's labels and boxes (and the reading below the pad) that overlap by more
    than half a px (a label and its own box too), and labels hidden or not wholly on the pad."""
    return page.evaluate("""() => {
        const items = [...document.querySelectorAll("#number-boxes .box, #number-boxes .tag")]
            .map((el) => [el.classList.contains("tag") ? `tag ${el.textContent}` : `box ${el.dataset.digit}`, el]);
        items.push(["reading", document.getElementById("number-result")]);
        const found = [];
        const r = items.map(([, el]) => el.getBoundingClientRect());
        for (let i = 0; i < items.length; i++) {
            for (let j = i + 1; j < items.length; j++) {
                const w = Math.min(r[i].right, r[j].right) - Math.max(r[i].left, r[j].left);
                const h = Math.min(r[i].bottom, r[j].bottom) - Math.max(r[i].top, r[j].top);
                if (w > 0.5 && h > 0.5) found.push([items[i][0], items[j][0]]);
            }
        }
        const pad = document.getElementById("number-pad").getBoundingClientRect();
        for (const [name, el] of items.filter(([n]) => n.startsWith("tag"))) {
            const t = el.getBoundingClientRect();
            if (t.left < pad.left || t.right > pad.right || t.top < pad.top || t.bottom > pad.bottom) found.push([name, "off the pad"]);
            if (!t.width || !t.height || getComputedStyle(el).visibility !== "visible") found.push([name, "hidden"]);
        }
        return found;
    }""")


def ink_across(page, selector, x, y, reach=40) -> int:
    """How many px of ink a pad's column x holds within `reach` px of row y: a stroke's width across."""
    column = page.evaluate(
        "([s, x, y0, n]) => [...document.querySelector(s).getContext('2d').getImageData(x, y0, 1, n).data]",
        [selector, round(x), round(y - reach), 2 * reach],
    )
    return sum(v < 128 for v in column[::4])


def two_lines(width, height) -> list:
    """Strokes writing 35 over 207 on a Number pad `width` x `height` px: two lines, each a third of its
    height, the first touching the pad's top (no room for labels above it) and a narrow gap between them,
    where the first line's labels below and the second's above would meet."""
    tall = 0.33 * height
    first = [
        s
        for k, c in enumerate("35")
        for s in glyph(int(c), width * (0.3 + 0.25 * k), 0.03 * height, tall, 0.09 * width)
    ]
    second = [
        s
        for k, c in enumerate("207")
        for s in glyph(int(c), width * (0.2 + 0.28 * k), 0.47 * height, tall, 0.09 * width)
    ]
    return first + second


def test_two_line_number_on_a_phone_labels_never_overlap(desk, artifacts):
    page = desk.page
    page.set_viewport_size({"width": 390, "height": 844})
    page.keyboard.press("Escape")  # an empty pad takes the room the screen has
    page.wait_for_function("document.getElementById('number-pad').height > 560")  # more than two lines
    box = page.locator("#number-pad").bounding_box()
    assert box["height"] > 250, box  # the pad uses the upright screen, not a 117 px strip
    size = page.evaluate("[document.getElementById('number-pad').width, document.getElementById('number-pad').height]")
    draw(page, two_lines(*size), "#number-pad")
    shown = shown_reading(page)
    page.screenshot(path=str(artifacts / "number-two-lines-390x844.png"), animations="disabled")
    assert shown["text"] == "35\n207", shown
    # The pen is 18/280 of a line's height, the Digit pad's pen: not thicker on a pad three times as tall.
    assert 15 <= ink_across(page, "#number-pad", 0.76 * size[0], 0.47 * size[1]) <= 22  # the 7's bar
    assert rects_overlapping(page) == []
    assert small_targets(page) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_unsure_digit_is_an_outline_over_its_visible_ink(desk, artifacts):
    page = desk.page
    changes = {}

    def altered(route):
        answer = route.fetch().json()  # the server's real reading of the ink, then altered
        for k, v in changes.get("digit", {}).items():
            answer["digits"][1][k] = v
        answer.update(changes.get("reading", {}))
        route.fulfill(json=answer)

    page.route("**/api/read", altered)
    changes["digit"] = {"unsure": True, "confidence": 0.412}
    reason = "the 2nd digit: unsure: 5 or 6 (confidence 0.412, below the threshold 0.756)"  # as the server says it
    changes["reading"] = {"unsure": True, "reason": reason}
    page.click("#number-undo")  # read again: the last stroke off, then back
    page.click("#number-redo")
    shown = shown_reading(page)
    page.screenshot(path=str(artifacts / "number-unsure-390x844.png"), animations="disabled")
    assert shown["message"] == "Not sure of the second digit of line 1: a 5 or a 6?", shown["message"]
    unsure = page.locator("#number-boxes .box.unsure")
    assert unsure.count() == 1
    style = unsure.evaluate("(b) => [getComputedStyle(b).backgroundColor, getComputedStyle(b).borderTopStyle]")
    assert style == ["rgba(0, 0, 0, 0)", "dashed"]  # an outline only
    r = unsure.bounding_box()
    inner = {"x": r["x"] + 3, "y": r["y"] + 3, "width": r["width"] - 6, "height": r["height"] - 6}
    png = page.screenshot(clip=inner, animations="disabled")
    from io import BytesIO

    import numpy as np
    from PIL import Image

    dark = float((np.asarray(Image.open(BytesIO(png)).convert("L")) <= DARK).mean())
    assert dark > 0.05, dark  # the ink under the box shows
    assert rects_overlapping(page) == []  # its label too, in full

    # A line model's per-digit figures mean nothing: none shown, the whole reading's confidence only.
    changes["digit"] = {}
    changes["reading"] = {"model": {"name": "canned", "architecture": "line"}}
    page.click("#number-undo")
    page.click("#number-redo")
    shown = shown_reading(page)
    assert [b["tag"] for b in shown["boxes"]] == ["3", "5", "2", "0", "7"], shown["boxes"]
    assert shown["confidence"].endswith("%")
    page.unroute("**/api/read")


def test_upload_in_number_mode_and_every_screen_size(desk, artifacts, mnist, tmp_path):
    import numpy as np
    from PIL import Image

    page = desk.page
    page.keyboard.press("Escape")
    digits = [mnist.x_test[k] for k in range(3)]
    row = np.concatenate([np.pad(d, ((8, 8), (8, 8))) for d in digits], axis=1)
    path = tmp_path / "number.png"
    Image.fromarray(255 - row).resize((row.shape[1] * 4, row.shape[0] * 4)).save(path)
    page.set_input_files("#number-upload", str(path))
    shown = shown_reading(page)
    assert shown["text"] == "".join(str(int(mnist.y_test[k])) for k in range(3)), shown
    for width, height in [(390, 844), (844, 390), DESK]:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(100)
        page.screenshot(path=str(artifacts / f"number-upload-{width}x{height}.png"), animations="disabled")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert small_targets(page) == [] and rects_overlapping(page) == []

    page.evaluate("location.hash = ''")
    page.wait_for_selector("#pad", state="visible")
    for width, height in [(390, 844), (844, 390), DESK]:
        page.set_viewport_size({"width": width, "height": height})
        page.click("#clear")
        draw(page, STROKES[7])
        assert shown_result(page)["digit"] == "7"
        page.screenshot(path=str(artifacts / f"digit-{width}x{height}.png"), animations="disabled")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert small_targets(page) == []
        for selector in ("#pad", "#bars", "#clear", "#upload + label"):
            b = page.locator(selector).bounding_box()
            assert b["x"] >= 0 and b["y"] >= 0 and b["x"] + b["width"] <= width, (width, height, selector, b)
            assert b["y"] + b["height"] <= height, (width, height, selector, b)


def test_desk_asked_nothing_outside_its_own_server(desk, server_url):
    elsewhere = [url for url in desk.requests if not url.startswith((server_url, "blob:", "data:"))]
    assert elsewhere == [] and desk.errors == []


# --- Teach mode: samples of a person's own digits, kept in the browser, downloaded for digitlab adapt ------


def test_teach_mode_asks_reads_keeps_redoes_downloads_and_takes_corrections(browser, server_url, tmp_path, artifacts):
    import json

    from digitlab.training.adapt import read_samples

    context = browser.new_context(viewport={"width": 1000, "height": 760}, accept_downloads=True)
    page = context.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    page.on("pageerror", lambda e: errors.append(str(e)))
    # model.json answers 404 when the run has no model.onnx (the server reads): not an error
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 404" not in m.text else None)
    # POST /api/adapt as `digitlab serve --allow-adapt` answers it (the adaptation itself: test_adapt.py)
    adapt_posts = []

    def allow_adapt(route):
        if route.request.method == "GET":
            return route.fulfill(json={"allowed": True})
        adapt_posts.append(route.request.post_data_json)
        answer = {"run": "fast-adapted-1", "samples": 30, "refused": [], "seconds": 12.3}
        route.fulfill(json=answer | {"validation_accuracy": 0.991, "base_validation_accuracy": 0.987})

    page.route("**/api/adapt", allow_adapt)
    page.goto(server_url + "/#teach")  # the one page load: the address opens the Teach mode
    page.wait_for_selector("#teach-pad", state="visible")
    assert page.locator("#mode-teach").is_checked() and page.locator("#pad").is_hidden()
    assert page.locator("#teach-count").text_content() == "0 of 30" and page.locator("#teach-download").is_disabled()

    def write(i) -> int:
        """Write the digit asked for (each drawing a little elsewhere, so no two are the same image), wait
        for the model's reading and keep it; returns the digit and whether it was read right."""
        digit = int(page.locator("#teach-ask").get_attribute("data-digit"))
        assert page.locator("#teach-ask").text_content() == f"Write {'an' if digit == 8 else 'a'} {digit}"
        draw(page, glyph(digit, 128 + (i % 7) * 4, 42 + (i % 5) * 3, 190, 55), "#teach-pad", steps=1)  # 31 digits
        page.wait_for_selector('#teach-read[data-state="done"]', timeout=20_000)
        text = page.locator("#teach-read").text_content()
        assert text.startswith("The model"), text
        right = "right" in page.locator("#teach-read").get_attribute("class")
        assert right == text.endswith(" Right."), text
        assert right or text.endswith(f"This sample teaches it your {digit}."), text
        page.click("#teach-next")
        return digit, right

    kept = [write(i) for i in range(12)]
    assert page.locator("#teach-count").text_content() == "12 of 30"
    assert page.evaluate("document.getElementById('teach-progress').value") == 12
    page.click("#teach-back")  # the last one written again
    assert page.locator("#teach-count").text_content() == "11 of 30"
    assert page.locator("#teach-ask").get_attribute("data-digit") == str(kept[-1][0])
    assert (
        "Write" in page.locator("#teach-status").text_content()
        and "again" in page.locator("#teach-status").text_content()
    )
    kept[-1:] = [write(34)]  # i modulo 35 places each drawing apart: 34 is none of 0-29's places
    kept += [write(i) for i in range(12, 30)]
    page.screenshot(path=str(artifacts / "teach-done.png"), animations="disabled")
    assert page.locator("#teach-count").text_content() == "30 of 30"
    assert page.locator("#teach-ask").text_content() == "All 30 written" and page.locator("#teach-next").is_disabled()
    assert page.locator("#teach-more").is_visible() and page.locator("#teach-missing").is_hidden()
    asked = [digit for digit, _ in kept]
    assert sorted(asked) == sorted(list(range(10)) * 3)  # each digit three times
    right = sum(r for _, r in kept)
    stored = page.locator("#teach-stored").text_content()
    assert stored.startswith("30 samples kept in this browser. Nothing is sent unless you press Teach the server"), (
        stored
    )
    assert f"The model read {right} of the 30 you wrote here right." in stored
    assert small_targets(page) == []

    with page.expect_download() as download:
        page.click("#teach-download")
    assert download.value.suggested_filename == "digitlab-samples.json"
    path = tmp_path / "digitlab-samples.json"
    download.value.save_as(path)
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"]) == ("digitlab-samples", 1)
    assert [s["digit"] for s in doc["samples"]] == asked  # in the order asked, the one written again in its place
    assert all(s["image"].startswith("data:image/png;base64,") for s in doc["samples"])
    samples = read_samples(path)  # what digitlab adapt reads
    assert len(samples) + len(samples.refused) == 30 and len(samples) >= 28, samples.refused
    # As a page that reads in the browser (the run exported to ONNX): after the adaptation the model it
    # loaded is the old one, so it hands every reading to the server, which holds the new one.
    page.evaluate("browserReader.on = true")
    page.click("#teach-send")  # the server allows adapting: the same file goes to it
    page.wait_for_selector("#teach-sent:has-text('Done in 12 s')")
    assert adapt_posts == [doc]
    said = page.locator("#teach-sent").text_content()
    assert (
        "the server reads with fast-adapted-1 now, validation accuracy 99.1% (validation accuracy 98.7% before)" in said
    )
    assert "from now on the server reads for it, with the new one" in said
    assert page.evaluate("browserReader.on") is False and page.evaluate("document.body.dataset.engine") == "server"
    assert page.locator("#engine").text_content() == "read by the server (its model adapted to your samples)"
    predicted = len([url for _, url in requests if url.endswith("/api/predict")])

    # Digit mode: a reading corrected by tapping the right digit joins the same samples.
    page.click("label[for=mode-digit]")
    assert page.evaluate("location.hash") == "" and page.locator("#correct").is_hidden()
    draw(page, STROKES[7])
    shown_result(page)
    assert len([url for _, url in requests if url.endswith("/api/predict")]) > predicted  # the server read it
    assert page.locator("#correct").is_visible()
    assert page.locator("#correct .k").text_content() == "Wrong? Tap the right digit"
    assert small_targets(page) == []
    page.click('#correct-digits button[data-digit="1"]')
    said = page.locator("#correct-said").text_content()
    assert said == "Kept as a 1 to teach the model: 31 samples in this browser (see Teach).", said
    page.click('#correct-digits button[data-digit="1"]')
    assert page.locator("#correct-said").text_content() == "This drawing is kept already."
    page.click("#clear")
    assert page.locator("#correct").is_hidden()
    page.evaluate("location.hash = '#teach'")
    page.wait_for_selector("#teach-pad", state="visible")
    assert page.locator("#teach-stored").get_attribute("data-count") == "31"
    assert "(1 from Digit mode)" in page.locator("#teach-stored").text_content()
    saved = page.evaluate("JSON.parse(localStorage.getItem('digitlab-samples')).samples.map((s) => s.digit)")
    assert saved == [*asked, 1]  # kept in the browser, across a reload
    elsewhere = [url for _, url in requests if not url.startswith((server_url, "blob:", "data:"))]
    sent = {url for method, url in requests if method != "GET"}
    assert elsewhere == [] and errors == [] and sent <= {server_url + "/api/predict", server_url + "/api/adapt"}
    context.close()
