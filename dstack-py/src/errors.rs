//! The exception hierarchy, declared once, and the single conversion from the library's errors
//! into it.
//!
//! ```text
//! DstackError(Exception)
//! ├── ConfigError(DstackError, ValueError)   problems in the project's files (.path, .line, ...)
//! ├── PlanError(DstackError, ValueError)     cycles, unknown dependencies or workflows, bad tags
//! ├── ExecutionError(DstackError)            a run that did not succeed (.run, .failed_jobs)
//! └── ExecutorUnavailable(DstackError)       no Docker engine, no Slurm, an executor that cannot run the plan
//! ```
//!
//! `ConfigError` and `PlanError` are also `ValueError`s (bad input), which `create_exception!`
//! cannot express: they are made with `type()` when the module is first imported.

use std::cell::RefCell;

use dstack_core::run::RunError;
use dstack_core::{Code, Diagnostics};
use dstack_exec::EngineError;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::project::Diagnostic;

pyo3::create_exception!(
    dstack_py,
    DstackError,
    PyException,
    "Base class of every error raised by dstack_py."
);
pyo3::create_exception!(
    dstack_py,
    ExecutionError,
    DstackError,
    "A run ended without succeeding: `.run` is the run, `.failed_jobs` its failed jobs."
);
pyo3::create_exception!(
    dstack_py,
    ExecutorUnavailable,
    DstackError,
    "The executor asked for cannot be used here (no Docker engine, no Slurm cluster), or cannot run this plan."
);

pyo3::create_exception!(
    dstack_py,
    DstackWarning,
    pyo3::exceptions::PyUserWarning,
    "Warnings about a run: images ignored by the local executor, limits not enforced..."
);

static CONFIG_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static PLAN_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

const CONFIG_DOC: &str = "Problems in the project's files.\n\n\
`.message`, `.path`, `.line` and `.column` describe the first problem (`line`/`column` are `None` \
when the problem concerns a whole file or no file); `.diagnostics` lists every problem found, \
errors and warnings alike.";
const PLAN_DOC: &str = "The workflows cannot be planned: a `depends-on` cycle, an unknown \
dependency or workflow, a self-dependency, or a `name:tag` dependency that does not resolve. \
Same attributes as `ConfigError`.";

/// A subclass of `DstackError` and `ValueError` with the located-problem attributes.
fn located_class(py: Python<'_>, name: &str, doc: &str) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "dstack_py")?;
    ns.set_item("__doc__", doc)?;
    ns.set_item("message", "")?;
    for attr in ["path", "line", "column"] {
        ns.set_item(attr, py.None())?;
    }
    ns.set_item("diagnostics", PyTuple::empty(py))?;
    let bases = PyTuple::new(
        py,
        [
            py.get_type::<DstackError>().into_any(),
            py.get_type::<PyValueError>().into_any(),
        ],
    )?;
    let ty = py
        .get_type::<PyType>()
        .call1((name, bases, ns))?
        .cast_into::<PyType>()?;
    Ok(ty.unbind())
}

/// `ConfigError`.
pub(crate) fn config_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    CONFIG_ERROR
        .get_or_try_init(py, || located_class(py, "ConfigError", CONFIG_DOC))
        .map(|t| t.bind(py))
}

/// `PlanError`.
pub(crate) fn plan_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    PLAN_ERROR
        .get_or_try_init(py, || located_class(py, "PlanError", PLAN_DOC))
        .map(|t| t.bind(py))
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("DstackError", py.get_type::<DstackError>())?;
    m.add("ConfigError", config_error(py)?)?;
    m.add("PlanError", plan_error(py)?)?;
    m.add("ExecutionError", py.get_type::<ExecutionError>())?;
    m.add("ExecutorUnavailable", py.get_type::<ExecutorUnavailable>())?;
    m.add("DstackWarning", py.get_type::<DstackWarning>())?;
    Ok(())
}

/// Diagnostic codes that make a problem a planning problem rather than a configuration one.
fn is_plan_code(code: Code) -> bool {
    matches!(
        code,
        Code::Cycle | Code::UnknownDependency | Code::SelfDependency | Code::UnknownWorkflow
    )
}

/// Everything a binding call can fail with: the library's error, or a Python exception (raised
/// by a Python provider or an `on_event` callback, or made while converting values).
#[derive(Debug)]
pub(crate) enum Failure {
    /// The library said no.
    Engine(EngineError),
    /// A Python exception, raised as it is.
    Python(PyErr),
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Failure::Engine(e)
    }
}

impl From<dstack_core::Error> for Failure {
    fn from(e: dstack_core::Error) -> Self {
        Failure::Engine(e.into())
    }
}

impl From<dstack_core::run::StoreError> for Failure {
    fn from(e: dstack_core::run::StoreError) -> Self {
        Failure::Engine(e.into())
    }
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Python(e)
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Python(e) => e,
            Failure::Engine(e) => Python::attach(|py| engine_error(py, e)),
        }
    }
}

/// The one conversion from the library's error into a Python exception: the variant (and for
/// diagnostics, their codes) decides the class.
fn engine_error(py: Python<'_>, e: EngineError) -> PyErr {
    let made = match e {
        EngineError::Config(dstack_core::Error::Invalid(diags)) => diagnostics_error(py, &diags),
        EngineError::Config(e @ dstack_core::Error::Io { .. }) => {
            let path = match &e {
                dstack_core::Error::Io { path, .. } => Some(path.display().to_string()),
                _ => None,
            };
            let text = e.to_string();
            located_error(py, false, &text, Located::message(&text, path))
        }
        EngineError::Executor(e) => {
            let text = match &e.help {
                Some(help) => format!("{}\n  help: {help}", e.message),
                None => e.message.clone(),
            };
            Ok(ExecutorUnavailable::new_err(text))
        }
        EngineError::Run(e) => Ok(run_error(py, e)),
        other => Ok(DstackError::new_err(other.to_string())),
    };
    made.unwrap_or_else(|e| e)
}

fn run_error(py: Python<'_>, e: RunError) -> PyErr {
    let text = e.to_string();
    match e {
        RunError::Executor { .. } | RunError::Unsupported { .. } => {
            ExecutorUnavailable::new_err(text)
        }
        RunError::Tag(_) => {
            located_error(py, true, &text, Located::message(&text, None)).unwrap_or_else(|e| e)
        }
        _ => DstackError::new_err(text),
    }
}

fn diagnostics_error(py: Python<'_>, diags: &Diagnostics) -> PyResult<PyErr> {
    let errors: Vec<&dstack_core::Diagnostic> = diags.errors().collect();
    let plan = !errors.is_empty() && errors.iter().all(|d| is_plan_code(d.code));
    let first = errors.first().copied().or_else(|| diags.as_slice().first());
    let (message, path, line, column) = match first {
        Some(d) => {
            let (path, line, column) = match &d.location {
                Some(l) => (
                    Some(l.path.display().to_string()),
                    (l.line > 0).then_some(l.line),
                    (l.line > 0).then_some(l.column),
                ),
                None => (None, None, None),
            };
            (d.message.clone(), path, line, column)
        }
        None => (diags.to_string(), None, None, None),
    };
    let all = diags
        .as_slice()
        .iter()
        .cloned()
        .map(Diagnostic::from)
        .collect();
    let located = Located {
        message: &message,
        path,
        line,
        column,
        diagnostics: all,
    };
    located_error(py, plan, &diags.to_string(), located)
}

/// The attributes of a `ConfigError` or `PlanError`.
struct Located<'a> {
    /// The first problem's message, without location or help.
    message: &'a str,
    path: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Located<'a> {
    fn message(message: &'a str, path: Option<String>) -> Self {
        Located {
            message,
            path,
            line: None,
            column: None,
            diagnostics: Vec::new(),
        }
    }
}

/// A `ConfigError` (or `PlanError`) with its attributes set.
fn located_error(py: Python<'_>, plan: bool, text: &str, at: Located<'_>) -> PyResult<PyErr> {
    let ty = if plan {
        plan_error(py)?
    } else {
        config_error(py)?
    };
    let value = ty.call1((text,))?;
    value.setattr("message", at.message)?;
    value.setattr("path", at.path)?;
    value.setattr("line", at.line)?;
    value.setattr("column", at.column)?;
    let diagnostics: Vec<Bound<'_, Diagnostic>> = at
        .diagnostics
        .into_iter()
        .map(|d| Bound::new(py, d))
        .collect::<PyResult<_>>()?;
    value.setattr("diagnostics", PyTuple::new(py, diagnostics)?)?;
    Ok(PyErr::from_value(value))
}

thread_local! {
    /// The first exception a Python provider raised on this thread during the current call.
    static PROVIDER_ERROR: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// Records an exception raised by a Python provider (the first one wins).
pub(crate) fn stash_provider_error(e: PyErr) {
    PROVIDER_ERROR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    });
}

/// Runs `f` (which may call Python providers on this thread); when a provider raised, its
/// exception is the result, whatever `f` returned.
pub(crate) fn catching_providers<T, E: Into<Failure>>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, Failure> {
    PROVIDER_ERROR.with(|slot| slot.borrow_mut().take());
    let result = f().map_err(Into::into);
    match PROVIDER_ERROR.with(|slot| slot.borrow_mut().take()) {
        Some(e) => Err(Failure::Python(e)),
        None => result,
    }
}
