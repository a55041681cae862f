"""The report's HTML page: figures inlined, tables, and a footer naming date, machine and commit."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def figure_png(figure: Figure) -> bytes:
    """Renders a figure to PNG bytes and closes it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


@dataclass
class Footer:
    """Where the page's numbers come from: commits, sweeps, and a link to each run."""

    commits: list[str] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)  # (run name, MLflow URL)
    runs_table: str | None = None


# Tables of numbers wider than the page scroll inside their own box; tables of sentences
# (class `text`) wrap their cells to the page's width; images shrink to fit.
PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;"
    "box-sizing:border-box}"
    ".scroll{overflow-x:auto;max-width:100%}"
    "table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}"
    ".text table{table-layout:fixed;width:100%}"
    ".text td,.text th{white-space:normal;text-align:left;overflow-wrap:anywhere;"
    "vertical-align:top}"
    "img{max-width:100%;height:auto}"
    "footer{margin-top:2em;border-top:1px solid #ccc;font-size:12px;color:#444;"
    "overflow-wrap:anywhere}"
)


def _footer_html(footer: Footer) -> list[str]:
    def listing(values: list[str]) -> str:
        return ", ".join(f"<code>{html.escape(value)}</code>" for value in values) or "unknown"

    parts = [
        "<footer>",
        f"<p>Commit: {listing(footer.commits)}. Sweep: {listing(footer.sweeps)}.</p>",
    ]
    if footer.runs_table:
        url = html.escape(footer.runs_table, quote=True)
        parts.append(
            f"<p>All runs in MLflow: <a href='{url}'>{html.escape(footer.runs_table)}</a></p>"
        )
    if footer.runs:
        parts.append(f"<details><summary>The {len(footer.runs)} runs in the figures</summary><ul>")
        parts += [
            f"<li><a href='{html.escape(url, quote=True)}'>{html.escape(name)}</a></li>"
            for name, url in footer.runs
        ]
        parts.append("</ul></details>")
    parts.append("</footer>")
    return parts


def render_html(
    title: str,
    sentences: list[str],
    images: dict[str, bytes],
    tables: dict[str, pd.DataFrame],
    notes: list[str],
    footer: Footer | None = None,
    text_tables: tuple[str, ...] = (),
) -> str:
    """One self-contained page: summary, figures (embedded), tables, notes and sources.

    Nothing is fetched from elsewhere: images are inline and the style is in the page.
    The tables captioned in `text_tables` hold sentences: they wrap to the page's width
    instead of scrolling sideways.
    """
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{PAGE_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2><ul>",
        *[f"<li>{html.escape(sentence)}</li>" for sentence in sentences],
        "</ul>",
    ]
    for caption, png in images.items():
        encoded = base64.b64encode(png).decode()
        parts.append(
            f"<h2>{html.escape(caption)}</h2>"
            f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'>"
        )
    for caption, table in tables.items():
        kind = "text" if caption in text_tables else "scroll"
        parts.append(f"<h2>{html.escape(caption)}</h2><div class='{kind}'>")
        parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
        parts.append("</div>")
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(note)}</li>" for note in notes]
        parts.append("</ul>")
    if footer is not None:
        parts += _footer_html(footer)
    parts.append("</body></html>")
    return "\n".join(parts)
