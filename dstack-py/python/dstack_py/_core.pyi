"""Type stubs of the native module `dstack_py._core` (kept honest by `mypy.stubtest`)."""

import datetime
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, final

__all__ = [
    "__version__",
    "DstackError",
    "ConfigError",
    "PlanError",
    "ExecutionError",
    "ExecutorUnavailable",
    "DstackWarning",
    "Project",
    "Workflow",
    "Plan",
    "JobSpec",
    "Resources",
    "Gpu",
    "Diagnostic",
    "Provider",
    "Run",
    "RunJob",
    "Artifact",
    "LogLine",
    "LogIterator",
    "Event",
    "schema",
    "runs",
    "_shutdown",
]

__version__: str

_VariableValue = int | float | bool | str
_Variables = Mapping[str, _VariableValue]

class DstackError(Exception):
    """Base class of every error raised by dstack_py."""

class ConfigError(DstackError, ValueError):
    """Problems in the project's files."""

    message: str
    path: str | None
    line: int | None
    column: int | None
    diagnostics: tuple[Diagnostic, ...]

class PlanError(DstackError, ValueError):
    """The workflows cannot be planned (cycles, unknown dependencies or workflows, bad tags)."""

    message: str
    path: str | None
    line: int | None
    column: int | None
    diagnostics: tuple[Diagnostic, ...]

class ExecutionError(DstackError):
    """A run ended without succeeding."""

    run: Run
    failed_jobs: list[RunJob]

class ExecutorUnavailable(DstackError):
    """The executor cannot be used here, or cannot run this plan."""

class DstackWarning(UserWarning):
    """Warnings about a run: images ignored by the local executor, limits not enforced..."""

@final
class Diagnostic:
    """One problem (or warning) found in the project's files."""

    @property
    def severity(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def path(self) -> str | None: ...
    @property
    def line(self) -> int | None: ...
    @property
    def column(self) -> int | None: ...
    @property
    def help(self) -> list[str]: ...

@final
class Workflow:
    """A workflow of `.dstack/workflows.yaml`, as written."""

    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def provider_repo(self) -> str | None: ...
    @property
    def depends_on(self) -> list[str]: ...
    @property
    def help(self) -> str | None: ...
    @property
    def line(self) -> int: ...
    @property
    def params(self) -> dict[str, Any]: ...

@final
class Gpu:
    """A GPU request."""

    def __new__(cls, count: int = 1, name: str | None = None, memory: int | str | None = None) -> Gpu: ...
    @property
    def count(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def memory_bytes(self) -> int | None: ...

@final
class Resources:
    """What a job needs: CPUs, memory, GPUs, shared memory."""

    def __new__(
        cls,
        cpu: int | None = None,
        memory: int | str | None = None,
        gpu: int | Gpu | None = None,
        shm_size: int | str | None = None,
    ) -> Resources: ...
    @property
    def cpu(self) -> int | None: ...
    @property
    def memory_bytes(self) -> int | None: ...
    @property
    def shm_size_bytes(self) -> int | None: ...
    @property
    def gpu(self) -> Gpu | None: ...

@final
class JobSpec:
    """One job: what an executor needs to run it."""

    def __new__(
        cls,
        commands: Sequence[str] = (),
        *,
        image: str | None = None,
        working_dir: str = ".",
        env: Mapping[str, str] | None = None,
        artifacts: Sequence[str] = (),
        ports: Sequence[int] = (),
        resources: Resources | None = None,
        id: str = "",
        depends_on: Sequence[str] = (),
    ) -> JobSpec: ...
    @property
    def id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def image(self) -> str | None: ...
    @property
    def commands(self) -> list[str]: ...
    @property
    def working_dir(self) -> str: ...
    @property
    def env(self) -> dict[str, str]: ...
    @property
    def artifacts(self) -> list[str]: ...
    @property
    def ports(self) -> list[int]: ...
    @property
    def depends_on(self) -> list[str]: ...
    @property
    def resources(self) -> Resources: ...
    @property
    def download(self) -> tuple[str, str] | None: ...
    @property
    def timeout_secs(self) -> int | None: ...
    @property
    def retries(self) -> int: ...
    @property
    def help(self) -> str | None: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Plan:
    """The jobs to run for one workflow, in dependency order."""

    @property
    def workflow(self) -> str: ...
    @property
    def jobs(self) -> list[JobSpec]: ...
    @property
    def stages(self) -> list[list[str]]: ...
    @property
    def notes(self) -> list[str]: ...
    @property
    def warnings(self) -> list[Diagnostic]: ...
    def job(self, id: str) -> JobSpec: ...
    def to_json(self) -> str: ...
    def to_dot(self) -> str: ...
    def to_mermaid(self) -> str: ...
    def __len__(self) -> int: ...

@final
class Provider:
    """A provider written in Python, for `Project(providers=[...])`."""

    def __new__(
        cls,
        name: str,
        func: Callable[[str, dict[str, Any]], JobSpec | Iterable[JobSpec]],
        *,
        keys: Sequence[str] = ...,
        required: Sequence[str] = ...,
    ) -> Provider: ...
    @property
    def name(self) -> str: ...
    @property
    def keys(self) -> list[str]: ...
    @property
    def required(self) -> list[str]: ...
    @property
    def func(self) -> Callable[[str, dict[str, Any]], JobSpec | Iterable[JobSpec]]: ...

@final
class Event:
    """One change of a run."""

    @property
    def kind(self) -> str: ...
    @property
    def run(self) -> str: ...
    @property
    def job(self) -> str | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def data(self) -> dict[str, Any]: ...

@final
class RunJob:
    """A job of a run, as recorded."""

    @property
    def id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def reused_from(self) -> str | None: ...
    @property
    def started_at(self) -> datetime.datetime | None: ...
    @property
    def finished_at(self) -> datetime.datetime | None: ...
    @property
    def log_path(self) -> pathlib.Path: ...

@final
class Artifact:
    """An artifact folder a job saved."""

    @property
    def job(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def stored(self) -> pathlib.Path: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...

@final
class LogLine:
    """One line of a job's output."""

    @property
    def job(self) -> str: ...
    @property
    def stream(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def at_ms(self) -> int: ...
    @property
    def time(self) -> datetime.datetime: ...

@final
class LogIterator:
    """An iterator over a run's log lines."""

    def __iter__(self) -> LogIterator: ...
    def __next__(self) -> LogLine: ...

@final
class Run:
    """A run: its status, jobs, artifacts and logs."""

    @property
    def name(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def succeeded(self) -> bool: ...
    @property
    def finished(self) -> bool: ...
    @property
    def orphaned(self) -> bool: ...
    @property
    def executor(self) -> str: ...
    @property
    def variables(self) -> dict[str, Any]: ...
    @property
    def git(self) -> dict[str, Any] | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def created_at(self) -> datetime.datetime: ...
    @property
    def started_at(self) -> datetime.datetime | None: ...
    @property
    def finished_at(self) -> datetime.datetime | None: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def jobs(self) -> list[RunJob]: ...
    @property
    def failed_jobs(self) -> list[RunJob]: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def notes(self) -> list[str]: ...
    @property
    def artifacts(self) -> list[Artifact]: ...
    def export_artifacts(self, dest: str | os.PathLike[str]) -> list[pathlib.Path]: ...
    def refresh(self) -> None: ...
    def logs(
        self,
        workflow: str | None = None,
        *,
        follow: bool = False,
        since: datetime.datetime | datetime.timedelta | None = None,
    ) -> Iterator[LogLine]: ...
    def stop(self, *, abort: bool = False, wait: float = 60.0) -> None: ...
    def tag(self, tag: str) -> None: ...
    def untag(self, tag: str) -> None: ...
    def resume(
        self,
        *,
        jobs: int | None = None,
        keep_going: bool = False,
        on_event: Callable[[Event], object] | None = None,
        echo: bool = True,
    ) -> Run: ...

@final
class Project:
    """A dstack project: the folder that holds `.dstack/workflows.yaml`."""

    def __new__(
        cls,
        path: str | os.PathLike[str] = ".",
        *,
        providers: Sequence[Provider] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> Project: ...
    @property
    def path(self) -> pathlib.Path: ...
    @property
    def workflows(self) -> list[Workflow]: ...
    @property
    def workflow_names(self) -> list[str]: ...
    @property
    def variables(self) -> dict[str, dict[str, Any]]: ...
    @property
    def warnings(self) -> list[Diagnostic]: ...
    def workflow(self, name: str) -> Workflow: ...
    def reload(self) -> None: ...
    def validate(self, variables: _Variables | None = None) -> list[Diagnostic]: ...
    def plan(self, workflow: str, variables: _Variables | None = None) -> Plan: ...
    def run(
        self,
        workflow: str,
        variables: _Variables | None = None,
        *,
        executor: str = "auto",
        jobs: int | None = None,
        keep_going: bool = False,
        on_event: Callable[[Event], object] | None = None,
        echo: bool = True,
        no_git: bool = False,
    ) -> Run: ...
    async def run_async(
        self,
        workflow: str,
        variables: _Variables | None = None,
        *,
        executor: str = "auto",
        jobs: int | None = None,
        keep_going: bool = False,
        on_event: Callable[[Event], object] | None = None,
        echo: bool = True,
        no_git: bool = False,
    ) -> Run: ...
    def resume(
        self,
        name: str,
        *,
        jobs: int | None = None,
        keep_going: bool = False,
        on_event: Callable[[Event], object] | None = None,
        echo: bool = True,
    ) -> Run: ...
    def runs(self, *, all: bool = False) -> list[Run]: ...
    def get_run(self, name: str) -> Run: ...
    def tags(self) -> dict[str, str]: ...
    def untag(self, tag: str) -> str: ...
    def prune(self) -> list[str]: ...

def schema() -> dict[str, Any]: ...
def runs(project: Project, *, all: bool = False) -> list[Run]: ...
def _shutdown() -> None: ...
