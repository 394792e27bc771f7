"""What every benchmark does with its result: JSON on stdout, a markdown table on stderr, and
both to files when asked (``--json-out``, ``--markdown``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def emit(result: dict, table: str, json_out: Path | None = None,
         markdown_out: Path | None = None) -> None:
    text = json.dumps(result, indent=2, default=str)
    print(text)
    print(table, file=sys.stderr)
    if json_out:
        json_out.write_text(text + "\n", encoding="utf-8")
    if markdown_out:
        markdown_out.write_text(table + "\n", encoding="utf-8")
