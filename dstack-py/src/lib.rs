//! `dstack_py._core`: the native module behind the `dstack_py` Python package.
//!
//! The only crate of the workspace that knows Python. It wraps the library and holds no
//! workflow logic of its own: loading, planning, running, logs and tags are calls into
//! `dstack-core` and `dstack-exec`.
//!
//! - `project`: `Project` (load, validate, plan, run), `Plan`, `JobSpec`, `Resources`, `Gpu`,
//!   `Workflow`, `Diagnostic`.
//! - `runs`: driving runs (blocking with the GIL released and Ctrl-C checks, or awaitable on
//!   the module's one tokio runtime), `Run`, `RunJob`, `Artifact`, `LogLine`, `Event`.
//! - `provider`: providers written in Python.
//! - `errors`: the exception hierarchy and the one conversion from the library's errors.
//! - `convert`: variables, JSON values and times between Python and Rust.

mod convert;
mod errors;
mod project;
mod provider;
mod runs;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<project::Project>()?;
    m.add_class::<project::Workflow>()?;
    m.add_class::<project::Plan>()?;
    m.add_class::<project::JobSpec>()?;
    m.add_class::<project::Resources>()?;
    m.add_class::<project::Gpu>()?;
    m.add_class::<project::Diagnostic>()?;
    m.add_class::<provider::Provider>()?;
    m.add_class::<runs::Run>()?;
    m.add_class::<runs::RunJob>()?;
    m.add_class::<runs::Artifact>()?;
    m.add_class::<runs::LogLine>()?;
    m.add_class::<runs::LogIterator>()?;
    m.add_class::<runs::Event>()?;
    m.add_function(wrap_pyfunction!(project::schema, m)?)?;
    m.add_function(wrap_pyfunction!(runs::runs, m)?)?;
    let shutdown = wrap_pyfunction!(runs::_shutdown, m)?;
    // Runs driven by this process are stopped (and waited for) before the interpreter exits.
    m.py()
        .import("atexit")?
        .call_method1("register", (&shutdown,))?;
    m.add_function(shutdown)?;
    Ok(())
}
