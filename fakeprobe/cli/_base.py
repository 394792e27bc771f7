"""The Typer app, its two consoles, and how known errors are reported."""

from __future__ import annotations

import functools
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from fakeprobe.errors import FakeprobeError, InvalidOption

#: Prefix of the commands made one per registered head.
FIT_PREFIX = "fit-"


class Commands(TyperGroup):
    """The command group. The ``fit-<head>`` commands are made from the head registry when
    asked for (a ``fit-*`` command, or the list in ``--help``), so that every other command
    starts without importing the heads' libraries."""

    def _add_fit_commands(self) -> None:
        from fakeprobe.cli.heads import fit_commands

        for name, command in fit_commands().items():
            if name not in self.commands:
                self.add_command(command, name)

    def list_commands(self, ctx) -> list[str]:
        self._add_fit_commands()
        names = [n for n in self.commands if not n.startswith(FIT_PREFIX)]
        fits = sorted(n for n in self.commands if n.startswith(FIT_PREFIX))
        # fit-* after the cache commands, where `fakeprobe --help` always listed them
        at = names.index("compare") if "compare" in names else len(names)
        return names[:at] + fits + names[at:]

    def get_command(self, ctx, name: str):
        if name.startswith(FIT_PREFIX) and name not in self.commands:
            self._add_fit_commands()
        return super().get_command(ctx, name)


app = typer.Typer(
    cls=Commands,
    name="fakeprobe",
    help="Tell deepfake videos and images from real ones. Extract face features once into an "
    "HDF5 cache, then train and compare classical heads on it in seconds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err = Console(stderr=True)
#: Tables are wide: when stdout is a file or a pipe (no terminal width to respect), use 160.
out = Console(width=None if sys.stdout.isatty() else 160)


def handles_errors(command):
    """Turn a known error into one red line and exit code 1 (traceback with FAKEPROBE_DEBUG);
    an :class:`InvalidOption` is a usage error (exit code 2) naming its option."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InvalidOption as exc:
            raise typer.BadParameter(str(exc), param_hint=exc.option) from None
        except FakeprobeError as exc:
            if os.environ.get("FAKEPROBE_DEBUG"):
                raise
            err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def note(message: str) -> None:
    """A yellow ``note`` line on stderr."""
    err.print(f"[yellow]note[/] {escape(message)}", highlight=False, soft_wrap=True)


def dim(message: str) -> None:
    """A dim progress line on stderr."""
    err.print(f"[dim]{escape(message)}[/]", highlight=False, soft_wrap=True)


def print_json(result: object) -> None:
    """A result object (its ``to_dict()``) or plain data, as strict JSON on stdout (NaN and
    infinities as ``null``)."""
    from fakeprobe.app._result import json_text

    sys.stdout.write(json_text(result.to_dict() if hasattr(result, "to_dict") else result)
                     + "\n")


def given(ctx: typer.Context, *names: str) -> set[str]:
    """Which of the parameters ``names`` were given on the command line (or by environment),
    not left at their defaults."""
    return {n for n in names
            if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"}
