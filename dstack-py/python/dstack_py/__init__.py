"""Declarative ML workflows (`.dstack/workflows.yaml`) from Python, on the dstack-rs engine.

```python
import dstack_py as ds

project = ds.Project(".")                      # loads and validates .dstack/*.yaml
plan = project.plan("train", variables={"epochs": 3})
print(plan)                                    # stages and jobs, as `dstack plan` prints them
run = project.run("train", variables={"epochs": 3})   # blocks; Ctrl-C stops the run
for line in run.logs():
    print(line.job, line.text)
run.tag("latest")                              # `depends-on: train:latest` reuses it
```

`await project.run_async(...)` does the same inside asyncio (and Jupyter). Errors are
`DstackError`s: `ConfigError` (with `.path`, `.line`, `.column` and every problem in
`.diagnostics`), `PlanError`, `ExecutionError` (with `.run` and `.failed_jobs`) and
`ExecutorUnavailable`. Everything here is a thin layer over the Rust library (`dstack_py._core`).
"""

from dstack_py._core import (
    Artifact,
    ConfigError,
    Diagnostic,
    DstackError,
    DstackWarning,
    Event,
    ExecutionError,
    ExecutorUnavailable,
    Gpu,
    JobSpec,
    LogIterator,
    LogLine,
    Plan,
    PlanError,
    Project,
    Provider,
    Resources,
    Run,
    RunJob,
    Workflow,
    __version__,
    runs,
    schema,
)

__all__ = [
    "Artifact",
    "ConfigError",
    "Diagnostic",
    "DstackError",
    "DstackWarning",
    "Event",
    "ExecutionError",
    "ExecutorUnavailable",
    "Gpu",
    "JobSpec",
    "LogIterator",
    "LogLine",
    "Plan",
    "PlanError",
    "Project",
    "Provider",
    "Resources",
    "Run",
    "RunJob",
    "Workflow",
    "__version__",
    "runs",
    "schema",
]
