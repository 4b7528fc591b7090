//! Runs: driving them (blocking with Ctrl-C checks, or as asyncio awaitables), the `Run`
//! record, its jobs, artifacts, logs, events, stop, tags.
//!
//! Every run is driven on the module's one tokio runtime by `Engine::drive`. A registry of the
//! runs this process drives lets `Run.stop()` cancel them in-process and lets the `atexit`
//! hook stop them before the interpreter exits, so nothing a run started outlives Python.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dstack_core::Overrides;
use dstack_core::run::{
    Event as CoreEvent, JobRecord, JobStatus, RunOptions, RunRecord, RunStatus, RunSummary, Stream,
    Subscriber,
};
use dstack_exec::{Engine, EngineError, ExecutorKind, Submission};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;
use tokio_util::sync::CancellationToken;

use crate::convert::{datetime, json_to_py, r, since_ms};
use crate::errors::{DstackWarning, ExecutionError, Failure, catching_providers};

/// The module's tokio runtime (shared with `pyo3-async-runtimes`).
fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What `run()` / `run_async()` were asked to do, checked before anything is recorded.
#[derive(Debug)]
pub(crate) struct Request {
    workflow: String,
    overrides: Overrides,
    kind: ExecutorKind,
    options: RunOptions,
    on_event: Option<Py<PyAny>>,
    echo: bool,
    git: bool,
}

fn options(jobs: Option<i128>, keep_going: bool) -> PyResult<RunOptions> {
    let mut options = RunOptions {
        keep_going,
        ..RunOptions::default()
    };
    if let Some(jobs) = jobs {
        options.parallelism = crate::convert::bounded("jobs", jobs, 1, i128::from(u32::MAX))?;
    }
    Ok(options)
}

fn callback(on_event: Option<Bound<'_, PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    match on_event.filter(|f| !f.is_none()) {
        Some(f) if f.is_callable() => Ok(Some(f.unbind())),
        Some(f) => Err(PyTypeError::new_err(format!(
            "`on_event` must be callable, got {}",
            crate::convert::type_name(&f)
        ))),
        None => Ok(None),
    }
}

impl Request {
    pub(crate) fn new(
        workflow: &str,
        overrides: Overrides,
        executor: &str,
        jobs: Option<i128>,
        keep_going: bool,
        on_event: Option<Bound<'_, PyAny>>,
        echo: bool,
    ) -> PyResult<Self> {
        let kind = ExecutorKind::from_str(executor).map_err(|e| {
            PyValueError::new_err(match e.help {
                Some(help) => format!("{} ({help})", e.message),
                None => e.message,
            })
        })?;
        Ok(Request {
            workflow: workflow.to_owned(),
            overrides,
            kind,
            options: options(jobs, keep_going)?,
            on_event: callback(on_event)?,
            echo,
            git: true,
        })
    }

    /// Whether the run captures and runs the project's Git state (not `no_git=True`).
    pub(crate) fn with_git(mut self, git: bool) -> Self {
        self.git = git;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The runs this process drives.

/// Set when a driven run has ended.
#[derive(Debug, Default)]
struct Done {
    finished: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn set(&self) {
        *lock(&self.finished) = true;
        self.cv.notify_all();
    }

    /// Waits up to `timeout`; returns whether the run has ended.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = lock(&self.finished);
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |finished| !*finished)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }
}

/// A run driven by this process.
#[derive(Debug, Clone)]
struct Active {
    store: PathBuf,
    name: String,
    cancel: CancellationToken,
    hurry: CancellationToken,
    done: Arc<Done>,
}

static ACTIVE: Mutex<Vec<Active>> = Mutex::new(Vec::new());

fn active(store: &std::path::Path, name: &str) -> Option<Active> {
    lock(&ACTIVE)
        .iter()
        .find(|a| a.store == store && a.name == name)
        .cloned()
}

/// Removes a run from the registry and marks it done when its driving task ends, however it
/// ends.
struct Unregister(Active);

impl Drop for Unregister {
    fn drop(&mut self) {
        lock(&ACTIVE).retain(|a| !Arc::ptr_eq(&a.done, &self.0.done));
        self.0.done.set();
    }
}

/// Starts driving `run` on the runtime; `on_done` receives the result.
fn spawn_drive(
    engine: Engine,
    run: RunRecord,
    options: RunOptions,
    subscribers: Vec<Subscriber>,
    on_done: impl FnOnce(Result<RunSummary, EngineError>) + Send + 'static,
) -> Active {
    let handle = Active {
        store: engine.store().dir().to_path_buf(),
        name: run.name.clone(),
        cancel: CancellationToken::new(),
        hurry: CancellationToken::new(),
        done: Arc::new(Done::default()),
    };
    lock(&ACTIVE).push(handle.clone());
    let task = handle.clone();
    runtime().spawn(async move {
        let unregister = Unregister(task.clone());
        let result = engine
            .drive(&run, &options, subscribers, task.cancel, task.hurry)
            .await;
        // Unregistered before the caller hears of the end, so that it may resume the run.
        drop(unregister);
        on_done(result);
    });
    handle
}

/// Stops every run this process drives and waits for them to clean up (the `atexit` hook).
#[pyfunction]
pub(crate) fn _shutdown(py: Python<'_>) {
    let runs: Vec<Active> = lock(&ACTIVE).clone();
    if runs.is_empty() {
        return;
    }
    py.detach(|| {
        for r in &runs {
            r.cancel.cancel();
        }
        // Jobs get SIGTERM, then SIGKILL after the executor's grace period; hurry after 15 s.
        let deadline = Instant::now() + Duration::from_secs(15);
        for r in &runs {
            let left = deadline.saturating_duration_since(Instant::now());
            if !r.done.wait(left) {
                r.hurry.cancel();
                r.done.wait(Duration::from_secs(10));
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Events.

/// One change of a run, as `on_event` receives it.
#[pyclass(module = "dstack_py", frozen)]
#[derive(Debug, Clone)]
pub struct Event {
    inner: CoreEvent,
    data: serde_json::Value,
}

impl From<&CoreEvent> for Event {
    fn from(e: &CoreEvent) -> Self {
        Event {
            inner: e.clone(),
            data: serde_json::to_value(e).unwrap_or_default(),
        }
    }
}

impl Event {
    fn field(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(serde_json::Value::as_str)
    }
}

#[pymethods]
impl Event {
    /// `"run-started"`, `"job-status"`, `"job-retrying"`, `"log"`, `"note"` or `"run-finished"`.
    #[getter]
    fn kind(&self) -> &str {
        self.field("event").unwrap_or_default()
    }

    /// The run's name.
    #[getter]
    fn run(&self) -> &str {
        self.field("run").unwrap_or_default()
    }

    /// The job's id (`None` for run events).
    #[getter]
    fn job(&self) -> Option<&str> {
        self.field("job")
    }

    /// The new status: the job's for `job-status`, the run's for `run-finished`.
    #[getter]
    fn status(&self) -> Option<&str> {
        self.field("status")
    }

    /// The text of a `log` event (its output) or of a `note`.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.field("text").or_else(|| self.field("message"))
    }

    /// Every field of the event, as a dict (`"event"` holds the kind).
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.data)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let fields = [
            ("kind", Some(self.kind())),
            ("run", Some(self.run())),
            ("job", self.job()),
            ("status", self.status()),
            ("text", self.text()),
        ];
        let shown: Vec<String> = fields
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", r(py, v))))
            .collect();
        format!("Event({})", shown.join(", "))
    }
}

/// Writes events to `sys.stdout` / `sys.stderr` (`echo=True`).
#[derive(Debug)]
struct Echo {
    on: bool,
    multi: bool,
}

impl Echo {
    fn new(on: bool) -> Self {
        Echo { on, multi: false }
    }

    fn write(&mut self, py: Python<'_>, event: &CoreEvent) -> PyResult<()> {
        if !self.on {
            return Ok(());
        }
        let (stream, text) = match event {
            CoreEvent::RunStarted {
                run,
                executor,
                jobs,
                ..
            } => {
                self.multi = jobs.len() > 1;
                let s = if jobs.len() == 1 { "" } else { "s" };
                (
                    "stderr",
                    format!(
                        "run {run}: {} job{s} on executor `{executor}`\n",
                        jobs.len()
                    ),
                )
            }
            CoreEvent::JobStatus {
                job,
                status,
                attempt,
                detail,
                ..
            } => {
                let mut line = format!("{job}: {status}");
                if *attempt > 1 {
                    line.push_str(&format!(" (attempt {attempt})"));
                }
                if let Some(d) = detail {
                    line.push_str(&format!(": {d}"));
                }
                line.push('\n');
                ("stderr", line)
            }
            CoreEvent::JobRetrying {
                job,
                reason,
                next_attempt,
                delay_ms,
                ..
            } => (
                "stderr",
                format!(
                    "{job}: {reason}; attempt {next_attempt} in {:.1} s\n",
                    Duration::from_millis(*delay_ms).as_secs_f64()
                ),
            ),
            CoreEvent::Log {
                job, stream, text, ..
            } => {
                let mut out = if self.multi {
                    format!("{job} | {text}")
                } else {
                    text.clone()
                };
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                let target = match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                (target, out)
            }
            CoreEvent::Note { job, message, .. } => ("stderr", format!("{job}: {message}\n")),
            CoreEvent::RunFinished { run, status } => ("stderr", format!("run {run} {status}\n")),
        };
        py.import("sys")?
            .getattr(stream)?
            .call_method1("write", (text,))?;
        Ok(())
    }
}

/// Echoes an event and calls `on_event` with it.
fn deliver(
    py: Python<'_>,
    event: &Bound<'_, Event>,
    on_event: Option<&Py<PyAny>>,
    echo: &mut Echo,
) -> PyResult<()> {
    echo.write(py, &event.get().inner)?;
    if let Some(f) = on_event {
        f.bind(py).call1((event,))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Driving.

/// Emits a submission's warnings (as `warnings.warn`) and notes (on `sys.stderr` with `echo`).
/// When that raises (warnings turned into errors, say), the run, recorded but not driven, is
/// ended as stopped before the exception goes on: no run is left `submitted` forever.
fn report_submission(
    py: Python<'_>,
    engine: &Engine,
    submission: &Submission,
    echo: bool,
) -> PyResult<()> {
    let reported = warn_and_note(py, submission, echo);
    if reported.is_err() {
        // The caller gets the exception that stopped us, not a store error on top of it.
        let _ = py.detach(|| engine.stop(&submission.run.name, false, Duration::ZERO));
    }
    reported
}

fn warn_and_note(py: Python<'_>, submission: &Submission, echo: bool) -> PyResult<()> {
    let warn = py.import("warnings")?.getattr("warn")?;
    for w in &submission.warnings {
        warn.call1((w.as_str(), py.get_type::<DstackWarning>(), 1))?;
    }
    if echo {
        let stderr = py.import("sys")?.getattr("stderr")?;
        for n in &submission.notes {
            stderr.call_method1("write", (format!("note: {n}\n"),))?;
        }
    }
    Ok(())
}

/// While a blocking run drives on the main thread, SIGTERM stops it as Ctrl-C does (unless the
/// program installed its own handler).
struct SigtermAsInterrupt {
    previous: Option<Py<PyAny>>,
}

impl SigtermAsInterrupt {
    fn install(py: Python<'_>) -> PyResult<Self> {
        let threading = py.import("threading")?;
        let main = threading
            .call_method0("current_thread")?
            .is(&threading.call_method0("main_thread")?);
        if !main {
            return Ok(SigtermAsInterrupt { previous: None });
        }
        let signal = py.import("signal")?;
        let sigterm = signal.getattr("SIGTERM")?;
        let previous = signal.call_method1("getsignal", (&sigterm,))?;
        if !previous.eq(signal.getattr("SIG_DFL")?)? {
            return Ok(SigtermAsInterrupt { previous: None });
        }
        signal.call_method1("signal", (&sigterm, signal.getattr("default_int_handler")?))?;
        Ok(SigtermAsInterrupt {
            previous: Some(previous.unbind()),
        })
    }
}

impl Drop for SigtermAsInterrupt {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            Python::attach(|py| {
                if let Ok(signal) = py.import("signal")
                    && let Ok(sigterm) = signal.getattr("SIGTERM")
                {
                    let _ = signal.call_method1("signal", (sigterm, previous));
                }
            });
        }
    }
}

enum Msg {
    Event(CoreEvent),
    Done(Result<RunSummary, EngineError>),
}

/// Runs `workflow` and blocks until it ends.
pub(crate) fn run_blocking(py: Python<'_>, engine: Engine, req: Request) -> PyResult<Run> {
    let submission = py.detach(|| {
        catching_providers(|| {
            engine
                .clone()
                .with_git(req.git)
                .submit(&req.workflow, &req.overrides, req.kind)
        })
    })?;
    report_submission(py, &engine, &submission, req.echo)?;
    let extra = Extra {
        warnings: submission.warnings,
        notes: submission.notes,
    };
    drive_blocking(
        py,
        engine,
        submission.run,
        extra,
        req.options,
        req.on_event.as_ref(),
        req.echo,
    )
}

/// Resumes run `name` and blocks until it ends.
pub(crate) fn resume_blocking(
    py: Python<'_>,
    engine: Engine,
    name: &str,
    jobs: Option<i128>,
    keep_going: bool,
    on_event: Option<Bound<'_, PyAny>>,
    echo: bool,
) -> PyResult<Run> {
    let options = options(jobs, keep_going)?;
    let on_event = callback(on_event)?;
    let run = py.detach(|| {
        // `Engine::resumable` accepts runs driven by this very process: not ours to resume.
        if active(engine.store().dir(), name).is_some() {
            return Err(Failure::Engine(EngineError::Invalid(format!(
                "run `{name}` is being driven by this process; wait for it or stop it first"
            ))));
        }
        engine.resumable(name).map_err(Failure::from)
    })?;
    drive_blocking(
        py,
        engine,
        run,
        Extra::default(),
        options,
        on_event.as_ref(),
        echo,
    )
}

/// Warnings and notes of the submission, kept on the `Run`.
#[derive(Debug, Default, Clone)]
struct Extra {
    warnings: Vec<String>,
    notes: Vec<String>,
}

fn drive_blocking(
    py: Python<'_>,
    engine: Engine,
    run: RunRecord,
    extra: Extra,
    options: RunOptions,
    on_event: Option<&Py<PyAny>>,
    echo: bool,
) -> PyResult<Run> {
    let (tx, rx) = mpsc::channel::<Msg>();
    // `detach` needs what it borrows to be `Sync`.
    let rx = Mutex::new(rx);
    let events = tx.clone();
    let subscriber: Subscriber = Arc::new(move |e: &CoreEvent| {
        let _ = events.send(Msg::Event(e.clone()));
    });
    let _sigterm = SigtermAsInterrupt::install(py)?;
    let handle = spawn_drive(engine.clone(), run, options, vec![subscriber], move |r| {
        let _ = tx.send(Msg::Done(r));
    });
    let mut echo = Echo::new(echo);
    let mut interrupted: Option<PyErr> = None;
    let mut callback_error: Option<PyErr> = None;
    let interrupt = |e: PyErr, interrupted: &mut Option<PyErr>| {
        if handle.cancel.is_cancelled() {
            handle.hurry.cancel();
        } else {
            handle.cancel.cancel();
        }
        if interrupted.is_none() {
            *interrupted = Some(e);
        }
    };
    let result = 'drive: loop {
        let first = py.detach(|| lock(&rx).recv_timeout(Duration::from_millis(50)));
        let mut next = match first {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                break Err(EngineError::Invalid(
                    "the run's driver stopped unexpectedly".to_owned(),
                ));
            }
        };
        while let Some(msg) = next.take() {
            match msg {
                Msg::Done(r) => break 'drive r,
                Msg::Event(e) if callback_error.is_none() => {
                    let delivered = Bound::new(py, Event::from(&e))
                        .and_then(|ev| deliver(py, &ev, on_event, &mut echo));
                    if let Err(err) = delivered {
                        // Stop the run; the callback's exception is raised once it has ended.
                        handle.cancel.cancel();
                        callback_error = Some(err);
                    }
                }
                Msg::Event(_) => {}
            }
            next = lock(&rx).try_recv().ok();
        }
        if let Err(e) = py.check_signals() {
            interrupt(e, &mut interrupted);
        }
    };
    if let Some(e) = interrupted {
        return Err(e);
    }
    if let Some(e) = callback_error {
        return Err(e);
    }
    let summary = result.map_err(Failure::from)?;
    finish(py, engine, summary, extra)
}

/// The `Run` of a run that ended, or `ExecutionError` when it did not succeed.
fn finish(py: Python<'_>, engine: Engine, summary: RunSummary, extra: Extra) -> PyResult<Run> {
    let succeeded = summary.succeeded();
    let run = Run::new(engine, summary.run, summary.jobs, extra);
    if succeeded {
        return Ok(run);
    }
    let (message, failed) = {
        let snapshot = lock(&run.snapshot);
        let failed: Vec<RunJob> = snapshot
            .jobs
            .iter()
            .filter(|j| j.status == JobStatus::Failed)
            .map(|j| RunJob::new(&run.engine, &snapshot.run, j))
            .collect();
        let mut message = format!("run `{}` {}", snapshot.run.name, snapshot.run.status);
        for j in snapshot
            .jobs
            .iter()
            .filter(|j| j.status == JobStatus::Failed)
        {
            message.push_str(&format!(
                "\n  job `{}` failed: {}",
                j.job_id,
                j.reason.as_deref().unwrap_or("no reason recorded")
            ));
        }
        if failed.is_empty()
            && let Some(m) = &snapshot.run.message
        {
            message.push_str(&format!(": {m}"));
        }
        (message, failed)
    };
    let err = ExecutionError::new_err(message);
    let value = err.value(py);
    value.setattr("run", Py::new(py, run)?)?;
    let failed = failed
        .into_iter()
        .map(|j| Py::new(py, j))
        .collect::<PyResult<Vec<_>>>()?;
    value.setattr("failed_jobs", PyList::new(py, failed)?)?;
    Err(err)
}

/// Calls `on_event` on the event loop for a run driven by `run_async`, and remembers the first
/// exception it raises (which stops the run).
#[pyclass(frozen)]
struct Dispatcher {
    on_event: Option<Py<PyAny>>,
    echo: Mutex<Echo>,
    cancel: CancellationToken,
    error: Mutex<Option<PyErr>>,
}

#[pymethods]
impl Dispatcher {
    fn __call__(&self, py: Python<'_>, event: &Bound<'_, Event>) {
        if lock(&self.error).is_some() {
            return;
        }
        let result = deliver(py, event, self.on_event.as_ref(), &mut lock(&self.echo));
        if let Err(e) = result {
            self.cancel.cancel();
            *lock(&self.error) = Some(e);
        }
    }
}

/// Called on the event loop after every event of a run has been dispatched there.
#[pyclass(frozen)]
struct Barrier {
    tx: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[pymethods]
impl Barrier {
    fn __call__(&self) {
        if let Some(tx) = lock(&self.tx).take() {
            let _ = tx.send(());
        }
    }
}

/// Cancels the run when the awaiting asyncio task is cancelled (the future is dropped).
struct CancelOnDrop {
    cancel: CancellationToken,
    abandoned: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.abandoned.store(true, Ordering::SeqCst);
            self.cancel.cancel();
        }
    }
}

/// Schedules `Barrier` on the loop and waits for it; returns at once when the loop is gone.
async fn barrier(event_loop: &Py<PyAny>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let scheduled = Python::attach(|py| {
        let b = Py::new(
            py,
            Barrier {
                tx: Mutex::new(Some(tx)),
            },
        )?;
        event_loop
            .bind(py)
            .call_method1("call_soon_threadsafe", (b,))
            .map(|_| ())
    });
    if scheduled.is_ok() {
        let _ = rx.await;
    }
}

/// `async def _drive(start): return await start()`: makes `run_async()` return a real
/// coroutine (accepted by `asyncio.create_task`) that starts the run only when it is awaited.
static DRIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Starts a run on its first call, from inside the coroutine (on the event loop); `stop()`
/// stops it.
#[pyclass(frozen)]
struct Starter {
    request: Mutex<Option<(Engine, Request)>>,
    cancel: CancellationToken,
}

#[pymethods]
impl Starter {
    fn __call__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some((engine, request)) = lock(&self.request).take() else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this run_async() coroutine has already been awaited",
            ));
        };
        start_async(py, engine, request, self.cancel.clone())
    }

    fn stop(&self) {
        self.cancel.cancel();
    }
}

/// `run_async`: a coroutine that submits and drives the run on the runtime when awaited.
pub(crate) fn run_async<'py>(
    py: Python<'py>,
    engine: Engine,
    req: Request,
) -> PyResult<Bound<'py, PyAny>> {
    // The future that drives the run is shielded from the task's cancellation: a cancelled
    // task stops the run and waits until it has stopped (as `run()` does on Ctrl-C) before
    // the cancellation goes on.
    let drive = DRIVE.get_or_try_init(py, || {
        let module = PyModule::from_code(
            py,
            c"import asyncio

async def _drive(start):
    future = start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        start.stop()
        try:
            await future
        except BaseException:
            pass
        raise
",
            c"<dstack_py._core>",
            c"dstack_py._drive",
        )?;
        Ok::<_, PyErr>(module.getattr("_drive")?.unbind())
    })?;
    let starter = Py::new(
        py,
        Starter {
            request: Mutex::new(Some((engine, req))),
            cancel: CancellationToken::new(),
        },
    )?;
    drive.bind(py).call1((starter,))
}

/// Submits the run and returns the asyncio future that drives it.
fn start_async<'py>(
    py: Python<'py>,
    engine: Engine,
    req: Request,
    cancel: CancellationToken,
) -> PyResult<Bound<'py, PyAny>> {
    let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
    let event_loop: Py<PyAny> = locals.event_loop(py).unbind();
    let dispatcher = Py::new(
        py,
        Dispatcher {
            on_event: req.on_event,
            echo: Mutex::new(Echo::new(req.echo)),
            cancel: cancel.clone(),
            error: Mutex::new(None),
        },
    )?;
    let echo = req.echo;
    let (workflow, overrides, kind, options, git) =
        (req.workflow, req.overrides, req.kind, req.options, req.git);
    let fut = async move {
        let abandoned = Arc::new(AtomicBool::new(false));
        let mut guard = CancelOnDrop {
            cancel: cancel.clone(),
            abandoned: abandoned.clone(),
            armed: true,
        };
        let submitting = engine.clone().with_git(git);
        let submission = tokio::task::spawn_blocking(move || {
            let submission = catching_providers(|| submitting.submit(&workflow, &overrides, kind))?;
            Python::attach(|py| report_submission(py, &submitting, &submission, echo))?;
            Ok::<_, Failure>(submission)
        })
        .await
        .map_err(|e| Failure::Engine(EngineError::Invalid(e.to_string())))??;
        let extra = Extra {
            warnings: submission.warnings,
            notes: submission.notes,
        };

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<CoreEvent>();
        let subscriber: Subscriber = Arc::new(move |e: &CoreEvent| {
            let _ = tx.send(e.clone());
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let handle = spawn_drive(
            engine.clone(),
            submission.run,
            options,
            vec![subscriber],
            move |r| {
                let _ = done_tx.send(r);
            },
        );
        // Cancelling the awaiting task, or an exception in `on_event`, stops the run.
        let run_cancel = handle.cancel.clone();
        let watcher = runtime().spawn({
            let cancel = cancel.clone();
            async move {
                cancel.cancelled().await;
                run_cancel.cancel();
            }
        });
        let forward = {
            let event_loop = Python::attach(|py| event_loop.clone_ref(py));
            let dispatcher = Python::attach(|py| dispatcher.clone_ref(py));
            let abandoned = abandoned.clone();
            tokio::task::spawn_blocking(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while let Ok(e) = rx.try_recv() {
                        batch.push(e);
                    }
                    if abandoned.load(Ordering::SeqCst) {
                        continue;
                    }
                    Python::attach(|py| {
                        for e in &batch {
                            let scheduled = Py::new(py, Event::from(e)).and_then(|ev| {
                                event_loop.bind(py).call_method1(
                                    "call_soon_threadsafe",
                                    (dispatcher.clone_ref(py), ev),
                                )
                            });
                            if scheduled.is_err() {
                                // The loop is closed: nobody is listening any more.
                                abandoned.store(true, Ordering::SeqCst);
                                break;
                            }
                        }
                    });
                }
            })
        };
        let result = done_rx.await.unwrap_or_else(|_| {
            Err(EngineError::Invalid(
                "the run's driver stopped unexpectedly".to_owned(),
            ))
        });
        let _ = forward.await;
        watcher.abort();
        barrier(&event_loop).await;
        guard.armed = false;
        let error = lock(&dispatcher.get().error).take();
        if let Some(e) = error {
            return Err(e);
        }
        let summary = result.map_err(Failure::from)?;
        Python::attach(|py| finish(py, engine, summary, extra))
    };
    pyo3_async_runtimes::tokio::future_into_py_with_locals(py, locals, fut)
}

// ---------------------------------------------------------------------------------------------
// Records.

/// A job of a run, as recorded.
#[pyclass(module = "dstack_py", frozen)]
#[derive(Debug, Clone)]
pub struct RunJob {
    record: JobRecord,
    log_path: PathBuf,
}

impl RunJob {
    fn new(engine: &Engine, run: &RunRecord, job: &JobRecord) -> Self {
        RunJob {
            record: job.clone(),
            log_path: engine.store().log_path(&run.name, &job.job_id),
        }
    }
}

#[pymethods]
impl RunJob {
    /// The job's id in the plan.
    #[getter]
    fn id(&self) -> &str {
        &self.record.job_id
    }

    /// Its workflow.
    #[getter]
    fn workflow(&self) -> &str {
        &self.record.workflow
    }

    /// `submitted`, `downloading`, `running`, `uploading`, `done`, `failed`, `skipped`,
    /// `stopped`, `aborted` or `reused`.
    #[getter]
    fn status(&self) -> &'static str {
        self.record.status.as_str()
    }

    /// Its exit code, when it ran to the end.
    #[getter]
    fn exit_code(&self) -> Option<i32> {
        self.record.exit_code
    }

    /// Why it failed or was skipped.
    #[getter]
    fn reason(&self) -> Option<&str> {
        self.record.reason.as_deref()
    }

    /// How many attempts it took.
    #[getter]
    fn attempts(&self) -> u32 {
        self.record.attempts
    }

    /// `run/job` whose artifacts it reused (`depends-on: name:tag`).
    #[getter]
    fn reused_from(&self) -> Option<&str> {
        self.record.reused_from.as_deref()
    }

    /// When it started.
    #[getter]
    fn started_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        datetime(py, self.record.started_at)
    }

    /// When it ended.
    #[getter]
    fn finished_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        datetime(py, self.record.finished_at)
    }

    /// Its log file (`o|e MILLIS TEXT` lines; read it with `Run.logs()`).
    #[getter]
    fn log_path(&self) -> PathBuf {
        self.log_path.clone()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "RunJob(id={}, status={}, exit_code={})",
            r(py, &self.record.job_id),
            r(py, self.record.status.as_str()),
            r(py, self.record.exit_code)
        )
    }
}

/// An artifact folder a job saved.
#[pyclass(module = "dstack_py", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The job that produced it.
    pub job: String,
    /// Its path relative to the job's working directory.
    pub path: String,
    /// Where it is stored.
    pub stored: PathBuf,
    /// How many files it holds.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

#[pymethods]
impl Artifact {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Artifact(job={}, path={}, files={}, bytes={})",
            r(py, &self.job),
            r(py, &self.path),
            self.files,
            self.bytes
        )
    }
}

/// One line of a job's output.
#[pyclass(module = "dstack_py", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct LogLine {
    /// The job.
    pub job: String,
    /// `"stdout"` or `"stderr"`.
    pub stream: &'static str,
    /// The text, without its newline (invalid UTF-8 replaced).
    pub text: String,
    /// When it was written, in milliseconds since the epoch.
    pub at_ms: i64,
}

impl From<&dstack_exec::LogLine> for LogLine {
    fn from(l: &dstack_exec::LogLine) -> Self {
        let text = String::from_utf8_lossy(&l.record.line);
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        LogLine {
            job: l.job.clone(),
            stream: match l.record.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            },
            text: text.to_owned(),
            at_ms: l.record.at_ms,
        }
    }
}

#[pymethods]
impl LogLine {
    /// When it was written.
    #[getter]
    fn time<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        datetime(py, Some(self.at_ms))
    }

    fn __str__(&self) -> &str {
        &self.text
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "LogLine(job={}, stream={}, text={})",
            r(py, &self.job),
            r(py, self.stream),
            r(py, &self.text)
        )
    }
}

enum Lines {
    Fixed(VecDeque<LogLine>),
    Follow {
        rx: Arc<Mutex<mpsc::Receiver<Result<LogLine, EngineError>>>>,
        cancel: CancellationToken,
    },
}

/// An iterator over a run's log lines (`Run.logs()`).
#[pyclass(module = "dstack_py", frozen)]
pub struct LogIterator {
    lines: Mutex<Lines>,
}

impl std::fmt::Debug for LogIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIterator").finish_non_exhaustive()
    }
}

impl Drop for LogIterator {
    fn drop(&mut self) {
        if let Lines::Follow { cancel, .. } = &*lock(&self.lines) {
            cancel.cancel();
        }
    }
}

#[pymethods]
impl LogIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<LogLine>> {
        let rx = match &mut *lock(&self.lines) {
            Lines::Fixed(queue) => return Ok(queue.pop_front()),
            Lines::Follow { rx, .. } => rx.clone(),
        };
        loop {
            // The receiver's lock is only taken without the GIL: another thread may hold it
            // while it waits for lines.
            match py.detach(|| lock(&rx).recv_timeout(Duration::from_millis(100))) {
                Ok(Ok(line)) => return Ok(Some(line)),
                Ok(Err(e)) => return Err(Failure::from(e).into()),
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}

/// What a `Run` shows: the records as last read.
#[derive(Debug)]
struct Snapshot {
    run: RunRecord,
    jobs: Vec<JobRecord>,
}

/// A run: its status, jobs, artifacts and logs, and what can be done with it.
///
/// Attributes show the run as it was when the object was made or last `refresh()`ed.
#[pyclass(module = "dstack_py", frozen)]
#[derive(Debug)]
pub struct Run {
    engine: Engine,
    snapshot: Mutex<Snapshot>,
    extra: Extra,
}

impl Run {
    fn new(engine: Engine, run: RunRecord, jobs: Vec<JobRecord>, extra: Extra) -> Self {
        Run {
            engine,
            snapshot: Mutex::new(Snapshot { run, jobs }),
            extra,
        }
    }

    /// Reads run `name` from the store.
    pub(crate) fn load(py: Python<'_>, engine: Engine, name: &str) -> PyResult<Run> {
        let (run, jobs) = py.detach(|| {
            let run = engine.run(name)?;
            let jobs = engine.store().jobs(&run)?;
            Ok::<_, Failure>((run, jobs))
        })?;
        Ok(Run::new(engine, run, jobs, Extra::default()))
    }

    fn name_(&self) -> String {
        lock(&self.snapshot).run.name.clone()
    }

    fn with<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&lock(&self.snapshot))
    }
}

/// The runs of a project.
pub(crate) fn list(py: Python<'_>, engine: &Engine, all: bool) -> PyResult<Vec<Run>> {
    let runs = py.detach(|| {
        let runs = engine.store().runs(all)?;
        runs.into_iter()
            .map(|r| {
                let jobs = engine.store().jobs(&r)?;
                Ok((r, jobs))
            })
            .collect::<Result<Vec<_>, Failure>>()
    })?;
    Ok(runs
        .into_iter()
        .map(|(r, jobs)| Run::new(engine.clone(), r, jobs, Extra::default()))
        .collect())
}

#[pymethods]
impl Run {
    /// Its name (`cowardly-goose-1`).
    #[getter]
    fn name(&self) -> String {
        self.name_()
    }

    /// The workflow asked for.
    #[getter]
    fn workflow(&self) -> String {
        self.with(|s| s.run.workflow.clone())
    }

    /// `submitted`, `running`, `done`, `failed`, `stopping`, `stopped`, `aborting` or `aborted`.
    #[getter]
    fn status(&self) -> &'static str {
        self.with(|s| s.run.status.as_str())
    }

    /// Whether every job succeeded.
    #[getter]
    fn succeeded(&self) -> bool {
        self.with(|s| s.run.status == RunStatus::Done)
    }

    /// Whether the run has ended.
    #[getter]
    fn finished(&self) -> bool {
        self.with(|s| s.run.status.is_finished())
    }

    /// Whether the run is unfinished but no process drives it any more (`resume()` finishes
    /// it, `stop()` ends it).
    #[getter]
    fn orphaned(&self) -> bool {
        self.with(|s| s.run.orphaned)
    }

    /// The executor's name.
    #[getter]
    fn executor(&self) -> String {
        self.with(|s| s.run.executor.clone())
    }

    /// The variables given when it was submitted.
    #[getter]
    fn variables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.with(|s| s.run.variables.clone());
        json_to_py(py, &v)
    }

    /// The Git state the run captured (`commit`, `head`, `remote`, `dirty` — whether there
    /// were local changes —, `counts`, `bytes`, `describe`), or `None` for a run made with
    /// `no_git=True`.
    #[getter]
    fn git<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let v = self.with(|s| s.run.git.clone());
        v.map(|v| json_to_py(py, &v)).transpose()
    }

    /// Why it ended the way it did.
    #[getter]
    fn message(&self) -> Option<String> {
        self.with(|s| s.run.message.clone())
    }

    /// When it was submitted.
    #[getter]
    fn created_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let ms = self.with(|s| s.run.created_at);
        datetime(py, Some(ms))
    }

    /// When it started running.
    #[getter]
    fn started_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let ms = self.with(|s| s.run.started_at);
        datetime(py, ms)
    }

    /// When it ended.
    #[getter]
    fn finished_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let ms = self.with(|s| s.run.finished_at);
        datetime(py, ms)
    }

    /// The tags on it.
    #[getter]
    fn tags(&self) -> Vec<String> {
        self.with(|s| s.run.tags.clone())
    }

    /// Its jobs, in plan order.
    #[getter]
    fn jobs(&self) -> Vec<RunJob> {
        self.with(|s| {
            s.jobs
                .iter()
                .map(|j| RunJob::new(&self.engine, &s.run, j))
                .collect()
        })
    }

    /// Its jobs that failed.
    #[getter]
    fn failed_jobs(&self) -> Vec<RunJob> {
        self.with(|s| {
            s.jobs
                .iter()
                .filter(|j| j.status == JobStatus::Failed)
                .map(|j| RunJob::new(&self.engine, &s.run, j))
                .collect()
        })
    }

    /// Warnings about the plan on its executor (images run on the host...), when this object
    /// came from `run()`.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.extra.warnings.clone()
    }

    /// Notes: how variables were matched, which executor was chosen.
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.extra.notes.clone()
    }

    /// The artifact folders its jobs saved.
    #[getter]
    fn artifacts(&self, py: Python<'_>) -> PyResult<Vec<Artifact>> {
        let name = self.name_();
        let list = py.detach(|| self.engine.artifacts(&name).map_err(Failure::from))?;
        Ok(list
            .into_iter()
            .map(|a| Artifact {
                job: a.job,
                path: a.path,
                stored: a.stored,
                files: a.files,
                bytes: a.bytes,
            })
            .collect())
    }

    /// Copies the artifacts into `dest/JOB/PATH` (`dest` must not hold them yet); returns the
    /// folders written.
    fn export_artifacts(&self, py: Python<'_>, dest: PathBuf) -> PyResult<Vec<PathBuf>> {
        let name = self.name_();
        Ok(py.detach(|| {
            self.engine
                .export_artifacts(&name, &dest)
                .map_err(Failure::from)
        })?)
    }

    /// Reads the run and its jobs from the store again.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let name = self.name_();
        let (run, jobs) = py.detach(|| {
            let run = self.engine.run(&name)?;
            let jobs = self.engine.store().jobs(&run)?;
            Ok::<_, Failure>((run, jobs))
        })?;
        *lock(&self.snapshot) = Snapshot { run, jobs };
        Ok(())
    }

    /// The jobs' output: an iterator of `LogLine`s in time order, of one workflow's jobs when
    /// `workflow` is given, written at or after `since` (a `datetime`, or a `timedelta` back
    /// from now). With `follow`, waits for new lines until the run ends (Ctrl-C stops waiting).
    #[pyo3(signature = (workflow = None, *, follow = false, since = None))]
    fn logs(
        &self,
        py: Python<'_>,
        workflow: Option<String>,
        follow: bool,
        since: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LogIterator> {
        let since = since_ms(since)?;
        let name = self.name_();
        if !follow {
            let lines = py.detach(|| {
                self.engine
                    .logs(&name, workflow.as_deref(), since)
                    .map_err(Failure::from)
            })?;
            return Ok(LogIterator {
                lines: Mutex::new(Lines::Fixed(lines.iter().map(LogLine::from).collect())),
            });
        }
        // Check the run and workflow now, so that mistakes raise here rather than on `next()`.
        py.detach(|| {
            self.engine
                .logs(&name, workflow.as_deref(), Some(i64::MAX))
                .map_err(Failure::from)
        })?;
        let (tx, rx) = mpsc::channel();
        let cancel = CancellationToken::new();
        let engine = self.engine.clone();
        let stop = cancel.clone();
        std::thread::Builder::new()
            .name(format!("dstack-logs-{name}"))
            .spawn(move || {
                let sent = tx.clone();
                let result = engine.follow_logs(&name, workflow.as_deref(), &stop, |line| {
                    if since.is_none_or(|s| line.record.at_ms >= s)
                        && sent.send(Ok(LogLine::from(line))).is_err()
                    {
                        stop.cancel();
                    }
                });
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| PyValueError::new_err(format!("cannot follow the logs: {e}")))?;
        Ok(LogIterator {
            lines: Mutex::new(Lines::Follow {
                rx: Arc::new(Mutex::new(rx)),
                cancel,
            }),
        })
    }

    /// Stops the run: running jobs get SIGTERM (SIGKILL after a grace period) and the run ends
    /// `stopped` (`aborted` with `abort`, artifacts not saved). Waits up to `wait` seconds.
    ///
    /// Raises `DstackError` when the run has already ended.
    #[pyo3(signature = (*, abort = false, wait = 60.0))]
    fn stop(&self, py: Python<'_>, abort: bool, wait: f64) -> PyResult<()> {
        if !wait.is_finite() || wait < 0.0 {
            return Err(PyValueError::new_err(
                "`wait` must be a non-negative number of seconds",
            ));
        }
        let wait = Duration::from_secs_f64(wait);
        let name = self.name_();
        let store = self.engine.store().dir().to_path_buf();
        py.detach(|| -> Result<(), Failure> {
            match active(&store, &name) {
                // Driven by this process: `Engine::stop` would signal the driver, i.e. us.
                Some(a) => {
                    let run = self.engine.run(&name)?;
                    if run.status.is_finished() {
                        return Err(Failure::Engine(EngineError::Invalid(format!(
                            "run `{}` has already ended ({})",
                            run.name, run.status
                        ))));
                    }
                    let (status, why) = if abort {
                        (RunStatus::Aborting, "aborted by the user")
                    } else {
                        (RunStatus::Stopping, "stopped by the user")
                    };
                    self.engine
                        .store()
                        .set_run_status(&run, status, Some(why))?;
                    a.cancel.cancel();
                    a.done.wait(wait);
                }
                None => {
                    self.engine.stop(&name, abort, wait)?;
                }
            }
            Ok(())
        })?;
        self.refresh(py)
    }

    /// Puts `tag` on this finished run (moving it from another run if needed);
    /// `depends-on: WORKFLOW:TAG` then reuses its artifacts.
    fn tag(&self, py: Python<'_>, tag: &str) -> PyResult<()> {
        let name = self.name_();
        py.detach(|| {
            let run = self.engine.run(&name)?;
            self.engine
                .store()
                .tag(&run, tag)
                .map(|_| ())
                .map_err(Failure::from)
        })?;
        self.refresh(py)
    }

    /// Removes `tag` from this run.
    ///
    /// Raises `DstackError` when this run does not have it.
    fn untag(&self, py: Python<'_>, tag: &str) -> PyResult<()> {
        let name = self.name_();
        py.detach(|| {
            let tagged = self.engine.store().tagged(tag)?;
            if tagged.name != name {
                return Err(Failure::Engine(EngineError::Invalid(format!(
                    "tag `{tag}` is on run `{}`, not on `{name}`",
                    tagged.name
                ))));
            }
            self.engine.store().untag(tag)?;
            Ok(())
        })?;
        self.refresh(py)
    }

    /// Runs again what did not succeed (keeping what did), blocking like `Project.run()`;
    /// returns the run as it ended.
    #[pyo3(signature = (*, jobs = None, keep_going = false, on_event = None, echo = true))]
    fn resume(
        &self,
        py: Python<'_>,
        jobs: Option<i128>,
        keep_going: bool,
        on_event: Option<Bound<'_, PyAny>>,
        echo: bool,
    ) -> PyResult<Run> {
        let name = self.name_();
        resume_blocking(
            py,
            self.engine.clone(),
            &name,
            jobs,
            keep_going,
            on_event,
            echo,
        )
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.with(|s| {
            format!(
                "Run(name={}, workflow={}, status={})",
                r(py, &s.run.name),
                r(py, &s.run.workflow),
                r(py, s.run.status.as_str())
            )
        })
    }
}

/// The runs of `project`, newest first: unfinished ones and those of the last day, or all.
#[pyfunction]
#[pyo3(signature = (project, *, all = false))]
pub(crate) fn runs(
    py: Python<'_>,
    project: &Bound<'_, crate::project::Project>,
    all: bool,
) -> PyResult<Vec<Run>> {
    let engine = project.get().engine()?;
    list(py, &engine, all)
}
