"""Runs capture the project's Git state and run exactly that tree."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

import dstack_py as ds

from conftest import ProjectFactory, run_git

WORKFLOWS = """
    workflows:
      - name: show
        provider: docker
        image: ubuntu
        commands:
          - cat data.txt > {probe}
"""


def test_a_run_records_the_commit_and_runs_the_local_changes(
    make_project: ProjectFactory, tmp_path: pathlib.Path
) -> None:
    probe = tmp_path / "seen"
    root = make_project(WORKFLOWS.format(probe=probe), files={"data.txt": "committed\n"})
    commit = run_git(root, "rev-parse", "HEAD").strip()
    (root / "data.txt").write_text("edited, not committed\n")
    run = ds.Project(root).run("show", executor="local", echo=False)
    assert run.succeeded
    assert probe.read_text() == "edited, not committed\n"
    git = run.git
    assert git is not None
    assert git["commit"] == commit
    assert git["dirty"] is True
    assert "main" in str(git["head"])
    assert "local changes: 1 modified" in git["describe"]
    # The same record comes back from the store.
    [again] = ds.runs(ds.Project(root))
    assert again.git == git


def test_a_plain_folder_needs_no_git(make_project: ProjectFactory, tmp_path: pathlib.Path) -> None:
    probe = tmp_path / "seen"
    root = make_project(
        WORKFLOWS.format(probe=probe), files={"data.txt": "plain\n"}, git=False
    )
    project = ds.Project(root)
    with pytest.raises(ds.DstackError) as raised:
        project.run("show", executor="local", echo=False)
    message = str(raised.value)
    assert "is not in a Git repository" in message
    assert "git init" in message and "`no_git=True` in Python" in message
    assert not probe.exists()
    assert ds.runs(project) == []

    run = project.run("show", executor="local", echo=False, no_git=True)
    assert run.succeeded
    assert run.git is None
    assert probe.read_text() == "plain\n"


def test_run_async_takes_no_git_too(
    make_project: ProjectFactory, tmp_path: pathlib.Path
) -> None:
    probe = tmp_path / "seen"
    root = make_project(
        WORKFLOWS.format(probe=probe), files={"data.txt": "async\n"}, git=False
    )
    project = ds.Project(root)
    run = asyncio.run(project.run_async("show", executor="local", echo=False, no_git=True))
    assert run.succeeded and run.git is None
    assert probe.read_text() == "async\n"


def test_providers_yaml_programs_plan_from_python(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    # On the host (no engine answers): test_docker.py runs one in its image.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    root = make_project(
        """
        workflows:
          - name: staged
            provider: stages
            names: [one, two]
        """,
        files={
            ".dstack/providers.yaml": """
                providers:
                  - name: stages
                    image: python:3.11
                    commands: ["python3 make.py"]
                """,
            "make.py": """
                import json, os
                w = json.load(open(os.environ["DSTACK_WORKFLOW_FILE"]))
                names = w["params"]["names"]
                jobs = [{"id": n, "commands": ["echo " + n], "depends_on": names[:i][-1:]}
                        for i, n in enumerate(names)]
                print(json.dumps({"jobs": jobs}))
                """,
        },
    )
    plan = ds.Project(root).plan("staged")
    assert [j.id for j in plan.jobs] == ["staged/one", "staged/two"]
    assert plan.jobs[1].depends_on == ["staged/one"]
    assert plan.jobs[0].image == "python:3.11"


def test_a_failing_provider_program_is_a_plan_error(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    root = make_project(
        """
        workflows:
          - name: staged
            provider: stages
        """,
        files={
            ".dstack/providers.yaml": """
                providers:
                  - name: stages
                    image: python:3.11
                    commands: ["echo 'no stages today' >&2", "exit 2"]
                """,
        },
    )
    with pytest.raises(ds.ConfigError) as raised:
        ds.Project(root).plan("staged")
    assert "its program exited with code 2" in str(raised.value)
    assert "no stages today" in str(raised.value)
    assert raised.value.line == 3
