"""Minimal self-contained HTML pages for reports: one style, escaped text, tables, figures."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5rem;vertical-align:top;max-width:100%}img{max-width:100%}
.wide{overflow-x:auto;max-width:100%}h1,h2,h3,p,figcaption{overflow-wrap:anywhere}
figcaption{font-size:.9rem;color:#555}.warning{color:#b3261e;font-weight:600}
"""


def page(title: str, body: str) -> str:
    """A complete HTML document; ``body`` is trusted markup built with :func:`table`."""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}"
        f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n"
        "</body></html>\n"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table with every cell escaped; every column needs a name."""
    if not all(str(cell).strip() for cell in header):
        raise ValueError("a table needs a name for every column")
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    # In a box of its own that scrolls sideways: a wide table never widens a phone's page.
    return (
        f"<div class='wide'><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def figure(name: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
