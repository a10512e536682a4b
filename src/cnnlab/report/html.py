"""A few helpers for writing one self-contained HTML page: pictures inlined as data URIs, tables,
escaping, and the page's style. No JavaScript and nothing fetched from anywhere."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Iterable, Sequence

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0;
       line-height: 1.45; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 0 24px 48px; background: white; }
header { padding: 24px 0 8px; border-bottom: 1px solid #ddd; }
h1 { margin: 0 0 4px; font-size: 1.6em; }
h2 { margin-top: 2em; border-bottom: 2px solid #4a78b8; padding-bottom: 4px; }
h3 { margin-bottom: 0.3em; }
nav a { margin-right: 14px; }
.subtitle, .note { color: #555; }
.note { font-size: 0.92em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: #f0f3f8; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0; }
.bar { background: #4a78b8; height: 10px; display: inline-block; vertical-align: middle; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(500px, 1fr)); gap: 14px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; }
.card p { margin: 2px 0; }
.wrong, .warning { color: #b00020; font-weight: 600; }
details summary { cursor: pointer; color: #4a78b8; }
"""


_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class Section:
    id: str  # the anchor: config, model, data, training, evaluation, mistakes, filters, feature-maps
    title: str
    body: str  # HTML


def image(source: Path | bytes, alt: str, *, css: str = "") -> str:
    """An <img> with the PNG inlined as a data URI, so the page needs no other file."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    encoded = base64.b64encode(data).decode("ascii")
    style = f' class="{css}"' if css else ""
    return f'<img src="data:image/png;base64,{encoded}" alt="{escape(alt)}"{style}>'


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, numeric: Sequence[bool] | None = None,
          raw: bool = False) -> str:
    """A table; cells are escaped unless `raw` (for cells that hold HTML already)."""
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value, is_number in zip(row, numeric):
            text = str(value) if raw else escape(str(value))
            cells.append(f'<td class="number">{text}</td>' if is_number else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def paragraph(text: str, css: str = "") -> str:
    return f'<p class="{css}">{escape(text)}</p>' if css else f"<p>{escape(text)}</p>"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = " ".join(f'<a href="#{section.id}">{escape(section.title)}</a>' for section in sections)
    body = "\n".join(f'<section id="{section.id}">\n<h2>{escape(section.title)}</h2>\n'
                     f"{section.body}\n</section>" for section in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            # The page may show inlined pictures and its own style, and load or run nothing else.
            f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
            f'<header><h1>{escape(title)}</h1><p class="subtitle">{escape(subtitle)}</p>\n'
            f"<nav>{nav}</nav></header>\n"
            f"{body}\n</main>\n</body>\n</html>\n")
