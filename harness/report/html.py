"""Self-contained HTML rendering of a report Document (pure apart from reading the figures it
embeds). Every piece of text is escaped: prompts, file names and errors come from data."""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

from .document import Bullets, Document, Figure, Narrative, Paragraph, Table

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d1d1f}
h1{font-size:1.8em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.sub{color:#666}table{border-collapse:collapse;margin:1em 0;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}th{background:#f5f5f7}
td:first-child,th:first-child{text-align:left}caption{caption-side:top;text-align:left;font-style:italic;color:#555;padding:.3em 0}
.narrative{border-left:4px solid #8e8ee0;background:#fafaff;padding:.2em 1em;margin:1em 0}
.narrative table{display:table}mark.unverified{background:#ffd6d6;color:#8a0000;padding:0 2px}
sup.unverified{color:#8a0000;font-size:.7em;margin-left:2px}.verify{font-weight:600}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-style:italic}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use marks around unverified figures while rendering


def _narrative(b: Narrative) -> str:
    """The generated Markdown as HTML (raw HTML in it is escaped, not passed through), unverified
    figures highlighted."""
    from markdown_it import MarkdownIt

    text = b.text.replace(_OPEN, "\ufffd").replace(_CLOSE, "\ufffd")  # same length: the spans stay put
    parts, pos = [], 0
    for start, end in b.unverified:
        parts += [text[pos:start], _OPEN, text[start:end], _CLOSE]
        pos = end
    parts.append(text[pos:])
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render("".join(parts))
    body = body.replace(_OPEN, '<mark class="unverified" title="not found in the computed facts">').replace(
        _CLOSE, f'</mark><sup class="unverified">{escape(b.marker.strip("[]"))}</sup>')
    # Its headings two levels down: they are inside a section of the report, not sections of it.
    body = re.sub(r"<(/?)h([1-6])>", lambda m: f"<{m[1]}h{min(6, int(m[2]) + 2)}>", body)
    return f'<div class="narrative">{body}</div>'


def render(doc: Document, base_dir: Path) -> str:
    """HTML with figures embedded as data URIs (read from base_dir / figure.path)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{escape(doc.title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{escape(doc.title)}</h1>", f'<p class="sub">{escape(doc.subtitle)}</p>']
    for i, sec in enumerate(doc.sections, 1):
        out.append(f'<section><h2 id="s{i}">{i}. {escape(sec.title)}</h2>')
        for b in sec.blocks:
            if isinstance(b, Paragraph):
                text = escape(b.text)
                out.append(f"<p><strong>{text}</strong></p>" if b.strong else f"<p>{text}</p>")
            elif isinstance(b, Bullets):
                out.append("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in b.items) + "</ul>")
            elif isinstance(b, Table):
                cap = f"<caption>{escape(b.caption)}</caption>" if b.caption else ""
                head = "".join(f"<th>{escape(str(h))}</th>" for h in b.headers)
                body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in b.rows)
                out.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(b, Narrative):
                out.append(_narrative(b))
            elif isinstance(b, Figure):
                src = _img(base_dir / b.path)
                out.append(f'<figure><img src="{src}" alt="{escape(b.caption)}">'
                           f"<figcaption>{escape(b.caption)}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
