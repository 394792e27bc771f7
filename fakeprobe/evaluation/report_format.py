"""The small parts of a report page: number formatting, HTML and markdown escaping, key-value
and count tables, and the figures collected as a page is built (:class:`_Figures`)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Sequence
from typing import Any


def _num(value: Any) -> float | None:
    """A finite float, or None (null, NaN and infinities are missing values)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: Any, decimals: int = 3) -> str:
    value = _num(value)
    return "–" if value is None else f"{value:.{decimals}f}"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


#: Characters with a meaning inside a markdown line (CommonMark lets a backslash escape any
#: of them); ``#``, ``-``, ``+`` and ``1.`` matter only at a line's start, where no value goes.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>|~&!])")


def _md(value: Any) -> str:
    """``value`` as inert markdown text: special characters escaped, one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).splitlines()))


def _md_code(value: Any) -> str:
    """``value`` as one inline code span, whatever backticks it holds."""
    text = " ".join(str(value).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def _label(report: dict[str, Any]) -> str:
    return f"{report.get('head', '?')} · {'+'.join(report.get('features') or [])}"


def _slug(text: str, tail: bool = False) -> str:
    """A file-name-safe form of ``text``, at most 60 characters (its end with ``tail``)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).lower()
    return (slug[-48:] if tail else slug[:60]).strip("-") or "x"


def _video_auc(report: dict[str, Any]) -> float:
    value = _num((report.get("video") or {}).get("roc_auc"))
    return -1.0 if value is None else value


class _Figures:
    """Figures as they are made: PNG bytes by file name, and the ``<img>`` tags for them."""

    def __init__(self, folder_name: str) -> None:
        self.folder_name = folder_name
        self.files: dict[str, bytes] = {}

    def add(self, name: str, png: bytes, alt: str, caption: str = "", width: int | None = None
            ) -> str:
        base, k = _slug(name), 1
        file_name = f"{base}.png"
        while file_name in self.files:
            k += 1
            file_name = f"{base}-{k}.png"
        self.files[file_name] = png
        data = base64.b64encode(png).decode("ascii")
        style = f' style="width:{width}px"' if width else ""
        tag = (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}"'
               f' data-file="{_esc(file_name)}"{style}>')
        if caption:
            tag += f"<figcaption>{caption}</figcaption>"
        return tag + "</figure>"

    def path(self, file_name: str) -> str:
        return f"{self.folder_name}/{file_name}"


def _cell_colour(auc: float | None) -> str:
    if auc is None:
        return ""
    hue = int(max(0.0, min(1.0, (auc - 0.4) / 0.6)) * 120)  # red at <=0.4, green at 1
    return f' style="background:hsl({hue},65%,88%)"'


def _grouped(entries: list[dict[str, Any]], key) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(key(entry), []).append(entry)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _count_table(groups: dict[str, list], name: str) -> str:
    rows = "".join(f"<tr><td class=l>{_esc(k or '(none)')}</td><td>{len(v)}</td></tr>"
                   for k, v in groups.items())
    return f"<table><tr><th class=l>{name}</th><th>items</th></tr>{rows}</table>"


def _detail_table(entries: list[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th class=l>{c}</th>" for c in columns)
    rows = "".join("<tr>" + "".join(f"<td class=wrap>{_esc(e.get(c, ''))}</td>" for c in columns)
                   + "</tr>" for e in entries)
    return (f"<details><summary>All {len(entries)}</summary><div class=scroll><table>"
            f"<tr>{head}</tr>{rows}</table></div></details>")


def _value_html(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return f"<code>{_esc(text)}</code>"
    return _esc("–" if value is None else value)


def _kv_table(data: dict[str, Any] | None) -> str:
    if not data:
        return "<p>–</p>"
    rows = "".join(f"<tr><th class=l>{_esc(k)}</th><td class=wrap>{_value_html(v)}</td></tr>"
                   for k, v in data.items())
    return f"<table>{rows}</table>"
