"""The example notebook runs headless (nbclient) on a Jupyter kernel: blocking and awaited
runs inside the kernel's event loop."""

from __future__ import annotations

import pathlib
import time

from jupyter_client.manager import KernelManager
import nbclient
import nbformat

from conftest import ProjectFactory, processes_with

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "pipeline.ipynb"


def test_example_notebook_runs(state_dir: pathlib.Path) -> None:
    # `state_dir` sets DSTACK_STATE_DIR, which the kernel inherits: the example project's
    # folder stays clean.
    nb = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert errors == []
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "all good" in text
    assert "test MSE" in text, "the jobs' output is streamed into the cell"
    assert state_dir.is_dir()


def test_interrupting_the_kernel_stops_the_run(make_project: ProjectFactory) -> None:
    """Jupyter's "interrupt kernel" (SIGINT to the kernel) during a blocking `run()`."""
    marker = "sleep 3160"
    root = make_project(
        f"""
        workflows:
          - {{name: long, provider: docker, image: ubuntu, commands: ["echo up", "{marker}"]}}
        """
    )
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(root))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        code = (
            "import dstack_py as ds\n"
            f"project = ds.Project({str(root)!r})\n"
            "try:\n"
            "    project.run('long', executor='local', echo=False)\n"
            "except KeyboardInterrupt:\n"
            "    print('INTERRUPTED', [r.status for r in project.runs()])\n"
        )
        msg_id = kc.execute(code)
        deadline = time.monotonic() + 30
        while not processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(marker), "the job runs"
        km.interrupt_kernel()
        output = ""
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                output += msg["content"]["text"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert "INTERRUPTED ['stopped']" in output
        assert processes_with(marker) == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
