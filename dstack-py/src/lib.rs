//! `dstack_py._core`: the native module behind the `dstack_py` Python package.
//!
//! The only crate of the workspace that knows Python. For now it exposes the library version
//! and planning as JSON; the full API (projects, runs, events, exceptions) is built on the run
//! engine.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Plans `workflow` of the project at `path` and returns the plan as the CLI's JSON.
///
/// `variables` maps variable names to values written as on the command line.
#[pyfunction]
#[pyo3(signature = (path, workflow, variables = None))]
fn plan_json(
    py: Python<'_>,
    path: &str,
    workflow: &str,
    variables: Option<&Bound<'_, PyDict>>,
) -> PyResult<String> {
    let mut overrides = dstack_core::Overrides::new();
    if let Some(vars) = variables {
        for (k, v) in vars.iter() {
            overrides.set_text(k.extract::<String>()?, v.str()?.to_string());
        }
    }
    let path = path.to_owned();
    let workflow = workflow.to_owned();
    py.detach(move || {
        let project = dstack_core::Project::load(&path)?;
        project.plan(&workflow, &overrides).map(|p| p.to_json())
    })
    .map_err(|e: dstack_core::Error| PyValueError::new_err(e.to_string()))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(plan_json, m)?)?;
    Ok(())
}
