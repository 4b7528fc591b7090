"""Python bindings benchmark: `Project.plan` from Python against the Rust call, and the GIL.

    .venv/bin/python benches/python_plan.py            # after `pip install ./dstack-py`

1. `plan()` of generated 5,000-workflow projects (`gen`, shapes `chain` and `random`): the
   median of RUNS calls of `dstack_py.Project.plan` against the median of RUNS in-process
   calls of `dstack_core::Project::plan` (`plan-time`, built here with
   `cargo build --release -p benches --bins`), measured in the same run. Target: within 1.3x.
   The time to turn the plan's jobs into Python objects (`plan.jobs`) is shown apart: `plan()`
   keeps the Rust plan and converts on access.
2. The GIL during a run: a Python thread counts in a loop, alone and while the main thread
   blocks in `Project.run` on a 2 s job; the ratio of its rates shows it kept running.

Environment: N (5000), SHAPES ("chain random"), RUNS (20, after 3 warm-up calls each).
Prints a Markdown table; exits 1 when the 1.3x target is missed.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import dstack_py as ds

ROOT = pathlib.Path(__file__).resolve().parent.parent
N = int(os.environ.get("N", "5000"))
SHAPES = os.environ.get("SHAPES", "chain random").split()
RUNS = int(os.environ.get("RUNS", "20"))
TARGET = 1.3


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def build() -> pathlib.Path:
    log("building gen and plan-time (cargo build --release -p benches --bins)")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "benches", "--bins"], cwd=ROOT, check=True
    )
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release"


def generate(bin_dir: pathlib.Path, work: pathlib.Path, shape: str) -> tuple[pathlib.Path, str, int]:
    out = work / f"{shape}-{N}"
    info = subprocess.run(
        [str(bin_dir / "gen"), "--n", str(N), "--shape", shape, "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fields = dict(line.split("=", 1) for line in info.split())
    return out, fields["last"], int(fields["jobs"])


def rust_plan(bin_dir: pathlib.Path, project: pathlib.Path, workflow: str) -> dict[str, float]:
    out = subprocess.run(
        [str(bin_dir / "plan-time"), str(project), workflow, str(RUNS)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def python_plan(project_dir: pathlib.Path, workflow: str) -> tuple[float, float, float, int]:
    """Median and minimum of `plan()` in ms, median of `plan.jobs` in ms, and the job count."""
    project = ds.Project(project_dir)
    plan: ds.Plan | None = None
    for _ in range(3):
        plan = project.plan(workflow)
    times = []
    for _ in range(RUNS):
        plan = None  # the previous plan is freed outside the timed call
        start = time.perf_counter()
        plan = project.plan(workflow)
        times.append((time.perf_counter() - start) * 1000)
    assert plan is not None
    access = []
    for _ in range(5):
        start = time.perf_counter()
        jobs = plan.jobs
        access.append((time.perf_counter() - start) * 1000)
        del jobs
    return statistics.median(times), min(times), statistics.median(access), len(plan)


def gil_during_run(work: pathlib.Path) -> tuple[float, float]:
    """Loop iterations per second of another thread: alone, and while `run()` blocks."""
    root = work / "nap"
    (root / ".dstack").mkdir(parents=True)
    (root / ".dstack" / "workflows.yaml").write_text(
        "workflows:\n  - {name: nap, provider: docker, image: ubuntu, commands: ['sleep 2']}\n"
    )
    project = ds.Project(root, state_dir=work / "state")
    counter = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1

    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(1.0)
    alone = counter / 1.0
    before = counter
    start = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.DstackWarning)
        project.run("nap", executor="local", echo=False)
    during = (counter - before) / (time.perf_counter() - start)
    stop.set()
    thread.join()
    return alone, during


def main() -> int:
    bin_dir = build()
    log(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    rows = []
    met_all = True
    with tempfile.TemporaryDirectory(prefix="dstack-py-bench.") as tmp:
        work = pathlib.Path(tmp)
        for shape in SHAPES:
            project, last, jobs = generate(bin_dir, work, shape)
            rust = rust_plan(bin_dir, project, last)
            py_median, py_min, access, py_jobs = python_plan(project, last)
            assert py_jobs == jobs == rust["jobs"], (py_jobs, jobs, rust["jobs"])
            ratio = py_median / rust["median_ms"]
            met = ratio <= TARGET
            met_all &= met
            log(f"{shape}: rust {rust['median_ms']:.2f} ms, python {py_median:.2f} ms ({ratio:.2f}x)")
            rows.append(
                f"| {N} | {shape} | {jobs} | {rust['median_ms']:.2f} ms (min {rust['min_ms']:.2f}) "
                f"| {py_median:.2f} ms (min {py_min:.2f}) | {ratio:.2f}x (≤ {TARGET}x: {'met' if met else 'missed'}) "
                f"| {access:.2f} ms |"
            )
        alone, during = gil_during_run(work)
    print()
    print(
        "| workflows | shape | jobs in plan | Rust `Project::plan` (median) | Python `Project.plan` (median) "
        "| Python / Rust | `plan.jobs` to Python objects |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print()
    print("| another Python thread, alone | while `Project.run` blocks on a 2 s job | ratio |")
    print("|---:|---:|---:|")
    print(f"| {alone / 1e6:.2f} M iterations/s | {during / 1e6:.2f} M iterations/s | {during / alone:.2f} |")
    return 0 if met_all else 1


if __name__ == "__main__":
    sys.exit(main())
