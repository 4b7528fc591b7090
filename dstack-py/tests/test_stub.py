"""The `.pyi` stub matches the native module (mypy.stubtest), and the tests type-check
against it."""

from __future__ import annotations

import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def test_stub_matches_the_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "dstack_py"],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tests_type_check_against_the_stub() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", str(HERE)],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
