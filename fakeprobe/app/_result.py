"""What every result object of the application layer shares: a strict-JSON form."""

from __future__ import annotations

import json
from typing import Any


class JsonResult:
    """Mixin of the frozen result dataclasses: ``to_json()`` is ``to_dict()`` as strict JSON
    (NaN and infinities become ``null``; paths and other objects their ``str``)."""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        from fakeprobe.evaluation.runs import finite

        return json.dumps(finite(self.to_dict()), indent=indent, default=str, allow_nan=False)
