"""A test that needs a core dependency or the development data skips where it is missing, but
fails under CI=true, where a skip would hide a broken setup."""

from __future__ import annotations

import pytest

from conftest import import_core, require_core, skip_unless_ci


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception),
                                         ("TRUE", pytest.fail.Exception),
                                         ("", pytest.skip.Exception),
                                         (None, pytest.skip.Exception)])
def test_a_missing_core_dependency_skips_only_outside_ci(monkeypatch, ci, outcome):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="tensorflow not installed"):
        require_core("cnn-stats", ["tensorflow"])


def test_an_installed_core_dependency_neither_skips_nor_fails(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_core("cnn-stats", []) is None
    assert import_core("numpy").__name__ == "numpy"


def test_a_core_module_that_does_not_import_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="core dependencies must be installed"):
        import_core("fakeprobe_no_such_module")


def test_the_message_says_what_ci_must_provide(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"data missing \(CI=true: it must be there\)"):
        skip_unless_ci("data missing", "it must be there")
