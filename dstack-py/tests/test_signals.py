"""Ctrl-C (SIGINT) and SIGTERM sent to a Python process that runs a long job: the run is
stopped, nothing it started is left, and Python gets `KeyboardInterrupt`."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import dstack_py as ds
from conftest import ProjectFactory, processes_with

DRIVER = textwrap.dedent(
    """
    import signal, sys
    import dstack_py as ds

    # A shell that starts Python in the background ignores SIGINT for it; an interactive
    # Python (or Jupyter) handles it, as here.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_event(e):
        if e.kind == "log":
            print("READY", flush=True)

    project = ds.Project(sys.argv[1])
    try:
        project.run("long", executor=sys.argv[2], on_event=on_event, echo=False)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        raise
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_and_leaves_nothing(
    make_project: ProjectFactory, tmp_path: pathlib.Path, sig: signal.Signals
) -> None:
    marker = f"sleep {3100 + int(sig)}"
    root = make_project(
        f"""
        workflows:
          - name: long
            provider: docker
            image: ubuntu
            commands:
              - echo started
              - ({marker}; echo never) & {marker}
        """
    )
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "READY\n"
        deadline = time.monotonic() + 10
        while len(processes_with(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_with(marker)) >= 2, "the job and its background process run"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "INTERRUPTED" in out
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    assert processes_with(marker) == [], "nothing the run started is left"
    [run] = ds.Project(root).runs()
    assert run.status == "stopped"
    assert [(j.id, j.status) for j in run.jobs] == [("long", "stopped")]
    assert run.orphaned is False


EXITING = textwrap.dedent(
    """
    import sys, threading
    import dstack_py as ds

    up = threading.Event()
    project = ds.Project(sys.argv[1])
    worker = threading.Thread(
        target=lambda: project.run(
            "long", executor="local", echo=False,
            on_event=lambda e: up.set() if e.kind == "log" else None,
        ),
        daemon=True,
    )
    worker.start()
    up.wait(20)
    print("EXITING", flush=True)
    sys.exit(0)   # with the run still going: the atexit hook stops it
    """
)


def test_exiting_python_stops_its_runs(make_project: ProjectFactory, tmp_path: pathlib.Path) -> None:
    marker = "sleep 3150"
    root = make_project(
        f"""
        workflows:
          - {{name: long, provider: docker, image: ubuntu, commands: ["echo up", "{marker}"]}}
        """
    )
    script = tmp_path / "exiting.py"
    script.write_text(EXITING)
    result = subprocess.run(
        [sys.executable, str(script), str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.stdout == "EXITING\n", result.stderr
    assert result.returncode == 0, result.stderr
    assert processes_with(marker) == []
    [run] = ds.Project(root).runs()
    assert run.status == "stopped"
