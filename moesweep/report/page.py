"""HTML assembly: sections of escaped text, tables and Plotly figures into one self-contained page.

plotly.js is embedded exactly once (inline, with the first figure); every other figure is a ``<div>``
plus a small script, so the page opens offline from ``file://`` and never reaches a CDN. Every string
that comes from data goes through ``html.escape``; only the fragments built here are raw HTML.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

import pandas as pd
import plotly.graph_objects as go

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True,
                 "toImageButtonOptions": {"format": "png", "scale": 2}}


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


@dataclass
class Fig:
    """A figure in a section; ``name`` becomes the div id and the PNG file name."""

    name: str
    figure: go.Figure


Block = Union[str, Fig]  # str: an HTML fragment built by the helpers below (already escaped)


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def figures(self) -> list[Fig]:
        return [b for b in self.blocks if isinstance(b, Fig)]


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def note(text: str, kind: str = "info") -> str:
    """A boxed remark; ``kind`` 'missing' marks a part that was not run or has no data."""
    return f'<div class="note note-{esc(kind)}">{esc(text)}</div>'


def bullets(items: list[str], css_class: str = "") -> str:
    cls = f' class="{esc(css_class)}"' if css_class else ""
    return f"<ul{cls}>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def code(text: str) -> str:
    return f"<pre><code>{esc(text)}</code></pre>"


def kv_table(pairs: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv">{rows}</table>'


def table(df: pd.DataFrame, columns: Mapping[str, str], fmt: Mapping[str, Callable[[Any], str]] | None = None,
          caption: str | None = None) -> str:
    """``df`` as an HTML table: ``columns`` maps column -> header (order kept), ``fmt`` column -> formatter
    (default ``str``). Numbers are right-aligned by the stylesheet."""
    fmt = fmt or {}
    rows = [[fmt.get(c, _plain)(r[c]) for c in columns] for _, r in df.iterrows()]
    # A column is text (left-aligned, header too) unless most of its cells read as numbers.
    text_col = [sum(not _numeric(row[i]) for row in rows) * 2 > len(rows) for i in range(len(columns))]
    cls = [' class="text"' if t else "" for t in text_col]
    head = "".join(f"<th{cls[i]}>{esc(h)}</th>" for i, h in enumerate(columns.values()))
    body = ["<tr>" + "".join(f"<td{cls[i]}>{esc(t)}</td>" for i, t in enumerate(row)) + "</tr>" for row in rows]
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<div class="tablewrap"><table class="data">{cap}<thead><tr>{head}</tr></thead>' \
           f'<tbody>{"".join(body)}</tbody></table></div>'


def _numeric(text: str) -> bool:
    """Right-align cells that read as numbers ('87.4 ± 0.3%', '−0.2', '[+0.1, +0.5]', 'p = 0.3', 'n/a')."""
    t = text.strip()
    return t == "n/a" or t[:1] in "0123456789+-\u2212[." or t.startswith("p ")


def _plain(v: Any) -> str:
    return "n/a" if v is None or (not isinstance(v, (list, tuple)) and pd.isna(v)) else str(v)


def figure_html(fig: Fig, first: bool) -> str:
    body = fig.figure.to_html(full_html=False, include_plotlyjs=bool(first), div_id=f"fig-{fig.name}",
                              config=PLOTLY_CONFIG)
    return f'<figure class="plot" id="figure-{esc(fig.name)}">{body}</figure>'


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole document: header, table of contents, then every section in order."""
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    parts, first = [], True
    for s in sections:
        body = []
        for b in s.blocks:
            if isinstance(b, Fig):
                body.append(figure_html(b, first))
                first = False
            else:
                body.append(b)
        parts.append(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{"".join(body)}</section>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body><header><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p></header>
<div class="layout"><nav id="toc"><h2>Contents</h2><ol>{toc}</ol></nav>
<main>{"".join(parts)}</main></div></body></html>
"""


CSS = """
:root { --fg:#1d2433; --muted:#5b6577; --line:#e3e7ee; --accent:#2f5fb3; --bg:#fbfcfe; }
* { box-sizing: border-box; }
body { margin:0; font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color:var(--fg);
       background:var(--bg); line-height:1.5; font-size:15px; }
header { padding:22px 32px 14px; border-bottom:1px solid var(--line); background:#fff; }
header h1 { margin:0; font-size:24px; }
header .sub { margin:4px 0 0; color:var(--muted); }
.layout { display:grid; grid-template-columns: 220px minmax(0, 1fr); gap:28px; padding:0 32px; max-width:1500px; }
nav#toc { position:sticky; top:0; align-self:start; padding:20px 0; font-size:14px; }
nav#toc h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); margin:0 0 8px; }
nav#toc ol { margin:0; padding-left:20px; } nav#toc li { margin:3px 0; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
main { min-width:0; padding-bottom:60px; }
section { padding:18px 0 8px; border-bottom:1px solid var(--line); }
section h2 { font-size:20px; margin:6px 0 10px; }
h3 { font-size:16px; margin:18px 0 6px; }
figure.plot { margin:10px 0 18px; background:#fff; border:1px solid var(--line); border-radius:6px; padding:4px; }
.note { padding:8px 12px; border-left:4px solid var(--accent); background:#eef3fb; margin:10px 0; border-radius:3px; }
.note-missing { border-color:#b7791f; background:#fdf6e7; }
.tablewrap { overflow-x:auto; margin:8px 0 14px; }
table.data { border-collapse:collapse; font-size:13.5px; background:#fff; }
table.data th, table.data td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:right;
       white-space:nowrap; font-variant-numeric: tabular-nums; }
table.data th:first-child, table.data td:first-child, table.data .text { text-align:left; }
table.data thead th { background:#f2f4f8; font-weight:600; }
table.data caption { caption-side:top; text-align:left; color:var(--muted); padding:2px 0 6px; }
table.kv th { text-align:left; padding:3px 16px 3px 0; color:var(--muted); font-weight:500; vertical-align:top; }
table.kv td { padding:3px 0; }
pre { background:#f2f4f8; padding:10px 12px; border-radius:4px; overflow-x:auto; font-size:13px; }
ul.findings li { margin:6px 0; }
@media (max-width: 900px) { .layout { grid-template-columns: 1fr; } nav#toc { position:static; } }
"""
