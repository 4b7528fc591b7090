//! Providers written in Python: a callable that maps a workflow's parameters to jobs, used for
//! `provider: NAME` in `workflows.yaml`.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use dstack_core::{Code, Params};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::json_to_py;
use crate::errors::stash_provider_error;
use crate::project::jobs_from_py;

/// `Params` remembers the keys a provider asks for as `&'static str`. The keys of Python
/// providers are interned here, so each distinct key name is allocated once for the life of
/// the process, however many providers are made.
fn intern(key: &str) -> &'static str {
    static KEYS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(k) = keys.get(key) {
        return k;
    }
    let leaked: &'static str = Box::leak(key.to_owned().into_boxed_str());
    keys.insert(leaked);
    leaked
}

/// The library side of a Python provider.
struct PyProvider {
    name: String,
    func: Py<PyAny>,
    keys: Vec<&'static str>,
    required: Vec<&'static str>,
}

impl fmt::Debug for PyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PyProvider")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl dstack_core::Provider for PyProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// Calls need the interpreter's lock, and an exception is kept for the calling thread
    /// (`catching_providers`): plans that use a Python provider are made on that thread.
    fn concurrent(&self) -> bool {
        false
    }

    fn jobs(&self, params: &mut Params<'_>) -> Vec<dstack_core::JobSpec> {
        let mut values = Vec::with_capacity(self.keys.len());
        for &key in &self.keys {
            match params.raw(key) {
                Some(node) if !node.is_invalid() => values.push((key, node.to_json())),
                // A failed substitution, already reported.
                Some(_) => {}
                None if self.required.contains(&key) => params.report_missing(key, "..."),
                None => {}
            }
        }
        if params.has_errors() {
            // The problems are reported; calling the provider with missing values would only
            // add a confusing second error.
            return Vec::new();
        }
        let workflow = params.workflow().to_owned();
        let made = Python::attach(|py| -> PyResult<Vec<dstack_core::JobSpec>> {
            let dict = PyDict::new(py);
            for (key, value) in &values {
                dict.set_item(*key, json_to_py(py, value)?)?;
            }
            let result = self.func.bind(py).call1((workflow.as_str(), dict))?;
            jobs_from_py(&result)
        });
        match made {
            Ok(jobs) => jobs,
            Err(e) => {
                let pos = params.pos();
                let what = Python::attach(|py| {
                    let note = format!(
                        "raised by provider `{}` while making the jobs of workflow `{workflow}` (.dstack/workflows.yaml line {})",
                        self.name, pos.line
                    );
                    // PEP 678 notes exist from Python 3.11.
                    if e.value(py).hasattr("add_note").unwrap_or(false) {
                        let _ = e.value(py).call_method1("add_note", (note,));
                    }
                    e.to_string()
                });
                params.error(
                    pos,
                    Code::Provider,
                    format!(
                        "provider `{}` failed for workflow `{workflow}`: {what}",
                        self.name
                    ),
                );
                stash_provider_error(e);
                Vec::new()
            }
        }
    }
}

/// A provider written in Python, for `Project(providers=[...])`.
///
/// `func(workflow, params)` receives the workflow's name and a dict of the parameters it
/// declared in `keys` (after `${{ }}` substitution; keys the workflow does not set are absent)
/// and returns a `JobSpec` or a list of them. Keys of the workflow that are neither in `keys`
/// nor common workflow keys (`name`, `provider`, `depends-on`, `help`, `timeout`, `retries`)
/// are reported as unknown, with a "did you mean" drawn from `keys`; `required` keys that are
/// missing are reported too. An exception raised by `func` propagates from `plan()` / `run()`
/// as it is, traceback included.
#[pyclass(module = "dstack_py", frozen)]
#[derive(Debug)]
pub struct Provider {
    inner: Arc<PyProvider>,
}

impl Provider {
    pub(crate) fn inner(&self) -> Arc<dyn dstack_core::Provider> {
        self.inner.clone()
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[pymethods]
impl Provider {
    #[new]
    #[pyo3(signature = (name, func, *, keys = Vec::new(), required = Vec::new()))]
    fn new(
        name: String,
        func: Bound<'_, PyAny>,
        keys: Vec<String>,
        required: Vec<String>,
    ) -> PyResult<Self> {
        if !valid_key(&name) {
            return Err(PyValueError::new_err(format!(
                "`{name}` is not a valid provider name: use letters, digits, `-`, `_` and `.`"
            )));
        }
        if !func.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "provider `{name}`: `func` must be callable"
            )));
        }
        if let Some(bad) = keys.iter().find(|k| !valid_key(k)) {
            return Err(PyValueError::new_err(format!(
                "provider `{name}`: `{bad}` is not a valid key name"
            )));
        }
        if let Some(bad) = required.iter().find(|r| !keys.contains(r)) {
            return Err(PyValueError::new_err(format!(
                "provider `{name}`: required key `{bad}` is not one of its `keys`"
            )));
        }
        Ok(Provider {
            inner: Arc::new(PyProvider {
                name,
                func: func.unbind(),
                keys: keys.iter().map(|k| intern(k)).collect(),
                required: required.iter().map(|k| intern(k)).collect(),
            }),
        })
    }

    /// The name workflows use in `provider:`.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// The parameter keys the provider reads.
    #[getter]
    fn keys(&self) -> Vec<&'static str> {
        self.inner.keys.clone()
    }

    /// The keys a workflow must set.
    #[getter]
    fn required(&self) -> Vec<&'static str> {
        self.inner.required.clone()
    }

    /// The callable.
    #[getter]
    fn func(&self, py: Python<'_>) -> Py<PyAny> {
        self.inner.func.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let func = self
            .inner
            .func
            .bind(py)
            .repr()
            .map_or_else(|_| "?".to_owned(), |r| r.to_string());
        format!(
            "Provider(name={}, func={func}, keys={})",
            crate::convert::r(py, &self.inner.name),
            crate::convert::r(py, &self.inner.keys)
        )
    }
}
