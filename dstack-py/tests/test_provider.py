"""Providers written in Python, used for `provider: NAME` in workflows.yaml."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import pytest

import dstack_py as ds
from conftest import ProjectFactory

WORKFLOWS = """
workflows:
  - name: greet
    provider: echo
    message: hello ${{ who }}
    count: 2
  - name: sweep
    provider: grid
    values: [1, 2, 3]
    depends-on: [greet]
"""

VARIABLES = "variables:\n  greet:\n    who: world\n"


def echo_jobs(workflow: str, params: dict[str, Any]) -> ds.JobSpec:
    commands = [f"echo {params['message']} from {workflow}"] * params.get("count", 1)
    return ds.JobSpec(commands, image="ubuntu", resources=ds.Resources(cpu=1))


def grid_jobs(workflow: str, params: dict[str, Any]) -> list[ds.JobSpec]:
    jobs = [ds.JobSpec([f"echo value {v}"], id=f"v{v}") for v in params["values"]]
    jobs.append(ds.JobSpec(["echo gathered"], id="gather", depends_on=[j.id for j in jobs]))
    return jobs


ECHO = ds.Provider("echo", echo_jobs, keys=["message", "count"], required=["message"])
GRID = ds.Provider("grid", grid_jobs, keys=["values"], required=["values"])


def test_provider_makes_the_jobs(make_project: ProjectFactory) -> None:
    project = ds.Project(make_project(WORKFLOWS, VARIABLES), providers=[ECHO, GRID])
    assert project.workflow("greet").provider == "echo"
    plan = project.plan("greet", variables={"who": "you"})
    [job] = plan.jobs
    assert job.id == "greet"
    assert job.provider == "echo"
    assert job.commands == ["echo hello you from greet"] * 2
    assert job.env == {"WHO": "you"}
    assert job.resources.cpu == 1
    assert ECHO.name == "echo" and ECHO.keys == ["message", "count"] and ECHO.required == ["message"]
    assert ECHO.func is echo_jobs


def test_provider_with_several_jobs(make_project: ProjectFactory) -> None:
    project = ds.Project(make_project(WORKFLOWS, VARIABLES), providers=[ECHO, GRID])
    plan = project.plan("sweep")
    assert plan.stages == [["greet"], ["sweep/v1", "sweep/v2", "sweep/v3"], ["sweep/gather"]]
    assert plan.job("sweep/v1").depends_on == ["greet"]
    assert plan.job("sweep/gather").depends_on == ["sweep/v1", "sweep/v2", "sweep/v3"]


def test_run_with_a_python_provider(make_project: ProjectFactory) -> None:
    project = ds.Project(make_project(WORKFLOWS, VARIABLES), providers=[ECHO, GRID])
    run = project.run("sweep", executor="local", echo=False)
    assert run.succeeded
    assert [line.text for line in run.logs("greet")] == ["hello world from greet"] * 2
    assert sorted(line.text for line in run.logs("sweep")) == [
        "gathered",
        "value 1",
        "value 2",
        "value 3",
    ]


def test_unknown_and_missing_keys_are_reported(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: greet
            provider: echo
            mesage: hi
        """
    )
    with pytest.raises(ds.ConfigError) as info:
        ds.Project(root, providers=[ECHO])
    [d] = info.value.diagnostics
    assert d.code == "unknown-key"
    assert (d.line, d.column) == (4, 5)
    assert d.help == ["did you mean `message`?"]


def test_missing_required_key(make_project: ProjectFactory) -> None:
    root = make_project("workflows:\n  - name: greet\n    provider: echo\n")
    with pytest.raises(ds.ConfigError) as info:
        ds.Project(root, providers=[ECHO])
    [d] = info.value.diagnostics
    assert d.code == "missing-key"
    assert "missing `message`" in d.message


def test_unregistered_provider_is_unknown(make_project: ProjectFactory) -> None:
    with pytest.raises(ds.ConfigError, match="echo"):
        ds.Project(make_project(WORKFLOWS, VARIABLES), providers=[GRID])


def broken_provider(workflow: str, params: dict[str, Any]) -> ds.JobSpec:
    ratio = params["count"] / 0
    return ds.JobSpec([f"echo {ratio}"])


def test_a_raising_provider_propagates_with_its_traceback(make_project: ProjectFactory) -> None:
    root = make_project(WORKFLOWS, VARIABLES)
    broken = ds.Provider("echo", broken_provider, keys=["message", "count"])
    with pytest.raises(ZeroDivisionError) as info:
        ds.Project(root, providers=[broken, GRID])
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "broken_provider" in frames
    if sys.version_info >= (3, 11):
        assert any("workflow `greet`" in note for note in info.value.__notes__)


def test_a_provider_that_raises_later_fails_plan_and_run(make_project: ProjectFactory) -> None:
    calls: list[int] = []

    def flaky(workflow: str, params: dict[str, Any]) -> ds.JobSpec:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError(f"cannot make {workflow}")
        return ds.JobSpec(["true"])

    project = ds.Project(
        make_project("workflows:\n  - {name: w, provider: flaky}\n"),
        providers=[ds.Provider("flaky", flaky)],
    )
    with pytest.raises(RuntimeError, match="cannot make w"):
        project.plan("w")
    with pytest.raises(RuntimeError, match="cannot make w"):
        project.run("w", executor="local", echo=False)
    assert project.runs() == []


def test_a_provider_returning_the_wrong_type(make_project: ProjectFactory) -> None:
    root = make_project("workflows:\n  - {name: w, provider: bad}\n")
    with pytest.raises(TypeError, match="must return a JobSpec or a list of JobSpec, got int"):
        ds.Project(root, providers=[ds.Provider("bad", lambda w, p: 42)])  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must return JobSpec objects, got str"):
        ds.Project(root, providers=[ds.Provider("bad", lambda w, p: ["echo"])])  # type: ignore[list-item]


def test_jobs_a_provider_makes_are_checked(make_project: ProjectFactory) -> None:
    root = make_project("workflows:\n  - name: w\n    provider: made\n")

    def made(*jobs: ds.JobSpec) -> ds.Provider:
        return ds.Provider("made", lambda w, p: list(jobs))

    cases = [
        ([ds.JobSpec(["echo a"], id="x"), ds.JobSpec(["echo b"], id="x")], "job id `x` is used twice"),
        (
            [ds.JobSpec(["echo a"], id="x"), ds.JobSpec(["echo b"], id="y", depends_on=["nope"])],
            "job `y` depends on `nope`, which it did not make",
        ),
        (
            [ds.JobSpec(["echo a"], id="x"), ds.JobSpec(["echo b"], id="y", depends_on=["y"])],
            "job `y` depends on itself",
        ),
    ]
    for jobs, problem in cases:
        with pytest.raises(ds.ConfigError) as raised:
            ds.Project(root, providers=[made(*jobs)])
        (d,) = raised.value.diagnostics
        assert d.message == f"provider `made` made invalid jobs for workflow `w`: {problem}"
        assert (d.line, d.column) == (3, 15)


def test_provider_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        ds.Provider("x", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a valid provider name"):
        ds.Provider("a b", echo_jobs)
    with pytest.raises(ValueError, match="required key `z` is not one of its `keys`"):
        ds.Provider("x", echo_jobs, keys=["a"], required=["z"])
    with pytest.raises(TypeError, match="dstack_py.Provider"):
        ds.Project(".", providers=[echo_jobs])  # type: ignore[list-item]


def test_large_plans_call_python_providers_on_the_calling_thread(
    make_project: ProjectFactory,
) -> None:
    """Plans of 512 workflows and more are made on several threads, but not those that use a
    provider written in Python: its calls need the interpreter's lock, and its exception must
    reach the caller as it is, raised once."""
    import threading

    calls: list[tuple[str, int]] = []

    class Refused(Exception):
        pass

    def counted(workflow: str, params: dict[str, Any]) -> ds.JobSpec:
        calls.append((workflow, threading.get_ident()))
        if workflow == params.get("fail"):
            raise Refused(workflow)
        return ds.JobSpec([f"echo {workflow}"], image="ubuntu")

    provider = ds.Provider("counted", counted, keys=["fail"])
    lines = ["workflows:"]
    for i in range(600):
        after = f", depends-on: [w{i - 1}]" if i else ""
        lines.append(f"  - {{name: w{i}, provider: counted{after}}}")
    project = ds.Project(make_project("\n".join(lines) + "\n"), providers=[provider])
    calls.clear()  # (loading checks every workflow too)
    plan = project.plan("w599")
    assert [j.id for j in plan.jobs] == [f"w{i}" for i in range(600)]
    assert [w for w, _ in calls] == [f"w{i}" for i in range(600)]
    assert {t for _, t in calls} == {threading.get_ident()}

    calls.clear()
    failing = "\n".join(lines).replace(
        "{name: w300, provider: counted,", "{name: w300, provider: counted, fail: w300,"
    )
    with pytest.raises(Refused, match="w300"):
        ds.Project(make_project(failing + "\n", name="failing"), providers=[provider]).plan("w599")
    assert [w for w, _ in calls].count("w300") == 1
