"""The report as data: sections of blocks. Renderers (markdown.py, html.py) are pure functions
of it, so both formats always say the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paragraph:
    text: str
    strong: bool = False


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the report folder (figures/x.png)
    caption: str


@dataclass(frozen=True)
class Narrative:
    """Generated Markdown text, quoted as it was written, with the character spans of the figures
    that the fact check could not verify (renderers mark them)."""

    text: str
    unverified: tuple[tuple[int, int], ...] = ()
    marker: str = "[unverified]"


Block = Paragraph | Bullets | Table | Figure | Narrative


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, block) -> "Section":
        self.blocks.append(block)
        return self


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s
