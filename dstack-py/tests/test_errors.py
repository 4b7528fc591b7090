"""The exception hierarchy: classes decided by the library's errors, located problems."""

from __future__ import annotations

import pathlib

import pytest

import dstack_py as ds
from conftest import ProjectFactory


def test_hierarchy() -> None:
    assert issubclass(ds.ConfigError, ds.DstackError)
    assert issubclass(ds.ConfigError, ValueError)
    assert issubclass(ds.PlanError, ds.DstackError)
    assert issubclass(ds.PlanError, ValueError)
    assert issubclass(ds.ExecutionError, ds.DstackError)
    assert issubclass(ds.ExecutorUnavailable, ds.DstackError)
    assert issubclass(ds.DstackError, Exception)
    assert ds.ConfigError.__module__ == "dstack_py"


def test_config_error_carries_every_problem_located(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: train
            provider: python
            scirpt: train.py
          - name: evaluate
            provider: docker
            image: ubuntu
            commands: [echo hi]
            resources:
              memory: 8 parsecs
        """
    )
    with pytest.raises(ds.ConfigError) as info:
        ds.Project(root)
    e = info.value
    assert isinstance(e, ValueError)
    assert e.path == str(root / ".dstack" / "workflows.yaml")
    assert (e.line, e.column) == (4, 5)
    assert e.message == "unknown key `scirpt` in workflow `train` (provider `python`)"
    assert [(d.code, d.line, d.column) for d in e.diagnostics] == [
        ("unknown-key", 4, 5),
        ("invalid-value", 10, 15),
    ]
    assert e.diagnostics[0].help == ["did you mean `script`?"]
    assert e.diagnostics[0].severity == "error"
    # The rendering is the CLI's: `PATH:LINE:COLUMN: error: MESSAGE`, every problem.
    path = root / ".dstack" / "workflows.yaml"
    assert str(e).splitlines()[0] == f"{path}:4:5: error: unknown key `scirpt` in workflow `train` (provider `python`)"
    assert str(e).endswith("2 errors found")
    assert str(e.diagnostics[1]).startswith(f"{path}:10:15: error: invalid `resources.memory`")


def test_missing_project_is_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ds.ConfigError) as info:
        ds.Project(tmp_path / "nowhere")
    assert info.value.diagnostics[0].code == "missing-file"
    assert info.value.line is None
    assert "does not exist" in info.value.message


def test_yaml_syntax_error_is_located(make_project: ProjectFactory) -> None:
    root = make_project("workflows:\n  - name: a\n    provider: [docker\n")
    with pytest.raises(ds.ConfigError) as info:
        ds.Project(root)
    assert info.value.diagnostics[0].code == "syntax"
    assert info.value.line is not None and info.value.column is not None


def test_cycle_is_a_plan_error(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: a
            provider: docker
            image: ubuntu
            depends-on: [b]
          - name: b
            provider: docker
            image: ubuntu
            depends-on: [a]
        """
    )
    with pytest.raises(ds.PlanError) as info:
        ds.Project(root)
    e = info.value
    assert not isinstance(e, ds.ConfigError)
    assert (e.line, e.column) == (5, 18)
    assert e.message == "dependency cycle: a -> b -> a"
    assert [d.code for d in e.diagnostics] == ["cycle"]


def test_unknown_and_self_dependencies_are_plan_errors(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: a
            provider: docker
            image: ubuntu
            depends-on: [nope]
          - name: b
            provider: docker
            image: ubuntu
            depends-on: [b]
        """
    )
    with pytest.raises(ds.PlanError) as info:
        ds.Project(root)
    assert [d.code for d in info.value.diagnostics] == ["unknown-dependency", "self-dependency"]
    assert (info.value.line, info.value.column) == (5, 18)


def test_unknown_workflow_is_a_plan_error(make_project: ProjectFactory) -> None:
    project = ds.Project(make_project("workflows:\n  - {name: train, provider: docker, image: ubuntu}\n"))
    with pytest.raises(ds.PlanError, match="no workflow named `trian`") as info:
        project.plan("trian")
    assert info.value.diagnostics[0].help == ["did you mean `train`?"]


def test_mixed_problems_are_a_config_error(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: a
            provider: docker
            imgae: ubuntu
            depends-on: [nope]
        """
    )
    with pytest.raises(ds.ConfigError) as info:
        ds.Project(root)
    assert {d.code for d in info.value.diagnostics} >= {"unknown-dependency", "unknown-key"}


def test_undefined_variable_is_located(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: train
            provider: docker
            image: ubuntu
            commands: ["echo ${{ tgpus }}"]
        """,
        "variables:\n  train:\n    tgpu: 1\n",
    )
    with pytest.raises(ds.ConfigError) as info:
        ds.Project(root)
    e = info.value
    assert e.diagnostics[0].code == "undefined-variable"
    assert e.line == 5
    assert e.column is not None and e.column > 10
    assert "did you mean `tgpu`?" in e.diagnostics[0].help
