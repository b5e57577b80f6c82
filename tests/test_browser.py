"""report.html in a real browser: Debian's headless Chromium, driven through chromedriver.

The page loads without console errors, every internal link and image resolves, a keyboard
user reaches the table of contents through the skip link, and the screen stylesheet keeps
the page inside the window (the print stylesheet, which WeasyPrint uses, is left alone).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from tests.helpers import headless_chromium

WIDTH, HEIGHT = 1280, 900
NARROWEST = 500  # headless Chromium does not make a window narrower than this


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium at WIDTH x HEIGHT, with the console log kept. Fails (never skips)
    when Debian's chromium or chromedriver is missing: the browser test is part of the suite."""
    with headless_chromium(WIDTH, HEIGHT) as driver:
        yield driver


@pytest.fixture
def page(browser: WebDriver, audit: tuple[Result, Path]) -> WebDriver:
    """The shared audit's report.html, freshly loaded (focus on the body, scrolled to the top,
    the console log emptied of earlier pages' entries)."""
    _, folder = audit
    browser.get_log("browser")  # reading the log empties it
    browser.set_window_size(WIDTH, HEIGHT)
    browser.get((folder / "report.html").resolve().as_uri())
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    return browser


def test_the_report_loads_without_console_errors_and_every_image_decodes(
    page: WebDriver,
) -> None:
    severe = [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, "console errors:\n" + "\n".join(entry["message"] for entry in severe)
    broken = page.execute_script(
        "return Array.from(document.images)"
        "  .filter(img => !img.complete || img.naturalWidth === 0)"
        "  .map(img => img.alt || img.src.slice(0, 60));"
    )
    assert page.execute_script("return document.images.length") > 0
    assert broken == [], f"images that did not decode: {broken}"


def test_every_internal_link_has_its_target(page: WebDriver) -> None:
    hrefs, broken = page.execute_script(
        "const links = Array.from(document.querySelectorAll('a[href^=\"#\"]'));"
        "const hrefs = links.map(a => a.getAttribute('href'));"
        "const target = h => document.getElementById(decodeURIComponent(h.slice(1)));"
        "return [hrefs, hrefs.filter(h => !target(h))];"
    )
    # The skip link, the contents and the summary's cross-references: never vacuous.
    assert len(hrefs) >= 5, hrefs
    assert "#contents" in hrefs
    assert broken == [], f"links without a target: {broken}"


def test_a_keyboard_user_reaches_the_contents_through_the_skip_link(page: WebDriver) -> None:
    keys = ActionChains(page)
    keys.send_keys(Keys.TAB).perform()
    focused = page.switch_to.active_element
    assert focused.get_attribute("class") == "skip-link"
    assert (focused.get_attribute("href") or "").endswith("#contents")
    assert focused.text == "Skip to the contents"  # shown on screen while focused
    assert focused.is_displayed() and focused.location["x"] >= 0

    keys.send_keys(Keys.ENTER).perform()
    WebDriverWait(page, 5).until(lambda d: d.execute_script("return location.hash") == "#contents")
    top = page.execute_script(
        "return document.getElementById('contents').getBoundingClientRect().top"
    )
    assert page.execute_script("return window.scrollY") > 0
    assert abs(top) <= 4, f"#contents is {top}px from the top of the window"
    # Focus follows (the heading has tabindex="-1"), so a screen reader reads on from there.
    assert page.execute_script("return document.activeElement.id") == "contents"

    keys.send_keys(Keys.TAB).perform()
    focused_in_toc = page.execute_script(
        "return [document.activeElement.matches('.toc a'),"
        "        document.activeElement.getAttribute('href')];"
    )
    first_section = page.execute_script(
        "return document.querySelector('.toc a').getAttribute('href')"
    )
    assert focused_in_toc == [True, first_section]


def test_the_screenshot_is_a_rendered_page(page: WebDriver, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    assert page.save_screenshot(str(shot))
    with Image.open(io.BytesIO(shot.read_bytes())) as image:
        assert image.format == "PNG"
        viewport = page.execute_script("return [window.innerWidth, window.innerHeight]")
        assert list(image.size) == viewport
        colours = image.convert("RGB").getcolors(maxcolors=WIDTH * HEIGHT)
    assert colours is not None and len(colours) > 16, "the screenshot is blank"
    # The title is on it: dark text on the white page.
    assert min(sum(rgb) for _, rgb in colours) < 3 * 100


@pytest.mark.parametrize("width", [WIDTH, NARROWEST])
def test_the_screen_layout_stays_inside_the_window(page: WebDriver, width: int) -> None:
    page.set_window_size(width, HEIGHT)
    page_width, window_width = page.execute_script(
        "const de = document.documentElement; return [de.scrollWidth, de.clientWidth];"
    )
    assert page_width <= window_width, (
        f"the page is {page_width}px wide in a {window_width}px window"
    )
    # Images fit their column; a table wider than the column scrolls inside itself.
    too_wide = page.execute_script(
        "return Array.from(document.images)"
        "  .filter(img => img.getBoundingClientRect().width > img.parentElement.clientWidth + 1"
        "                 && !img.closest('table'))"
        "  .map(img => img.alt);"
    )
    assert too_wide == []
    if width == WIDTH:
        # One centred column, about as wide as the printed page's text.
        left, right, column = page.execute_script(
            "const r = document.body.getBoundingClientRect();"
            "return [r.left, document.documentElement.clientWidth - r.right, r.width];"
        )
        assert abs(left - right) <= 1 and 600 <= column <= 800, (left, right, column)


def test_print_media_keeps_the_print_stylesheet(page: WebDriver) -> None:
    """Under print media (what WeasyPrint and a browser's print use) the skip link is hidden
    and none of the screen column rules apply."""
    page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        skip, body_width, table = page.execute_script(
            "const s = e => getComputedStyle(e);"
            "return [s(document.querySelector('.skip-link')).display,"
            "        s(document.body).maxWidth, s(document.querySelector('table')).display];"
        )
    finally:
        page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert (skip, body_width, table) == ("none", "none", "table")
