//! The Slurm executor: whole runs handed to a Slurm cluster, with Slurm's own commands.
//!
//! It is a [`DagExecutor`]: the scheduler gives it every job of a run at once and Slurm starts
//! each job when its dependencies succeeded (`--dependency=afterok:...`), so the pipeline goes
//! on while no `dstack` process watches it; `resume` follows what is still queued or running
//! instead of submitting it again.
//!
//! - [`submit`]: jobs of one resource shape become one held job array (one `sbatch`), one
//!   `scontrol` process sets every task's name and dependencies, one `scontrol release` starts
//!   them once the store has recorded their ids.
//! - [`script`]: the batch script (the same text for every job; the job's data is in files
//!   next to it, every value quoted) makes the job's tree from the run's copy of the project,
//!   hands over its inputs, runs its commands with its timeout (directly or in a container),
//!   moves its artifacts into the artifact store and retries as the job says.
//! - [`tracker`]: one `squeue` call per poll for every followed job; cancellations gathered
//!   into one `scancel`.
//! - [`attach`]: one job's start, output (streamed from its files), retries and outcome.
//! - [`state`]: Slurm's states (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`,
//!   `TIMEOUT`, `OUT_OF_MEMORY`, `NODE_FAIL`...) and the script's records, mapped to outcomes.
//! - [`config`]: the `slurm:` section of the executor configuration; [`layout`]: where files go.

pub mod attach;
pub mod command;
pub mod config;
pub mod layout;
pub mod script;
pub mod state;
pub mod submit;
pub mod tracker;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dstack_core::JobSpec;
use dstack_core::run::{
    Capabilities, DagExecutor, DagJob, DagRequest, DagRun, Executor, ExecutorError, FailureReason,
    JobOutcome, JobRequest, Recovery, Reporter,
};
use tokio_util::sync::CancellationToken;

pub use config::{Container, SlurmConfig};

use crate::Selected;
use command::Tools;
use layout::Layout;
use state::Phase;
use tracker::Tracker;

/// How long `reap` waits for cancelled jobs to be gone.
const REAP_LIMIT: Duration = Duration::from_secs(120);

/// Runs whole runs on a Slurm cluster.
#[derive(Clone, Debug)]
pub struct SlurmExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    settings: config::Settings,
    tools: Arc<Tools>,
    tracker: Arc<Tracker>,
    /// Tasks per job array (`MaxArraySize - 1`), read from the controller once; 0 until then.
    max_array: AtomicUsize,
}

impl SlurmExecutor {
    /// An executor configured by `config`, finding Slurm's commands in `slurm.bin-dir` or on
    /// `PATH`. Does not contact the controller (see [`Executor::prepare`]).
    ///
    /// # Errors
    /// A configuration that cannot be used, or a Slurm command that cannot be found.
    pub fn new(config: &SlurmConfig) -> Result<SlurmExecutor, ExecutorError> {
        let settings = config.settings()?;
        let path = std::env::var_os("PATH");
        let tools = Arc::new(Tools::find(
            settings.bin_dir.as_deref(),
            path.as_deref(),
            settings.slurm_conf.as_deref(),
        )?);
        let tracker = Tracker::new(tools.clone(), settings.poll_interval);
        Ok(SlurmExecutor {
            inner: Arc::new(Inner {
                settings,
                tools,
                tracker,
                max_array: AtomicUsize::new(0),
            }),
        })
    }

    /// The checked configuration.
    #[must_use]
    pub fn settings(&self) -> &config::Settings {
        &self.inner.settings
    }
}

impl Inner {
    /// Tasks per job array, from the controller's `MaxArraySize` (asked once). Also tells
    /// whether the controller answers.
    async fn max_array_tasks(&self) -> Result<usize, ExecutorError> {
        let known = self.max_array.load(Ordering::Relaxed);
        if known > 0 {
            return Ok(known);
        }
        let out = self
            .tools
            .run("scontrol", &["show".to_owned(), "config".to_owned()], None)
            .await?;
        let max = out
            .stdout
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once('=')?;
                (key.trim() == "MaxArraySize").then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(1001);
        let tasks = max.saturating_sub(1).max(1);
        self.max_array.store(tasks, Ordering::Relaxed);
        Ok(tasks)
    }
}

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_error(path: &Path, e: &std::io::Error) -> ExecutorError {
    ExecutorError::new(format!("`{}`: {e}", path.display())).with_help(
        "the `slurm` executor writes jobs' files under the shared folder (`slurm.shared-dir`, default: the run store's folder); it must be writable and seen by every node",
    )
}

#[async_trait]
impl Executor for SlurmExecutor {
    fn name(&self) -> &str {
        "slurm"
    }

    fn capabilities(&self) -> Capabilities {
        let images = self.inner.settings.container != Container::None;
        Capabilities {
            images,
            gpus: true,
            ports: false,
            limits: true,
            downloads: true,
            ignores_images: !images,
        }
    }

    async fn prepare(&self, jobs: &[JobSpec]) -> Result<(), ExecutorError> {
        let problems: Vec<String> = jobs.iter().flat_map(script::problems).collect();
        if !problems.is_empty() {
            return Err(ExecutorError::new(format!(
                "these jobs cannot be written for Slurm:\n  - {}",
                problems.join("\n  - ")
            )));
        }
        self.inner.max_array_tasks().await.map(|_| ())
    }

    /// Not used: the scheduler hands this executor whole runs (see [`DagExecutor`]).
    async fn run(
        &self,
        request: JobRequest,
        _reporter: Arc<dyn Reporter>,
        _cancel: CancellationToken,
    ) -> JobOutcome {
        JobOutcome::Failed(FailureReason::Error {
            message: format!(
                "job `{}`: the `slurm` executor runs whole runs (it is a DagExecutor); drive it with the scheduler",
                request.job.id
            ),
        })
    }

    fn hurry(&self) {
        self.inner.tracker.hurry();
    }

    async fn reap(&self, executor_ids: &[String]) -> Result<(), ExecutorError> {
        let ids: Vec<String> = executor_ids
            .iter()
            .filter(|id| state::array_of(id).is_some())
            .cloned()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        tracker::scancel(&self.inner.tools, &ids, false).await?;
        tracker::wait_ended(
            &self.inner.tools,
            &ids,
            self.inner.settings.poll_interval,
            REAP_LIMIT,
        )
        .await
    }

    fn as_dag(self: Arc<Self>) -> Option<Arc<dyn DagExecutor>> {
        Some(self)
    }
}

#[async_trait]
impl DagExecutor for SlurmExecutor {
    async fn submit_dag(&self, dag: &DagRequest) -> Result<Vec<String>, ExecutorError> {
        submit::submit(&self.inner, dag).await
    }

    async fn start_dag(&self, _run: &DagRun, executor_ids: &[String]) -> Result<(), ExecutorError> {
        submit::release(&self.inner, executor_ids, true).await
    }

    async fn recover(
        &self,
        run: &DagRun,
        jobs: &[(DagJob, String)],
    ) -> Result<Vec<Recovery>, ExecutorError> {
        let layout = Layout::new(run, self.inner.settings.shared_dir.as_deref());
        let ids: Vec<String> = jobs.iter().map(|(_, id)| id.clone()).collect();
        let listed = tracker::squeue(&self.inner.tools, &ids).await?;
        let mut held = Vec::new();
        let mut out = Vec::with_capacity(jobs.len());
        for (job, id) in jobs {
            let ended_well = || {
                attach::read_status(&layout.job_dir(&job.request.tree), &job.request.job)
                    .is_some_and(|s| &s.slurm_id == id && s.result.is_ok())
            };
            let fate = match listed.get(id) {
                Some(o) => match o.phase() {
                    Phase::Queued if o.reason == "DependencyNeverSatisfied" => Recovery::Resubmit,
                    Phase::Queued => {
                        // Submitted by a driver that died before it let them start.
                        if o.reason == "JobHeldUser" {
                            held.push(id.clone());
                        }
                        Recovery::Attach
                    }
                    Phase::Running => Recovery::Attach,
                    Phase::Ended if o.state == "COMPLETED" && ended_well() => Recovery::Attach,
                    Phase::Ended => Recovery::Resubmit,
                },
                None if ended_well() => Recovery::Attach,
                None => Recovery::Resubmit,
            };
            out.push(fate);
        }
        if !held.is_empty() {
            submit::release(&self.inner, &held, false).await?;
        }
        Ok(out)
    }

    async fn attach(
        &self,
        run: &DagRun,
        job: DagJob,
        executor_id: String,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> JobOutcome {
        attach::attach(&self.inner, run, job, executor_id, reporter, cancel).await
    }

    async fn end_dag(&self, run: &DagRun) {
        let layout = Layout::new(run, self.inner.settings.shared_dir.as_deref());
        // With a separate shared folder, the whole run's copy there goes (the store keeps the
        // artifacts); else only the executor's own folder.
        let dir = if layout.separate() {
            layout.run_dir()
        } else {
            layout.slurm_dir()
        };
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err((dir, e)),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err((dir, e))) = removed {
            tracing::warn!("cannot remove `{}`: {e}", dir.display());
        }
    }
}

/// The Slurm executor for `slurm` (asked for explicitly). Checks the configuration and finds
/// Slurm's commands; the controller is contacted when a run starts.
///
/// # Errors
/// A configuration that cannot be used, or Slurm's commands missing.
pub fn select(config: &SlurmConfig) -> Result<Selected, ExecutorError> {
    Ok(Selected {
        executor: Arc::new(SlurmExecutor::new(config)?),
        note: None,
    })
}
