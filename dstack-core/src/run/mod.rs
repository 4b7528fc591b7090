//! Running plans: the [`Executor`] trait, the scheduler, the run store, artifacts and tags.
//!
//! A run is created from a [`Plan`](crate::Plan) in the [`RunStore`] (an embedded SQLite
//! database under `<project>/.dstack/state/`), then driven by the [`Scheduler`]: every job
//! starts when its dependencies succeeded, up to `parallelism` at once, through an
//! [`Executor`] (local processes, Docker and Slurm live in `dstack-exec`; embedders may bring
//! their own). An executor that schedules dependencies by itself (a [`DagExecutor`]: Slurm)
//! gets the whole run at once instead. Every change is an [`Event`] sent to any number of
//! subscribers.

pub mod artifacts;
pub mod events;
pub mod executor;
pub mod names;
pub mod scheduler;
pub mod store;
pub mod tree;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use events::{Event, Subscriber};
pub use executor::{
    Capabilities, DagExecutor, DagJob, DagRequest, DagRun, Executor, ExecutorError, FailureReason,
    Input, JobOutcome, JobRequest, Recovery, Reporter, Stream,
};
pub use scheduler::{LogRecord, RunError, RunOptions, RunSummary, Scheduler, parse_log};
pub use store::{JobRecord, JobUpdate, NewRun, RunRecord, RunStore, StoreError, default_state_dir};

/// The state of a run, with the original dstack's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Created, not started yet.
    Submitted,
    /// At least one job is running or queued.
    Running,
    /// Every job succeeded (or was reused from a tagged run).
    Done,
    /// A job failed.
    Failed,
    /// A stop was asked for; jobs are being stopped.
    Stopping,
    /// Stopped by the user (Ctrl-C, SIGTERM, `dstack stop`): artifacts of finished jobs kept.
    Stopped,
    /// An abort was asked for (`dstack stop --abort`); jobs are being stopped.
    Aborting,
    /// Stopped without saving artifacts (`dstack stop --abort`).
    Aborted,
}

/// The state of one job of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for its dependencies or a free slot.
    Submitted,
    /// Its inputs (dependencies' artifacts) are being handed over.
    Downloading,
    /// Running.
    Running,
    /// Its artifacts are being saved.
    Uploading,
    /// Succeeded, artifacts saved.
    Done,
    /// Failed (exit code, timeout, out of memory, executor lost...).
    Failed,
    /// Not run because a dependency failed or the run stopped first.
    Skipped,
    /// Stopped while running.
    Stopped,
    /// Stopped while running, artifacts not saved.
    Aborted,
    /// Not run: the artifacts of a tagged run's job were reused (`depends-on: name:tag`).
    Reused,
}

macro_rules! status_strings {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The lowercase name used in the store, the CLI and JSON.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),* }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($ty::$variant),)*
                    other => Err(format!("unknown status `{other}`")),
                }
            }
        }
    };
}

status_strings!(RunStatus {
    Submitted => "submitted",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Stopping => "stopping",
    Stopped => "stopped",
    Aborting => "aborting",
    Aborted => "aborted",
});

status_strings!(JobStatus {
    Submitted => "submitted",
    Downloading => "downloading",
    Running => "running",
    Uploading => "uploading",
    Done => "done",
    Failed => "failed",
    Skipped => "skipped",
    Stopped => "stopped",
    Aborted => "aborted",
    Reused => "reused",
});

impl RunStatus {
    /// Whether the run has ended.
    #[must_use]
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Done | RunStatus::Failed | RunStatus::Stopped | RunStatus::Aborted
        )
    }
}

impl JobStatus {
    /// Whether the job has ended.
    #[must_use]
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Done
                | JobStatus::Failed
                | JobStatus::Skipped
                | JobStatus::Stopped
                | JobStatus::Aborted
                | JobStatus::Reused
        )
    }

    /// Whether dependents may use its artifacts.
    #[must_use]
    pub fn succeeded(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Reused)
    }
}

/// Whether process `pid` exists on this machine (the driver of a run, say).
#[must_use]
pub fn process_alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
