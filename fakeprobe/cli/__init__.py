"""The ``fakeprobe`` command line: parse options, call one function of :mod:`fakeprobe.app`,
print or write what it returns.

Known errors become one line on stderr and exit code 1 (a malformed option is a usage error,
exit code 2); set ``FAKEPROBE_DEBUG=1`` for the traceback. Commands import what they run inside
themselves: ``fakeprobe --help`` and ``fakeprobe fit-logreg --help`` load no TensorFlow, torch,
xgboost or h5py.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fakeprobe import __version__
from fakeprobe.cli._base import app, out

# Each module registers its commands on ``app`` (in this order in ``--help``).
from fakeprobe.cli import media  # noqa: E402,F401  extract, synth, sample
from fakeprobe.cli import cache  # noqa: E402,F401  info, components, derive
from fakeprobe.cli import heads  # noqa: E402,F401  fit-<head>, compare, evaluate
from fakeprobe.cli import predict  # noqa: E402,F401  predict, serve
from fakeprobe.cli import reports  # noqa: E402,F401  explain, report, finetune

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        out.print(f"fakeprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Tell deepfake videos and images from real ones."""


def main() -> None:
    """Console-script entry point."""
    app()
