"""The augmentation spec of ``fakeprobe extract --augment``: its syntax, parsing and the name
each augmented row carries in the cache (the transforms themselves live in
:mod:`fakeprobe.extractor.augment`).

A spec is a comma-separated list of transforms, each ``NAME[:PARAM][*COPIES]``::

    flip              horizontal mirror of the aligned crop
    jpeg[:Q]          JPEG recompression at quality Q (1-100, default 60)
    blur[:SIGMA]      Gaussian blur, SIGMA in pixels of a 112-px crop (default 1.5)
    noise[:STD]       Gaussian noise, STD in 0-255 levels (default 8)
    scale[:F]         down-scaling by F (0 < F < 1, default 0.5) and back up

``*COPIES`` (1-16, default 1) makes that many rows per sampled face, each with its own draw of
the random parts (only ``noise`` has one; copies of the others are the same crop). Every row
made by a transform is stored with its *row name* in the cache's ``augment`` column:
the transform with its parameter (``jpeg:60``), and ``#K`` for its K-th copy from the second
on (``noise:8#2``); original rows hold ``""``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fakeprobe.errors import ConfigError

#: Transform -> (default parameter, lowest, highest, whether the parameter is a whole number);
#: ``None`` for a transform that takes no parameter. Bounds are inclusive except where noted
#: in :func:`_check_param`.
TRANSFORMS: dict[str, tuple[float, float, float, bool] | None] = {
    "flip": None,
    "jpeg": (60, 1, 100, True),
    "blur": (1.5, 0.0, 20.0, False),
    "noise": (8.0, 0.0, 128.0, False),
    "scale": (0.5, 0.0, 1.0, False),
}
#: The most copies one transform may ask for (each copy is a row per face in the cache).
MAX_COPIES = 16


@dataclass(frozen=True)
class AugmentStep:
    """One transform of a spec: its name, parameter (``None`` for ``flip``) and copies."""

    name: str
    param: float | None = None
    copies: int = 1

    @property
    def label(self) -> str:
        """The transform with its parameter, as written in a spec (``jpeg:60``)."""
        if self.param is None:
            return self.name
        value = int(self.param) if TRANSFORMS[self.name][3] else self.param
        return f"{self.name}:{value:g}" if isinstance(value, float) else f"{self.name}:{value}"

    def row_names(self) -> list[str]:
        """The ``augment`` value of each copy's rows."""
        return [self.label if k == 0 else f"{self.label}#{k + 1}" for k in range(self.copies)]


def parse_augment(spec: str | None) -> tuple[AugmentStep, ...]:
    """The steps of ``spec`` (empty for ``""`` or ``None``); :class:`ConfigError`, one line,
    for anything else than the syntax in this module's docstring."""
    if spec is None or not str(spec).strip():
        return ()
    steps: list[AugmentStep] = []
    for token in str(spec).split(","):
        token = token.strip()
        if not token:
            raise ConfigError(f"augment spec {spec!r} has an empty entry")
        body, _, copies_text = token.partition("*")
        name, has_param, param_text = body.strip().partition(":")
        name = name.strip().lower()
        if name not in TRANSFORMS:
            raise ConfigError(f"unknown augmentation {name!r} in {spec!r}; choose from "
                              f"{', '.join(TRANSFORMS)} (NAME[:PARAM][*COPIES])")
        copies = 1
        if copies_text.strip() or "*" in token:
            try:
                copies = int(copies_text)
            except ValueError:
                raise ConfigError(f"augmentation {token!r}: copies must be a whole number, "
                                  f"not {copies_text.strip()!r}") from None
            if not 1 <= copies <= MAX_COPIES:
                raise ConfigError(f"augmentation {token!r}: copies must be from 1 to "
                                  f"{MAX_COPIES}, not {copies}")
        bounds = TRANSFORMS[name]
        if bounds is None:
            if has_param:
                raise ConfigError(f"augmentation {name!r} takes no parameter ({token!r})")
            param = None
        else:
            param = _check_param(name, param_text.strip() if has_param else None, bounds, token)
        step = AugmentStep(name, param, copies)
        if any(s.label == step.label for s in steps):
            raise ConfigError(f"augmentation {step.label!r} is named twice in {spec!r}; ask "
                              f"for copies with {step.label}*N")
        steps.append(step)
    return tuple(steps)


def _check_param(name: str, text: str | None, bounds: tuple[float, float, float, bool],
                 token: str) -> float:
    default, low, high, whole = bounds
    if text is None:
        return float(default)
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"augmentation {token!r}: the parameter must be {kind}, not "
                          f"{text!r}") from None
    # blur and noise need more than 0; scale lies strictly between 0 and 1
    open_low = name in ("blur", "noise", "scale")
    open_high = name == "scale"
    if not (value > low if open_low else value >= low) or not (
            value < high if open_high else value <= high):
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        raise ConfigError(f"augmentation {token!r}: {name} takes a value in {left}{low:g}, "
                          f"{high:g}{right}, not {text}")
    return float(value)


def canonical(spec: str | None) -> str:
    """``spec`` written the one way the cache stores it (``jpeg:60*2,flip``), ``""`` for none."""
    return ",".join(step.label + (f"*{step.copies}" if step.copies > 1 else "")
                    for step in parse_augment(spec))


def row_names(spec: str | None) -> list[str]:
    """The ``augment`` value of every augmented row made per face, in the order they are
    made."""
    return [name for step in parse_augment(spec) for name in step.row_names()]
