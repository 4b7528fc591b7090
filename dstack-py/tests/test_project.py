"""Loading, inspecting and planning projects."""

from __future__ import annotations

import json
import pathlib

import pytest

import dstack_py as ds
from conftest import ProjectFactory

PIPELINE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "projects" / "pipeline"

WORKFLOWS = """
workflows:
  - name: prepare
    help: Make the data
    provider: docker
    image: ubuntu
    commands:
      - mkdir -p data
      - echo ${{ rows }} > data/rows
    artifacts: [data]
  - name: train
    provider: python
    script: train.py --epochs ${{ epochs }}
    depends-on: [prepare]
    resources:
      cpu: 2
      memory: 8GB
      gpu: {count: 1, name: v100, memory: 16GiB}
      shm_size: 512MiB
    environment:
      MODE: fast
  - name: report
    provider: docker
    image: busybox
    commands: [cat data/rows]
    depends-on: [prepare, train]
"""

VARIABLES = """
variables:
  global:
    seed: 7
  prepare:
    rows: 100
  train:
    epochs: 10
    batch-size: 64
    use-amp: false
"""


@pytest.fixture
def project(make_project: ProjectFactory) -> ds.Project:
    return ds.Project(make_project(WORKFLOWS, VARIABLES))


def test_workflows_and_variables(project: ds.Project) -> None:
    names = [w.name for w in project.workflows]
    assert names == ["prepare", "train", "report"]
    assert project.workflow_names == names
    train = project.workflow("train")
    assert train.provider == "python"
    assert train.provider_repo is None
    assert train.depends_on == ["prepare"]
    assert train.line == 10
    assert train.params["script"] == "train.py --epochs ${{ epochs }}"
    assert project.workflow("prepare").help == "Make the data"
    assert project.variables == {
        "global": {"seed": 7},
        "prepare": {"rows": 100},
        "train": {"epochs": 10, "batch-size": 64, "use-amp": False},
    }
    assert project.warnings == []
    with pytest.raises(KeyError):
        project.workflow("nope")
    assert "workflows=3" in repr(project)


def test_plan_jobs_are_typed(project: ds.Project) -> None:
    plan = project.plan("report")
    assert plan.workflow == "report"
    assert len(plan) == 3
    assert plan.stages == [["prepare"], ["train"], ["report"]]
    prepare, train, report = plan.jobs
    assert prepare.id == "prepare"
    assert prepare.image == "ubuntu"
    assert prepare.commands == ["mkdir -p data", "echo 100 > data/rows"]
    assert prepare.artifacts == ["data"]
    assert prepare.help == "Make the data"
    assert train.image == "dstackai/python:3.10-cuda-11.1"
    assert train.commands == ["python train.py --epochs 10"]
    assert train.depends_on == ["prepare"]
    assert train.env == {
        "BATCH_SIZE": "64",
        "EPOCHS": "10",
        "MODE": "fast",
        "SEED": "7",
        "USE_AMP": "false",
    }
    res = train.resources
    assert res.cpu == 2
    assert res.memory_bytes == 8 * 10**9
    assert res.shm_size_bytes == 512 * 2**20
    assert res.gpu == ds.Gpu(1, "v100", 16 * 2**30)
    assert report.depends_on == ["prepare", "train"]
    assert report.resources == ds.Resources()
    assert plan.job("train") == train
    with pytest.raises(KeyError):
        plan.job("nope")


def test_plan_renderings(project: ds.Project) -> None:
    plan = project.plan("train")
    data = json.loads(plan.to_json())
    assert data["workflow"] == "train"
    assert [j["id"] for j in data["jobs"]] == ["prepare", "train"]
    assert data["stages"] == [["prepare"], ["train"]]
    train = data["jobs"][1]
    assert train["resources"]["gpu"] == {"count": 1, "name": "v100", "memory_bytes": 16 * 2**30}
    assert plan.jobs[1].to_dict()["commands"] == train["commands"]
    assert plan.to_dot().startswith("digraph plan {")
    assert '"prepare" -> "train";' in plan.to_dot()
    assert plan.to_mermaid().startswith("flowchart LR\n")
    assert "j0 --> j1" in plan.to_mermaid()
    assert str(plan).startswith("plan for `train`: 2 jobs in 2 stages")


def test_variables_of_every_python_type(project: ds.Project) -> None:
    plan = project.plan(
        "train", variables={"epochs": 3, "batch-size": 1.5, "use-amp": True, "seed": "x y"}
    )
    env = plan.job("train").env
    assert env["EPOCHS"] == "3"
    assert env["BATCH_SIZE"] == "1.5"
    assert env["USE_AMP"] == "true"
    assert env["SEED"] == "x y"
    assert plan.job("train").commands == ["python train.py --epochs 3"]
    # An override reaches every section that defines the variable: `prepare` sees `rows`.
    assert project.plan("train", variables={"rows": 5}).job("prepare").commands[1] == "echo 5 > data/rows"


def test_variable_prefixes_and_underscores(project: ds.Project) -> None:
    plan = project.plan("train", variables={"epoch": 4, "batch_size": 32})
    assert plan.job("train").env["EPOCHS"] == "4"
    assert plan.job("train").env["BATCH_SIZE"] == "32"
    # Named as the caller wrote them, not as command-line options.
    assert plan.notes == ["`epoch` is taken as variable `epochs`"]


def test_wrong_variable_types_name_the_variable(project: ds.Project) -> None:
    with pytest.raises(TypeError, match=r"variable `epochs` must be an int, float, bool or str, got list"):
        project.plan("train", variables={"epochs": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"variable `epochs` .* got NoneType"):
        project.plan("train", variables={"epochs": None})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="variable names must be strings, got int"):
        project.plan("train", variables={1: 2})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="`variables` must be a mapping"):
        project.plan("train", variables=[("epochs", 1)])  # type: ignore[arg-type]


def test_unknown_variable_is_a_config_error(project: ds.Project) -> None:
    with pytest.raises(ds.ConfigError) as e:
        project.plan("train", variables={"epohcs": 1})
    assert e.value.diagnostics[0].message == (
        "unknown variable `epohcs`: no section of variables.yaml defines it"
    )
    assert e.value.diagnostics[0].code == "unknown-variable"


def test_validate_checks_every_workflow(project: ds.Project) -> None:
    assert project.validate() == []
    assert project.validate({"epochs": 2}) == []


def test_deprecated_keys_are_warnings(make_project: ProjectFactory) -> None:
    root = make_project(
        """
        workflows:
          - name: old
            provider: python
            python_script: main.py
        """
    )
    with pytest.warns(ds.DstackWarning, match=r"workflows.yaml:4:5: warning: .*use `script`"):
        project = ds.Project(root)
    [warning] = project.warnings
    assert warning.severity == "warning"
    assert warning.code == "deprecated"
    assert (warning.line, warning.column) == (4, 5)
    assert "use `script`" in warning.message
    assert project.plan("old").jobs[0].commands == ["python main.py"]
    assert [w.code for w in project.plan("old").warnings] == ["deprecated"]


def test_reload_reads_the_files_again(make_project: ProjectFactory) -> None:
    root = make_project("workflows:\n  - {name: a, provider: docker, image: ubuntu}\n")
    project = ds.Project(root)
    (root / ".dstack" / "workflows.yaml").write_text(
        "workflows:\n  - {name: a, provider: docker, image: ubuntu}\n  - {name: b, provider: docker, image: ubuntu}\n"
    )
    assert project.workflow_names == ["a"]
    project.reload()
    assert project.workflow_names == ["a", "b"]


def test_example_pipeline_plans() -> None:
    project = ds.Project(PIPELINE)
    plan = project.plan("evaluate", variables={"epochs": 50})
    assert plan.stages == [["prepare"], ["train"], ["evaluate"]]
    assert plan.job("train").commands == ["python3 src/train.py --epochs 50 --lr 0.05"]


def test_resources_and_jobs_from_python() -> None:
    r = ds.Resources(cpu=4, memory="512MiB", gpu=2, shm_size=1024)
    assert (r.cpu, r.memory_bytes, r.shm_size_bytes) == (4, 512 * 2**20, 1024)
    assert r.gpu == ds.Gpu(2)
    assert ds.Resources(gpu=ds.Gpu(name="a100", memory="40GB")).gpu == ds.Gpu(1, "a100", 40 * 10**9)
    with pytest.raises(ValueError, match="invalid `memory`"):
        ds.Resources(memory="8 parsecs")
    with pytest.raises(TypeError, match="`gpu` must be a count or a Gpu"):
        ds.Resources(gpu="two")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`cpu` must be at least 1, got 0"):
        ds.Resources(cpu=0)
    with pytest.raises(ValueError, match="`gpu` must be at least 0, got -2"):
        ds.Resources(gpu=-2)
    with pytest.raises(ValueError, match="`count` must be at least 1, got -1"):
        ds.Gpu(-1)
    with pytest.raises(ValueError, match="`ports` must be between 1 and 65535, got 70000"):
        ds.JobSpec(["true"], ports=[70000])
    with pytest.raises(TypeError, match=r"`commands` must be a list of strings, got str: write \['echo hi'\]"):
        ds.JobSpec("echo hi")
    with pytest.raises(TypeError, match="`commands` must be a list of strings, got int"):
        ds.JobSpec(3)  # type: ignore[arg-type]
    assert ds.JobSpec().commands == []
    job = ds.JobSpec(["echo hi"], image="ubuntu", env={"A": "1"}, artifacts=["out"], resources=r)
    assert job.commands == ["echo hi"]
    assert job.resources == r
    with pytest.raises(ValueError, match="must be a relative path"):
        ds.JobSpec(["true"], artifacts=["../escape"])
    with pytest.raises(ValueError, match="must be a relative path"):
        ds.JobSpec(["true"], working_dir="/abs")


def test_schema_describes_workflows_yaml() -> None:
    schema = ds.schema()
    assert isinstance(schema, dict)
    assert "workflows" in json.dumps(schema)
