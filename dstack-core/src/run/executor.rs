//! The [`Executor`] trait: what the scheduler needs from a backend that runs jobs.
//!
//! An executor receives a fully resolved [`JobRequest`] (the job, its working tree on the
//! host, the artifacts of its dependencies to mount or link, its artifact folders), reports
//! through a [`Reporter`] (started, log lines with stdout and stderr kept apart), and returns a
//! [`JobOutcome`]. It must stop the job promptly when the cancellation token fires, leaving no
//! process or container behind. Implementations live in `dstack-exec`; embedders may write
//! their own.
//!
//! A batch scheduler (Slurm) can do more: take a whole run at once and start each job when its
//! dependencies succeeded by itself, so the run proceeds while no driver watches. Such an
//! executor also implements [`DagExecutor`] and says so through [`Executor::as_dag`]; the
//! scheduler then hands it every job up front instead of one job at a time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::plan::JobSpec;
use crate::resources::format_bytes;
use crate::run::tree::ProjectFiles;

/// What an executor can honour. The scheduler refuses a plan that needs more, before anything
/// starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[allow(clippy::struct_excessive_bools)]
pub struct Capabilities {
    /// Runs jobs inside their `image`.
    pub images: bool,
    /// Gives jobs GPUs.
    pub gpus: bool,
    /// Publishes `ports`.
    pub ports: bool,
    /// Enforces `cpu` and `memory` limits.
    pub limits: bool,
    /// Runs `curl` jobs (downloads).
    pub downloads: bool,
    /// Runs jobs on the host's images anyway, with a warning (the local executor when images
    /// cannot be honoured and the user asked for it).
    pub ignores_images: bool,
}

/// An artifact folder of a dependency, to make visible to the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The job that produced it.
    pub from_job: String,
    /// Where it is stored on the host.
    pub source: PathBuf,
    /// Where the job expects it, relative to its working directory.
    pub path: String,
}

/// Everything an executor needs to run one job.
#[derive(Clone, Debug)]
pub struct JobRequest {
    /// The run's name (`cowardly-goose-1`).
    pub run: String,
    /// The job.
    pub job: JobSpec,
    /// The job's tree on the host: a private copy of the project; the job runs in
    /// `tree/working_dir`.
    pub tree: PathBuf,
    /// Dependencies' artifacts to make visible at their relative paths, read-only where the
    /// executor can.
    pub inputs: Vec<Input>,
    /// 1 for the first attempt, 2 for the first retry...
    pub attempt: u32,
}

impl JobRequest {
    /// The job's working directory on the host.
    #[must_use]
    pub fn working_dir(&self) -> PathBuf {
        if self.job.working_dir == "." {
            self.tree.clone()
        } else {
            self.tree.join(&self.job.working_dir)
        }
    }
}

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How an executor reports while a job runs. Calls must be cheap: they write to the log store
/// and notify subscribers.
pub trait Reporter: Send + Sync {
    /// The job started; `executor_id` identifies it to the executor (a process group id, a
    /// container id, a Slurm job id), so `resume` can find what a crashed run left behind.
    fn started(&self, executor_id: &str);
    /// A chunk of output, usually one line with its newline.
    fn log(&self, stream: Stream, bytes: &[u8]);
    /// A note for the user about this job (a warning, a pull progress line).
    fn note(&self, message: &str);
    /// Attempt `next_attempt` follows after `delay`, because the last one failed for `reason`:
    /// for executors that retry jobs by themselves (a [`DagExecutor`] whose jobs retry on the
    /// cluster); the scheduler retries the others.
    fn retrying(&self, _next_attempt: u32, _reason: &FailureReason, _delay: Duration) {}
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FailureReason {
    /// The commands exited with a non-zero code.
    ExitCode {
        /// The code.
        code: i32,
    },
    /// Killed by a signal.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// Killed for using more memory than its limit.
    OutOfMemory {
        /// The limit, when known.
        limit_bytes: Option<u64>,
    },
    /// Ran longer than its `timeout`.
    TimedOut {
        /// The timeout in seconds.
        secs: u64,
    },
    /// The executor lost track of the job (a node died, the engine restarted...).
    ExecutorLost {
        /// What happened.
        detail: String,
    },
    /// A declared artifact was not produced.
    MissingArtifact {
        /// Its path.
        path: String,
    },
    /// Anything else: the job could not be started, its inputs could not be handed over...
    Error {
        /// What happened.
        message: String,
    },
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::ExitCode { code } => write!(f, "exited with code {code}"),
            FailureReason::Signal { signal } => write!(f, "killed by signal {signal}"),
            FailureReason::OutOfMemory {
                limit_bytes: Some(l),
            } => {
                write!(f, "out of memory (limit {})", format_bytes(*l))
            }
            FailureReason::OutOfMemory { limit_bytes: None } => f.write_str("out of memory"),
            FailureReason::TimedOut { secs } => write!(
                f,
                "timed out after {}",
                humantime::format_duration(std::time::Duration::from_secs(*secs))
            ),
            FailureReason::ExecutorLost { detail } => write!(f, "executor lost: {detail}"),
            FailureReason::MissingArtifact { path } => {
                write!(f, "declared artifact `{path}` was not produced")
            }
            FailureReason::Error { message } => f.write_str(message),
        }
    }
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed(FailureReason),
    /// It was stopped through the cancellation token.
    Cancelled,
}

/// An executor that cannot work at all (no Docker engine, no Slurm controller...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExecutorError {
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl ExecutorError {
    /// An error with a message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        ExecutorError {
            message: message.into(),
            help: None,
        }
    }

    /// Adds how to fix it.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A backend that runs jobs.
#[async_trait]
pub trait Executor: Send + Sync + fmt::Debug {
    /// Its name: `local`, `docker`, `slurm`...
    fn name(&self) -> &str;

    /// What it can honour.
    fn capabilities(&self) -> Capabilities;

    /// Called once before a run starts, with every job that will run: check images, the
    /// engine, the cluster. An error here stops the run before any job starts.
    async fn prepare(&self, _jobs: &[JobSpec]) -> Result<(), ExecutorError> {
        Ok(())
    }

    /// Runs one job to its end, reporting through `reporter`. When `cancel` fires, stops it
    /// (and everything it started) and returns [`JobOutcome::Cancelled`].
    async fn run(
        &self,
        request: JobRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> JobOutcome;

    /// Asks for cancelled jobs to be killed now rather than stopped gracefully (a second
    /// Ctrl-C).
    fn hurry(&self) {}

    /// Stops what a crashed driver left running for these jobs (`executor_id`s as reported by
    /// [`Reporter::started`]). Called by `resume` before jobs are run again.
    async fn reap(&self, _executor_ids: &[String]) -> Result<(), ExecutorError> {
        Ok(())
    }

    /// This executor as a [`DagExecutor`], when it schedules dependencies by itself. The
    /// scheduler then hands it whole runs; `None` (the default) means one job at a time
    /// through [`Executor::run`].
    fn as_dag(self: Arc<Self>) -> Option<Arc<dyn DagExecutor>> {
        None
    }
}

/// A run (what is left of it) handed whole to a [`DagExecutor`].
#[derive(Clone, Debug)]
pub struct DagRequest {
    /// The run, and where its files live.
    pub run: DagRun,
    /// The project's files: each job's tree is a fresh copy of them, made when the job starts.
    pub files: Arc<ProjectFiles>,
    /// The jobs, in plan order (every job after the jobs it depends on).
    pub jobs: Vec<DagJob>,
    /// Keep the trees of failed jobs for debugging (successful jobs' trees are removed).
    pub keep_failed_trees: bool,
    /// The delay before a failed job's first retry; it doubles with each retry (at most 5
    /// minutes). Each job's `retries` says how many.
    pub retry_delay: Duration,
}

/// Which run a [`DagExecutor`] call is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DagRun {
    /// The run's name.
    pub name: String,
    /// The run store's folder: the paths of [`DagJob`]s (trees, artifacts) lie under it.
    pub state_dir: PathBuf,
}

impl DagRun {
    /// A run's context.
    #[must_use]
    pub fn new(name: impl Into<String>, state_dir: impl AsRef<Path>) -> Self {
        DagRun {
            name: name.into(),
            state_dir: state_dir.as_ref().to_path_buf(),
        }
    }
}

/// One job of a [`DagRequest`].
#[derive(Clone, Debug)]
pub struct DagJob {
    /// The job. `tree` is where its private tree goes: the executor makes it from the
    /// project's files when the job starts (not before: a run of a thousand jobs does not hold
    /// a thousand copies). `inputs` name where dependencies' artifacts are *once those
    /// succeeded*: the executor hands them over when the job starts, after its dependencies.
    pub request: JobRequest,
    /// Where the job leaves its artifact folders (at their relative paths) when it succeeds,
    /// before its dependents start: its entry in the artifact store.
    pub artifacts_dir: PathBuf,
    /// Jobs of the same request it waits for (their ids; each is earlier in the list).
    pub after: Vec<String>,
    /// Jobs submitted earlier (by a driver that crashed) and still queued or running that it
    /// waits for: their executor ids.
    pub after_submitted: Vec<String>,
}

/// What became of a job that an earlier driver submitted, as [`DagExecutor::recover`] finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Still queued or running, or it ended well while nobody watched: follow it with
    /// [`DagExecutor::attach`] instead of submitting it again.
    Attach,
    /// It failed, was cancelled, or is unknown to the executor; nothing of it runs any more:
    /// submit it again.
    Resubmit,
}

/// An executor that takes whole runs and starts each job after its dependencies by itself (a
/// batch scheduler's native job dependencies): the run goes on while no driver watches it. The
/// scheduler calls, in order:
///
/// 1. [`recover`](DagExecutor::recover) on `resume`, for the jobs an earlier driver submitted;
/// 2. [`submit_dag`](DagExecutor::submit_dag) with every job left to run: they are queued but
///    must not start yet;
/// 3. [`start_dag`](DagExecutor::start_dag) once the store has recorded their executor ids, so
///    a crash never leaves a job running that the store does not know;
/// 4. [`attach`](DagExecutor::attach) for every job, all at once: each follows one job to its
///    end (the executor tracks them in bulk);
/// 5. [`end_dag`](DagExecutor::end_dag) when every job of the run has ended.
///
/// A job's retries and timeout are the executor's to enforce (the time a job waits in the
/// queue is not part of its timeout). Its outcome is only recorded after its dependencies'
/// outcomes; a job whose dependency did not succeed is recorded as skipped, whatever the
/// executor says about it.
#[async_trait]
pub trait DagExecutor: Executor {
    /// Queues the jobs of `dag`, each to start when the jobs it waits for have succeeded, none
    /// before [`DagExecutor::start_dag`]. Returns their executor ids, in order. All or nothing:
    /// on error, nothing stays queued.
    async fn submit_dag(&self, dag: &DagRequest) -> Result<Vec<String>, ExecutorError>;

    /// Lets the jobs `submit_dag` queued start.
    async fn start_dag(&self, run: &DagRun, executor_ids: &[String]) -> Result<(), ExecutorError>;

    /// Finds out, in bulk, what became of jobs an earlier driver submitted (each with its
    /// executor id), one [`Recovery`] per job, in order. Jobs to [`Recovery::Resubmit`] are
    /// stopped first if need be.
    async fn recover(
        &self,
        run: &DagRun,
        jobs: &[(DagJob, String)],
    ) -> Result<Vec<Recovery>, ExecutorError>;

    /// Follows a submitted job to its end: reports its start ([`Reporter::started`] with its
    /// executor id), its output and retries. When `cancel` fires, stops it (queued or running)
    /// and waits until it has stopped. [`JobOutcome::Succeeded`] means its artifacts are in
    /// `job.artifacts_dir`.
    async fn attach(
        &self,
        run: &DagRun,
        job: DagJob,
        executor_id: String,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> JobOutcome;

    /// Every job of the run has ended: removes what the executor kept for it.
    async fn end_dag(&self, _run: &DagRun) {}
}
