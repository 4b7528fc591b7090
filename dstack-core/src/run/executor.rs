//! The [`Executor`] trait: what the scheduler needs from a backend that runs jobs.
//!
//! An executor receives a fully resolved [`JobRequest`] (the job, its working tree on the
//! host, the artifacts of its dependencies to mount or link, its artifact folders), reports
//! through a [`Reporter`] (started, log lines with stdout and stderr kept apart), and returns a
//! [`JobOutcome`]. It must stop the job promptly when the cancellation token fires, leaving no
//! process or container behind. Implementations live in `dstack-exec`; embedders may write
//! their own.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::plan::JobSpec;
use crate::resources::format_bytes;

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
}
