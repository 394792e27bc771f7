"""What every result object of the application layer shares: a strict-JSON form."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


def json_text(data: Any, indent: int | None = 2) -> str:
    """``data`` as strict JSON: NaN and infinities become ``null``, paths and other objects
    their ``str``."""
    from fakeprobe.evaluation.runs import finite

    return json.dumps(finite(data), indent=indent, default=str, allow_nan=False)


class JsonResult:
    """Mixin of the frozen result dataclasses: ``to_json()`` is ``to_dict()`` as strict JSON
    (NaN and infinities become ``null``; paths and other objects their ``str``)."""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        return json_text(self.to_dict(), indent)


@dataclass(frozen=True)
class Wrapped(JsonResult):
    """A lower layer's result returned by this layer: frozen here, its fields read through
    (``result.seconds`` is ``result.value.seconds``), ``to_dict()`` its JSON form."""

    value: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "value":
            raise AttributeError(name)
        return getattr(self.value, name)

    def to_dict(self) -> dict[str, Any]:
        if hasattr(self.value, "to_dict"):
            return self.value.to_dict()
        return dataclasses.asdict(self.value)
