"""The command line starts fast: help and option parsing import no network or HDF5 library
(TensorFlow alone takes seconds to import); commands import what they run inside themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("tensorflow", "torch", "xgboost", "h5py", "keras", "onnxruntime")


def imported_after(script: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The ``heavy`` modules a fresh interpreter holds after running ``script``."""
    code = (script + "\nimport sys\n"
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[-2].split()


@pytest.mark.parametrize("args", [["--help"], ["fit-logreg", "--help"], ["predict", "--help"],
                                  ["extract", "--help"], ["compare", "--help"]])
def test_help_imports_no_heavy_library(args):
    script = ("from typer.testing import CliRunner\n"
              "from fakeprobe.cli import app\n"
              f"result = CliRunner().invoke(app, {args!r})\n"
              "assert result.exit_code == 0, result.output\n")
    assert imported_after(script) == []


@pytest.mark.parametrize("args", [["predict", "--help"], ["info", "--help"],
                                  ["extract", "--help"]])
def test_commands_other_than_fit_load_no_head_library(args):
    """The fit-* commands are made from the head registry on demand: scikit-learn is not
    imported to parse another command."""
    script = ("from typer.testing import CliRunner\n"
              "from fakeprobe.cli import app\n"
              f"result = CliRunner().invoke(app, {args!r})\n"
              "assert result.exit_code == 0, result.output\n")
    assert imported_after(script, HEAVY + ("sklearn",)) == []


def test_importing_the_cli_and_the_api_imports_no_heavy_library():
    assert imported_after("import fakeprobe.cli, fakeprobe.app, fakeprobe") == []


def test_the_heavy_check_would_see_an_import():
    """The check above is not vacuous: importing h5py is seen."""
    assert imported_after("import h5py") == ["h5py"]


def test_console_entry_points_run():
    for args in (["-m", "fakeprobe", "--version"], ["-m", "fakeprobe.cli", "--version"]):
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("fakeprobe "), done.stderr


def test_application_and_cli_modules_stay_small():
    root = Path(__file__).resolve().parents[1] / "fakeprobe"
    for folder in ("app", "cli"):
        for module in sorted((root / folder).glob("*.py")):
            lines = len(module.read_text(encoding="utf-8").splitlines())
            assert lines <= 500, f"{module.name}: {lines} lines"
