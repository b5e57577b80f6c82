"""summary.md: the audit in a page of Markdown, its numbers those of metrics.json; --format."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from auditor.aggregate.trust_figures import method_title
from auditor.report.format import fixed, percent
from auditor.report.markdown import markdown_text
from tests.helpers import invoke


def test_summary_md_states_metrics_json_s_numbers_and_links_the_pdf(
    audit: tuple[object, Path],
) -> None:
    folder = audit[1]
    text = (folder / "summary.md").read_text(encoding="utf-8")
    metrics = json.loads((folder / "metrics.json").read_text())

    accuracy = metrics["accuracy"]
    assert (
        f"| Accuracy | {percent(accuracy['value'])} | "
        f"{percent(accuracy['ci_low'])} – {percent(accuracy['ci_high'])} |"
    ) in text
    auc = metrics["operating_point"]["auc"]
    assert f"| {fixed(auc['value'])} | {fixed(auc['ci_low'])} – {fixed(auc['ci_high'])} |" in text
    sensitivity = metrics["operating_point"]["sensitivity"]
    assert f"| Sensitivity at threshold 0.5 | {percent(sensitivity['value'])} |" in text
    assert "**Verdict: no acceptance criteria declared**" in text
    assert f"{metrics['n_images']} images of 2 classes" in text
    assert "[report.pdf](report.pdf)" in text
    positive = metrics["operating_point"]["positive_class"]
    assert f"| ROC AUC ({markdown_text(positive)}) |" in text
    assert "<script>" not in text, "no class name is written as markup"


def test_summary_md_says_page_ones_sentences_on_errors_and_explanations(
    audit: tuple[object, Path],
) -> None:
    """The confident errors and the calibration, the methods that can be read and those
    of them whose maps small noise moves (recomputed from trust.csv): in summary.md as
    on page one, which names the unstable methods too."""
    folder = audit[1]
    text = (folder / "summary.md").read_text(encoding="utf-8")
    page_one = (folder / "report.html").read_text(encoding="utf-8").split('id="contents"')[0]
    predictions = pd.read_csv(folder / "predictions.csv")
    confident = int((~predictions["correct"] & (predictions["confidence"] >= 0.9)).sum())
    if confident:
        assert f"{confident} error(s) were made with confidence 90% or more" in text
    else:
        assert "No error was made with confidence 90% or more." in text
    assert "calibration slope" in text and "Brier score" in text
    trust = pd.read_csv(folder / "trust.csv")
    good = trust[trust["level"] == "good"]
    readable = ", ".join(method_title(m) for m in good["method"])
    assert f"{len(good)} of {len(trust)} methods: {readable}." in text
    unstable = good[good["stability"] == "unstable"].sort_values("map_instability", ascending=False)
    named = ", ".join(
        f"{method_title(m)} ({v:.0%})"
        for m, v in zip(unstable["method"], unstable["map_instability"], strict=True)
    )
    sentence = "Unstable under small noise (map instability above 50%):"
    assert (f"{sentence} {named}." in text) == (len(unstable) > 0), text
    assert (sentence in " ".join(page_one.split())) == (len(unstable) > 0)


def test_markdown_text_keeps_a_table_cell_on_one_literal_line() -> None:
    assert markdown_text("a|b\nc *d* <i>") == r"a\|b c \*d\* \<i\>"
    assert markdown_text(3) == 3


def test_format_md_writes_the_summary_and_no_html_or_pdf(
    tiny_model: Path, manifest: Path, tmp_path: Path
) -> None:
    config = tmp_path / "audit.toml"
    config.write_text("robustness-images = 0\nbootstrap = 100\n")
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path / "o"),
        "--config", str(config), "--explain-samples", "0", "--format", "md",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert result.stdout.splitlines()[0] == f"Report: {folder / 'summary.md'}"
    names = {p.name for p in folder.iterdir()}
    assert "summary.md" in names and not names & {"report.pdf", "report.html"}
    bad = invoke("run", "--model", str(tiny_model), "--data", str(manifest), "--format", "docx")
    assert bad.exit_code == 1 and "needs one or more of html, pdf, md" in bad.stderr
