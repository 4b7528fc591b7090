"""`await project.run_async(...)`: runs on the module's tokio runtime, events on the loop."""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time

import pytest

import dstack_py as ds
from conftest import ProjectFactory, processes_with

TWO = """
workflows:
  - {name: left, provider: docker, image: ubuntu, commands: ["echo left", "sleep 1.5"]}
  - {name: right, provider: docker, image: ubuntu, commands: ["echo right", "sleep 1.5"]}
  - {name: broken, provider: docker, image: ubuntu, commands: ["exit 7"]}
  - {name: long, provider: docker, image: ubuntu, commands: ["echo up", "sleep 3041 & sleep 3042"]}
"""


@pytest.fixture
def project(make_project: ProjectFactory) -> ds.Project:
    return ds.Project(make_project(TWO))


def test_two_runs_concurrently(project: ds.Project) -> None:
    events: dict[str, list[ds.Event]] = {"left": [], "right": []}
    loop_threads: set[int] = set()

    async def main() -> tuple[ds.Run, ds.Run, float]:
        loop_thread = threading.get_ident()

        def collect(name: str):  # type: ignore[no-untyped-def]
            def on_event(e: ds.Event) -> None:
                loop_threads.add(threading.get_ident() == loop_thread)
                events[name].append(e)

            return on_event

        started = time.monotonic()
        left, right = await asyncio.gather(
            project.run_async("left", executor="local", echo=False, on_event=collect("left")),
            project.run_async("right", executor="local", echo=False, on_event=collect("right")),
        )
        return left, right, time.monotonic() - started

    left, right, elapsed = asyncio.run(main())
    assert left.succeeded and right.succeeded
    assert left.name != right.name
    # Each job sleeps 1.5 s: run one after the other, they would take 3 s.
    assert elapsed < 2.7, elapsed
    assert loop_threads == {True}, "on_event runs on the event loop's thread"
    for name, run in (("left", left), ("right", right)):
        kinds = [e.kind for e in events[name]]
        assert kinds[0] == "run-started" and kinds[-1] == "run-finished"
        assert [e.status for e in events[name] if e.kind == "job-status"] == [
            "submitted",
            "running",
            "done",
        ]
        assert [e.text for e in events[name] if e.kind == "log"] == [f"{name}\n"]
        assert {e.run for e in events[name]} == {run.name}


def test_the_loop_keeps_running(project: ds.Project) -> None:
    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await project.run_async("left", executor="local", echo=False)
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) >= 15


def test_failure_raises_execution_error(project: ds.Project) -> None:
    async def main() -> None:
        await project.run_async("broken", executor="local", echo=False)

    with pytest.raises(ds.ExecutionError) as info:
        asyncio.run(main())
    assert [(j.id, j.exit_code) for j in info.value.failed_jobs] == [("broken", 7)]


def test_errors_before_the_run(
    project: ds.Project, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    async def main(**kwargs: object) -> None:
        await project.run_async("left", echo=False, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(ds.ExecutorUnavailable, match="no Docker engine answered"):
        asyncio.run(main(executor="docker"))
    with pytest.raises(ValueError, match="unknown executor"):
        asyncio.run(main(executor="nomad"))
    with pytest.raises(TypeError, match="variable `x`"):
        asyncio.run(main(variables={"x": object()}))


def test_on_event_exception_stops_the_run(project: ds.Project) -> None:
    def on_event(e: ds.Event) -> None:
        if e.kind == "log":
            raise LookupError("stop here")

    async def main() -> None:
        await project.run_async("long", executor="local", echo=False, on_event=on_event)

    with pytest.raises(LookupError, match="stop here"):
        asyncio.run(main())
    assert processes_with("sleep 304") == []
    assert [r.status for r in project.runs()] == ["stopped"]


def test_cancelling_the_task_stops_the_run(project: ds.Project) -> None:
    async def main() -> None:
        up = asyncio.Event()
        task = asyncio.create_task(
            project.run_async(
                "long", executor="local", echo=False, on_event=lambda e: up.set() if e.kind == "log" else None
            )
        )
        await asyncio.wait_for(up.wait(), 20)
        for _ in range(200):  # the shell forks the sleeps just after `echo up`
            if len(processes_with("sleep 304")) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(processes_with("sleep 304")) >= 3, "the shell and its two sleeps run"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled task ends only once the run has stopped, as `run()` does on Ctrl-C.
        assert [r.status for r in project.runs()] == ["stopped"]
        assert processes_with("sleep 304") == []

    asyncio.run(main())
    assert [r.status for r in project.runs()] == ["stopped"]
    assert processes_with("sleep 304") == []
