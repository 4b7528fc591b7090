//! The engine: one project's runs, from submission to logs, tags and artifacts. The CLI and the
//! Python bindings are thin layers over it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dstack_core::run::store::JobUpdate;
use dstack_core::run::{
    JobStatus, LogRecord, RunError, RunOptions, RunRecord, RunStatus, RunStore, RunSummary,
    Scheduler, StoreError, Subscriber, artifacts, default_state_dir, parse_log, process_alive,
};
use dstack_core::{Overrides, Project, ProviderRegistry};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use crate::git::{self, GitError, Snapshot};
use crate::{ExecConfig, ExecutorKind, select};

/// The folder of a run that holds its captured Git state.
const GIT_DIR: &str = "git";
/// The folder of a run where its captured tree is written while it is driven.
const SOURCE_DIR: &str = "source";

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The project's files have problems.
    #[error(transparent)]
    Config(#[from] dstack_core::Error),
    /// Running failed around the jobs.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The executor cannot be used.
    #[error("{}{}", .0.message, .0.help.as_ref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
    Executor(#[from] dstack_core::run::ExecutorError),
    /// A file could not be read or written.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The project's Git state cannot be captured or reproduced.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The executor configuration file cannot be used.
    #[error(transparent)]
    ExecConfig(#[from] crate::ConfigFileError),
    /// A request that cannot be honoured.
    #[error("{0}")]
    Invalid(String),
}

/// A run just recorded, ready to be driven.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The run.
    pub run: RunRecord,
    /// Warnings about the plan on this executor (images ignored...).
    pub warnings: Vec<String>,
    /// Notes: how variables were matched, which executor was chosen.
    pub notes: Vec<String>,
}

/// One artifact folder of a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The job.
    pub job: String,
    /// The record.
    pub record: LogRecord,
}

/// A project's runs.
#[derive(Debug, Clone)]
pub struct Engine {
    root: PathBuf,
    store: Arc<RunStore>,
    providers: ProviderRegistry,
    config: ExecConfig,
    git: bool,
}

impl Engine {
    /// Opens the run store of the project at `root` (`DSTACK_STATE_DIR`, or
    /// `<root>/.dstack/state`) and loads the executor configuration
    /// ([`ExecConfig::load`]).
    ///
    /// # Errors
    /// When the store cannot be opened or the configuration file cannot be used.
    pub fn open(root: impl AsRef<Path>) -> Result<Engine, EngineError> {
        let root = root.as_ref().to_path_buf();
        let dir = default_state_dir(&root);
        Engine::with_state_dir(root, dir)
    }

    /// Opens the run store in `state_dir` for the project at `root` and loads the executor
    /// configuration ([`ExecConfig::load`]).
    ///
    /// # Errors
    /// When the store cannot be opened or the configuration file cannot be used.
    pub fn with_state_dir(
        root: impl Into<PathBuf>,
        state_dir: impl AsRef<Path>,
    ) -> Result<Engine, EngineError> {
        // Both made absolute once: a caller that changes its working directory later (a
        // notebook's `os.chdir`) keeps using the same project and store.
        let absolute = |path: PathBuf| {
            std::path::absolute(&path).map_err(|source| EngineError::Io { path, source })
        };
        let root = absolute(root.into())?;
        let state_dir = absolute(state_dir.as_ref().to_path_buf())?;
        let config = ExecConfig::load(&root)?;
        let store = Arc::new(RunStore::open(state_dir)?);
        Ok(Engine {
            providers: crate::providers::registry(&root, store.dir()),
            store,
            root,
            config,
            git: true,
        })
    }

    /// Whether new runs capture the project's Git state (the default) and run exactly it, or
    /// run the folder as it is (`--no-git`), which needs no repository and records no
    /// version.
    #[must_use]
    pub fn with_git(mut self, git: bool) -> Self {
        self.git = git;
        self
    }

    /// Uses `config` instead of the configuration file.
    #[must_use]
    pub fn with_exec_config(mut self, config: ExecConfig) -> Self {
        self.config = config;
        self
    }

    /// The executor configuration in use.
    #[must_use]
    pub fn exec_config(&self) -> &ExecConfig {
        &self.config
    }

    /// Uses `providers` (built-in ones plus those registered in code) to load the project;
    /// provider programs run through its runner, else through a
    /// [`ProcessRunner`](crate::providers::ProcessRunner).
    #[must_use]
    pub fn with_providers(mut self, mut providers: ProviderRegistry) -> Self {
        crate::providers::set_runner(&mut providers, &self.root, self.store.dir());
        self.providers = providers;
        self
    }

    /// Loads the project with the engine's providers.
    ///
    /// # Errors
    /// Problems in the project's files.
    pub fn project(&self) -> Result<Project, EngineError> {
        Ok(Project::load_with(&self.root, self.providers.clone())?)
    }

    /// The project's root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run store.
    #[must_use]
    pub fn store(&self) -> &Arc<RunStore> {
        &self.store
    }

    /// Loads the project, plans `workflow`, checks the plan against the executor and records a
    /// new run.
    ///
    /// # Errors
    /// Problems in the project's files, an executor that cannot be used or cannot run the
    /// plan, tags that do not resolve.
    pub fn submit(
        &self,
        workflow: &str,
        overrides: &Overrides,
        kind: ExecutorKind,
    ) -> Result<Submission, EngineError> {
        let project = self.project()?;
        let plan = project.plan(workflow, overrides)?;
        let selected = select(kind, &self.config)?;
        let scheduler = Scheduler::new(
            self.store.clone(),
            selected.executor,
            &self.root,
            Vec::new(),
        );
        let mut warnings: Vec<String> = plan.warnings.warnings().map(ToString::to_string).collect();
        warnings.extend(scheduler.check(&plan)?);
        warnings.extend(self.tagged_with_other_variables(&project, &plan, overrides));
        let mut notes = plan.notes.clone();
        notes.extend(selected.note);
        let snapshot = if self.git {
            let snapshot = git::capture(&self.root, self.store.dir())?;
            notes.push(format!("git: {}", snapshot.describe()));
            warnings.extend(snapshot.notes.iter().cloned());
            Some(snapshot)
        } else {
            None
        };
        // The snapshot is saved before the run exists (a run is never without its files),
        // then moved into the run's folder.
        let pending = match &snapshot {
            Some(snapshot) => {
                static PENDING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let dir = self.store.dir().join("runs").join(format!(
                    ".pending-git-{}-{}",
                    std::process::id(),
                    PENDING.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&dir);
                if let Err(e) = snapshot.save(&dir) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e.into());
                }
                Some(dir)
            }
            None => None,
        };
        let run = match scheduler.submit_with_git(
            &plan,
            overrides.to_json(),
            snapshot.as_ref().map(git_summary),
        ) {
            Ok(run) => run,
            Err(e) => {
                if let Some(dir) = &pending {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(e.into());
            }
        };
        if let Some(dir) = pending {
            let run_dir = self.store.run_dir(&run.name);
            let moved = std::fs::create_dir_all(&run_dir)
                .and_then(|()| std::fs::rename(&dir, run_dir.join(GIT_DIR)));
            if let Err(source) = moved {
                let _ = std::fs::remove_dir_all(&dir);
                let _ = self.store.discard_new_run(&run);
                return Err(EngineError::Io {
                    path: run_dir,
                    source,
                });
            }
        }
        Ok(Submission {
            run,
            warnings,
            notes,
        })
    }

    /// Writes the tree a run captured into a folder of its own for this drive
    /// (`runs/<RUN>/source-<PID>-<N>`: concurrent drives never share one, and a drive never
    /// meets a half-removed one) and returns it; `None` for a run made without Git.
    ///
    /// # Errors
    /// A run that recorded a Git state whose snapshot is gone (never run the live folder in its
    /// place), or a snapshot that cannot be written.
    fn source(&self, run: &RunRecord) -> Result<Option<PathBuf>, EngineError> {
        let run_dir = self.store.run_dir(&run.name);
        let saved = run_dir.join(GIT_DIR);
        if !saved.join("snapshot.json").is_file() {
            if run.git.is_some() {
                return Err(GitError::Corrupt {
                    path: saved,
                    reason: "the run recorded a Git state but its snapshot is missing".to_owned(),
                }
                .into());
            }
            return Ok(None);
        }
        let snapshot = Snapshot::load(&saved)?;
        static DRIVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dest = run_dir.join(format!(
            "{SOURCE_DIR}-{}-{}",
            std::process::id(),
            DRIVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dest); // a crashed process with the same pid
        if let Err(e) = git::materialise(&self.root, &snapshot, &dest) {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(e.into());
        }
        Ok(Some(dest))
    }

    /// For every `workflow:tag` dependency, whether the tagged run's job ran with other
    /// variables (its environment) than this run would give that workflow: say so.
    fn tagged_with_other_variables(
        &self,
        project: &Project,
        plan: &dstack_core::Plan,
        overrides: &Overrides,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for dep in plan.jobs.iter().flat_map(|j| &j.depends_on) {
            let Some((workflow, tag)) = dep.split_once(':') else {
                continue;
            };
            if !seen.insert(dep.clone()) {
                continue;
            }
            let Ok(tagged) = self.store.tagged(tag) else {
                continue;
            };
            let Ok(tagged_plan) = self.store.plan(&tagged) else {
                continue;
            };
            let Some(then) = tagged_plan.jobs.iter().find(|j| j.workflow == workflow) else {
                continue;
            };
            // A custom provider's program would run again (and maybe fetch) only for this
            // comparison: its workflows are not compared.
            let built_in = project.workflows().iter().any(|w| {
                w.name == workflow
                    && matches!(&w.provider, dstack_core::ProviderRef::Named(n) if self.providers.get(n).is_some())
            });
            if !built_in {
                continue;
            }
            let Ok(now_plan) = project.plan(workflow, overrides) else {
                continue;
            };
            let Some(now) = now_plan.jobs.iter().find(|j| j.workflow == workflow) else {
                continue;
            };
            let mut keys: Vec<&String> = then.env.keys().chain(now.env.keys()).collect();
            keys.sort();
            keys.dedup();
            let differences: Vec<String> = keys
                .into_iter()
                .filter(|k| then.env.get(*k) != now.env.get(*k))
                .map(|k| {
                    let show = |v: Option<&String>| {
                        v.map_or_else(|| "unset".to_owned(), |v| format!("`{v}`"))
                    };
                    format!(
                        "{k} was {} (now {})",
                        show(then.env.get(k)),
                        show(now.env.get(k))
                    )
                })
                .collect();
            if !differences.is_empty() {
                out.push(format!(
                    "`{dep}` reuses run `{}`, whose `{workflow}` ran with other variables: {}",
                    tagged.name,
                    differences.join(", ")
                ));
            }
        }
        out
    }

    /// The run called `name`.
    ///
    /// # Errors
    /// When there is none.
    pub fn run(&self, name: &str) -> Result<RunRecord, EngineError> {
        Ok(self.store.run(name)?)
    }

    /// Drives `run` (a new one, or one to resume) until it ends or `cancel` fires; `hurry`
    /// makes cancelled jobs die at once.
    ///
    /// # Errors
    /// When the store, the executor or the project fail around the jobs.
    pub async fn drive(
        &self,
        run: &RunRecord,
        options: &RunOptions,
        subscribers: Vec<Subscriber>,
        cancel: CancellationToken,
        hurry: CancellationToken,
    ) -> Result<RunSummary, EngineError> {
        let kind: ExecutorKind = run.executor.parse()?;
        let executor = select(kind, &self.config)?.executor;
        let source = {
            let engine = self.clone();
            let for_source = run.clone();
            tokio::task::spawn_blocking(move || engine.source(&for_source))
                .await
                .map_err(|e| EngineError::Io {
                    path: self.store.run_dir(&run.name),
                    source: std::io::Error::other(e),
                })
                .and_then(|r| r)
        };
        let source = match source {
            Ok(source) => source,
            Err(e) => {
                // A new run that cannot get its tree ends here, saying why (a resumed one
                // keeps the status it had).
                if let Ok(now) = self.store.run(&run.name)
                    && now.status == RunStatus::Submitted
                    && now.driver_pid.is_none()
                {
                    let _ = self.store.set_run_status(
                        &now,
                        RunStatus::Failed,
                        Some(&format!("the run's files could not be written: {e}")),
                    );
                }
                return Err(e);
            }
        };
        let mut scheduler = Scheduler::new(
            self.store.clone(),
            executor.clone(),
            &self.root,
            subscribers,
        );
        if let Some(dir) = &source {
            scheduler = scheduler.with_source(dir);
        }
        let hurrier = tokio::spawn({
            let executor = executor.clone();
            async move {
                hurry.cancelled().await;
                executor.hurry();
            }
        });
        let result = scheduler.drive(run, options, cancel).await;
        hurrier.abort();
        // The captured tree was copied into every job's tree; the snapshot stays with the run,
        // so a resume writes it again. The folder is this drive's alone.
        if let Some(dir) = source {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        }
        Ok(result?)
    }

    /// Checks that `run` can be resumed: it has jobs that did not succeed and no live process
    /// drives it.
    ///
    /// # Errors
    /// A finished run with nothing to do, or one still being driven.
    pub fn resumable(&self, name: &str) -> Result<RunRecord, EngineError> {
        let run = self.store.run(name)?;
        if run.status == RunStatus::Done {
            return Err(RunError::NothingToResume {
                run: run.name,
                status: run.status,
            }
            .into());
        }
        if let Some(pid) = run.driver_pid.filter(|&p| process_alive(p))
            && !run.status.is_finished()
            && pid != std::process::id()
        {
            return Err(RunError::AlreadyDriven { run: run.name, pid }.into());
        }
        Ok(run)
    }

    /// Stops a run: signals the process that drives it and waits up to `wait` for it to end.
    /// A run whose driver died is cleaned up here: what it left running is killed and its
    /// unfinished jobs are marked stopped. With `abort`, the run ends `aborted`.
    ///
    /// # Errors
    /// An unknown or finished run, or a store failure.
    pub fn stop(&self, name: &str, abort: bool, wait: Duration) -> Result<RunRecord, EngineError> {
        let run = self.store.run(name)?;
        if run.status.is_finished() {
            return Err(EngineError::Invalid(format!(
                "run `{}` has already ended ({})",
                run.name, run.status
            )));
        }
        let status = if abort {
            RunStatus::Aborting
        } else {
            RunStatus::Stopping
        };
        self.store.set_run_status(
            &run,
            status,
            Some(if abort {
                "aborted by the user"
            } else {
                "stopped by the user"
            }),
        )?;
        match run.driver_pid.filter(|&p| process_alive(p)) {
            Some(pid) => {
                // The driver watches the store and stops on its own; a driver that does not
                // react within 10 s (busy, or an older dstack) gets SIGTERM. Never signal our
                // own process (a notebook driving the run in-process).
                let started = Instant::now();
                let deadline = started + wait;
                let mut signalled = pid == std::process::id();
                loop {
                    let now = self.store.run(name)?;
                    if now.status.is_finished() || Instant::now() >= deadline {
                        return Ok(now);
                    }
                    if !signalled && started.elapsed() >= Duration::from_secs(10) {
                        let _ = kill(
                            Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                            Signal::SIGTERM,
                        );
                        signalled = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            None => {
                // The driver is gone: clean up after it.
                let jobs = self.store.jobs(&run)?;
                let ids: Vec<String> = jobs
                    .iter()
                    .filter(|j| !j.status.is_finished())
                    .filter_map(|j| j.executor_id.clone())
                    .collect();
                if !ids.is_empty() {
                    let kind: ExecutorKind = run.executor.parse()?;
                    let executor = select(kind, &self.config)?.executor;
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|source| EngineError::Io {
                            path: self.root.clone(),
                            source,
                        })?;
                    runtime.block_on(executor.reap(&ids))?;
                }
                let job_status = if abort {
                    JobStatus::Aborted
                } else {
                    JobStatus::Stopped
                };
                for job in jobs.iter().filter(|j| !j.status.is_finished()) {
                    let (status, reason) = if job.status == JobStatus::Submitted {
                        (JobStatus::Skipped, "the run was stopped")
                    } else {
                        (job_status, "stopped by the user")
                    };
                    self.store.update_job(
                        &run,
                        &job.job_id,
                        &JobUpdate {
                            status: Some(status),
                            reason: Some(reason),
                            finished: true,
                            ..JobUpdate::default()
                        },
                    )?;
                }
                let final_status = if abort {
                    RunStatus::Aborted
                } else {
                    RunStatus::Stopped
                };
                self.store.set_run_status(&run, final_status, None)?;
                self.store.set_driver(&run, None)?;
                Ok(self.store.run(name)?)
            }
        }
    }

    /// Deletes every finished run that has no tag, but those whose artifacts a kept run
    /// reuses (`depends-on: name:tag`); returns their names.
    ///
    /// # Errors
    /// When the store fails.
    pub fn prune(&self) -> Result<Vec<String>, EngineError> {
        let runs = self.store.runs(true)?;
        let (doomed, kept): (Vec<RunRecord>, Vec<RunRecord>) = runs
            .into_iter()
            .partition(|r| r.status.is_finished() && r.tags.is_empty());
        // A reused job names the run its artifacts are in (never a run that reused them in
        // turn), so one look at the kept runs finds every run they need.
        let mut needed = std::collections::HashSet::new();
        for run in &kept {
            for job in self.store.jobs(run)? {
                if let Some((source, _)) =
                    job.reused_from.as_deref().and_then(|f| f.split_once('/'))
                {
                    needed.insert(source.to_owned());
                }
            }
        }
        let mut pruned = Vec::new();
        for run in doomed {
            if !needed.contains(&run.name) {
                self.store.delete_run(&run)?;
                pruned.push(run.name);
            }
        }
        Ok(pruned)
    }

    /// The saved artifacts of a run: those of the jobs that succeeded, and those that stopped
    /// jobs had written (`dstack stop` saves them, `--abort` does not).
    ///
    /// # Errors
    /// An unknown run, or a store failure.
    pub fn artifacts(&self, name: &str) -> Result<Vec<Artifact>, EngineError> {
        let run = self.store.run(name)?;
        let plan = self.store.plan(&run)?;
        let jobs = self.store.jobs(&run)?;
        let mut out = Vec::new();
        for job in jobs
            .iter()
            .filter(|j| matches!(j.status, JobStatus::Done | JobStatus::Stopped))
        {
            let Some(spec) = plan.job(&job.job_id) else {
                continue;
            };
            let dir = self.store.artifacts_dir(&run.name, &job.job_id);
            for path in &spec.artifacts {
                let stored = dir.join(path);
                // A stopped job saved only what it had written.
                if job.status == JobStatus::Stopped && std::fs::symlink_metadata(&stored).is_err() {
                    continue;
                }
                let (files, bytes) = size_of(&stored);
                out.push(Artifact {
                    job: job.job_id.clone(),
                    path: path.clone(),
                    stored,
                    files,
                    bytes,
                });
            }
        }
        Ok(out)
    }

    /// Copies a run's artifacts into `dest/JOB/PATH`; returns the folders written.
    ///
    /// # Errors
    /// An unknown run, an artifact missing from the store, or a copy failure.
    pub fn export_artifacts(&self, name: &str, dest: &Path) -> Result<Vec<PathBuf>, EngineError> {
        let mut written = Vec::new();
        for a in self.artifacts(name)? {
            if !a.stored.exists() {
                return Err(EngineError::Invalid(format!(
                    "artifact `{}` of job `{}` is missing from the artifact store (`{}`)",
                    a.path,
                    a.job,
                    a.stored.display()
                )));
            }
            let to = dest.join(a.job.replace('/', "__")).join(&a.path);
            if to.exists() {
                return Err(EngineError::Invalid(format!(
                    "`{}` already exists; export into an empty folder",
                    to.display()
                )));
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|source| EngineError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            artifacts::link_tree(&a.stored, &to, false).map_err(|source| EngineError::Io {
                path: to.clone(),
                source,
            })?;
            written.push(to);
        }
        Ok(written)
    }

    /// The log lines of a run (of one workflow's jobs when `workflow` is given), written at or
    /// after `since_ms`, in time order.
    ///
    /// # Errors
    /// An unknown run or workflow, or an unreadable log.
    pub fn logs(
        &self,
        name: &str,
        workflow: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<LogLine>, EngineError> {
        let mut cursor = LogCursor::new(self, name, workflow)?;
        let mut lines = cursor.read_new()?;
        if let Some(since) = since_ms {
            lines.retain(|l| l.record.at_ms >= since);
        }
        Ok(lines)
    }

    /// Follows a run's logs: calls `on_line` for every line, old and new, until the run ends
    /// (or `cancel` fires).
    ///
    /// # Errors
    /// As [`Engine::logs`]; and when the process that drove the run has died, so that it
    /// cannot end on its own (after the lines it left).
    pub fn follow_logs(
        &self,
        name: &str,
        workflow: Option<&str>,
        cancel: &CancellationToken,
        mut on_line: impl FnMut(&LogLine),
    ) -> Result<RunRecord, EngineError> {
        let mut cursor = LogCursor::new(self, name, workflow)?;
        loop {
            let run = self.store.run(name)?;
            for line in cursor.read_new()? {
                on_line(&line);
            }
            if run.status.is_finished() || cancel.is_cancelled() {
                return Ok(self.store.run(name)?);
            }
            // A driver that died (not one yet to come: a new run has none for a moment).
            if let Some(pid) = run.driver_pid.filter(|_| run.orphaned) {
                return Err(EngineError::Invalid(format!(
                    "run `{name}` is {} but no process drives it any more (its driver, process {pid}, has ended); resume it to finish it, or stop it to end it",
                    run.status
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads the new complete records of a run's log files.
struct LogCursor {
    files: Vec<(String, PathBuf, usize)>,
}

impl LogCursor {
    fn new(engine: &Engine, name: &str, workflow: Option<&str>) -> Result<LogCursor, EngineError> {
        let run = engine.store.run(name)?;
        let jobs = engine.store.jobs(&run)?;
        if let Some(w) = workflow
            && !jobs.iter().any(|j| j.workflow == w)
        {
            let names: Vec<&str> = jobs.iter().map(|j| j.workflow.as_str()).collect();
            let hint = dstack_core::diag::did_you_mean(w, names.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(EngineError::Invalid(format!(
                "run `{name}` has no workflow `{w}`{hint}"
            )));
        }
        Ok(LogCursor {
            files: jobs
                .iter()
                .filter(|j| workflow.is_none_or(|w| j.workflow == w))
                .map(|j| {
                    (
                        j.job_id.clone(),
                        engine.store.log_path(&run.name, &j.job_id),
                        0,
                    )
                })
                .collect(),
        })
    }

    fn read_new(&mut self) -> Result<Vec<LogLine>, EngineError> {
        use std::io::{Read as _, Seek as _};
        let mut out = Vec::new();
        for (job, path, offset) in &mut self.files {
            let mut file = match std::fs::File::open(&*path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(EngineError::Io {
                        path: path.clone(),
                        source,
                    });
                }
            };
            file.seek(std::io::SeekFrom::Start(*offset as u64))
                .map_err(|source| EngineError::Io {
                    path: path.clone(),
                    source,
                })?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|source| EngineError::Io {
                    path: path.clone(),
                    source,
                })?;
            // Only complete lines; a partial last line is read next time.
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            *offset += complete;
            out.extend(
                parse_log(&bytes[..complete])
                    .into_iter()
                    .map(|record| LogLine {
                        job: job.clone(),
                        record,
                    }),
            );
        }
        out.sort_by_key(|l| l.record.at_ms);
        Ok(out)
    }
}

/// What the store records of a snapshot (the run's row; the changes stay in its folder).
fn git_summary(snapshot: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "remote": snapshot.remote,
        "head": snapshot.head,
        "commit": snapshot.commit,
        "dirty": snapshot.dirty,
        "counts": snapshot.counts,
        "bytes": snapshot.total_bytes,
        "describe": snapshot.describe(),
    })
}

fn size_of(path: &Path) -> (u64, u64) {
    let paths = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => artifacts::walk(path).unwrap_or_default(),
        Ok(_) => vec![path.to_path_buf()],
        Err(_) => Vec::new(),
    };
    paths
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| !m.is_dir())
        .fold((0, 0), |(files, bytes), m| (files + 1, bytes + m.len()))
}
