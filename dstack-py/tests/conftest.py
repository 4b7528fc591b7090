"""Shared fixtures: projects written into a temporary folder, and a private run store."""

from __future__ import annotations

import os
import pathlib
import subprocess
import textwrap
from collections.abc import Callable

import pytest

ProjectFactory = Callable[..., pathlib.Path]


@pytest.fixture(autouse=True)
def state_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Every test records its runs in its own store (`DSTACK_STATE_DIR`)."""
    d = tmp_path / "state"
    monkeypatch.setenv("DSTACK_STATE_DIR", str(d))
    return d


@pytest.fixture
def make_project(tmp_path: pathlib.Path) -> ProjectFactory:
    """Writes `.dstack/workflows.yaml` (and optionally `variables.yaml` and other files) into
    a Git repository with one commit, as a user's project would be (`git=False`: a plain
    folder)."""

    def make(
        workflows: str,
        variables: str | None = None,
        files: dict[str, str] | None = None,
        name: str = "project",
        git: bool = True,
    ) -> pathlib.Path:
        root = tmp_path / name
        (root / ".dstack").mkdir(parents=True)
        (root / ".dstack" / "workflows.yaml").write_text(textwrap.dedent(workflows).lstrip())
        if variables is not None:
            (root / ".dstack" / "variables.yaml").write_text(textwrap.dedent(variables).lstrip())
        for path, text in (files or {}).items():
            f = root / path
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(textwrap.dedent(text).lstrip())
        if git:
            run_git(root, "init", "-q")
            run_git(root, "add", "-A")
            run_git(root, "commit", "-q", "-m", "initial")
        return root

    return make


def run_git(root: pathlib.Path, *args: str) -> str:
    """`git ARGS` in `root`, which must succeed; returns its output."""
    done = subprocess.run(
        [
            "git",
            "-c", "user.name=dstack tests",
            "-c", "user.email=tests@dstack.invalid",
            "-c", "init.defaultBranch=main",
            *args,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"git {args}: {done.stderr}"
    return done.stdout


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes that contain `marker` (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(cmdline)
    return found
