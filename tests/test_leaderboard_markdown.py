"""The leaderboard's README.md shows every string as written, as the page does: no name
can close its code block, start code or emphasis, or become an HTML tag."""

from __future__ import annotations

import math
import re

import pandas as pd
from markdown_it import MarkdownIt

from debiasbench.report.leaderboard import add_verdict, markdown

METRICS = ("test_acc", "test_clean_acc", "test_biased_acc", "val_acc")


def summary(method: str) -> pd.DataFrame:
    rows = []
    for name, acc in ((method, 0.7), ("vanilla", 0.6)):
        row = {"rule": "val_acc", "method": name, "dataset": "colored_digits", "model": "small_cnn",
               "setting": "bias_ratio=0.99", "hparams": "lr=0.001", "n": 1, "selected_by": "val_acc",
               "selection_metric": "val_acc", "selection_note": "", "oracle": False, "selection_score": acc}
        for m in METRICS:
            row[m], row[m + "_se"] = acc, math.nan
        rows.append(row)
    return add_verdict(pd.DataFrame(rows))


def test_the_readme_escapes_markdown_as_the_page_escapes_html():
    """Rendered as CommonMark with raw HTML allowed (as GitHub shows a README), no tag from
    a sweep file name, a store label or a method name survives, and the command stays in
    its one code block."""
    hostile = "x```\n<img src=x onerror=alert(1)>\n```y"
    info = {"title": "board", "command": f"debiasbench sweep {hostile}.yaml\ndebiasbench leaderboard",
            "selection": "val_acc", "rules": "val_acc: validation accuracy", "seeds": "1 (0)",
            "date": "2026-01-01", "tracking_store": "sqlite: `<img src=y onerror=alert(2)>`"}
    text = markdown(summary("`a`<img src=z onerror=alert(3)>*b*"), info, METRICS)
    html = MarkdownIt("commonmark").render(text)
    assert "<img" not in html
    for shown in ("onerror=alert(1)", "onerror=alert(2)", "onerror=alert(3)"):
        assert shown in html  # as text
    fenced = re.findall(r"<pre><code>(.*?)</code></pre>", html, flags=re.S)
    assert len(fenced) == 1 and "onerror=alert(1)" in fenced[0] and "debiasbench leaderboard" in fenced[0]
    assert "<em>" not in html  # *b* stays literal
