"""The Docker executor from Python, against the real engine that `scripts/setup-docker.sh`
starts (with its offline test images `dstack-busybox:test` and `python:3.11`)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse

import pytest

import dstack_py as ds
from conftest import ProjectFactory

BUSYBOX = "dstack-busybox:test"


def docker_api(path: str) -> object:
    """GET on the engine's API through its socket (curl is on every test machine)."""
    socket = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    done = subprocess.run(
        ["curl", "-sf", "--unix-socket", socket, f"http://localhost{path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, (
        f"no Docker engine answers at {socket}: run `bash scripts/setup-docker.sh` first"
    )
    return json.loads(done.stdout)


def containers_of(run: str) -> list[object]:
    filters = urllib.parse.quote(json.dumps({"label": [f"dstack.run={run}"]}))
    found = docker_api(f"/containers/json?all=1&filters={filters}")
    assert isinstance(found, list)
    return found


@pytest.fixture(autouse=True)
def engine() -> None:
    """Every test here needs the engine: a missing one fails them (never skips)."""
    images = docker_api("/images/json")
    assert isinstance(images, list)
    tags = {t for image in images for t in (image.get("RepoTags") or [])}
    assert BUSYBOX in tags and "python:3.11" in tags, (
        f"test images missing ({sorted(tags)}): run `bash scripts/setup-docker.sh`"
    )


def test_the_documentation_hello_world_runs_in_a_container(make_project: ProjectFactory) -> None:
    root = make_project(
        f"""
        workflows:
          - name: hello
            provider: docker
            image: {BUSYBOX}
            commands:
              - mkdir -p output
              - echo "Hello, world!" > output/hello.txt
              - cat /proc/1/cgroup > /dev/null
              - pwd
            artifacts:
              - output
        """
    )
    events: list[ds.Event] = []
    run = ds.Project(root).run("hello", executor="docker", echo=False, on_event=events.append)
    assert run.succeeded
    assert run.executor == "docker"
    [artifact] = run.artifacts
    assert (pathlib.Path(artifact.stored) / "hello.txt").read_text() == "Hello, world!\n"
    lines = [line.text for line in run.logs()]
    assert "/workflow" in lines, lines
    assert containers_of(run.name) == [], "containers are removed after their job"
    statuses = [e.status for e in events if e.job == "hello" and e.status]
    assert statuses[-1] == "done" and "running" in statuses, statuses


def test_the_python_provider_runs_in_its_image(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: train
            provider: python
            python: 3.11
            script: train.py --epochs 2
            environment:
              GREETING: hello
        """,
        files={
            "train.py": """
                import os, sys
                print(os.environ["GREETING"], sys.argv[1:], sys.version_info[:2])
                """
        },
    )
    run = ds.Project(root).run("train", executor="docker", echo=False)
    assert run.succeeded
    text = "".join(line.text for line in run.logs())
    assert "hello ['--epochs', '2'] (3, 11)" in text


def test_a_failing_container_raises_execution_error(make_project: ProjectFactory) -> None:
    root = make_project(
        f"""
        workflows:
          - name: broken
            provider: docker
            image: {BUSYBOX}
            commands: ["echo about to fail", "exit 7"]
        """
    )
    with pytest.raises(ds.ExecutionError) as raised:
        ds.Project(root).run("broken", executor="docker", echo=False)
    [job] = raised.value.failed_jobs
    assert job.exit_code == 7


def test_an_unreachable_engine_is_executor_unavailable(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    root = make_project(
        f"""
        workflows:
          - {{name: hello, provider: docker, image: {BUSYBOX}, commands: [echo hi]}}
        """
    )
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(ds.ExecutorUnavailable):
        ds.Project(root).run("hello", executor="docker", echo=False)


DRIVER = textwrap.dedent(
    """
    import signal, sys
    import dstack_py as ds

    signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_event(e):
        if e.kind == "log":
            print("READY", e.run, flush=True)

    try:
        ds.Project(sys.argv[1]).run("long", executor="docker", on_event=on_event, echo=False)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        raise
    """
)


def test_ctrl_c_stops_the_container_and_raises_keyboard_interrupt(
    make_project: ProjectFactory, tmp_path: pathlib.Path
) -> None:
    root = make_project(
        f"""
        workflows:
          - name: long
            provider: docker
            image: {BUSYBOX}
            commands: ["echo started", "sleep 3000"]
        """
    )
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[:1] == ["READY"], ready
        run = ready[1]
        assert len(containers_of(run)) == 1, "the job's container runs"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            # A failed assertion above: stop the run the way a user would (SIGTERM), so that
            # its container is removed, before giving up on the driver.
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "INTERRUPTED" in out, err
    assert "KeyboardInterrupt" in err
    deadline = time.monotonic() + 10
    while containers_of(run) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert containers_of(run) == [], "no container is left"
    [stored] = [r for r in ds.runs(ds.Project(root)) if r.name == run]
    assert stored.status == "stopped"


def test_a_provider_program_runs_in_its_image(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: staged
            provider: boxed
            stage: fetch
        """,
        files={
            ".dstack/providers.yaml": f"""
                providers:
                  - name: boxed
                    image: {BUSYBOX}
                    commands: ["sh make.sh"]
                """,
            "make.sh": """
                test -f /.dockerenv
                grep -q '"stage": "fetch"' "$DSTACK_WORKFLOW_FILE"
                echo '{"jobs": [{"id": "fetch", "commands": ["echo fetched"]}]}'
                """,
        },
    )
    plan = ds.Project(root).plan("staged")
    assert [j.id for j in plan.jobs] == ["staged"]
    assert plan.jobs[0].commands == ["echo fetched"]
    assert plan.jobs[0].image == BUSYBOX
