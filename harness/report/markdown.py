"""Markdown rendering of a report Document (pure)."""

from __future__ import annotations

import re

from .document import Bullets, Document, Figure, Narrative, Paragraph, Table


def _cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _narrative(b: Narrative) -> list[str]:
    """Quoted, so the generated headings and tables stay inside the section; unverified figures
    are followed by the marker; raw HTML in the text is shown as text."""
    text, pos, parts = b.text, 0, []
    for start, end in b.unverified:
        parts += [text[pos:end], b.marker]
        pos = end
    parts.append(text[pos:])
    body = "".join(parts).replace("<", "&lt;")
    # Its headings two levels down: they are inside a section of the report, not sections of it.
    lines = [("##" + line) if re.match(r"#{1,4} ", line) else line for line in body.splitlines()]
    return [("> " + line).rstrip() for line in lines] + [""]


def render(doc: Document) -> str:
    out = [f"# {doc.title}", "", doc.subtitle, ""]
    for i, sec in enumerate(doc.sections, 1):
        out += [f"## {i}. {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Paragraph):
                out += [f"**{b.text}**" if b.strong else b.text, ""]
            elif isinstance(b, Bullets):
                out += [f"- {item}" for item in b.items] + [""]
            elif isinstance(b, Table):
                if b.caption:
                    out += [f"*{b.caption}*", ""]
                out.append("| " + " | ".join(_cell(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---" for _ in b.headers) + "|")
                out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, Figure):
                out += [f"![{_cell(b.caption)}]({b.path})", "", f"*{b.caption}*", ""]
            elif isinstance(b, Narrative):
                out += _narrative(b)
    return "\n".join(out).rstrip() + "\n"
