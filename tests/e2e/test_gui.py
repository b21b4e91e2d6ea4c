"""The web page at `/`, in headless Chromium (Debian's `chromium` package) against a real `idios serve`.

Screenshots of every screen go to test-artifacts/gui/.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, Request, Route, expect, sync_playwright

from idios.auth import hash_key

from tests.support.imageserver import ImageServer
from tests.support.photos import PHOTO_NAMES, encode, jpeg, photo
from tests.support.stacks import IMAGE_HOST, Stack, start_serve

CHROMIUM = Path("/usr/bin/chromium")
VIT = "/models/vit_b32"
COPY = "/models/copydetect"
MODELS = ("vit_b32", "phash", "copydetect")
TIMEOUT_MS = 90_000
API_KEY = "gui-secret-key"
NARROW = {"width": 375, "height": 812}
WIDE = {"width": 1280, "height": 900}

# Embeddings on a busy CPU take seconds: wait for the page as long as for the API.
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def shots(artifacts: Path) -> Path:
    path = artifacts / "gui"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def serve(milvus_uri: str, images: ImageServer, artifacts: Path) -> Iterator[Stack]:
    log_dir = artifacts / "test_gui"
    log_dir.mkdir(exist_ok=True)
    stack = start_serve(milvus_uri, log_dir, models=MODELS, IDIOS_MODELS=",".join(MODELS))
    yield stack
    stack.stop()
    for process in stack.processes:
        assert "Traceback" not in process.log(), f"{process.name} logged a traceback:\n{process.log()[-4000:]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--headless=new"]
        )
        yield launched
        launched.close()


class Gui:
    """A browser tab on the page, recording console errors and uncaught exceptions."""

    def __init__(self, browser: Browser, base_url: str, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.base_url = base_url
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        # Failed loads (a thumbnail that is gone, an API call answering 4xx) are expected and shown in the page.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def _request(self, request: Request) -> None:
        # The page works offline: it loads nothing but its own files, the API and the stored images.
        host = urlsplit(request.url).hostname
        if request.url.split(":", 1)[0] not in ("blob", "data") and host not in ("127.0.0.1", IMAGE_HOST):
            self.errors.append(f"request outside the test hosts: {request.url}")

    def open(self, tab: str = "search") -> Page:
        self.page.goto(f"{self.base_url}/#{tab}")
        expect(self.page.locator("#model")).to_be_enabled()
        return self.page

    def tab(self, name: str) -> None:
        self.page.locator(f"#tab-{name}").click()
        expect(self.page.locator(f"#panel-{name}")).to_be_visible()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def gui(browser: Browser, serve: Stack) -> Iterator[Gui]:
    tab = Gui(browser, serve.url, WIDE)
    yield tab
    tab.close()
    assert not tab.errors, tab.errors


@pytest.fixture(scope="module")
def photos(serve: Stack, images: ImageServer) -> dict[str, str]:
    """Every test photo stored by the API, with a smaller copy of each: name -> url."""
    urls = {name: images.url(f"/{name}.jpg") for name in PHOTO_NAMES}
    add_by_api(
        serve,
        [{"url": url, "metadata": {"name": name, "tags": "photo"}} for name, url in urls.items()]
        + [{"url": images.url(f"/{name}_small.jpg"), "metadata": {"name": name, "size": "small"}} for name in urls],
    )
    return urls


def add_by_api(stack: Stack, items: list[dict], model: str = VIT) -> None:
    with stack.client() as client:
        result = client.post(f"{model}/add_bulk", json=items).json()
    assert not result["failed"], result


def results(page: Page) -> list[tuple[str, float]]:
    rows = page.locator("#results .result").evaluate_all(
        "items => items.map(item => [item.dataset.url, Number(item.dataset.similarity)])"
    )
    return [(url, similarity) for url, similarity in rows]


def expect_first_result(page: Page, url: str) -> None:
    """The photo comes first, or its half-size copy: the same picture, whose score can tie with it
    within 0.01 since int8 activation scales depend on the batch an image was embedded in."""
    base = url.removesuffix(".jpg").removesuffix("_small")
    same_picture = re.compile("^" + re.escape(base) + r"(_small)?\.jpg$")
    expect(page.locator("#results .result").first).to_have_attribute("data-url", same_picture)
    hits = results(page)
    assert hits[0][1] == max(similarity for _, similarity in hits) and hits[0][1] > 99, hits
    assert {hit for hit, _ in hits[:2]} == {f"{base}.jpg", f"{base}_small.jpg"}, hits


def no_horizontal_scroll(page: Page, screen: str) -> None:
    root = "document.scrollingElement"
    width, client = page.evaluate(f"() => [{root}.scrollWidth, {root}.clientWidth]")
    assert width <= client, f"{screen}: the page is {width} px wide in a {client} px viewport"


DROP = """([data, name, how]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
    if (how === "drop") {
        const event = new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true });
        document.getElementById("dropzone").dispatchEvent(event);
    } else {
        const event = new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true });
        document.body.dispatchEvent(event);
    }
}"""

PASTE_TEXT = """(text) => {
    const transfer = new DataTransfer();
    transfer.setData("text/plain", text);
    document.body.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
}"""


def test_upload_drop_paste_and_search_again(gui: Gui, photos: dict[str, str], shots: Path) -> None:
    urls = photos
    page = gui.open()
    options = page.locator("#model option")
    expect(page.locator("#model")).to_have_value("vit_b32")
    expect(options.filter(has_text="vit_l14")).to_be_disabled()
    expect(options.filter(has_text="vit_l14")).to_contain_text("unavailable")

    # A file chosen with the file chooser
    page.locator("#search-file").set_input_files(
        files=[{"name": "rocket.jpg", "mimeType": "image/jpeg", "buffer": jpeg("rocket")}]
    )
    expect_first_result(page, urls["rocket"])
    expect(page.locator("#query-preview")).to_be_visible()
    expect(page.locator("#results .result").first.locator(".badge")).to_have_text(re.compile(r"^(99\.\d|100\.0)$"))
    page.locator("#results .result img").last.evaluate("img => img.decode()")  # thumbnails are real photos
    page.screenshot(path=shots / "search.png", full_page=True)

    # Dropped and pasted files, a pasted url
    page.evaluate(DROP, [base64.b64encode(jpeg("coffee")).decode(), "coffee.jpg", "drop"])
    expect_first_result(page, urls["coffee"])
    page.evaluate(DROP, [base64.b64encode(jpeg("moon")).decode(), "moon.jpg", "paste"])
    expect_first_result(page, urls["moon"])
    page.evaluate(PASTE_TEXT, urls["chelsea"])
    expect_first_result(page, urls["chelsea"])
    expect(page.locator("#search-url")).to_have_value(urls["chelsea"])

    # The details of a result (keyboard), then that result as the next query
    page.locator("#results .result .thumb").nth(1).focus()
    page.keyboard.press("Enter")
    details = page.locator("#details")
    expect(details).to_be_visible()
    expect(page.locator("#details-metadata")).to_contain_text('"name"')
    page.screenshot(path=shots / "details.png")
    page.keyboard.press("Escape")
    expect(details).to_be_hidden()
    second = results(page)[1][0]
    page.locator("#results .result").nth(1).get_by_role("button", name="Search with this").click()
    expect_first_result(page, second)

    # Text, limit and min_similarity
    page.locator("#limit").fill("3")
    page.locator("#search-text").fill("a rocket on a launch pad")
    page.locator("#search-text-form button").click()
    expect(page.locator("#results .result")).to_have_count(3)
    expect(page.locator("#results-status")).to_contain_text("3 results for “a rocket on a launch pad”")
    page.locator("#min-similarity").fill("100")
    page.locator("#search-url").fill(urls["camera"])
    page.locator("#search-url").press("Enter")
    expect(page.locator("#results-status")).to_contain_text("at least 100 similar")
    assert [url for url, _ in results(page)] == [urls["camera"]]


def test_add_by_url_then_count_increases(gui: Gui, images: ImageServer, shots: Path) -> None:
    page = gui.open("browse")
    count = page.locator("#count")
    expect(count).to_have_text(re.compile(r"^\d+$"))
    before = int(count.inner_text().replace(",", ""))

    gui.tab("add")
    target = images.url("/camera.jpg") + "?k=gui-add"
    page.locator("#add-url").fill(target)
    metadata = page.locator("#add-metadata")
    metadata.fill('{"tags": "camera",')
    expect(page.locator("#add-metadata-error")).to_contain_text("Not valid JSON")
    expect(page.locator("#add-button")).to_be_disabled()
    metadata.fill('["not", "an object"]')
    expect(page.locator("#add-metadata-error")).to_contain_text("must be a JSON object")
    metadata.fill('{"tags": "camera", "by": "gui"}')
    expect(page.locator("#add-metadata-error")).to_be_hidden()
    page.locator("#add-button").click()
    expect(page.locator("#add-result")).to_contain_text("Added to vit_b32")
    page.screenshot(path=shots / "add.png", full_page=True)

    gui.tab("browse")
    expect(count).to_have_text(str(before + 1))


def test_compare_shows_a_score(gui: Gui, images: ImageServer, shots: Path) -> None:
    page = gui.open("compare")
    page.locator("#compare-a").fill(images.url("/astronaut.jpg"))
    page.locator("#compare-b").fill(images.url("/astronaut_small.jpg"))
    page.locator("#compare-button").click()
    value = page.locator("#compare-value")
    expect(value).to_have_text(re.compile(r"^\d{1,3}\.\d$"))
    assert 0 <= float(value.inner_text()) <= 100
    for side in ("a", "b"):
        page.locator(f"#compare-{side}-img").evaluate("img => img.decode()")
    page.screenshot(path=shots / "compare.png", full_page=True)
    page.locator("#compare-b").fill(images.url("/coffee.jpg"))
    page.locator("#compare-button").click()
    expect(page.locator("#compare-score")).to_be_visible()
    assert 0 <= float(value.inner_text()) < 99

    # A file from this device against the url of the same photo: the same image.
    page.locator("#compare-a-file").set_input_files(
        files=[{"name": "coffee.jpg", "mimeType": "image/jpeg", "buffer": jpeg("coffee")}]
    )
    expect(page.locator("#compare-a")).to_have_value("")
    page.locator("#compare-button").click()
    expect(value).to_have_text(re.compile(r"^(99|100)\.\d$"))
    page.screenshot(path=shots / "compare-file.png", full_page=True)


def test_errors_show_the_api_detail(gui: Gui, serve: Stack, shots: Path) -> None:
    with serve.client() as client:
        expected = client.post(f"{VIT}/add", json={"url": "not a url"}).json()["detail"][0]["msg"]
        expected_ftp = client.post(f"{VIT}/search", json={"url": "ftp://x"}).json()["detail"][0]["msg"]
    page = gui.open("add")
    alert = page.get_by_role("alert")
    page.locator("#add-url").fill("not a url")
    page.locator("#add-button").click()
    expect(alert).to_be_visible()
    expect(alert).to_contain_text(expected)
    page.screenshot(path=shots / "error.png", full_page=True)

    gui.tab("search")
    page.locator("#search-url").fill("ftp://x")
    page.locator("#search-url").press("Enter")
    expect(alert).to_contain_text(expected_ftp)
    expect(page.locator("#results-status")).to_contain_text("failed")

    page.locator("#alert-close").click()
    expect(alert).to_be_hidden()
    page.route("**/models/*/count", lambda route: route.abort())
    gui.tab("browse")
    expect(alert).to_contain_text("Cannot reach the Idios server")
    assert page.locator("body").inner_text().strip()


@pytest.mark.usefixtures("photos")
def test_narrow_screen_has_no_horizontal_scroll(browser: Browser, serve: Stack, images: ImageServer, shots: Path):
    phone = Gui(browser, serve.url, NARROW)
    try:
        page = phone.open()
        no_horizontal_scroll(page, "search")
        page.locator("#search-url").fill(images.url("/astronaut.jpg"))
        page.locator("#search-url").press("Enter")
        expect(page.locator("#results .result").first).to_be_visible()
        no_horizontal_scroll(page, "search results")
        page.screenshot(path=shots / "phone-search.png", full_page=True)
        page.locator("#results .result .thumb").first.click()
        expect(page.locator("#details")).to_be_visible()
        no_horizontal_scroll(page, "details")
        page.screenshot(path=shots / "phone-details.png")
        page.keyboard.press("Escape")

        phone.tab("add")
        page.locator("#bulk-urls").fill("\n".join([images.url("/missing.jpg"), "ftp://example.com/" + "x" * 300]))
        page.locator("#bulk-button").click()
        expect(page.locator("#bulk-failed")).to_have_text("2")
        no_horizontal_scroll(page, "add")
        page.screenshot(path=shots / "phone-add.png", full_page=True)

        phone.tab("compare")
        page.locator("#compare-a").fill(images.url("/coffee.jpg"))
        page.locator("#compare-b").fill(images.url("/coffee_small.jpg"))
        page.locator("#compare-button").click()
        expect(page.locator("#compare-score")).to_be_visible()
        no_horizontal_scroll(page, "compare")
        page.screenshot(path=shots / "phone-compare.png", full_page=True)

        phone.tab("browse")
        expect(page.locator("#browse-list .url-row").first).to_be_visible()
        no_horizontal_scroll(page, "browse")
        page.screenshot(path=shots / "phone-browse.png", full_page=True)

        page.locator("#key-toggle").click()
        expect(page.locator("#key-panel")).to_be_visible()
        no_horizontal_scroll(page, "key panel")
    finally:
        phone.close()
    assert not phone.errors, phone.errors


def test_bulk_add_shows_a_summary(gui: Gui, serve: Stack, images: ImageServer, shots: Path) -> None:
    stored = images.url("/rocket.jpg") + "?k=bulk-stored"
    add_by_api(serve, [{"url": stored}])
    new = [images.url(f"/{name}.jpg") + "?k=bulk" for name in ("coffee", "coins", "chelsea")]
    missing = images.url("/missing.jpg")
    lines = [new[0], "", new[1], stored, missing, "ftp://example.com/a.jpg", new[2], new[0]]
    page = gui.open("add")
    page.locator("#bulk-form").evaluate("form => { form.dataset.chunk = '2'; }")  # several requests
    page.locator("#bulk-urls").fill("\n".join(lines))
    expect(page.locator("#bulk-lines")).to_have_text("6 URLs (1 repeated line ignored).")
    page.locator("#bulk-button").click()
    expect(page.locator("#bulk-progress-label")).to_contain_text("Done: 6 of 6", timeout=180_000)
    expect(page.locator("#bulk-added")).to_have_text("3")
    expect(page.locator("#bulk-found")).to_have_text("1")
    expect(page.locator("#bulk-failed")).to_have_text("2")
    failures = page.locator("#bulk-failures li")
    expect(failures.filter(has_text=missing)).to_contain_text("404")
    expect(failures.filter(has_text="ftp://example.com/a.jpg")).to_contain_text("scheme")
    assert page.locator("#bulk-progress").evaluate("bar => bar.value === bar.max")
    page.screenshot(path=shots / "bulk.png", full_page=True)


def test_browse_pages_and_remove_with_confirmation(gui: Gui, serve: Stack, images: ImageServer, shots: Path) -> None:
    mine = [images.url(f"/{PHOTO_NAMES[i % len(PHOTO_NAMES)]}.png") + f"?k=browse-{i:02d}" for i in range(11)]
    add_by_api(serve, [{"url": url} for url in mine])
    page = gui.open("browse")
    rows = page.locator("#browse-list .url-row")
    expect(rows.first).to_be_visible()
    total = int(page.locator("#count").inner_text().replace(",", ""))
    assert total > 10

    page.locator("#page-size").select_option("10")
    expect(page.locator("#page-number")).to_have_text(re.compile("^1\u201310 of "))
    first_page = rows.evaluate_all("rows => rows.map(row => row.dataset.url)")
    assert len(first_page) == 10 and first_page == sorted(first_page)
    page.screenshot(path=shots / "browse.png", full_page=True)
    page.locator("#page-next").click()
    expect(page.locator("#page-number")).to_have_text(re.compile("^11\u2013"))
    second_page = rows.evaluate_all("rows => rows.map(row => row.dataset.url)")
    assert second_page and second_page[0] > first_page[-1]
    expect(page.locator("#page-prev")).to_be_enabled()
    page.locator("#page-prev").click()
    expect(page.locator("#page-number")).to_have_text(re.compile("^1\u201310 of "))
    assert rows.evaluate_all("rows => rows.map(row => row.dataset.url)") == first_page

    target = mine[3]
    page.locator("#page-size").select_option("100")
    row = page.locator(f'#browse-list .url-row[data-url="{target}"]')
    expect(row).to_be_visible()
    dialog = page.locator("#confirm-remove")
    row.get_by_role("button", name="Remove").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(target)
    page.screenshot(path=shots / "remove-confirm.png")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(row).to_be_visible()
    expect(page.locator("#count")).to_have_text(str(total))

    row.get_by_role("button", name="Remove").click()
    page.locator("#confirm-ok").click()
    expect(row).to_have_count(0)
    expect(page.locator("#count")).to_have_text(str(total - 1))
    with serve.client() as client:
        assert target not in client.post(f"{VIT}/urls", json={"limit": 10000}).json()


@pytest.mark.usefixtures("photos")
def test_keyboard_moves_between_tabs(gui: Gui) -> None:
    page = gui.open()
    # Intercepting the file chooser starts with the first listener: start it before any key is pressed.
    page.on("filechooser", lambda chooser: None)
    page.locator("#tab-search").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-add")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-add")).to_be_visible()
    expect(page.locator("#tab-add")).to_be_focused()
    page.keyboard.press("End")
    expect(page.locator("#panel-browse")).to_be_visible()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#panel-search")).to_be_visible()
    page.locator("#dropzone").focus()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(files=[{"name": "coins.jpg", "mimeType": "image/jpeg", "buffer": jpeg("coins")}])
    # coins.jpg, or a copy of it stored by another test
    expect(page.locator("#results .result").first).to_have_attribute("data-url", re.compile(r"/coins(_small)?\.\w+"))


# ---------------------------------------------------------------- copy detection


@pytest.fixture(scope="module")
def copies(serve: Stack, images: ImageServer) -> dict[str, str]:
    """Every test photo stored in copydetect, and a smaller copy of the coffee photo: name -> url."""
    urls = {name: images.url(f"/{name}.jpg") for name in PHOTO_NAMES}
    urls["coffee_small"] = images.url("/coffee_small.jpg")
    add_by_api(
        serve, [{"url": url, "metadata": {"name": name.removesuffix("_small")}} for name, url in urls.items()], COPY
    )
    return urls


def cropped(name: str, region: tuple[float, float, float, float]) -> tuple[Image.Image, list[float]]:
    """The part of a photo within `region` (fractions of its width and height), and the region as cut."""
    picture = photo(name)
    box = [round(share * side) for share, side in zip(region, picture.size * 2, strict=True)]
    return picture.crop(tuple(box)), [edge / side for edge, side in zip(box, picture.size * 2, strict=True)]


def picture_rect(img: Locator) -> tuple[float, float, float, float]:
    """Where an <img> shows its picture on the page, x, y, width and height: a contained picture is
    letterboxed within the element (the box of an element without object-fit is its picture)."""
    frame = img.bounding_box()
    assert frame, "the image is not displayed"
    width, height, fit = img.evaluate("img => [img.naturalWidth, img.naturalHeight, getComputedStyle(img).objectFit]")
    assert fit in ("contain", "fill"), f"a {fit} picture is cropped: the box cannot show the whole match"
    if fit == "fill":
        return frame["x"], frame["y"], frame["width"], frame["height"]
    scale = min(frame["width"] / width, frame["height"] / height)
    shown = (width * scale, height * scale)
    return frame["x"] + (frame["width"] - shown[0]) / 2, frame["y"] + (frame["height"] - shown[1]) / 2, *shown


def outline_on(outline: Locator, img: Locator) -> list[float]:
    """The outline's x0, y0, x1, y1 as fractions of the picture shown by `img`."""
    img.evaluate("img => img.decode()")
    expect(outline).to_be_visible()
    x, y, width, height = picture_rect(img)
    box = outline.bounding_box()
    assert box
    return [
        (box["x"] - x) / width,
        (box["y"] - y) / height,
        (box["x"] + box["width"] - x) / width,
        (box["y"] + box["height"] - y) / height,
    ]


def assert_near(found: list[float], expected: list[float], tolerance: float = 0.05) -> None:
    assert all(abs(a - b) <= tolerance for a, b in zip(found, expected, strict=True)), (found, expected)


def upload(page: Page, image: Image.Image, name: str) -> None:
    page.locator("#search-file").set_input_files(
        files=[{"name": name, "mimeType": "image/jpeg", "buffer": encode(image)}]
    )


def test_copydetect_search_draws_where_a_crop_lies(gui: Gui, copies: dict[str, str], shots: Path) -> None:
    page = gui.open()
    page.locator("#model").select_option("copydetect")
    # Wider than tall, in a square thumbnail: the picture is letterboxed and the box must follow it.
    crop, region = cropped("coffee", (0.1, 0.3, 0.6, 0.95))
    page.locator("#min-similarity").fill("39")  # below 6 agreeing corners a hit is not a copy
    upload(page, crop, "coffee-crop.jpg")
    first = page.locator("#results .result").first
    expect(first).to_have_attribute("data-url", re.compile(r"/coffee(_small)?\.jpg$"))
    assert {url for url, _ in results(page)} == {copies["coffee"], copies["coffee_small"]}

    # The box over the thumbnail is where the crop was cut from; the details say how much matches.
    assert_near(outline_on(first.locator(".match-box"), first.locator("img")), region)
    share = round((region[2] - region[0]) * (region[3] - region[1]) * 100)
    text = first.locator(".match-text")
    expect(text).to_contain_text(re.compile(r"matches \d+% of this image, 100% of the query; \d+ corners agree"))
    assert abs(int(re.search(r"matches (\d+)%", text.inner_text())[1]) - share) <= 5, text.inner_text()
    expect(first.locator(".flag")).to_be_hidden()

    # The query preview outlines the part of the query that matches the result in focus: all of a crop.
    expect(page.locator("#query-match")).to_have_text("Outlined: the part that matches result 1")
    preview = page.locator("#query-preview")
    query_box = page.locator("#dropzone .match-box")
    assert_near(outline_on(query_box, preview), [0, 0, 1, 1])
    for img in page.locator("#results .result img").all():
        img.evaluate("img => img.decode()")
    page.evaluate("() => document.activeElement.blur()")  # no focus ring on the slider in the picture
    page.screenshot(path=shots / "copydetect.png")  # doc/gui-copydetect.png
    second = page.locator("#results .result").nth(1)
    second.locator(".thumb").focus()
    expect(page.locator("#query-match")).to_have_text("Outlined: the part that matches result 2")
    expect(second).to_have_class(re.compile(r"\bboxed\b"))
    expect(first).not_to_have_class(re.compile(r"\bboxed\b"))

    # The details draw the box too.
    page.keyboard.press("Enter")
    expect(page.locator("#details-match")).to_contain_text("of the query")
    assert_near(outline_on(page.locator("#details .match-box"), page.locator("#details-img")), region)
    page.screenshot(path=shots / "copydetect-details.png")
    page.keyboard.press("Escape")

    # On a phone, the boxes stay on the pictures.
    page.set_viewport_size(NARROW)
    no_horizontal_scroll(page, "copydetect results")
    assert_near(outline_on(first.locator(".match-box"), first.locator("img")), region)
    page.screenshot(path=shots / "phone-copydetect.png", full_page=True)


def test_flip_finds_mirrored_copies(gui: Gui, copies: dict[str, str], images: ImageServer, shots: Path) -> None:
    mirrored = cropped("chelsea", (0.4, 0.2, 0.95, 0.9))[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    page = gui.open()
    page.locator("#model").select_option("copydetect")
    status = page.locator("#results-status")

    upload(page, mirrored, "mirrored.jpg")
    expect(status).to_contain_text(re.compile("best first|No stored image"))
    assert copies["chelsea"] not in [url for url, similarity in results(page) if similarity >= 39], results(page)
    expect(page.locator("#results .flag:visible")).to_have_count(0)

    # With the option, the upload finds the original, mirrored...
    page.locator("#panel-search").get_by_label("Also find mirrored copies").check()
    upload(page, mirrored, "mirrored.jpg")
    expect(status).to_contain_text("“mirrored.jpg” and its mirror")
    first = page.locator("#results .result").first
    expect(first).to_have_attribute("data-url", copies["chelsea"])
    expect(first.locator(".flag")).to_have_text("mirrored")
    expect(first.locator(".thumb")).to_have_attribute("aria-label", re.compile("mirrored"))
    expect(first.locator(".match-box")).to_be_visible()
    page.screenshot(path=shots / "copydetect-mirrored.png", full_page=True)

    # ... and a search by url sends "flip": true.
    url = images.add("/gui-mirrored-chelsea.jpg", encode(mirrored))
    with page.expect_request(lambda request: request.url.endswith("/copydetect/search")) as sent:
        page.locator("#search-url").fill(url)
        page.locator("#search-url").press("Enter")
    assert sent.value.post_data_json["flip"] is True
    expect(status).to_contain_text("the image at this URL and its mirror")
    expect(first).to_have_attribute("data-url", copies["chelsea"])
    expect(first.locator(".flag")).to_be_visible()

    # A text has no mirror: a text search leaves the option out (vit_b32 has a text tower).
    page.locator("#model").select_option("vit_b32")
    page.locator("#search-text").fill("a cat")
    with page.expect_request(lambda request: request.url.endswith("/vit_b32/search")) as sent:
        page.locator("#search-text-form button").click()
    assert "flip" not in sent.value.post_data_json
    expect(status).to_contain_text("“a cat” in vit_b32")
    expect(status).not_to_contain_text("mirror")


def test_compare_with_details_draws_both_boxes(gui: Gui, images: ImageServer, shots: Path) -> None:
    # The astronaut pasted into a wider white picture, at a known place.
    canvas = Image.new("RGB", (1000, 500), "white")
    canvas.paste(photo("astronaut").resize((400, 400)), (500, 50))
    pasted = [0.5, 0.1, 0.9, 0.9]
    first = images.add("/gui-pasted.jpg", encode(canvas))
    mirrored = images.add("/gui-pasted-mirrored.jpg", encode(canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    page = gui.open("compare")
    page.locator("#model").select_option("copydetect")
    page.locator("#compare-a").fill(first)
    page.locator("#compare-b").fill(images.url("/astronaut.jpg"))
    with page.expect_request(lambda request: request.url.endswith("/compare")) as sent:
        page.locator("#compare-button").click()
    assert sent.value.post_data_json["details"] is True and "flip" not in sent.value.post_data_json
    expect(page.locator("#compare-value")).to_have_text(re.compile(r"^(99|100)\.\d$"))
    expect(page.locator("#compare-match")).to_contain_text(re.compile(r"3\d% of the first image, 100% of the second"))
    expect(page.locator("#compare-mirrored")).to_be_hidden()
    boxes = {side: page.locator(f"#compare-{side}-img + .match-layer .match-box") for side in ("a", "b")}
    assert_near(outline_on(boxes["a"], page.locator("#compare-a-img")), pasted)
    assert_near(outline_on(boxes["b"], page.locator("#compare-b-img")), [0, 0, 1, 1])
    page.screenshot(path=shots / "compare-copydetect.png", full_page=True)

    # Another image hides the boxes until compared again; mirrored, it matches with the flip option only.
    page.locator("#compare-a").fill(mirrored)
    expect(boxes["a"]).to_be_hidden()
    expect(boxes["b"]).to_be_hidden()
    page.locator("#compare-button").click()
    expect(page.locator("#compare-score")).to_be_visible()
    assert float(page.locator("#compare-value").inner_text()) < 39
    page.locator("#panel-compare").get_by_label("Also find mirrored copies").check()
    with page.expect_request(lambda request: request.url.endswith("/compare")) as sent:
        page.locator("#compare-button").click()
    assert sent.value.post_data_json["flip"] is True
    expect(page.locator("#compare-value")).to_have_text(re.compile(r"^(99|100)\.\d$"))
    expect(page.locator("#compare-mirrored")).to_have_text("mirrored")
    expect(boxes["a"]).to_be_visible()
    expect(boxes["b"]).to_be_visible()
    page.screenshot(path=shots / "compare-mirrored.png", full_page=True)


def test_duplicates_walk_lists_the_groups(gui: Gui, serve: Stack, copies: dict[str, str], shots: Path) -> None:
    with serve.client() as client:
        count = client.get(f"{COPY}/count").json()
    page = gui.open("duplicates")
    page.locator("#model").select_option("copydetect")
    label = page.locator("#dup-progress-label")
    page.locator("#dup-min").fill("150")
    page.get_by_role("button", name="Find duplicates").click()
    expect(page.get_by_role("alert")).to_contain_text("from 0 to 100")
    expect(page.locator("#dup-min")).to_have_attribute("aria-invalid", "true")
    page.locator("#dup-min").fill("")

    # Three urls a page: a walk stopped after its second page.
    page.locator("#dup-form").evaluate("form => { form.dataset.page = '3'; }")
    held: list[Route] = []
    pattern = "**/models/copydetect/duplicates"
    sent: list[dict] = []

    def hold_after_first(route: Route) -> None:
        sent.append(route.request.post_data_json)
        if len(sent) == 1:
            route.continue_()
        else:
            held.append(route)

    page.route(pattern, hold_after_first)
    page.get_by_role("button", name="Find duplicates").click()
    expect(label).to_have_text(f"Examining copydetect… 3 of {count} stored images; 0 groups of copies so far.")
    expect(page.locator("#dup-button")).to_be_disabled()
    page.get_by_role("button", name="Stop").click()
    expect(label).to_have_text("Stopping after this page…")
    while not held:
        page.wait_for_timeout(50)
    held[0].continue_()
    page.unroute(pattern)
    expect(label).to_contain_text(f"Stopped: 6 of {count} stored images examined in copydetect")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    assert sent[0] == {"cursor": None, "limit": 3} and sent[1]["cursor"] and "min_similarity" not in sent[1]

    # The whole walk, a page of 100 urls at a time.
    page.locator("#dup-form").evaluate("form => { delete form.dataset.page; }")
    page.get_by_role("button", name="Find duplicates").click()
    expect(label).to_contain_text(re.compile(rf"^Done: {count} of {count} stored images examined in copydetect"))
    assert page.locator("#dup-progress").evaluate("bar => bar.value === bar.max")
    group = page.locator("#dup-groups .dup-group").filter(has=page.locator(f'[data-url="{copies["coffee"]}"]'))
    expect(group.locator(".group-title")).to_have_text(re.compile(r"^Group \d+: 2 images$"))
    members = group.locator(".dup-member")
    expect(members).to_have_count(2)
    assert members.evaluate_all("items => items.map(item => item.dataset.url)") == [
        copies["coffee"],
        copies["coffee_small"],
    ]
    expect(members.first.locator(".badge")).to_have_text("first")
    expect(members.nth(1).locator(".badge")).to_have_text(re.compile(r"^\d{2,3}\.\d$"))
    assert float(members.nth(1).locator(".badge").inner_text()) >= 39
    for img in page.locator("#dup-groups img").all():
        img.evaluate("img => img.decode()")
    page.screenshot(path=shots / "duplicates.png")  # doc/gui-duplicates.png

    # A member opens like a search result: its metadata, then a search with it.
    members.nth(1).locator(".thumb").click()
    details = page.locator("#details")
    expect(details).to_be_visible()
    expect(page.locator("#details-score")).to_contain_text("to the group's first image")
    expect(page.locator("#details-metadata")).to_contain_text('"name": "coffee"')
    page.screenshot(path=shots / "duplicates-details.png")
    details.get_by_role("button", name="Search with this").click()
    expect(page.locator("#panel-search")).to_be_visible()
    expect(page.locator("#results .result").first).to_have_attribute("data-url", re.compile(r"/coffee(_small)?\.jpg$"))

    gui.tab("duplicates")
    page.set_viewport_size(NARROW)
    no_horizontal_scroll(page, "duplicates")
    page.screenshot(path=shots / "phone-duplicates.png", full_page=True)


@pytest.fixture(scope="module")
def keyed(milvus_uri: str, images: ImageServer, artifacts: Path) -> Iterator[Stack]:
    """`idios serve` with an API key (phash only, to start fast)."""
    log_dir = artifacts / "test_gui-keyed"
    log_dir.mkdir(exist_ok=True)
    keys = f"write:{hash_key(API_KEY)}"
    stack = start_serve(milvus_uri, log_dir, models=("phash",), key=API_KEY, IDIOS_MODELS="phash", IDIOS_API_KEYS=keys)
    try:
        yield stack
    finally:
        stack.stop()
    log = stack.processes[0].log()
    assert "Traceback" not in log, log[-4000:]


def test_api_key_is_asked_for_and_used(browser: Browser, keyed: Stack, images: ImageServer, shots: Path) -> None:
    tab = Gui(browser, keyed.url, WIDE)
    try:
        page = tab.page
        page.goto(keyed.url)
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("this API needs a key")
        expect(page.locator("#key-panel")).to_be_visible()
        expect(page.locator("#api-key")).to_be_focused()
        page.screenshot(path=shots / "api-key.png", full_page=True)

        page.locator("#api-key").fill("wrong key")
        page.locator("#api-key").press("Enter")
        expect(alert).to_contain_text("unknown API key")

        page.locator("#api-key").fill(API_KEY)
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#model")).to_have_value("phash")
        expect(page.locator("#key-panel")).to_be_hidden()
        expect(alert).to_be_hidden()
        expect(page.locator("#model option", has_text="vit_b32")).to_be_disabled()
        expect(page.locator("#search-text")).to_be_disabled()
        assert page.evaluate("() => sessionStorage.getItem('idios.apiKey')") == API_KEY

        page.reload()  # the key stays for the tab's session
        expect(page.locator("#model")).to_have_value("phash")
        tab.tab("add")
        page.locator("#add-url").fill(images.url("/chelsea.jpg"))
        page.locator("#add-button").click()
        expect(page.locator("#add-result")).to_contain_text("Added to phash")
        tab.tab("browse")
        expect(page.locator("#count")).to_have_text("1")
    finally:
        tab.close()
    assert not tab.errors, tab.errors


def test_page_needs_no_key_and_sets_a_content_security_policy(keyed: Stack) -> None:
    with keyed.client() as client:
        assert client.get("/models").status_code == 401
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert 'src="static/app.js"' in page.text and "<script>" not in page.text  # no inline script
        assert not re.search(r"\son[a-z]+=", page.text), "an inline event handler"
        for asset, kind in (("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")):
            response = client.get(f"/static/{asset}")
            assert response.status_code == 200 and kind in response.headers["content-type"], asset
        assert client.get("/static/missing.js").status_code == 404
        assert "/" not in client.get("/openapi.json").json()["paths"]
