//! Events: every change of a run, sent to any number of subscribers (the CLI renders them, the
//! Python bindings forward them).

use std::sync::Arc;

use serde::Serialize;

use super::executor::{FailureReason, Stream};
use super::{JobStatus, RunStatus};

/// One change of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The run starts (or resumes) with these jobs on this executor.
    RunStarted {
        /// The run's name.
        run: String,
        /// The workflow asked for.
        workflow: String,
        /// The executor's name.
        executor: String,
        /// The jobs that will run, in plan order.
        jobs: Vec<String>,
    },
    /// A job's status changed.
    JobStatus {
        /// The run's name.
        run: String,
        /// The job's id.
        job: String,
        /// Its new status.
        status: JobStatus,
        /// The attempt (1 for the first).
        attempt: u32,
        /// Why, for `failed`, `skipped` and `reused`.
        detail: Option<String>,
    },
    /// A failed job will be tried again.
    JobRetrying {
        /// The run's name.
        run: String,
        /// The job's id.
        job: String,
        /// Why the last attempt failed.
        reason: FailureReason,
        /// The next attempt's number.
        next_attempt: u32,
        /// How long until then, in milliseconds.
        delay_ms: u64,
    },
    /// Output of a job.
    Log {
        /// The run's name.
        run: String,
        /// The job's id.
        job: String,
        /// Which stream.
        stream: Stream,
        /// The text (invalid UTF-8 replaced), usually one line with its newline.
        text: String,
    },
    /// A note about a job (a warning from the executor, a pull progress line).
    Note {
        /// The run's name.
        run: String,
        /// The job's id.
        job: String,
        /// The note.
        message: String,
    },
    /// The run ended.
    RunFinished {
        /// The run's name.
        run: String,
        /// Its final status.
        status: RunStatus,
    },
}

/// Something that receives every event. It is called on the scheduler's threads and must
/// return quickly.
pub type Subscriber = Arc<dyn Fn(&Event) + Send + Sync>;

/// Sends events to every subscriber.
#[derive(Clone, Default)]
pub(crate) struct Bus {
    subscribers: Vec<Subscriber>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

impl Bus {
    pub(crate) fn new(subscribers: Vec<Subscriber>) -> Self {
        Bus { subscribers }
    }

    pub(crate) fn send(&self, event: &Event) {
        for s in &self.subscribers {
            s(event);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }
}
