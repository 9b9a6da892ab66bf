"""The static ``index.html`` gallery of the folder job and the demo: one figure per image.

Every text (title, introduction, sources, captions) is HTML-escaped here; callers pass plain text.

Example:
    >>> html_text = page("demo", "One image.", [Figure("a.png", "a", "a: cat <P=0.9>")])
    >>> html_text[html_text.index("<h1>"):]
    '<h1>saliency_jax demo</h1><p>One image.</p><figure><img src="a.png" alt="a"><figcaption>a: cat &lt;P=0.9&gt;</figcaption></figure></body></html>'
"""

from __future__ import annotations

import html
import os
from typing import NamedTuple, Sequence

from saliency_jax._io import atomic_write_text

__all__ = ["Figure", "page", "write_gallery"]

_STYLE = "body{font-family:sans-serif;margin:1em}figure{margin:1em 0}img{image-rendering:pixelated}"


class Figure(NamedTuple):
    """One image of the gallery: its ``src`` (relative to the page), ``alt`` text and caption."""

    src: str
    alt: str
    caption: str


def _figure(f: Figure) -> str:
    return (f'<figure><img src="{html.escape(f.src)}" alt="{html.escape(f.alt)}">'
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")


def page(title: str, intro: str, figures: Sequence[Figure], *, separator: str = "") -> str:
    """The HTML page: a heading ``saliency_jax <title>``, the ``intro`` paragraph, then the figures
    joined by ``separator`` (``"\\n"`` puts each on a line of its own)."""
    name = html.escape(f"saliency_jax {title}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{name}</title><style>{_STYLE}</style>"
        f"</head><body><h1>{name}</h1><p>{html.escape(intro)}</p>"
        f"{separator.join(_figure(f) for f in figures)}</body></html>"
    )


def write_gallery(path: str | os.PathLike, title: str, intro: str, figures: Sequence[Figure], *,
                  separator: str = "") -> None:
    """Write :func:`page` to ``path`` atomically (a temporary file renamed into place)."""
    atomic_write_text(path, page(title, intro, figures, separator=separator))
