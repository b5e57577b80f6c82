"""history.html: the table of runs, the trend figures, escaping, self-containment, a browser."""

from __future__ import annotations

import base64
import re
import shutil
import socket
from html.parser import HTMLParser
from pathlib import Path

import pytest
from selenium.webdriver.support.wait import WebDriverWait

from auditor.errors import OutputError
from auditor.history import History
from auditor.history.page import write_history_page
from tests.helpers import fake_run_folder, headless_chromium

HOSTILE = "<b>\"beta\" & 'x'</b>"


class _Page(HTMLParser):
    """The table's body rows (each cell's text, and its link or ``None``) and the images."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str | None]]] = []
        self.images: list[dict[str, str | None]] = []
        self._in_body = False
        self._cell: list[str] | None = None
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag in ("td", "th") and self._in_body:
            self._cell, self._href = [], None
        elif tag == "a" and self._cell is not None:
            self._href = dict(attrs)["href"]
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(("".join(self._cell).strip(), self._href))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _svg(uri: str | None) -> str:
    assert uri is not None and uri.startswith("data:image/svg+xml;base64,"), (uri or "")[:60]
    return base64.b64decode(uri.split(",", 1)[1]).decode("utf-8")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A history with three runs of two models, recorded out of order: ``alpha`` on 1 May
    (passed) and on 2 June (3 of 5 criteria not met, no AUC), and a model with a hostile
    name on 20 May whose run folder is outside the page's folder."""
    out = tmp_path / "out"
    history = History(f"sqlite:///{out / 'history.sqlite'}")
    history.record(
        fake_run_folder(
            out, "alpha-june", model="alpha", started="2024-06-02T10:15:30+02:00",
            accuracy=(0.9, 0.87, 0.93), auc=None, failed=3, declared=5, n_images=1200,
            version="2.0",
        )
    )  # fmt: skip
    history.record(fake_run_folder(out, "alpha may", model="alpha", version="1.0"))
    elsewhere = tmp_path / "elsewhere"
    history.record(
        fake_run_folder(
            elsewhere, "beta", model=HOSTILE, started="2024-05-20T12:00:00Z",
            accuracy=(0.75, 0.7, 0.8), auc=(0.8, 0.75, 0.85), n_images=80,
        )
    )  # fmt: skip
    write_history_page(history, out / "history.html")
    return out


def test_the_table_lists_every_run_newest_first_with_its_figures(out: Path) -> None:
    page = _parse((out / "history.html").read_text(encoding="utf-8"))
    host = socket.gethostname()
    beta_report = (out.parent / "elsewhere" / "beta" / "report.html").as_uri()
    assert page.rows == [
        [("1", None), ("alpha", None), ("2.0", None), ("2024-06-02 08:15", None),
         ("1,200", None), ("0.900 (0.870–0.930)", None), ("—", None),
         ("3 of 5 not met", None), (host, None),
         ("alpha-june", "alpha-june/report.html")],
        [("3", None), (HOSTILE, None), ("—", None), ("2024-05-20 12:00", None),
         ("80", None), ("0.750 (0.700–0.800)", None), ("0.800 (0.750–0.850)", None),
         ("passed", None), (host, None),
         (str(out.parent / "elsewhere" / "beta"), beta_report)],
        [("2", None), ("alpha", None), ("1.0", None), ("2024-05-01 09:30", None),
         ("200", None), ("0.860 (0.825–0.895)", None), ("0.910 (0.880–0.940)", None),
         ("passed", None), (host, None),
         ("alpha may", "alpha%20may/report.html")],
    ]  # fmt: skip


def test_the_summary_counts_runs_and_models_and_names_the_database(out: Path) -> None:
    html = (out / "history.html").read_text(encoding="utf-8")
    assert (
        "3 runs of 2 models, from 2024-05-01 09:30 to 2024-06-02 08:15 UTC, recorded in "
        f"<code>sqlite:///{out / 'history.sqlite'}</code>."
    ) in html


def test_a_deleted_run_folder_shows_as_missing_not_as_a_link(out: Path) -> None:
    shutil.rmtree(out / "alpha may")
    history = History(f"sqlite:///{out / 'history.sqlite'}")
    html = write_history_page(history, out / "history.html").read_text(encoding="utf-8")
    assert _parse(html).rows[-1][-1] == ("missing", None)
    assert '<span class="missing" title="alpha may">missing</span>' in html
    assert "alpha%20may/report.html" not in html


def test_a_name_with_html_characters_is_escaped(out: Path) -> None:
    html = (out / "history.html").read_text(encoding="utf-8")
    assert "<b>" not in html and HOSTILE not in html
    assert "&lt;b&gt;&#34;beta&#34; &amp; &#39;x&#39;&lt;/b&gt;" in html
    alts = [image["alt"] or "" for image in _parse(html).images]
    assert any(alt.startswith(f"accuracy, AUC of {HOSTILE} over 1 run") for alt in alts)


def test_the_page_is_self_contained(out: Path) -> None:
    html = (out / "history.html").read_text(encoding="utf-8")
    for external in ('src="http', "<link", "<script", "url(", "@import", 'href="http'):
        assert external not in html
    images = _parse(html).images
    assert len(images) == 2  # alpha and the hostile name: one figure each
    for image in images:
        svg = _svg(image["src"])
        references = re.findall(r'href="([^"]*)"', svg)
        assert references and all(r.startswith("#") for r in references), references


def test_each_model_plots_only_the_metrics_it_has_against_time(out: Path) -> None:
    images = _parse((out / "history.html").read_text(encoding="utf-8")).images
    alpha = next(i for i in images if (i["alt"] or "").startswith("accuracy, AUC of alpha"))
    svg = _svg(alpha["src"])  # text is drawn as paths, each after a comment with its words
    for words in ("accuracy", "AUC", "run start (UTC)", "policy passed", "policy not passed",
                  "95% confidence interval"):  # fmt: skip
        assert f"<!-- {words} -->" in svg, words
    assert "balanced accuracy" not in svg and "ECE" not in svg
    assert svg.count('<g id="axes_') == 2


def test_runs_that_start_at_the_same_time_are_plotted_in_order(tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    for name in ("first", "second"):
        history.record(fake_run_folder(tmp_path, name, accuracy=(0.8, 0.7, 0.9), auc=None))
    history.record(fake_run_folder(tmp_path, "no metrics", model="gamma", accuracy=None, auc=None))
    html = write_history_page(history, tmp_path / "history.html").read_text(encoding="utf-8")
    (image,) = _parse(html).images
    svg = _svg(image["src"])
    assert "<!-- run, in order of start -->" in svg and svg.count('<g id="axes_') == 1
    assert "No headline metric was recorded for its runs." in html  # gamma: no empty plot


def test_an_empty_history_says_so_without_figures(tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    html = write_history_page(history, tmp_path / "history.html").read_text(encoding="utf-8")
    assert f"No runs are recorded yet in <code>sqlite:///{tmp_path / 'h.sqlite'}</code>." in html
    assert "No audit has been recorded yet" in html
    assert "<img" not in html and "<table" not in html


def test_an_unwritable_page_is_an_output_error(tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    with pytest.raises(OutputError, match="cannot be written"):
        write_history_page(history, tmp_path / "file" / "history.html")


def test_the_page_renders_in_a_browser_without_console_errors(out: Path) -> None:
    with headless_chromium(1280, 900) as browser:
        browser.get((out / "history.html").resolve().as_uri())
        WebDriverWait(browser, 10).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        sizes = browser.execute_script(
            "return Array.from(document.images).map(img => {"
            "  const box = img.getBoundingClientRect();"
            "  return [img.complete && img.naturalWidth > 0, box.width, box.height]; });"
        )
        page_width, window_width = browser.execute_script(
            "const de = document.documentElement; return [de.scrollWidth, de.clientWidth];"
        )
    assert not severe, "console errors:\n" + "\n".join(entry["message"] for entry in severe)
    assert len(sizes) == 2
    assert all(decoded and width > 0 and height > 0 for decoded, width, height in sizes), sizes
    assert page_width <= window_width
