//! `Project`, its workflows and variables, and planning: `Plan`, `JobSpec`, `Resources`, `Gpu`,
//! `Diagnostic`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use dstack_core::resources::parse_memory;
use dstack_core::{Dependency, GpuRequest, ProviderRef, ProviderRegistry};
use dstack_exec::Engine;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySequence};

use crate::convert::{json_to_py, overrides, r, type_name};
use crate::errors::{Failure, catching_providers};
use crate::provider::Provider;
use crate::runs::{self, Run};

/// One problem (or warning) found in the project's files.
#[pyclass(module = "dstack_py", frozen)]
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// `"error"` or `"warning"`.
    #[pyo3(get)]
    pub severity: String,
    /// A stable kebab-case code: `"unknown-key"`, `"cycle"`, `"undefined-variable"`...
    #[pyo3(get)]
    pub code: String,
    /// One lowercase sentence that names the thing.
    #[pyo3(get)]
    pub message: String,
    /// The file, when the problem is in one.
    #[pyo3(get)]
    pub path: Option<String>,
    /// 1-based line, when the problem has a position.
    #[pyo3(get)]
    pub line: Option<u32>,
    /// 1-based column, when the problem has a position.
    #[pyo3(get)]
    pub column: Option<u32>,
    /// Suggestions ("did you mean `script`?").
    #[pyo3(get)]
    pub help: Vec<String>,
    rendered: String,
}

impl From<dstack_core::Diagnostic> for Diagnostic {
    fn from(d: dstack_core::Diagnostic) -> Self {
        let text = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let (path, line, column) = match &d.location {
            Some(l) => (
                Some(l.path.display().to_string()),
                (l.line > 0).then_some(l.line),
                (l.line > 0).then_some(l.column),
            ),
            None => (None, None, None),
        };
        Diagnostic {
            severity: text(serde_json::to_value(d.severity).unwrap_or_default()),
            code: text(serde_json::to_value(d.code).unwrap_or_default()),
            rendered: d.to_string(),
            message: d.message,
            path,
            line,
            column,
            help: d.help,
        }
    }
}

#[pymethods]
impl Diagnostic {
    /// `PATH:LINE:COLUMN: error: MESSAGE` and its `help:` lines, as the CLI prints it.
    fn __str__(&self) -> &str {
        &self.rendered
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Diagnostic(severity={}, code={}, message={}, path={}, line={}, column={})",
            r(py, &self.severity),
            r(py, &self.code),
            r(py, &self.message),
            r(py, &self.path),
            r(py, self.line),
            r(py, self.column),
        )
    }
}

/// A workflow of `.dstack/workflows.yaml`, as written (before variable substitution).
#[pyclass(module = "dstack_py", frozen)]
#[derive(Clone, Debug)]
pub struct Workflow {
    /// Its name.
    #[pyo3(get)]
    pub name: String,
    /// Its provider's name.
    #[pyo3(get)]
    pub provider: String,
    /// The repository of a provider defined in another Git repository (`{repo: URL, name: NAME}`).
    #[pyo3(get)]
    pub provider_repo: Option<String>,
    /// Its `depends-on` entries: workflow names, or `name:tag` references to tagged runs.
    #[pyo3(get)]
    pub depends_on: Vec<String>,
    /// Its one-line `help`.
    #[pyo3(get)]
    pub help: Option<String>,
    /// The line of `workflows.yaml` where it is defined.
    #[pyo3(get)]
    pub line: u32,
    params: serde_json::Value,
}

#[pymethods]
impl Workflow {
    /// The provider's parameters as written, `${{ }}` expressions included.
    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.params)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Workflow(name={}, provider={}, depends_on={})",
            r(py, &self.name),
            r(py, &self.provider),
            r(py, &self.depends_on)
        )
    }
}

impl From<&dstack_core::Workflow> for Workflow {
    fn from(w: &dstack_core::Workflow) -> Self {
        let params = serde_json::Value::Object(
            w.params
                .iter()
                .map(|e| (e.key.text.as_str().to_owned(), e.value.to_json()))
                .collect(),
        );
        Workflow {
            name: w.name.clone(),
            provider: w.provider.name().to_owned(),
            provider_repo: match &w.provider {
                ProviderRef::Repo { repo, .. } => Some(repo.clone()),
                ProviderRef::Named(_) => None,
            },
            depends_on: w.depends_on.iter().map(Dependency::reference).collect(),
            help: w.help.clone(),
            line: w.pos.line,
            params,
        }
    }
}

/// A GPU request: how many, which model, how much memory each.
#[pyclass(module = "dstack_py", frozen, get_all, eq)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    /// How many GPUs.
    pub count: u32,
    /// The model (`"v100"`, `"A100"`), if one is asked for.
    pub name: Option<String>,
    /// The least memory per GPU, in bytes.
    pub memory_bytes: Option<u64>,
}

#[pymethods]
impl Gpu {
    /// `Gpu(count=1, name=None, memory=None)`; `memory` is a number of bytes or a size such as
    /// `"16GB"`.
    #[new]
    #[pyo3(signature = (count = 1, name = None, memory = None))]
    fn new(count: i128, name: Option<String>, memory: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let count = crate::convert::bounded("count", count, 1, i128::from(u32::MAX))?;
        Ok(Gpu {
            count,
            name,
            memory_bytes: memory_arg("memory", memory)?,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Gpu(count={}, name={}, memory_bytes={})",
            self.count,
            r(py, &self.name),
            r(py, self.memory_bytes)
        )
    }
}

/// What a job needs: CPUs, memory, GPUs, shared memory.
#[pyclass(module = "dstack_py", frozen, eq)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub(crate) inner: dstack_core::Resources,
}

/// A memory size argument: an `int` of bytes or a string such as `"8GB"` / `"512MiB"`.
fn memory_arg(what: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(text) = value.extract::<String>() {
        return parse_memory(&text)
            .map(Some)
            .map_err(|e| PyValueError::new_err(format!("invalid `{what}`: {e}")));
    }
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "`{what}` must be a number of bytes or a size such as \"8GB\", got bool"
        )));
    }
    match value.extract::<u64>() {
        Ok(bytes) => Ok(Some(bytes)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "`{what}` must be a number of bytes or a size such as \"8GB\", got {}",
            type_name(value)
        ))),
    }
}

#[pymethods]
impl Resources {
    /// `Resources(cpu=None, memory=None, gpu=None, shm_size=None)`: `memory` and `shm_size`
    /// are numbers of bytes or sizes such as `"8GB"` (10^9) or `"512MiB"` (2^20); `gpu` is a
    /// count or a `Gpu`.
    #[new]
    #[pyo3(signature = (cpu = None, memory = None, gpu = None, shm_size = None))]
    fn new(
        cpu: Option<i128>,
        memory: Option<&Bound<'_, PyAny>>,
        gpu: Option<&Bound<'_, PyAny>>,
        shm_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let cpu: Option<u32> = cpu
            .map(|c| crate::convert::bounded("cpu", c, 1, i128::from(u32::MAX)))
            .transpose()?;
        let gpu = match gpu.filter(|g| !g.is_none()) {
            None => None,
            Some(g) => {
                if let Ok(g) = g.cast::<Gpu>() {
                    let g = g.get();
                    Some(GpuRequest {
                        count: g.count,
                        name: g.name.clone(),
                        memory_bytes: g.memory_bytes,
                    })
                } else if g.is_instance_of::<pyo3::types::PyBool>() {
                    return Err(PyTypeError::new_err(
                        "`gpu` must be a count or a Gpu, got bool",
                    ));
                } else if let Ok(count) = g.extract::<i128>() {
                    let count: u32 =
                        crate::convert::bounded("gpu", count, 0, i128::from(u32::MAX))?;
                    (count > 0).then_some(GpuRequest {
                        count,
                        name: None,
                        memory_bytes: None,
                    })
                } else {
                    return Err(PyTypeError::new_err(format!(
                        "`gpu` must be a count or a Gpu, got {}",
                        type_name(g)
                    )));
                }
            }
        };
        Ok(Resources {
            inner: dstack_core::Resources {
                cpu,
                memory_bytes: memory_arg("memory", memory)?,
                gpu,
                shm_size_bytes: memory_arg("shm_size", shm_size)?,
            },
        })
    }

    /// CPU count.
    #[getter]
    fn cpu(&self) -> Option<u32> {
        self.inner.cpu
    }

    /// Memory limit in bytes.
    #[getter]
    fn memory_bytes(&self) -> Option<u64> {
        self.inner.memory_bytes
    }

    /// Shared memory size in bytes.
    #[getter]
    fn shm_size_bytes(&self) -> Option<u64> {
        self.inner.shm_size_bytes
    }

    /// The GPU request.
    #[getter]
    fn gpu(&self) -> Option<Gpu> {
        self.inner.gpu.as_ref().map(|g| Gpu {
            count: g.count,
            name: g.name.clone(),
            memory_bytes: g.memory_bytes,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Resources(cpu={}, memory_bytes={}, gpu={}, shm_size_bytes={})",
            r(py, self.inner.cpu),
            r(py, self.inner.memory_bytes),
            self.gpu()
                .map_or_else(|| "None".to_owned(), |g| g.__repr__(py)),
            r(py, self.inner.shm_size_bytes)
        )
    }
}

/// One job: what an executor needs to run it. Plans hold them; Python providers make them.
#[pyclass(module = "dstack_py", frozen, eq)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    pub(crate) inner: dstack_core::JobSpec,
}

/// Checks a path a job gives relative to its working directory.
fn relative(what: &str, path: &str) -> PyResult<String> {
    let p = Path::new(path);
    let bad = path.is_empty()
        || p.is_absolute()
        || p.components().any(|c| matches!(c, Component::ParentDir));
    if bad {
        return Err(PyValueError::new_err(format!(
            "{what} `{path}` must be a relative path that stays inside the working directory"
        )));
    }
    Ok(path.to_owned())
}

#[pymethods]
impl JobSpec {
    /// A job for a Python provider to return: `commands` run in order in one shell (the first
    /// failure fails the job), in `image` when the executor runs containers.
    ///
    /// `id` names the job when a provider makes several (each must then have one), and
    /// `depends_on` lists ids of the same workflow's jobs that must run first. The planner adds
    /// the workflow's dependencies, variables (as environment variables), timeout and retries.
    #[new]
    #[pyo3(signature = (
        commands = None,
        *,
        image = None,
        working_dir = ".".to_owned(),
        env = None,
        artifacts = Vec::new(),
        ports = Vec::new(),
        resources = None,
        id = String::new(),
        depends_on = Vec::new(),
    ))]
    #[pyo3(
        text_signature = "(commands=(), *, image=None, working_dir='.', env=None, artifacts=(), ports=(), resources=None, id='', depends_on=())"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        commands: Option<&Bound<'_, PyAny>>,
        image: Option<String>,
        working_dir: String,
        env: Option<BTreeMap<String, String>>,
        artifacts: Vec<String>,
        ports: Vec<i128>,
        resources: Option<PyRef<'_, Resources>>,
        id: String,
        depends_on: Vec<String>,
    ) -> PyResult<Self> {
        let working_dir = if working_dir == "." {
            working_dir
        } else {
            relative("working_dir", &working_dir)?
        };
        let artifacts = artifacts
            .iter()
            .map(|a| relative("artifact", a))
            .collect::<PyResult<Vec<_>>>()?;
        let commands = crate::convert::strings("commands", commands)?;
        let ports = ports
            .into_iter()
            .map(|p| crate::convert::bounded("ports", p, 1, 65535))
            .collect::<PyResult<Vec<u16>>>()?;
        if id.contains('/') || id.contains(':') {
            return Err(PyValueError::new_err(format!(
                "job id `{id}` must not contain `/` or `:`"
            )));
        }
        Ok(JobSpec {
            inner: dstack_core::JobSpec {
                id,
                image,
                commands,
                working_dir,
                env: env.unwrap_or_default(),
                artifacts,
                ports,
                depends_on,
                resources: resources.map(|r| r.inner.clone()).unwrap_or_default(),
                ..dstack_core::JobSpec::default()
            },
        })
    }

    /// Unique within the plan: the workflow's name, or `workflow/name` when a provider makes
    /// several jobs.
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// The workflow the job belongs to.
    #[getter]
    fn workflow(&self) -> &str {
        &self.inner.workflow
    }

    /// The provider that made it.
    #[getter]
    fn provider(&self) -> &str {
        &self.inner.provider
    }

    /// The container image, if the job runs in one.
    #[getter]
    fn image(&self) -> Option<&str> {
        self.inner.image.as_deref()
    }

    /// Shell commands, run in order in one shell.
    #[getter]
    fn commands(&self) -> Vec<String> {
        self.inner.commands.clone()
    }

    /// The working directory, relative to the job's tree.
    #[getter]
    fn working_dir(&self) -> &str {
        &self.inner.working_dir
    }

    /// Environment variables: the workflow's variables (upper-cased), then `environment`.
    #[getter]
    fn env(&self) -> BTreeMap<String, String> {
        self.inner.env.clone()
    }

    /// Folders saved after the job, relative to the working directory.
    #[getter]
    fn artifacts(&self) -> Vec<String> {
        self.inner.artifacts.clone()
    }

    /// TCP ports to open.
    #[getter]
    fn ports(&self) -> Vec<u16> {
        self.inner.ports.clone()
    }

    /// Job ids this job waits for, and `workflow:tag` references to tagged runs.
    #[getter]
    fn depends_on(&self) -> Vec<String> {
        self.inner.depends_on.clone()
    }

    /// What the job needs.
    #[getter]
    fn resources(&self) -> Resources {
        Resources {
            inner: self.inner.resources.clone(),
        }
    }

    /// The `(url, output)` of a download job (`provider: curl`).
    #[getter]
    fn download(&self) -> Option<(String, String)> {
        self.inner
            .download
            .as_ref()
            .map(|d| (d.url.clone(), d.output.clone()))
    }

    /// The workflow's `timeout`, in seconds.
    #[getter]
    fn timeout_secs(&self) -> Option<u64> {
        self.inner.timeout_secs
    }

    /// How many times the job is retried after a failure.
    #[getter]
    fn retries(&self) -> u32 {
        self.inner.retries
    }

    /// The workflow's one-line description.
    #[getter]
    fn help(&self) -> Option<&str> {
        self.inner.help.as_deref()
    }

    /// The job as a JSON-compatible dict (the objects of `Plan.to_json()`'s `jobs`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value =
            serde_json::to_value(&self.inner).map_err(|e| PyValueError::new_err(e.to_string()))?;
        json_to_py(py, &value)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "JobSpec(id={}, image={}, commands={}, depends_on={})",
            r(py, &self.inner.id),
            r(py, &self.inner.image),
            r(py, &self.inner.commands),
            r(py, &self.inner.depends_on)
        )
    }
}

/// The jobs to run for one workflow, in dependency order.
#[pyclass(module = "dstack_py", frozen)]
#[derive(Debug)]
pub struct Plan {
    inner: dstack_core::Plan,
}

#[pymethods]
impl Plan {
    /// The workflow asked for.
    #[getter]
    fn workflow(&self) -> &str {
        &self.inner.workflow
    }

    /// Every job, each after its dependencies.
    #[getter]
    fn jobs(&self) -> Vec<JobSpec> {
        self.inner
            .jobs
            .iter()
            .map(|j| JobSpec { inner: j.clone() })
            .collect()
    }

    /// Job ids level by level: the jobs of one stage can run in parallel, every job's
    /// dependencies are in earlier stages.
    #[getter]
    fn stages(&self) -> Vec<Vec<String>> {
        self.inner.stages.clone()
    }

    /// How variables were matched ("`epoch` is taken as variable `epochs`").
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.inner.notes.clone()
    }

    /// Warnings about the planned workflows (deprecated keys...).
    #[getter]
    fn warnings(&self) -> Vec<Diagnostic> {
        self.inner
            .warnings
            .warnings()
            .cloned()
            .map(Diagnostic::from)
            .collect()
    }

    /// The job with id `id`.
    ///
    /// Raises `KeyError` when the plan has none.
    fn job(&self, id: &str) -> PyResult<JobSpec> {
        self.inner
            .job(id)
            .map(|j| JobSpec { inner: j.clone() })
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(id.to_owned()))
    }

    /// The plan as the JSON object of `dstack plan --format json`.
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// The plan as a Graphviz DOT graph.
    fn to_dot(&self) -> String {
        self.inner.to_dot()
    }

    /// The plan as a Mermaid flowchart.
    fn to_mermaid(&self) -> String {
        self.inner.to_mermaid()
    }

    fn __len__(&self) -> usize {
        self.inner.jobs.len()
    }

    /// The readable outline `dstack plan` prints.
    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Plan(workflow={}, jobs={}, stages={})",
            r(py, &self.inner.workflow),
            self.inner.jobs.len(),
            self.inner.stages.len()
        )
    }
}

/// A dstack project: the folder that holds `.dstack/workflows.yaml`.
#[pyclass(module = "dstack_py", frozen)]
#[derive(Debug)]
pub struct Project {
    root: PathBuf,
    state_dir: Option<PathBuf>,
    registry: ProviderRegistry,
    loaded: Mutex<Arc<Loaded>>,
    engine: Mutex<Option<Engine>>,
}

impl Project {
    fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn snapshot(&self) -> Arc<dstack_core::Project> {
        self.loaded().project.clone()
    }

    /// The project's engine (run store), opened on first use.
    pub(crate) fn engine(&self) -> Result<Engine, Failure> {
        let mut slot = self
            .engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(engine) = &*slot {
            return Ok(engine.clone());
        }
        let engine = match &self.state_dir {
            Some(dir) => Engine::with_state_dir(&self.root, dir)?,
            None => Engine::open(&self.root)?,
        }
        .with_providers(self.registry.clone());
        *slot = Some(engine.clone());
        Ok(engine)
    }
}

/// A loaded and validated project, with its warnings.
#[derive(Debug)]
struct Loaded {
    project: Arc<dstack_core::Project>,
    warnings: Vec<dstack_core::Diagnostic>,
}

/// Loads the project and checks every workflow with the default variables (as
/// `dstack validate` does), so that `Project()` reports every problem of its files.
fn load(root: &Path, registry: &ProviderRegistry) -> Result<Loaded, Failure> {
    catching_providers(|| {
        let project = dstack_core::Project::load_with(root, registry.clone())?;
        let diags = project.validate(&dstack_core::Overrides::new())?;
        Ok::<_, dstack_core::Error>(Loaded {
            project: Arc::new(project),
            warnings: diags.warnings().cloned().collect(),
        })
    })
}

/// Emits the warnings of loading (deprecated keys, unused variable sections) as
/// `DstackWarning`s, as the CLI prints them; they stay in `Project.warnings`.
fn warn_about(py: Python<'_>, loaded: &Loaded) -> PyResult<()> {
    if loaded.warnings.is_empty() {
        return Ok(());
    }
    let warn = py.import("warnings")?.getattr("warn")?;
    for w in &loaded.warnings {
        warn.call1((
            w.to_string(),
            py.get_type::<crate::errors::DstackWarning>(),
            1,
        ))?;
    }
    Ok(())
}

#[pymethods]
impl Project {
    /// Loads and validates the project at `path` (the folder holding `.dstack/`).
    ///
    /// `providers` adds `Provider`s written in Python, used by workflows with `provider: NAME`.
    /// `state_dir` is where runs are recorded (default: `$DSTACK_STATE_DIR`, or
    /// `PATH/.dstack/state`).
    ///
    /// Raises `ConfigError` (every problem, located) or `PlanError` (a `depends-on` cycle, an
    /// unknown dependency).
    #[new]
    #[pyo3(signature = (path = PathBuf::from("."), *, providers = None, state_dir = None))]
    #[pyo3(text_signature = "(path='.', *, providers=None, state_dir=None)")]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        providers: Option<&Bound<'_, PyAny>>,
        state_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
        let mut registry = ProviderRegistry::default();
        if let Some(providers) = providers.filter(|p| !p.is_none()) {
            let Ok(seq) = providers.cast::<PySequence>() else {
                return Err(PyTypeError::new_err(format!(
                    "`providers` must be a list of dstack_py.Provider, got {}",
                    type_name(providers)
                )));
            };
            for item in seq.try_iter()? {
                let item = item?;
                let Ok(provider) = item.cast::<Provider>() else {
                    return Err(PyTypeError::new_err(format!(
                        "`providers` must hold dstack_py.Provider objects, got {}",
                        type_name(&item)
                    )));
                };
                registry.register(provider.get().inner());
            }
        }
        // Absolute once: a later `os.chdir` does not move the project or its store.
        let absolute = |path: PathBuf| {
            std::path::absolute(&path).map_err(|e| {
                PyValueError::new_err(format!("cannot use the path `{}`: {e}", path.display()))
            })
        };
        let path = absolute(path)?;
        let state_dir = state_dir.map(absolute).transpose()?;
        // Provider programs (`.dstack/providers.yaml`, other repositories) run on this machine,
        // with their cache in the run store's folder.
        let state = absolute(
            state_dir
                .clone()
                .unwrap_or_else(|| dstack_core::run::default_state_dir(&path)),
        )?;
        dstack_exec::providers::set_runner(&mut registry, &path, &state);
        let loaded = py.detach(|| load(&path, &registry))?;
        warn_about(py, &loaded)?;
        Ok(Project {
            root: path,
            state_dir,
            registry,
            loaded: Mutex::new(Arc::new(loaded)),
            engine: Mutex::new(None),
        })
    }

    /// The project's folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.root.clone()
    }

    /// The workflows, in file order.
    #[getter]
    fn workflows(&self) -> Vec<Workflow> {
        self.snapshot()
            .workflows()
            .iter()
            .map(Workflow::from)
            .collect()
    }

    /// The names of the workflows, in file order.
    #[getter]
    fn workflow_names(&self) -> Vec<String> {
        self.snapshot()
            .workflows()
            .iter()
            .map(|w| w.name.clone())
            .collect()
    }

    /// The workflow called `name`.
    ///
    /// Raises `KeyError` when there is none.
    fn workflow(&self, name: &str) -> PyResult<Workflow> {
        self.snapshot()
            .workflow(name)
            .map(Workflow::from)
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_owned()))
    }

    /// `.dstack/variables.yaml` as `{section: {variable: value}}` (`global` included).
    #[getter]
    fn variables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let project = self.snapshot();
        let out = PyDict::new(py);
        for (section, vars) in &project.variables().sections {
            let d = PyDict::new(py);
            for (name, var) in &vars.vars {
                d.set_item(name, json_to_py(py, &var.value.to_json())?)?;
            }
            out.set_item(section, d)?;
        }
        Ok(out)
    }

    /// Warnings found while loading and validating (deprecated keys, unused sections...).
    #[getter]
    fn warnings(&self) -> Vec<Diagnostic> {
        self.loaded()
            .warnings
            .iter()
            .cloned()
            .map(Diagnostic::from)
            .collect()
    }

    /// Reads the project's files again (the workflows and variables attributes and `plan()`
    /// use what was read when the project was created or last reloaded; runs always read the
    /// files as they are).
    fn reload(&self, py: Python<'_>) -> PyResult<()> {
        let loaded = py.detach(|| load(&self.root, &self.registry))?;
        warn_about(py, &loaded)?;
        *self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(())
    }

    /// Checks every workflow as it would be planned with `variables`; returns the warnings.
    ///
    /// Raises `ConfigError` or `PlanError` with every problem found.
    #[pyo3(signature = (variables = None))]
    fn validate(
        &self,
        py: Python<'_>,
        variables: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Diagnostic>> {
        let overrides = overrides(variables)?;
        let project = self.snapshot();
        let diags = py.detach(|| catching_providers(|| project.validate(&overrides)))?;
        Ok(diags
            .as_slice()
            .iter()
            .cloned()
            .map(Diagnostic::from)
            .collect())
    }

    /// Plans `workflow` with `variables` (`{name: int | float | bool | str}`, overriding
    /// `variables.yaml`; a name may be an unambiguous prefix, `_` may stand for `-`).
    ///
    /// Raises `ConfigError`, `PlanError` (unknown workflow), `TypeError` (a value of another
    /// type).
    #[pyo3(signature = (workflow, variables = None))]
    fn plan(
        &self,
        py: Python<'_>,
        workflow: &str,
        variables: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Plan> {
        let overrides = overrides(variables)?;
        let project = self.snapshot();
        let plan = py.detach(|| catching_providers(|| project.plan(workflow, &overrides)))?;
        Ok(Plan { inner: plan })
    }

    /// Runs `workflow` and its dependencies, blocking until the run ends, and returns the `Run`.
    ///
    /// - `variables`: as for `plan()`.
    /// - `executor`: `"auto"`, `"local"`, `"docker"` or `"slurm"`.
    /// - `jobs`: run at most this many jobs at once (default: the number of CPUs).
    /// - `keep_going`: after a failure, keep running what does not depend on it.
    /// - `on_event`: called (in this thread, in order) with every `Event` of the run.
    /// - `echo`: write the jobs' output and status changes to `sys.stdout`/`sys.stderr`.
    /// - `no_git`: run the folder as it is. By default the project must be in a Git
    ///   repository: the run records its commit and local changes and runs exactly that tree.
    ///
    /// The GIL is released while jobs run. Ctrl-C (or SIGTERM) stops the run, waits until
    /// nothing it started is left, and raises `KeyboardInterrupt`. Raises `ExecutionError`
    /// when the run does not succeed, `ExecutorUnavailable`, `ConfigError`, `PlanError`.
    #[pyo3(signature = (workflow, variables = None, *, executor = "auto", jobs = None, keep_going = false, on_event = None, echo = true, no_git = false))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        workflow: &str,
        variables: Option<&Bound<'_, PyAny>>,
        executor: &str,
        jobs: Option<i128>,
        keep_going: bool,
        on_event: Option<Bound<'_, PyAny>>,
        echo: bool,
        no_git: bool,
    ) -> PyResult<Run> {
        let request = runs::Request::new(
            workflow,
            overrides(variables)?,
            executor,
            jobs,
            keep_going,
            on_event,
            echo,
        )?
        .with_git(!no_git);
        let engine = self.engine()?;
        runs::run_blocking(py, engine, request)
    }

    /// `run()` for asyncio: `await project.run_async(...)` drives the run on the module's tokio
    /// runtime without blocking the event loop; `on_event` is called on the loop. Cancelling the
    /// awaiting task stops the run; the cancellation goes on once the run has stopped.
    #[pyo3(signature = (workflow, variables = None, *, executor = "auto", jobs = None, keep_going = false, on_event = None, echo = true, no_git = false))]
    #[allow(clippy::too_many_arguments)]
    fn run_async<'py>(
        &self,
        py: Python<'py>,
        workflow: &str,
        variables: Option<&Bound<'py, PyAny>>,
        executor: &str,
        jobs: Option<i128>,
        keep_going: bool,
        on_event: Option<Bound<'py, PyAny>>,
        echo: bool,
        no_git: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = runs::Request::new(
            workflow,
            overrides(variables)?,
            executor,
            jobs,
            keep_going,
            on_event,
            echo,
        )?
        .with_git(!no_git);
        let engine = self.engine()?;
        runs::run_async(py, engine, request)
    }

    /// Runs again what did not succeed in run `name` (keeping what did), as `run()` does.
    #[pyo3(signature = (name, *, jobs = None, keep_going = false, on_event = None, echo = true))]
    fn resume(
        &self,
        py: Python<'_>,
        name: &str,
        jobs: Option<i128>,
        keep_going: bool,
        on_event: Option<Bound<'_, PyAny>>,
        echo: bool,
    ) -> PyResult<Run> {
        let engine = self.engine()?;
        runs::resume_blocking(py, engine, name, jobs, keep_going, on_event, echo)
    }

    /// The project's runs, newest first: unfinished ones and those of the last day, or all.
    #[pyo3(signature = (*, all = false))]
    fn runs(&self, py: Python<'_>, all: bool) -> PyResult<Vec<Run>> {
        let engine = self.engine()?;
        runs::list(py, &engine, all)
    }

    /// The run called `name`.
    fn get_run(&self, py: Python<'_>, name: &str) -> PyResult<Run> {
        let engine = self.engine()?;
        Run::load(py, engine, name)
    }

    /// Every tag, with the name of the run it is on: `{tag: run_name}`.
    fn tags(&self, py: Python<'_>) -> PyResult<BTreeMap<String, String>> {
        let engine = self.engine()?;
        let tags = py.detach(|| engine.store().tags().map_err(Failure::from))?;
        Ok(tags.into_iter().map(|(tag, run, _)| (tag, run)).collect())
    }

    /// Removes `tag` from the run that has it; returns that run's name.
    fn untag(&self, py: Python<'_>, tag: &str) -> PyResult<String> {
        let engine = self.engine()?;
        Ok(py.detach(|| engine.store().untag(tag).map_err(Failure::from))?)
    }

    /// Deletes every finished run that has no tag (but those whose artifacts a kept run
    /// reuses); returns their names.
    fn prune(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let engine = self.engine()?;
        Ok(py.detach(|| engine.prune().map_err(Failure::from))?)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Project(path={}, workflows={})",
            r(py, self.root.display().to_string()),
            self.snapshot().workflows().len()
        )
    }
}

/// The JSON Schema of `.dstack/workflows.yaml`, as a dict.
#[pyfunction]
pub(crate) fn schema(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    json_to_py(py, &dstack_core::schema::workflows_schema())
}

/// Turns a list of Python jobs into library jobs (used by providers).
pub(crate) fn jobs_from_py(value: &Bound<'_, PyAny>) -> PyResult<Vec<dstack_core::JobSpec>> {
    if let Ok(job) = value.cast::<JobSpec>() {
        return Ok(vec![job.get().inner.clone()]);
    }
    let bad = || {
        PyTypeError::new_err(format!(
            "a provider must return a JobSpec or a list of JobSpec, got {}",
            type_name(value)
        ))
    };
    if value.is_instance_of::<pyo3::types::PyString>() || value.is_none() {
        return Err(bad());
    }
    let items = match value.cast::<PyList>() {
        Ok(list) => list.iter().collect::<Vec<_>>(),
        Err(_) => value
            .try_iter()
            .map_err(|_| bad())?
            .collect::<PyResult<Vec<_>>>()?,
    };
    items
        .iter()
        .map(|item| {
            item.cast::<JobSpec>()
                .map(|j| j.get().inner.clone())
                .map_err(|_| {
                    PyTypeError::new_err(format!(
                        "a provider must return JobSpec objects, got {}",
                        type_name(item)
                    ))
                })
        })
        .collect()
}
