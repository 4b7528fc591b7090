"""Running workflows from Python: runs, jobs, events, logs, artifacts, tags, stop, resume."""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import threading
import time
import warnings

import pytest

import dstack_py as ds
from conftest import ProjectFactory, processes_with

CHAIN = """
workflows:
  - name: a
    provider: docker
    image: ubuntu
    commands:
      - mkdir -p out
      - echo "from a ${{ greeting }}" > out/a.txt
      - echo a says ${{ greeting }}
    artifacts: [out]
  - name: b
    provider: docker
    image: ubuntu
    depends-on: [a]
    commands:
      - cat out/a.txt
      - echo to stderr >&2
      - mkdir -p res && cp out/a.txt res/b.txt
    artifacts: [res]
  - name: c
    provider: docker
    image: ubuntu
    depends-on: [b]
    commands:
      - cat res/b.txt
"""

VARIABLES = "variables:\n  global:\n    greeting: hello\n"


@pytest.fixture
def chain(make_project: ProjectFactory) -> ds.Project:
    return ds.Project(make_project(CHAIN, VARIABLES))


def test_run_returns_the_run(chain: ds.Project) -> None:
    with pytest.warns(ds.DstackWarning, match="images are not used"):
        run = chain.run("c", executor="local", echo=False)
    assert run.status == "done"
    assert run.succeeded and run.finished and not run.orphaned
    assert run.workflow == "c"
    assert run.executor == "local"
    assert run.name.count("-") == 2
    assert [(j.id, j.status, j.exit_code, j.attempts) for j in run.jobs] == [
        ("a", "done", 0, 1),
        ("b", "done", 0, 1),
        ("c", "done", 0, 1),
    ]
    for job in run.jobs:
        assert job.log_path.is_file()
        assert isinstance(job.started_at, datetime.datetime)
        assert job.finished_at is not None and job.finished_at >= job.started_at
    assert run.failed_jobs == []
    assert isinstance(run.created_at, datetime.datetime)
    assert run.created_at.tzinfo is datetime.timezone.utc
    assert run.finished_at is not None
    arts = {(a.job, a.path): a for a in run.artifacts}
    assert set(arts) == {("a", "out"), ("b", "res")}
    assert (arts[("a", "out")].stored / "a.txt").read_text() == "from a hello\n"
    assert arts[("b", "res")].files == 1
    assert any("images are not used" in w for w in run.warnings)


def test_echo_writes_output_and_progress(chain: ds.Project, capsys: pytest.CaptureFixture[str]) -> None:
    chain.run("b", executor="local", variables={"greeting": "hey"})
    out, err = capsys.readouterr()
    assert "a | a says hey\n" in out
    assert "b | from a hey\n" in out
    assert "b | to stderr\n" in err
    assert "a: running\n" in err
    assert "run " in err and " done\n" in err


def test_variables_reach_the_jobs(chain: ds.Project) -> None:
    run = chain.run("a", variables={"greeting": "bonjour"}, executor="local", echo=False)
    assert run.variables == {"greeting": "bonjour"}
    assert [line.text for line in run.logs()] == ["a says bonjour"]


def test_on_event_sees_every_transition_in_order(chain: ds.Project) -> None:
    events: list[ds.Event] = []
    caller = threading.get_ident()
    threads: set[int] = set()

    def on_event(e: ds.Event) -> None:
        threads.add(threading.get_ident())
        events.append(e)

    run = chain.run("c", executor="local", jobs=1, on_event=on_event, echo=False)
    assert threads == {caller}, "on_event runs in the thread that called run()"
    assert events[0].kind == "run-started"
    assert events[0].data["jobs"] == ["a", "b", "c"]
    assert events[-1].kind == "run-finished"
    assert events[-1].status == "done"
    assert all(e.run == run.name for e in events)
    statuses = [(e.job, e.status) for e in events if e.kind == "job-status"]
    by_job = {job: [s for j, s in statuses if j == job] for job in "abc"}
    assert by_job["a"] == ["submitted", "running", "uploading", "done"]
    assert by_job["b"] == ["submitted", "downloading", "running", "uploading", "done"]
    assert by_job["c"] == ["submitted", "downloading", "running", "done"]
    # Dependencies end before their dependents start.
    assert statuses.index(("a", "done")) < statuses.index(("b", "downloading"))
    assert statuses.index(("b", "done")) < statuses.index(("c", "downloading"))
    logs = [(e.job, e.data["stream"], e.text) for e in events if e.kind == "log"]
    assert ("b", "stderr", "to stderr\n") in logs
    assert "kind='job-status'" in repr(events[1])


def test_failed_run_raises_execution_error(make_project: ProjectFactory) -> None:
    project = ds.Project(
        make_project(
            """
            workflows:
              - {name: ok, provider: docker, image: ubuntu, commands: ["true"]}
              - {name: bad, provider: docker, image: ubuntu, commands: ["echo failing", "exit 3"]}
              - {name: after, provider: docker, image: ubuntu, commands: ["true"], depends-on: [bad]}
              - {name: all, provider: docker, image: ubuntu, commands: ["true"], depends-on: [ok, after]}
            """
        )
    )
    with pytest.raises(ds.ExecutionError) as info:
        project.run("all", executor="local", jobs=1, keep_going=True, echo=False)
    e = info.value
    assert "job `bad` failed: exited with code 3" in str(e)
    assert [(j.id, j.exit_code) for j in e.failed_jobs] == [("bad", 3)]
    assert e.run.status == "failed"
    assert {j.id: j.status for j in e.run.jobs} == {
        "ok": "done",
        "bad": "failed",
        "after": "skipped",
        "all": "skipped",
    }
    assert [line.text for line in e.run.logs("bad")] == ["failing"]


def test_bad_arguments(chain: ds.Project) -> None:
    with pytest.raises(ValueError, match=r"unknown executor `kubernetes` \(use `auto`, `local`, `docker` or `slurm`\)"):
        chain.run("a", executor="kubernetes")
    with pytest.raises(ValueError, match="`jobs` must be at least 1, got 0"):
        chain.run("a", jobs=0)
    with pytest.raises(ValueError, match="`jobs` must be at least 1, got -1"):
        chain.run("a", jobs=-1)
    with pytest.raises(TypeError, match="`on_event` must be callable"):
        chain.run("a", on_event=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="variable `greeting`"):
        chain.run("a", variables={"greeting": {"nested": 1}})  # type: ignore[dict-item]
    with pytest.raises(ds.PlanError):
        chain.run("nope")
    assert chain.runs() == [], "nothing is recorded for a refused run"


@pytest.mark.parametrize(
    ("executor", "env", "message"),
    [
        ("docker", "DOCKER_HOST", "no Docker engine answered"),
        ("slurm", "PATH", "sbatch"),
    ],
)
def test_unavailable_executors(
    chain: ds.Project,
    executor: str,
    env: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    # No engine at DOCKER_HOST, no Slurm tools on PATH: the refusal is typed, nothing recorded.
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv(env, f"unix://{empty}/docker.sock" if env == "DOCKER_HOST" else str(empty))
    with pytest.raises(ds.ExecutorUnavailable, match=message):
        chain.run("a", executor=executor, echo=False)
    assert chain.runs() == []


def test_on_event_exception_stops_the_run(make_project: ProjectFactory) -> None:
    project = ds.Project(
        make_project("workflows:\n  - {name: slow, provider: docker, image: ubuntu, commands: ['echo go', 'sleep 3027']}\n")
    )

    def on_event(e: ds.Event) -> None:
        if e.kind == "log":
            raise RuntimeError("callback failed")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="callback failed"):
        project.run("slow", executor="local", on_event=on_event, echo=False)
    assert time.monotonic() - started < 20
    assert processes_with("sleep 3027") == []
    [run] = project.runs()
    assert run.status == "stopped"


def test_logs(chain: ds.Project) -> None:
    run = chain.run("b", executor="local", echo=False)
    lines = list(run.logs())
    # In time order: `a` ran before `b`. Within a job, stdout and stderr are read apart, so
    # lines of the two streams written in the same instant may come in either order.
    assert [(line.job, line.stream, line.text) for line in lines][0] == ("a", "stdout", "a says hello")
    assert sorted((line.job, line.stream, line.text) for line in lines[1:]) == [
        ("b", "stderr", "to stderr"),
        ("b", "stdout", "from a hello"),
    ]
    assert [line.at_ms for line in lines] == sorted(line.at_ms for line in lines)
    assert str(lines[0]) == "a says hello"
    assert isinstance(lines[0].time, datetime.datetime)
    assert sorted(line.text for line in run.logs("b")) == ["from a hello", "to stderr"]
    assert list(run.logs(since=datetime.timedelta(0))) == []
    assert len(list(run.logs(since=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)))) == 3
    with pytest.raises(ds.DstackError, match="has no workflow `z`"):
        run.logs("z")
    # `follow` on a finished run returns what there is and stops.
    assert [line.text for line in run.logs("a", follow=True)] == ["a says hello"]


def test_follow_logs_of_a_live_run(make_project: ProjectFactory) -> None:
    project = ds.Project(
        make_project(
            "workflows:\n  - {name: tick, provider: docker, image: ubuntu, commands: ['for i in 1 2 3; do echo tick $i; sleep 0.3; done']}\n"
        )
    )
    result: list[ds.Run] = []
    t = threading.Thread(target=lambda: result.append(project.run("tick", executor="local", echo=False)))
    t.start()
    deadline = time.monotonic() + 10
    while not project.runs() and time.monotonic() < deadline:
        time.sleep(0.05)
    [live] = project.runs()
    texts = [line.text for line in live.logs(follow=True)]
    t.join()
    assert texts == ["tick 1", "tick 2", "tick 3"]
    assert result[0].succeeded


def test_runs_tags_and_prune(chain: ds.Project) -> None:
    first = chain.run("a", executor="local", echo=False)
    second = chain.run("a", executor="local", echo=False)
    assert [r.name for r in ds.runs(chain)] == [second.name, first.name]
    assert [r.name for r in chain.runs(all=True)] == [second.name, first.name]
    assert chain.get_run(first.name).status == "done"
    with pytest.raises(ds.DstackError, match="no run named"):
        chain.get_run("no-such-run-1")
    first.tag("latest")
    assert first.tags == ["latest"]
    assert chain.tags() == {"latest": first.name}
    second.tag("latest")  # a tag moves
    assert chain.tags() == {"latest": second.name}
    first.refresh()
    assert first.tags == []
    with pytest.raises(ds.DstackError, match="is on run"):
        first.untag("latest")
    second.untag("latest")
    assert chain.tags() == {}
    with pytest.raises(ds.DstackError, match="not a valid tag"):
        second.tag("bad tag")
    second.tag("keep")
    assert chain.untag("keep") == second.name
    second.tag("keep")
    assert chain.prune() == [first.name]
    assert [r.name for r in chain.runs(all=True)] == [second.name]


def test_the_store_is_made_by_the_first_run(
    chain: ds.Project, make_project: ProjectFactory, state_dir: pathlib.Path
) -> None:
    # A project object opened before any run sees runs that another one records.
    reader = ds.Project(chain.path)
    assert reader.runs(all=True) == []
    assert reader.tags() == {}
    assert reader.prune() == []
    with pytest.raises(ds.ConfigError):
        chain.run("a", executor="local", echo=False, variables={"nope": 1})
    assert not state_dir.exists()
    run = chain.run("a", executor="local", echo=False)
    assert state_dir.is_dir()
    assert [r.name for r in reader.runs(all=True)] == [run.name]


def test_a_project_opened_by_a_relative_path_survives_chdir(
    make_project: ProjectFactory, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(CHAIN, VARIABLES)
    monkeypatch.delenv("DSTACK_STATE_DIR")
    monkeypatch.chdir(root)
    project = ds.Project(".")
    assert project.path == root
    first = project.run("a", executor="local", echo=False)
    monkeypatch.chdir(tmp_path)
    assert [line.text for line in first.logs()] == ["a says hello"]
    second = project.run("a", executor="local", echo=False)
    assert [r.name for r in project.runs(all=True)] == [second.name, first.name]
    assert (root / ".dstack" / "state" / "dstack.db").is_file()
    assert not (tmp_path / ".dstack").exists()


def test_warnings_as_errors_leave_no_run_behind(chain: ds.Project) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ds.DstackWarning)
        with pytest.raises(ds.DstackWarning, match="images are not used"):
            chain.run("a", executor="local", echo=False)
    (run,) = chain.runs(all=True)
    assert run.status == "stopped"
    assert [j.status for j in run.jobs] == ["skipped"]
    assert chain.prune() == [run.name]


def test_tagged_dependency_reuses_artifacts(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: prepare
            provider: docker
            image: ubuntu
            commands: ["mkdir -p data", "date +%s%N > data/stamp"]
            artifacts: [data]
          - name: train
            provider: docker
            image: ubuntu
            depends-on: ["prepare:latest"]
            commands: ["cat data/stamp"]
        """
    )
    project = ds.Project(root)
    with pytest.raises(ds.PlanError, match="no run is tagged `latest`"):
        project.run("train", executor="local", echo=False)
    prepared = project.run("prepare", executor="local", echo=False)
    prepared.tag("latest")
    stamp = (prepared.artifacts[0].stored / "stamp").read_text().strip()
    trained = project.run("train", executor="local", echo=False)
    # What the run reused is recorded with it, as a job of its own.
    assert [(j.id, j.status, j.reused_from) for j in trained.jobs] == [
        ("prepare:latest", "reused", f"{prepared.name}/prepare"),
        ("train", "done", None),
    ]
    assert [line.text for line in trained.logs()] == [stamp]


def test_export_artifacts(chain: ds.Project, tmp_path: pathlib.Path) -> None:
    run = chain.run("b", executor="local", echo=False)
    written = run.export_artifacts(tmp_path / "export")
    assert sorted(p.relative_to(tmp_path / "export").as_posix() for p in written) == ["a/out", "b/res"]
    assert (tmp_path / "export" / "b" / "res" / "b.txt").read_text() == "from a hello\n"
    with pytest.raises(ds.DstackError, match="already exists"):
        run.export_artifacts(tmp_path / "export")


def test_resume_runs_what_did_not_succeed(make_project: ProjectFactory, tmp_path: pathlib.Path) -> None:
    flag = tmp_path / "flag"
    root = make_project(
        f"""
        workflows:
          - {{name: first, provider: docker, image: ubuntu, commands: ["echo first"]}}
          - {{name: second, provider: docker, image: ubuntu, commands: ["test -e {flag}", "echo second"], depends-on: [first]}}
        """
    )
    project = ds.Project(root)
    with pytest.raises(ds.ExecutionError) as info:
        project.run("second", executor="local", echo=False)
    failed = info.value.run
    flag.touch()
    resumed = failed.resume(echo=False)
    assert resumed.name == failed.name
    assert [(j.id, j.status, j.attempts) for j in resumed.jobs] == [("first", "done", 1), ("second", "done", 1)]
    assert [line.text for line in resumed.logs("first")] == ["first"]
    with pytest.raises(ds.DstackError, match="nothing to resume"):
        project.resume(failed.name, echo=False)


def test_stop_from_another_thread(make_project: ProjectFactory) -> None:
    project = ds.Project(
        make_project("workflows:\n  - {name: long, provider: docker, image: ubuntu, commands: ['echo up', 'sleep 3031']}\n")
    )
    up = threading.Event()
    outcome: list[BaseException] = []

    def drive() -> None:
        try:
            project.run("long", executor="local", echo=False, on_event=lambda e: up.set() if e.kind == "log" else None)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion below
            outcome.append(e)

    t = threading.Thread(target=drive)
    t.start()
    assert up.wait(20)
    [run] = project.runs()
    assert run.status == "running"
    with pytest.raises(ds.DstackError, match="is being driven by this process"):
        run.resume(echo=False)
    run.stop(abort=True, wait=30)
    t.join(30)
    assert run.status == "aborted"
    assert processes_with("sleep 3031") == []
    [error] = outcome
    assert isinstance(error, ds.ExecutionError)
    assert "aborted" in str(error)
    with pytest.raises(ds.DstackError, match="has already ended"):
        run.stop()


def test_blocking_run_inside_a_running_event_loop(chain: ds.Project) -> None:
    # Jupyter runs cells inside an event loop: the blocking call must still work there.
    async def cell() -> ds.Run:
        return chain.run("a", executor="local", echo=False)

    assert asyncio.run(cell()).succeeded


def test_gil_is_released_while_jobs_run(make_project: ProjectFactory) -> None:
    project = ds.Project(
        make_project("workflows:\n  - {name: nap, provider: docker, image: ubuntu, commands: ['sleep 1.5']}\n")
    )
    counter = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.5)
    alone = counter
    started = time.monotonic()
    project.run("nap", executor="local", echo=False)
    during = counter - alone
    elapsed = time.monotonic() - started
    stop.set()
    t.join()
    rate_alone = alone / 0.5
    rate_during = during / elapsed
    assert rate_during > 0.3 * rate_alone, (rate_alone, rate_during)
