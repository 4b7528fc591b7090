//! The scheduler: drives a run's jobs through an [`Executor`], in dependency order, up to
//! `parallelism` at once, with timeouts, retries, artifacts, tags and cancellation.
//!
//! A job starts when all its dependencies succeeded. Without `keep_going`, the first failure
//! stops the run: running jobs are cancelled, the rest are skipped. With it, only the jobs that
//! depend on a failure are skipped. Cancelling the run's token (Ctrl-C, SIGTERM, `dstack stop`)
//! stops running jobs, waits for them, and records the run as stopped. [`Scheduler::drive`]
//! also resumes a run: jobs that succeeded are kept, the others run again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::artifacts;
use super::events::{Bus, Event, Subscriber};
use super::executor::{
    Capabilities, DagExecutor, DagJob, DagRequest, DagRun, Executor, ExecutorError, FailureReason,
    Input, JobOutcome, JobRequest, Recovery, Reporter, Stream,
};
use super::store::{JobRecord, JobUpdate, NewRun, RunRecord, RunStore, StoreError};
use super::tree::ProjectFiles;
use super::{JobStatus, RunStatus, process_alive};
use crate::plan::{JobSpec, Plan};

/// How to drive a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How many jobs may run at once (at least 1).
    pub parallelism: usize,
    /// Keep running what does not depend on a failure.
    pub keep_going: bool,
    /// The delay before the first retry; it doubles with each retry (at most 5 minutes).
    pub retry_delay: Duration,
    /// Keep the trees of failed jobs for debugging (successful jobs' trees are always removed).
    pub keep_failed_trees: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            parallelism: std::thread::available_parallelism()
                .map_or(2, std::num::NonZeroUsize::get),
            keep_going: false,
            retry_delay: Duration::from_secs(1),
            keep_failed_trees: true,
        }
    }
}

/// What went wrong around the jobs (a job failing is not an error: see [`RunSummary`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The executor cannot work.
    #[error("executor `{executor}`: {error}{}", error.help.as_ref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
    Executor {
        /// The executor's name.
        executor: String,
        /// What it said.
        error: ExecutorError,
    },
    /// The plan needs what the executor cannot do.
    #[error("the `{executor}` executor cannot run this plan:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Unsupported {
        /// The executor's name.
        executor: String,
        /// Each job and what it needs.
        problems: Vec<String>,
    },
    /// A `name:tag` dependency cannot be used.
    #[error("{0}")]
    Tag(String),
    /// The project's files could not be read.
    #[error("cannot read the project `{}`: {source}", path.display())]
    Project {
        /// The project's root.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `resume` of a run that has nothing left to do.
    #[error("run `{run}` is {status}: there is nothing to resume")]
    NothingToResume {
        /// The run.
        run: String,
        /// Its status.
        status: RunStatus,
    },
    /// The run is being driven by another live process.
    #[error("run `{run}` is being driven by process {pid}; stop it first with `dstack stop {run}`")]
    AlreadyDriven {
        /// The run.
        run: String,
        /// The driving process.
        pid: u32,
    },
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The run, as stored at the end.
    pub run: RunRecord,
    /// Its jobs.
    pub jobs: Vec<JobRecord>,
}

impl RunSummary {
    /// Whether every job succeeded.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.run.status == RunStatus::Done
    }
}

/// A job whose artifacts come from a tagged run.
#[derive(Clone, Debug)]
struct Reuse {
    /// `run/job` for the record.
    from: String,
    /// Its artifacts: (stored folder, relative path).
    artifacts: Vec<(PathBuf, String)>,
}

/// Drives runs of one project.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Arc<RunStore>,
    executor: Arc<dyn Executor>,
    project: PathBuf,
    /// Where jobs' files come from when not from the project folder itself: a materialised
    /// Git snapshot, copied as it is.
    source: Option<PathBuf>,
    bus: Bus,
}

impl Scheduler {
    /// A scheduler for the project at `project`, recording in `store`, running through
    /// `executor`, sending every event to `subscribers`.
    #[must_use]
    pub fn new(
        store: Arc<RunStore>,
        executor: Arc<dyn Executor>,
        project: impl Into<PathBuf>,
        subscribers: Vec<Subscriber>,
    ) -> Self {
        Scheduler {
            store,
            executor,
            project: project.into(),
            source: None,
            bus: Bus::new(subscribers),
        }
    }

    /// Gives jobs the files of `dir` (every file, as it is: a materialised Git snapshot)
    /// instead of the project folder minus `.git`, the state folder and ignored files.
    #[must_use]
    pub fn with_source(mut self, dir: impl Into<PathBuf>) -> Self {
        self.source = Some(dir.into());
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<RunStore> {
        &self.store
    }

    /// The executor.
    #[must_use]
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// Checks that the executor can honour the plan and that its `name:tag` dependencies
    /// resolve. Returns warnings (images run on the host...).
    ///
    /// # Errors
    /// [`RunError::Unsupported`] or [`RunError::Tag`], before anything starts.
    pub fn check(&self, plan: &Plan) -> Result<Vec<String>, RunError> {
        let caps = self.executor.capabilities();
        let (problems, warnings) = capability_problems(&caps, &plan.jobs);
        if !problems.is_empty() {
            return Err(RunError::Unsupported {
                executor: self.executor.name().to_owned(),
                problems,
            });
        }
        self.resolve_tags(plan)?;
        Ok(warnings)
    }

    /// Checks `plan` and records it as a new run, `submitted`.
    ///
    /// # Errors
    /// As [`Scheduler::check`], or when the store fails.
    pub fn submit(&self, plan: &Plan, variables: serde_json::Value) -> Result<RunRecord, RunError> {
        self.submit_with_git(plan, variables, None)
    }

    /// [`Scheduler::submit`], recording `git` (what the embedder captured of the project's
    /// version control state: commit, branch, whether there were local changes) on the run.
    ///
    /// # Errors
    /// As [`Scheduler::submit`].
    pub fn submit_with_git(
        &self,
        plan: &Plan,
        variables: serde_json::Value,
        git: Option<serde_json::Value>,
    ) -> Result<RunRecord, RunError> {
        self.check(plan)?;
        let project = std::path::absolute(&self.project).unwrap_or_else(|_| self.project.clone());
        Ok(self.store.create_run(&NewRun {
            plan,
            variables,
            executor: self.executor.name(),
            project: &project,
            git,
        })?)
    }

    /// Resolves every `name:tag` dependency of the plan to the tagged run's job.
    fn resolve_tags(&self, plan: &Plan) -> Result<HashMap<String, Reuse>, RunError> {
        let mut out = HashMap::new();
        for job in &plan.jobs {
            for dep in &job.depends_on {
                let Some((workflow, tag)) = dep.split_once(':') else {
                    continue;
                };
                if out.contains_key(dep) {
                    continue;
                }
                let tagged = self.store.tagged(tag).map_err(|e| {
                    RunError::Tag(format!(
                        "`depends-on: {dep}` of workflow `{}`: {e}",
                        job.workflow
                    ))
                })?;
                let tagged_plan = self.store.plan(&tagged)?;
                let jobs = self.store.jobs(&tagged)?;
                let Some(record) = jobs.iter().find(|j| j.workflow == workflow) else {
                    return Err(RunError::Tag(format!(
                        "`depends-on: {dep}` of workflow `{}`: run `{}` (tagged `{tag}`) has no workflow `{workflow}`",
                        job.workflow, tagged.name
                    )));
                };
                if !record.status.succeeded() {
                    return Err(RunError::Tag(format!(
                        "`depends-on: {dep}` of workflow `{}`: workflow `{workflow}` did not succeed in run `{}` (it is {}), so it has no artifacts to reuse",
                        job.workflow, tagged.name, record.status
                    )));
                }
                // A reused job points at the run it came from: follow it.
                let (source_run, source_job) = match &record.reused_from {
                    Some(from) => from
                        .split_once('/')
                        .map_or((tagged.name.clone(), record.job_id.clone()), |(r, j)| {
                            (r.to_owned(), j.to_owned())
                        }),
                    None => (tagged.name.clone(), record.job_id.clone()),
                };
                // The artifacts a job declared are in the plan of the run it ran in.
                let source_plan = if source_run == tagged.name {
                    tagged_plan
                } else {
                    let source = self.store.run(&source_run).map_err(|e| {
                        RunError::Tag(format!(
                            "`depends-on: {dep}` of workflow `{}`: run `{}` (tagged `{tag}`) reused the artifacts of run `{source_run}`, which is gone: {e}",
                            job.workflow, tagged.name
                        ))
                    })?;
                    self.store.plan(&source)?
                };
                let spec = source_plan.job(&source_job);
                let dir = self.store.artifacts_dir(&source_run, &source_job);
                let mut artifacts = Vec::new();
                for path in spec.map(|s| s.artifacts.clone()).unwrap_or_default() {
                    let stored = dir.join(&path);
                    if !stored.exists() {
                        return Err(RunError::Tag(format!(
                            "`depends-on: {dep}` of workflow `{}`: artifact `{path}` of run `{source_run}` is missing from the artifact store (`{}`)",
                            job.workflow,
                            stored.display()
                        )));
                    }
                    artifacts.push((stored, path));
                }
                out.insert(
                    dep.clone(),
                    Reuse {
                        from: format!("{source_run}/{source_job}"),
                        artifacts,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Runs (or resumes) `run` until every job has ended or `cancel` fires.
    ///
    /// # Errors
    /// When the store, the executor or the project fail around the jobs; a failing job is
    /// reported in the summary, not as an error.
    pub async fn drive(
        &self,
        run: &RunRecord,
        options: &RunOptions,
        cancel: CancellationToken,
    ) -> Result<RunSummary, RunError> {
        // Work on the stored state, not the caller's copy, and claim the run atomically:
        // of several processes resuming one run, exactly one drives it. The caller's copy
        // says what it meant: a new run (`submitted`) that `dstack stop` ended before any
        // driver claimed it is not run after all, while a stopped run given back is resumed.
        let asked = run.status;
        let run = &self.store.run(&run.name)?;
        if asked == RunStatus::Submitted
            && matches!(run.status, RunStatus::Stopped | RunStatus::Aborted)
        {
            return Ok(RunSummary {
                run: run.clone(),
                jobs: self.store.jobs(run)?,
            });
        }
        if run.status == RunStatus::Done {
            return Err(RunError::NothingToResume {
                run: run.name.clone(),
                status: run.status,
            });
        }
        let me = std::process::id();
        let seen = run.driver_pid;
        if let Some(pid) = seen.filter(|&p| p != me && process_alive(p))
            && !run.status.is_finished()
        {
            return Err(RunError::AlreadyDriven {
                run: run.name.clone(),
                pid,
            });
        }
        if !self.store.claim(run, seen, me)? {
            let now = self.store.run(&run.name)?;
            if asked == RunStatus::Submitted
                && matches!(now.status, RunStatus::Stopped | RunStatus::Aborted)
            {
                // Stopped between our look and our claim.
                return Ok(RunSummary {
                    jobs: self.store.jobs(&now)?,
                    run: now,
                });
            }
            return Err(RunError::AlreadyDriven {
                run: run.name.clone(),
                pid: now.driver_pid.unwrap_or(0),
            });
        }
        let plan = self.store.plan(run)?;
        let records = self.store.jobs(run)?;
        let reuse = match self.resolve_tags(&plan) {
            Ok(reuse) => reuse,
            Err(e) => {
                self.store.set_driver(run, None)?;
                return Err(e);
            }
        };

        // What a crashed driver left running is stopped before the jobs run again (an
        // executor that schedules dependencies by itself finds out what became of it instead:
        // see `schedule_dag`).
        let dag = self.executor.clone().as_dag();
        let leftovers: Vec<String> = records
            .iter()
            .filter(|r| !r.status.is_finished() || r.status == JobStatus::Failed)
            .filter_map(|r| r.executor_id.clone())
            .collect();
        if dag.is_none() && !leftovers.is_empty() {
            self.executor
                .reap(&leftovers)
                .await
                .map_err(|error| RunError::Executor {
                    executor: self.executor.name().to_owned(),
                    error,
                })?;
        }

        let mut state: HashMap<String, JobStatus> = HashMap::new();
        for job in &plan.jobs {
            let previous = records
                .iter()
                .find(|r| r.job_id == job.id)
                .map(|r| r.status);
            let status = match previous {
                Some(s) if s.succeeded() => s,
                _ => JobStatus::Submitted,
            };
            if status == JobStatus::Submitted && previous != Some(JobStatus::Submitted) {
                self.store.update_job(
                    run,
                    &job.id,
                    &JobUpdate {
                        status: Some(JobStatus::Submitted),
                        ..JobUpdate::default()
                    },
                )?;
            }
            state.insert(job.id.clone(), status);
        }
        let to_run: Vec<JobSpec> = plan
            .jobs
            .iter()
            .filter(|j| state[&j.id] == JobStatus::Submitted)
            .cloned()
            .collect();

        self.store.set_driver(run, Some(std::process::id()))?;
        if !self.store.start(run)? {
            // `dstack stop` came after the claim (it found this process and asks it to stop,
            // or found none yet and ended the run itself): nothing starts.
            return self.stopped_before_start(run);
        }
        // What the `name:tag` dependencies reuse is recorded with the run, as jobs of its own.
        let mut reused: Vec<(&str, &str, &str)> = reuse
            .iter()
            .map(|(reference, r)| {
                let workflow = reference
                    .rsplit_once(':')
                    .map_or(reference.as_str(), |(w, _)| w);
                (reference.as_str(), workflow, r.from.as_str())
            })
            .collect();
        reused.sort_unstable();
        self.store.record_reused(run, &reused)?;
        self.bus.send(&Event::RunStarted {
            run: run.name.clone(),
            workflow: plan.workflow.clone(),
            executor: self.executor.name().to_owned(),
            jobs: to_run.iter().map(|j| j.id.clone()).collect(),
        });
        for &(reference, _, from) in &reused {
            self.emit_status(
                run,
                reference,
                JobStatus::Reused,
                0,
                Some(format!("from {from}")),
            );
        }

        if let Err(error) = self.executor.prepare(&to_run).await {
            let message = error.to_string();
            self.finish(run, RunStatus::Failed, Some(&message))?;
            return Err(RunError::Executor {
                executor: self.executor.name().to_owned(),
                error,
            });
        }
        let files = {
            let root = self.project.clone();
            let source = self.source.clone();
            let state_dir = self.store.dir().to_path_buf();
            let shown = self.source.clone().unwrap_or_else(|| self.project.clone());
            tokio::task::spawn_blocking(move || match source {
                Some(dir) => ProjectFiles::scan_all(&dir),
                None => ProjectFiles::scan(&root, &state_dir),
            })
            .await
            .map_err(|e| RunError::Project {
                path: shown.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| RunError::Project {
                path: shown.clone(),
                source,
            })?
        };
        let files = Arc::new(files);

        // `dstack stop` (from anywhere) marks the run `stopping` or `aborting` in the store: the
        // driver notices within a quarter of a second, without needing a signal.
        let watcher = tokio::spawn({
            let store = self.store.clone();
            let name = run.name.clone();
            let cancel = cancel.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    if store.run(&name).is_ok_and(|r| {
                        matches!(r.status, RunStatus::Stopping | RunStatus::Aborting)
                    }) {
                        cancel.cancel();
                        break;
                    }
                }
            }
        });
        let result = match dag {
            Some(dag) => {
                self.schedule_dag(
                    &dag, run, &plan, &reuse, state, &records, files, options, &cancel,
                )
                .await
            }
            None => {
                self.schedule(run, &plan, &reuse, state, files, options, &cancel)
                    .await
            }
        };
        watcher.abort();
        let status = match result {
            Ok(status) => status,
            Err(e) => {
                let message = e.to_string();
                self.finish(run, RunStatus::Failed, Some(&message))?;
                return Err(e);
            }
        };
        // `dstack stop --abort` asked for an abort while the run was stopping.
        let status = match (status, self.store.run(&run.name).map(|r| r.status)) {
            (RunStatus::Stopped, Ok(RunStatus::Aborting)) => RunStatus::Aborted,
            (s, _) => s,
        };
        self.finish(run, status, None)?;
        Ok(RunSummary {
            run: self.store.run(&run.name)?,
            jobs: self.store.jobs(run)?,
        })
    }

    /// Ends `run`, which `dstack stop` reached before any of its jobs started: every job not
    /// finished is skipped, and the run ends stopped (or aborted).
    fn stopped_before_start(&self, run: &RunRecord) -> Result<RunSummary, RunError> {
        let now = self.store.run(&run.name)?;
        for job in self
            .store
            .jobs(run)?
            .iter()
            .filter(|j| !j.status.is_finished())
        {
            self.store.update_job(
                run,
                &job.job_id,
                &JobUpdate {
                    status: Some(JobStatus::Skipped),
                    reason: Some("the run was stopped before it started"),
                    finished: true,
                    ..JobUpdate::default()
                },
            )?;
        }
        let status = match now.status {
            RunStatus::Aborting | RunStatus::Aborted => RunStatus::Aborted,
            _ => RunStatus::Stopped,
        };
        self.finish(run, status, None)?;
        Ok(RunSummary {
            run: self.store.run(&run.name)?,
            jobs: self.store.jobs(run)?,
        })
    }

    fn finish(
        &self,
        run: &RunRecord,
        status: RunStatus,
        message: Option<&str>,
    ) -> Result<(), RunError> {
        self.store.set_run_status(run, status, message)?;
        self.store.set_driver(run, None)?;
        self.bus.send(&Event::RunFinished {
            run: run.name.clone(),
            status,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments, clippy::too_many_lines)]
    async fn schedule(
        &self,
        run: &RunRecord,
        plan: &Plan,
        reuse: &HashMap<String, Reuse>,
        mut state: HashMap<String, JobStatus>,
        files: Arc<ProjectFiles>,
        options: &RunOptions,
        cancel: &CancellationToken,
    ) -> Result<RunStatus, RunError> {
        let stop = cancel.child_token();
        let cleanup = Cleanup::default();
        let parallelism = options.parallelism.max(1);
        let mut running: JoinSet<(String, JobStatus)> = JoinSet::new();
        let mut failed = false;

        // Ready queue by dependency counts: O(jobs + edges) for the whole run.
        let index: HashMap<&str, usize> = plan
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id.as_str(), i))
            .collect();
        let mut waiting = vec![0usize; plan.jobs.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); plan.jobs.len()];
        for (i, job) in plan.jobs.iter().enumerate() {
            for dep in &job.depends_on {
                if let Some(&d) = index.get(dep.as_str()) {
                    dependents[d].push(i);
                    if !state[dep].succeeded() {
                        waiting[i] += 1;
                    }
                }
            }
        }
        let mut ready: std::collections::VecDeque<usize> = (0..plan.jobs.len())
            .filter(|&i| state[&plan.jobs[i].id] == JobStatus::Submitted && waiting[i] == 0)
            .collect();
        for job in &plan.jobs {
            if state[&job.id] == JobStatus::Submitted {
                self.emit_status(run, &job.id, JobStatus::Submitted, 1, None);
            }
        }
        loop {
            while running.len() < parallelism && !stop.is_cancelled() {
                let Some(i) = ready.pop_front() else { break };
                let job = &plan.jobs[i];
                if state[&job.id] != JobStatus::Submitted {
                    continue;
                }
                let inputs = self.inputs(run, plan, job, reuse);
                let task = JobTask {
                    store: self.store.clone(),
                    executor: self.executor.clone(),
                    bus: self.bus.clone(),
                    run: run.clone(),
                    job: job.clone(),
                    inputs,
                    files: files.clone(),
                    options: options.clone(),
                    cancel: stop.child_token(),
                    cleanup: cleanup.clone(),
                };
                running.spawn(async move {
                    let id = task.job.id.clone();
                    let status = task.run().await;
                    (id, status)
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (id, status) = match done {
                Ok(r) => r,
                Err(e) => {
                    // A job task panicked: a bug, but the run must still end cleanly.
                    stop.cancel();
                    while running.join_next().await.is_some() {}
                    return Err(RunError::Project {
                        path: self.project.clone(),
                        source: std::io::Error::other(format!("a job task failed: {e}")),
                    });
                }
            };
            state.insert(id.clone(), status);
            if status.succeeded() {
                for &d in &dependents[index[id.as_str()]] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && state[&plan.jobs[d].id] == JobStatus::Submitted {
                        ready.push_back(d);
                    }
                }
            }
            if status == JobStatus::Failed {
                failed = true;
                if options.keep_going {
                    self.skip_dependents(run, plan, &id, &mut state)?;
                } else {
                    stop.cancel();
                }
            }
        }
        cleanup.wait().await;
        // Whatever did not run is skipped, with why: the stop of the run, or the dependency that
        // did not succeed (plan order puts it first), or the failure that stopped the rest.
        for job in &plan.jobs {
            if state[&job.id] == JobStatus::Submitted {
                let failed_dep = job.depends_on.iter().find(|d| {
                    state
                        .get(*d)
                        .is_some_and(|s| matches!(s, JobStatus::Failed | JobStatus::Skipped))
                });
                let why = match failed_dep {
                    _ if cancel.is_cancelled() => "the run was stopped".to_owned(),
                    Some(d) => format!("dependency `{d}` did not succeed"),
                    None => "a job of the run failed".to_owned(),
                };
                self.skip(run, &job.id, &why)?;
                state.insert(job.id.clone(), JobStatus::Skipped);
            }
        }
        Ok(if cancel.is_cancelled() {
            RunStatus::Stopped
        } else if failed || state.values().any(|s| !s.succeeded()) {
            RunStatus::Failed
        } else {
            RunStatus::Done
        })
    }

    /// Drives a run through an executor that schedules dependencies by itself: every job left
    /// to run is submitted at once (with what an earlier driver submitted re-attached, not
    /// submitted again), then followed to its end. A job's outcome is recorded only after its
    /// dependencies', so a job that could not run because a dependency failed is recorded as
    /// skipped whatever the executor saw of it.
    #[allow(clippy::too_many_arguments, clippy::too_many_lines)]
    async fn schedule_dag(
        &self,
        dag: &Arc<dyn DagExecutor>,
        run: &RunRecord,
        plan: &Plan,
        reuse: &HashMap<String, Reuse>,
        mut state: HashMap<String, JobStatus>,
        records: &[JobRecord],
        files: Arc<ProjectFiles>,
        options: &RunOptions,
        cancel: &CancellationToken,
    ) -> Result<RunStatus, RunError> {
        let context = DagRun::new(&run.name, self.store.dir());
        let executor_error = |error| RunError::Executor {
            executor: self.executor.name().to_owned(),
            error,
        };
        let n = plan.jobs.len();
        let index: HashMap<&str, usize> = plan
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id.as_str(), i))
            .collect();
        let deps: Vec<Vec<usize>> = plan
            .jobs
            .iter()
            .map(|j| {
                j.depends_on
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let pending = |state: &HashMap<String, JobStatus>, i: usize| {
            state[&plan.jobs[i].id] == JobStatus::Submitted
        };

        // 1. What an earlier driver submitted and did not see end: follow what still runs (or
        // ended well), submit the rest again. Jobs that ended badly are made sure to be gone.
        let record = |i: usize| records.iter().find(|r| r.job_id == plan.jobs[i].id);
        let earlier: Vec<(usize, String)> = (0..n)
            .filter(|&i| pending(&state, i))
            .filter_map(|i| {
                let r = record(i)?;
                (!r.status.is_finished())
                    .then(|| r.executor_id.clone())
                    .flatten()
                    .map(|id| (i, id))
            })
            .collect();
        let mut stale: Vec<String> = (0..n)
            .filter(|&i| pending(&state, i))
            .filter_map(|i| record(i).filter(|r| r.status.is_finished()))
            .filter_map(|r| r.executor_id.clone())
            .collect();
        let dag_job = |i: usize, after: Vec<String>, after_submitted: Vec<String>| {
            let job = &plan.jobs[i];
            DagJob {
                request: JobRequest {
                    run: run.name.clone(),
                    job: job.clone(),
                    tree: self.store.job_tree(&run.name, &job.id),
                    inputs: self.inputs(run, plan, job, reuse),
                    attempt: 1,
                },
                artifacts_dir: self.store.artifacts_dir(&run.name, &job.id),
                after,
                after_submitted,
            }
        };
        let mut attached: BTreeMap<usize, String> = BTreeMap::new();
        if !earlier.is_empty() {
            let pairs: Vec<(DagJob, String)> = earlier
                .iter()
                .map(|(i, id)| (dag_job(*i, Vec::new(), Vec::new()), id.clone()))
                .collect();
            let fates = dag
                .recover(&context, &pairs)
                .await
                .map_err(executor_error)?;
            for ((i, id), fate) in earlier.into_iter().zip(fates) {
                if fate == Recovery::Attach {
                    attached.insert(i, id);
                } else {
                    stale.push(id);
                }
            }
        }
        // A job kept from before cannot wait for one submitted again (it waits for the old
        // submission): it goes, and is submitted again too. Plan order reaches dependencies
        // first.
        for (i, job_deps) in deps.iter().enumerate() {
            if attached.contains_key(&i)
                && job_deps
                    .iter()
                    .any(|&d| pending(&state, d) && !attached.contains_key(&d))
                && let Some(id) = attached.remove(&i)
            {
                stale.push(id);
            }
        }
        if !stale.is_empty() {
            dag.reap(&stale).await.map_err(executor_error)?;
        }

        // 2. Submit what is left, all at once; record the executor ids before any of it starts.
        let to_submit: Vec<usize> = (0..n)
            .filter(|&i| pending(&state, i) && !attached.contains_key(&i))
            .collect();
        let mut ids: BTreeMap<usize, String> = attached.clone();
        if !to_submit.is_empty() {
            let submitting: HashSet<usize> = to_submit.iter().copied().collect();
            let jobs = to_submit
                .iter()
                .map(|&i| {
                    dag_job(
                        i,
                        deps[i]
                            .iter()
                            .filter(|d| submitting.contains(d))
                            .map(|&d| plan.jobs[d].id.clone())
                            .collect(),
                        deps[i]
                            .iter()
                            .filter_map(|d| attached.get(d).cloned())
                            .collect(),
                    )
                })
                .collect();
            let request = DagRequest {
                run: context.clone(),
                files,
                jobs,
                keep_failed_trees: options.keep_failed_trees,
                retry_delay: options.retry_delay,
            };
            let submitted = dag.submit_dag(&request).await.map_err(executor_error)?;
            let recorded = if submitted.len() == to_submit.len() {
                to_submit
                    .iter()
                    .zip(&submitted)
                    .try_for_each(|(&i, id)| {
                        self.store.update_job(
                            run,
                            &plan.jobs[i].id,
                            &JobUpdate {
                                executor_id: Some(id),
                                ..JobUpdate::default()
                            },
                        )
                    })
                    .map_err(RunError::from)
            } else {
                Err(executor_error(ExecutorError::new(format!(
                    "submitted {} job(s) for {} (a bug in the executor)",
                    submitted.len(),
                    to_submit.len()
                ))))
            };
            let started = match recorded {
                Ok(()) => dag
                    .start_dag(&context, &submitted)
                    .await
                    .map_err(executor_error),
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                // Nothing of it may stay queued.
                if let Err(reap) = dag.reap(&submitted).await {
                    tracing::error!(run = %run.name, "cannot cancel the submitted jobs: {reap}");
                }
                return Err(e);
            }
            ids.extend(to_submit.iter().copied().zip(submitted));
        }

        // 3. Follow every job, all at once: the executor tracks them in bulk.
        for &i in ids.keys() {
            self.emit_status(run, &plan.jobs[i].id, JobStatus::Submitted, 1, None);
        }
        let stop = cancel.child_token();
        let tokens: HashMap<usize, CancellationToken> =
            ids.keys().map(|&i| (i, stop.child_token())).collect();
        let logs: Vec<Arc<Log>> = ids
            .keys()
            .map(|&i| Arc::new(Log::new(self.store.log_path(&run.name, &plan.jobs[i].id))))
            .collect();
        // One flusher for every log (the local path has one per running job; here a thousand
        // jobs may be attached at once).
        let flusher = AbortOnDrop(tokio::spawn({
            let logs = logs.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    for log in &logs {
                        log.flush();
                    }
                }
            }
        }));
        let mut following: JoinSet<(usize, JobOutcome, bool)> = JoinSet::new();
        for ((&i, id), log) in ids.iter().zip(&logs) {
            let reporter = Arc::new(JobReporter {
                store: self.store.clone(),
                bus: self.bus.clone(),
                run: run.clone(),
                job: plan.jobs[i].id.clone(),
                attempt: 1,
                log: log.clone(),
                started: AtomicBool::new(false),
            });
            let dag_job = dag_job(i, Vec::new(), Vec::new());
            let dag = dag.clone();
            let context = context.clone();
            let id = id.clone();
            let token = tokens[&i].clone();
            following.spawn(async move {
                let outcome = dag
                    .attach(&context, dag_job, id, reporter.clone(), token)
                    .await;
                (i, outcome, reporter.started.load(Ordering::Relaxed))
            });
        }

        // 4. Outcomes, each recorded after its dependencies' (plan order settles chains in one
        // pass).
        let mut held: BTreeMap<usize, (JobOutcome, bool)> = BTreeMap::new();
        let mut failed = false;
        while let Some(done) = following.join_next().await {
            let (i, outcome, started) = match done {
                Ok(r) => r,
                Err(e) => {
                    stop.cancel();
                    while following.join_next().await.is_some() {}
                    return Err(RunError::Project {
                        path: self.project.clone(),
                        source: std::io::Error::other(format!("a job task failed: {e}")),
                    });
                }
            };
            held.insert(i, (outcome, started));
            let candidates: Vec<usize> = held.keys().copied().collect();
            for i in candidates {
                if deps[i].iter().any(|&d| pending(&state, d)) {
                    continue;
                }
                let Some((outcome, started)) = held.remove(&i) else {
                    continue;
                };
                let status = self
                    .settle(run, plan, i, &deps[i], &state, outcome, started, cancel)
                    .await;
                state.insert(plan.jobs[i].id.clone(), status);
                if status == JobStatus::Failed {
                    failed = true;
                    if options.keep_going {
                        // Its dependents cannot run: stop them (they are recorded as skipped).
                        let mut todo = dependents[i].clone();
                        while let Some(d) = todo.pop() {
                            if let Some(token) = tokens.get(&d)
                                && !token.is_cancelled()
                            {
                                token.cancel();
                                todo.extend(dependents[d].iter().copied());
                            }
                        }
                    } else {
                        stop.cancel();
                    }
                }
            }
        }
        drop(flusher);
        for log in &logs {
            log.flush();
        }
        dag.end_dag(&context).await;
        Ok(if cancel.is_cancelled() {
            RunStatus::Stopped
        } else if failed || state.values().any(|s| !s.succeeded()) {
            RunStatus::Failed
        } else {
            RunStatus::Done
        })
    }

    /// Records how a job of a [`DagExecutor`] ended, its dependencies' outcomes known.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        run: &RunRecord,
        plan: &Plan,
        i: usize,
        deps: &[usize],
        state: &HashMap<String, JobStatus>,
        outcome: JobOutcome,
        started: bool,
        cancel: &CancellationToken,
    ) -> JobStatus {
        let job = &plan.jobs[i];
        let update = |status: JobStatus, reason: Option<&str>, exit_code: Option<i32>| {
            let update = JobUpdate {
                status: Some(status),
                reason,
                exit_code,
                finished: true,
                ..JobUpdate::default()
            };
            if let Err(e) = self.store.update_job(run, &job.id, &update) {
                tracing::error!(run = %run.name, job = %job.id, "cannot record job state: {e}");
            }
            self.emit_status(run, &job.id, status, 1, reason.map(str::to_owned));
            status
        };
        let failed_dep = deps
            .iter()
            .map(|&d| &plan.jobs[d].id)
            .find(|d| !state[*d].succeeded());
        match (outcome, failed_dep) {
            (JobOutcome::Succeeded, _) => {
                let dir = self.store.artifacts_dir(&run.name, &job.id);
                let paths = job.artifacts.clone();
                let missing = tokio::task::spawn_blocking(move || {
                    paths
                        .into_iter()
                        .find(|p| std::fs::symlink_metadata(dir.join(p)).is_err())
                })
                .await
                .unwrap_or(None);
                match missing {
                    None => update(JobStatus::Done, None, Some(0)),
                    Some(path) => {
                        let reason = FailureReason::MissingArtifact { path };
                        if let Err(e) = self.store.fail_job(run, &job.id, &reason) {
                            tracing::error!(run = %run.name, job = %job.id, "cannot record job failure: {e}");
                        }
                        self.emit_status(
                            run,
                            &job.id,
                            JobStatus::Failed,
                            1,
                            Some(reason.to_string()),
                        );
                        JobStatus::Failed
                    }
                }
            }
            (JobOutcome::Cancelled, _) if !started && cancel.is_cancelled() => {
                update(JobStatus::Skipped, Some("the run was stopped"), None)
            }
            (_, Some(dep)) => update(
                JobStatus::Skipped,
                Some(&format!("dependency `{dep}` did not succeed")),
                None,
            ),
            (JobOutcome::Cancelled, None) if started => {
                let aborted = self
                    .store
                    .run(&run.name)
                    .is_ok_and(|r| r.status == RunStatus::Aborting);
                if aborted {
                    update(JobStatus::Aborted, Some("aborted"), None)
                } else {
                    update(JobStatus::Stopped, Some("stopped"), None)
                }
            }
            (JobOutcome::Cancelled, None) => {
                let why = if cancel.is_cancelled() {
                    "the run was stopped"
                } else {
                    "a job of the run failed"
                };
                update(JobStatus::Skipped, Some(why), None)
            }
            (JobOutcome::Failed(reason), None) => {
                if let Err(e) = self.store.fail_job(run, &job.id, &reason) {
                    tracing::error!(run = %run.name, job = %job.id, "cannot record job failure: {e}");
                }
                self.emit_status(run, &job.id, JobStatus::Failed, 1, Some(reason.to_string()));
                JobStatus::Failed
            }
        }
    }

    fn skip(&self, run: &RunRecord, job: &str, why: &str) -> Result<(), RunError> {
        self.store.update_job(
            run,
            job,
            &JobUpdate {
                status: Some(JobStatus::Skipped),
                reason: Some(why),
                finished: true,
                ..JobUpdate::default()
            },
        )?;
        self.emit_status(run, job, JobStatus::Skipped, 1, Some(why.to_owned()));
        Ok(())
    }

    /// Marks everything that depends on `failed` (transitively) as skipped.
    fn skip_dependents(
        &self,
        run: &RunRecord,
        plan: &Plan,
        failed: &str,
        state: &mut HashMap<String, JobStatus>,
    ) -> Result<(), RunError> {
        let mut dead = vec![failed.to_owned()];
        while let Some(d) = dead.pop() {
            for job in &plan.jobs {
                if state[&job.id] == JobStatus::Submitted && job.depends_on.contains(&d) {
                    self.skip(run, &job.id, &format!("dependency `{d}` did not succeed"))?;
                    state.insert(job.id.clone(), JobStatus::Skipped);
                    dead.push(job.id.clone());
                }
            }
        }
        Ok(())
    }

    /// The artifacts of a job's dependencies.
    fn inputs(
        &self,
        run: &RunRecord,
        plan: &Plan,
        job: &JobSpec,
        reuse: &HashMap<String, Reuse>,
    ) -> Vec<Input> {
        let mut inputs = Vec::new();
        for dep in &job.depends_on {
            if let Some(r) = reuse.get(dep) {
                for (source, path) in &r.artifacts {
                    inputs.push(Input {
                        from_job: r.from.clone(),
                        source: source.clone(),
                        path: path.clone(),
                    });
                }
            } else if let Some(spec) = plan.job(dep) {
                let dir = self.store.artifacts_dir(&run.name, &spec.id);
                for path in &spec.artifacts {
                    inputs.push(Input {
                        from_job: spec.id.clone(),
                        source: dir.join(path),
                        path: path.clone(),
                    });
                }
            }
        }
        inputs
    }

    fn emit_status(
        &self,
        run: &RunRecord,
        job: &str,
        status: JobStatus,
        attempt: u32,
        detail: Option<String>,
    ) {
        self.bus.send(&Event::JobStatus {
            run: run.name.clone(),
            job: job.to_owned(),
            status,
            attempt,
            detail,
        });
    }
}

/// What the plan needs that the executor cannot give: (errors, warnings). Warnings name all
/// the jobs they concern at once.
fn capability_problems(caps: &Capabilities, jobs: &[JobSpec]) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut on_host = Vec::new();
    let mut ports = Vec::new();
    let mut limits = Vec::new();
    for job in jobs {
        if job.resources.gpu_count() > 0 && !caps.gpus {
            problems.push(format!(
                "job `{}` needs {} GPU(s), which this executor cannot give",
                job.id,
                job.resources.gpu_count()
            ));
        }
        if let Some(image) = job
            .image
            .as_deref()
            .filter(|_| job.download.is_none() && !caps.images)
        {
            if caps.ignores_images {
                on_host.push(format!("`{}` ({image})", job.id));
            } else {
                problems.push(format!(
                    "job `{}` needs image `{image}`, which this executor cannot run",
                    job.id
                ));
            }
        }
        if !job.ports.is_empty() && !caps.ports {
            ports.push(format!("`{}`", job.id));
        }
        if (job.resources.cpu.is_some() || job.resources.memory_bytes.is_some()) && !caps.limits {
            limits.push(format!("`{}`", job.id));
        }
        if job.download.is_some() && !caps.downloads {
            problems.push(format!(
                "job `{}` downloads a file, which this executor cannot do",
                job.id
            ));
        }
    }
    let mut warnings = Vec::new();
    if !on_host.is_empty() {
        warnings.push(format!(
            "images are not used: job(s) {} run on the host with what it has installed",
            on_host.join(", ")
        ));
    }
    if !ports.is_empty() {
        warnings.push(format!(
            "ports are not published: job(s) {} listen on the host directly",
            ports.join(", ")
        ));
    }
    if !limits.is_empty() {
        warnings.push(format!(
            "CPU and memory limits are not enforced for job(s) {}",
            limits.join(", ")
        ));
    }
    (problems, warnings)
}

/// One job, from its tree to its artifacts, with retries.
struct JobTask {
    store: Arc<RunStore>,
    executor: Arc<dyn Executor>,
    bus: Bus,
    run: RunRecord,
    job: JobSpec,
    inputs: Vec<Input>,
    files: Arc<ProjectFiles>,
    options: RunOptions,
    cancel: CancellationToken,
    cleanup: Cleanup,
}

impl JobTask {
    fn status(&self, status: JobStatus, attempt: u32, detail: Option<String>) {
        self.bus.send(&Event::JobStatus {
            run: self.run.name.clone(),
            job: self.job.id.clone(),
            status,
            attempt,
            detail,
        });
    }

    fn update(&self, update: &JobUpdate<'_>) {
        if let Err(e) = self.store.update_job(&self.run, &self.job.id, update) {
            tracing::error!(run = %self.run.name, job = %self.job.id, "cannot record job state: {e}");
        }
    }

    /// Runs the job to its end; returns its final status (recorded and announced).
    async fn run(self) -> JobStatus {
        let tree = self.store.job_tree(&self.run.name, &self.job.id);
        let log = Arc::new(Log::new(self.store.log_path(&self.run.name, &self.job.id)));
        let mut attempt = 1;
        // Each state change is a write to the store: only the ones that tell something are
        // recorded (`downloading` when there are inputs to hand over, `running` when the
        // executor has started the job, `uploading` when there are artifacts to save).
        let has_inputs = !self.inputs.is_empty() || self.job.download.is_some();
        loop {
            if has_inputs {
                self.update(&JobUpdate {
                    status: Some(JobStatus::Downloading),
                    attempts: Some(attempt),
                    ..JobUpdate::default()
                });
                self.status(JobStatus::Downloading, attempt, None);
            }
            if let Err(reason) = self.prepare_tree(&tree).await {
                return self.fail(attempt, &reason);
            }
            let reporter: Arc<dyn Reporter> = Arc::new(JobReporter {
                store: self.store.clone(),
                bus: self.bus.clone(),
                run: self.run.clone(),
                job: self.job.id.clone(),
                attempt,
                log: log.clone(),
                started: AtomicBool::new(false),
            });
            let request = JobRequest {
                run: self.run.name.clone(),
                job: self.job.clone(),
                tree: tree.clone(),
                inputs: self.inputs.clone(),
                attempt,
            };
            // The log is flushed every 100 ms while the job runs, so `dstack logs -f` sees a
            // line soon after it is written even when the job then stays silent.
            let flusher = tokio::spawn({
                let log = log.clone();
                async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(100));
                    loop {
                        tick.tick().await;
                        log.flush();
                    }
                }
            });
            let outcome = self.execute(request, reporter).await;
            flusher.abort();
            log.flush();
            match outcome {
                JobOutcome::Succeeded => {
                    if !self.job.artifacts.is_empty() {
                        self.update(&JobUpdate {
                            status: Some(JobStatus::Uploading),
                            ..JobUpdate::default()
                        });
                        self.status(JobStatus::Uploading, attempt, None);
                    }
                    match self.save_artifacts(&tree).await {
                        Ok(()) => {
                            self.update(&JobUpdate {
                                status: Some(JobStatus::Done),
                                exit_code: Some(0),
                                finished: true,
                                ..JobUpdate::default()
                            });
                            self.status(JobStatus::Done, attempt, None);
                            self.cleanup.remove(&tree);
                            return JobStatus::Done;
                        }
                        Err(reason) => return self.fail(attempt, &reason),
                    }
                }
                JobOutcome::Cancelled => {
                    // `dstack stop --abort` marks the run `aborting` before it signals us.
                    let aborted = self
                        .store
                        .run(&self.run.name)
                        .is_ok_and(|r| r.status == RunStatus::Aborting);
                    let (status, reason) = if aborted {
                        (JobStatus::Aborted, "aborted".to_owned())
                    } else {
                        // A stop keeps what the job has made so far: the artifacts it has
                        // written are saved (an abort saves nothing).
                        (
                            JobStatus::Stopped,
                            self.save_what_a_stop_keeps(&tree, attempt).await,
                        )
                    };
                    self.update(&JobUpdate {
                        status: Some(status),
                        reason: Some(&reason),
                        finished: true,
                        ..JobUpdate::default()
                    });
                    self.status(status, attempt, None);
                    return status;
                }
                JobOutcome::Failed(reason) => {
                    if attempt > self.job.retries || self.cancel.is_cancelled() {
                        if !self.options.keep_failed_trees {
                            self.cleanup.remove(&tree);
                        }
                        return self.fail(attempt, &reason);
                    }
                    let exponent = (attempt - 1).min(16);
                    let delay = self
                        .options
                        .retry_delay
                        .saturating_mul(1 << exponent)
                        .min(Duration::from_secs(300));
                    self.bus.send(&Event::JobRetrying {
                        run: self.run.name.clone(),
                        job: self.job.id.clone(),
                        reason,
                        next_attempt: attempt + 1,
                        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    });
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.cancel.cancelled() => {
                            self.update(&JobUpdate { status: Some(JobStatus::Stopped), reason: Some("stopped before a retry"), finished: true, ..JobUpdate::default() });
                            self.status(JobStatus::Stopped, attempt, None);
                            return JobStatus::Stopped;
                        }
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn fail(&self, attempt: u32, reason: &FailureReason) -> JobStatus {
        if let Err(e) = self.store.fail_job(&self.run, &self.job.id, reason) {
            tracing::error!(run = %self.run.name, job = %self.job.id, "cannot record job failure: {e}");
        }
        self.status(JobStatus::Failed, attempt, Some(reason.to_string()));
        JobStatus::Failed
    }

    /// A fresh copy of the project for this attempt.
    async fn prepare_tree(&self, tree: &Path) -> Result<(), FailureReason> {
        let files = self.files.clone();
        let tree = tree.to_path_buf();
        let working_dir = if self.job.working_dir == "." {
            tree.clone()
        } else {
            tree.join(&self.job.working_dir)
        };
        tokio::task::spawn_blocking(move || -> Result<(), FailureReason> {
            if tree.exists() {
                std::fs::remove_dir_all(&tree).map_err(|e| FailureReason::Error {
                    message: format!("cannot clear the job's tree `{}`: {e}", tree.display()),
                })?;
            }
            files.materialise(&tree).map_err(|e| FailureReason::Error {
                message: format!("cannot copy the project into `{}`: {e}", tree.display()),
            })?;
            std::fs::create_dir_all(&working_dir).map_err(|e| FailureReason::Error {
                message: format!(
                    "cannot create the working directory `{}`: {e}",
                    working_dir.display()
                ),
            })
        })
        .await
        .map_err(|e| FailureReason::Error {
            message: format!("preparing the job's tree failed: {e}"),
        })?
    }

    /// Runs the executor with the job's timeout.
    async fn execute(&self, request: JobRequest, reporter: Arc<dyn Reporter>) -> JobOutcome {
        let token = self.cancel.child_token();
        let run = self.executor.run(request, reporter, token.clone());
        tokio::pin!(run);
        let Some(secs) = self.job.timeout_secs else {
            return run.await;
        };
        tokio::select! {
            outcome = &mut run => outcome,
            () = tokio::time::sleep(Duration::from_secs(secs)) => {
                // Stop it, and wait until the executor has cleaned up.
                token.cancel();
                let _ = run.await;
                JobOutcome::Failed(FailureReason::TimedOut { secs })
            }
        }
    }

    /// Saves the artifacts that a stopped job has written (those missing are left out); returns
    /// the reason to record: `stopped`, and what was saved or why nothing could be.
    async fn save_what_a_stop_keeps(&self, tree: &Path, attempt: u32) -> String {
        let working_dir = if self.job.working_dir == "." {
            tree.to_path_buf()
        } else {
            tree.join(&self.job.working_dir)
        };
        let present: Vec<String> = self
            .job
            .artifacts
            .iter()
            .filter(|p| std::fs::symlink_metadata(working_dir.join(p)).is_ok())
            .cloned()
            .collect();
        if present.is_empty() {
            // Nor is anything an earlier attempt saved listed as this one's.
            let dest = self.store.artifacts_dir(&self.run.name, &self.job.id);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dest)).await;
            return "stopped".to_owned();
        }
        self.update(&JobUpdate {
            status: Some(JobStatus::Uploading),
            ..JobUpdate::default()
        });
        self.status(JobStatus::Uploading, attempt, None);
        match self.save_artifacts_at(tree, present.clone()).await {
            Ok(()) => format!("stopped; saved {}", present.join(", ")),
            Err(reason) => format!("stopped; its artifacts were not saved: {reason}"),
        }
    }

    async fn save_artifacts(&self, tree: &Path) -> Result<(), FailureReason> {
        self.save_artifacts_at(tree, self.job.artifacts.clone())
            .await
    }

    /// Moves `paths` (artifacts of the job) from its tree into the artifact store.
    async fn save_artifacts_at(
        &self,
        tree: &Path,
        paths: Vec<String>,
    ) -> Result<(), FailureReason> {
        if paths.is_empty() {
            return Ok(());
        }
        let tree = tree.to_path_buf();
        let working_dir = if self.job.working_dir == "." {
            tree.clone()
        } else {
            tree.join(&self.job.working_dir)
        };
        let dest = self.store.artifacts_dir(&self.run.name, &self.job.id);
        tokio::task::spawn_blocking(move || {
            if dest.exists() {
                std::fs::remove_dir_all(&dest).map_err(|e| FailureReason::Error {
                    message: format!("cannot clear `{}`: {e}", dest.display()),
                })?;
            }
            artifacts::save(&tree, &working_dir, &paths, &dest)
        })
        .await
        .map_err(|e| FailureReason::Error {
            message: format!("saving artifacts failed: {e}"),
        })?
    }
}

/// Aborts a background task when dropped (also when the future that owns it is dropped
/// half-way).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes finished jobs' trees in the background, off the jobs' critical path; the run waits
/// for all of them before it ends, so no half-removed tree outlives it.
#[derive(Clone, Default)]
struct Cleanup {
    pending: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Cleanup {
    fn remove(&self, tree: &Path) {
        let tree = tree.to_path_buf();
        let handle = tokio::task::spawn_blocking(move || {
            if let Err(e) = std::fs::remove_dir_all(&tree)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("cannot remove the job tree `{}`: {e}", tree.display());
            }
        });
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(handle);
    }

    async fn wait(&self) {
        let handles = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for h in handles {
            let _ = h.await;
        }
    }
}

/// A job's log file: one record per line, `o ` or `e ` then the text. Writes are buffered and
/// flushed at least every 100 ms of activity, so the file can be followed while the job runs.
struct Log {
    path: PathBuf,
    state: Mutex<LogState>,
}

struct LogState {
    /// Opened at the first output: a silent job costs no file.
    writer: Option<std::io::BufWriter<std::fs::File>>,
    last_flush: Instant,
    /// The log cannot be written (reported once, output dropped).
    broken: bool,
}

impl Log {
    fn new(path: PathBuf) -> Log {
        Log {
            path,
            state: Mutex::new(LogState {
                writer: None,
                last_flush: Instant::now(),
                broken: false,
            }),
        }
    }

    fn open(&self) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        Ok(std::io::BufWriter::with_capacity(64 * 1024, file))
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let tag = match stream {
            Stream::Stdout => 'o',
            Stream::Stderr => 'e',
        };
        let prefix = format!("{tag} {} ", super::now_ms());
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = &mut *guard;
        if state.broken {
            return;
        }
        if state.writer.is_none() {
            match self.open() {
                Ok(w) => state.writer = Some(w),
                Err(e) => {
                    tracing::error!("cannot write the log `{}`: {e}", self.path.display());
                    state.broken = true;
                    return;
                }
            }
        }
        let Some(writer) = state.writer.as_mut() else {
            return;
        };
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let _ = writer.write_all(prefix.as_bytes());
            let _ = writer.write_all(line);
            if !line.ends_with(b"\n") {
                let _ = writer.write_all(b"\n");
            }
        }
        if state.last_flush.elapsed() >= Duration::from_millis(100) {
            let _ = writer.flush();
            state.last_flush = Instant::now();
        }
    }

    fn flush(&self) {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = guard.writer.as_mut() {
            let _ = w.flush();
        }
    }
}

/// One record of a job's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Which stream.
    pub stream: Stream,
    /// When it was written, in milliseconds since the epoch.
    pub at_ms: i64,
    /// The line, with its newline.
    pub line: Vec<u8>,
}

/// Parses the complete records of a log file's bytes (`o|e MILLIS TEXT\n`); a trailing
/// partial line (still being written) is left for the next read.
#[must_use]
pub fn parse_log(bytes: &[u8]) -> Vec<LogRecord> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .filter_map(|l| {
            let stream = match l.first()? {
                b'o' => Stream::Stdout,
                b'e' => Stream::Stderr,
                _ => return None,
            };
            let rest = l.get(2..)?;
            let space = rest.iter().position(|&b| b == b' ')?;
            let at_ms = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
            Some(LogRecord {
                stream,
                at_ms,
                line: rest[space + 1..].to_vec(),
            })
        })
        .collect()
}

struct JobReporter {
    store: Arc<RunStore>,
    bus: Bus,
    run: RunRecord,
    job: String,
    attempt: u32,
    log: Arc<Log>,
    /// Whether the executor said the job started.
    started: AtomicBool,
}

impl Reporter for JobReporter {
    fn started(&self, executor_id: &str) {
        self.started.store(true, Ordering::Relaxed);
        let update = JobUpdate {
            status: Some(JobStatus::Running),
            attempts: Some(self.attempt),
            executor_id: Some(executor_id),
            started: true,
            ..JobUpdate::default()
        };
        if let Err(e) = self.store.update_job(&self.run, &self.job, &update) {
            tracing::error!("cannot record that job `{}` started: {e}", self.job);
        }
        self.bus.send(&Event::JobStatus {
            run: self.run.name.clone(),
            job: self.job.clone(),
            status: JobStatus::Running,
            attempt: self.attempt,
            detail: None,
        });
    }

    fn log(&self, stream: Stream, bytes: &[u8]) {
        self.log.write(stream, bytes);
        if !self.bus.is_empty() {
            self.bus.send(&Event::Log {
                run: self.run.name.clone(),
                job: self.job.clone(),
                stream,
                text: String::from_utf8_lossy(bytes).into_owned(),
            });
        }
    }

    fn note(&self, message: &str) {
        self.bus.send(&Event::Note {
            run: self.run.name.clone(),
            job: self.job.clone(),
            message: message.to_owned(),
        });
    }

    fn retrying(&self, next_attempt: u32, reason: &FailureReason, delay: Duration) {
        let update = JobUpdate {
            attempts: Some(next_attempt),
            ..JobUpdate::default()
        };
        if let Err(e) = self.store.update_job(&self.run, &self.job, &update) {
            tracing::error!("cannot record the attempt of job `{}`: {e}", self.job);
        }
        self.bus.send(&Event::JobRetrying {
            run: self.run.name.clone(),
            job: self.job.clone(),
            reason: reason.clone(),
            next_attempt,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        });
    }
}
