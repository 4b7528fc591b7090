//! The run store: an embedded SQLite database (`rusqlite`, bundled) plus per-run folders for
//! logs, job trees and artifacts.
//!
//! Layout of the state folder (`<project>/.dstack/state/` unless `DSTACK_STATE_DIR` says
//! otherwise):
//!
//! ```text
//! .gitignore                     `*`: the state stays out of the project's repository
//! dstack.db                      runs, jobs, tags (WAL mode: readers never block the driver)
//! runs/<run>/git/                the captured Git state (written by the embedder, e.g. dstack-exec)
//! runs/<run>/logs/<job>.log      one record per line: `o ` or `e ` (stream), then the text
//! runs/<run>/jobs/<job>/         the job's private tree while it runs
//! runs/<run>/artifacts/<job>/    its saved artifacts, at their relative paths
//! ```
//!
//! Every write is one transaction, so a crash never leaves a half-written run; several
//! `dstack` processes may use one store at once (WAL + busy timeout).
//!
//! The folder and its database are made with the first run ([`RunStore::create_run`]): until
//! then the store is an empty database in memory, so `dstack ps` in the wrong folder, or a
//! `dstack run` refused for a typo, leaves nothing behind. Such a store reads the file as
//! soon as another process has made it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::executor::FailureReason;
use super::{JobStatus, RunStatus, names, now_ms};
use crate::diag::did_you_mean;
use crate::plan::Plan;

/// The schema migrations, applied in order; `PRAGMA user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    // 1: runs, jobs, tags, name counters.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        workflow TEXT NOT NULL,
        status TEXT NOT NULL,
        executor TEXT NOT NULL,
        variables TEXT NOT NULL,
        plan TEXT NOT NULL,
        project TEXT NOT NULL,
        git TEXT,
        driver_pid INTEGER,
        message TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER
    );
    CREATE TABLE jobs (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        job_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        workflow TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        executor_id TEXT,
        reused_from TEXT,
        started_at INTEGER,
        finished_at INTEGER,
        PRIMARY KEY (run_id, job_id)
    );
    CREATE TABLE tags (
        name TEXT PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE name_counters (
        base TEXT PRIMARY KEY,
        counter INTEGER NOT NULL
    );",
];

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("run store `{}`: {message}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// A file or folder of the store failed.
    #[error("run store: `{}`: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No run has this name.
    #[error("no run named `{name}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    RunNotFound {
        /// The name asked for.
        name: String,
        /// A close name.
        suggestion: Option<String>,
    },
    /// No run has this tag.
    #[error("no run is tagged `{tag}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    TagNotFound {
        /// The tag asked for.
        tag: String,
        /// A close tag.
        suggestion: Option<String>,
    },
    /// A request that cannot be honoured (an invalid tag name, tagging an unfinished run...).
    #[error("{0}")]
    Invalid(String),
}

/// A run as stored.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// Its database id.
    #[serde(skip)]
    pub id: i64,
    /// Its name (`cowardly-goose-1`).
    pub name: String,
    /// The workflow asked for.
    pub workflow: String,
    /// Its status.
    pub status: RunStatus,
    /// The executor's name.
    pub executor: String,
    /// The variables given on the command line or through the API.
    pub variables: serde_json::Value,
    /// The project's root folder.
    pub project: String,
    /// The Git state captured at submission, when there is one.
    pub git: Option<serde_json::Value>,
    /// The process driving it, while one does.
    pub driver_pid: Option<u32>,
    /// Whether the run is unfinished but its driver process is gone (killed, or on another
    /// machine's crash): `resume` finishes it, `stop` ends it.
    pub orphaned: bool,
    /// Why it ended the way it did.
    pub message: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// When it started running.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// The tags on it.
    pub tags: Vec<String>,
}

/// A job of a run as stored.
#[derive(Clone, Debug, Serialize)]
pub struct JobRecord {
    /// The job's id in the plan.
    pub job_id: String,
    /// Its workflow.
    pub workflow: String,
    /// Its status.
    pub status: JobStatus,
    /// Its exit code, when it ran to the end.
    pub exit_code: Option<i32>,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// How many attempts it took.
    pub attempts: u32,
    /// The executor's id for it (process group, container, Slurm job).
    pub executor_id: Option<String>,
    /// `run/job` whose artifacts it reused, for `name:tag` dependencies.
    pub reused_from: Option<String>,
    /// When it started.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
}

/// A change to a job.
#[derive(Clone, Debug, Default)]
pub struct JobUpdate<'a> {
    /// The new status.
    pub status: Option<JobStatus>,
    /// The exit code.
    pub exit_code: Option<i32>,
    /// Why (failure reason, skip cause).
    pub reason: Option<&'a str>,
    /// The attempt number.
    pub attempts: Option<u32>,
    /// The executor's id.
    pub executor_id: Option<&'a str>,
    /// The reused job, `run/job`.
    pub reused_from: Option<&'a str>,
    /// Set `started_at` to now.
    pub started: bool,
    /// Set `finished_at` to now.
    pub finished: bool,
}

/// What a new run is made of.
#[derive(Debug)]
pub struct NewRun<'a> {
    /// The plan to run.
    pub plan: &'a Plan,
    /// The variables given on the command line or through the API.
    pub variables: serde_json::Value,
    /// The executor's name.
    pub executor: &'a str,
    /// The project's root.
    pub project: &'a Path,
    /// The Git state, when captured.
    pub git: Option<serde_json::Value>,
}

/// The run store of one project.
#[derive(Debug)]
pub struct RunStore {
    dir: PathBuf,
    db: PathBuf,
    /// The database: the file, or an empty one in memory while there is no file.
    conn: Mutex<Connection>,
    /// Whether `conn` is the file (only ever goes from false to true, under `conn`'s lock).
    on_disk: AtomicBool,
}

/// The environment variable that moves the state folder.
pub const STATE_DIR_ENV: &str = "DSTACK_STATE_DIR";

/// The state folder of the project at `root`: `DSTACK_STATE_DIR`, or `<root>/.dstack/state`.
#[must_use]
pub fn default_state_dir(root: &Path) -> PathBuf {
    match std::env::var_os(STATE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root.join(".dstack").join("state"),
    }
}

/// Applies the migrations `conn` lacks, in one transaction; `db` names it in errors.
fn migrate(conn: &mut Connection, db: &Path) -> Result<(), StoreError> {
    let err = |e: rusqlite::Error| StoreError::Database {
        path: db.to_path_buf(),
        message: e.to_string(),
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "the run store `{}` was written by a newer dstack (schema {version}, this one knows {})",
            db.display(),
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(migration).map_err(err)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

impl RunStore {
    /// Opens the store in `dir`, applying pending migrations. A store that does not exist
    /// yet is not made here but with its first run: until then it is empty.
    ///
    /// # Errors
    /// When the database cannot be opened or migrated.
    pub fn open(dir: impl AsRef<Path>) -> Result<RunStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let db = dir.join("dstack.db");
        let (conn, on_disk) = if db.exists() {
            (Self::open_file(&dir, &db)?, true)
        } else {
            let mut conn = Connection::open_in_memory().map_err(|e| StoreError::Database {
                path: db.clone(),
                message: e.to_string(),
            })?;
            migrate(&mut conn, &db)?;
            (conn, false)
        };
        Ok(RunStore {
            dir,
            db,
            conn: Mutex::new(conn),
            on_disk: AtomicBool::new(on_disk),
        })
    }

    /// Opens the database file `db` in `dir`, making the folder and the file when needed.
    fn open_file(dir: &Path, db: &Path) -> Result<Connection, StoreError> {
        std::fs::create_dir_all(dir.join("runs")).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // The state never belongs in the project's repository, wherever the folder is: a
        // `.gitignore` of its own keeps it out of `git status` without touching the user's.
        let ignore = dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(
                &ignore,
                "# Written by dstack: run state, logs and artifacts.\n*\n",
            )
            .map_err(|source| StoreError::Io {
                path: ignore.clone(),
                source,
            })?;
        }
        let err = |e: rusqlite::Error| StoreError::Database {
            path: db.to_path_buf(),
            message: e.to_string(),
        };
        let mut conn = Connection::open(db).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        migrate(&mut conn, db)?;
        Ok(conn)
    }

    /// The state folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of run `name`.
    #[must_use]
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.dir.join("runs").join(name)
    }

    /// The log file of a job.
    #[must_use]
    pub fn log_path(&self, run: &str, job: &str) -> PathBuf {
        self.run_dir(run)
            .join("logs")
            .join(format!("{}.log", file_name(job)))
    }

    /// Where a job's artifacts are saved.
    #[must_use]
    pub fn artifacts_dir(&self, run: &str, job: &str) -> PathBuf {
        self.run_dir(run).join("artifacts").join(file_name(job))
    }

    /// Where a job's tree lives while it runs.
    #[must_use]
    pub fn job_tree(&self, run: &str, job: &str) -> PathBuf {
        self.run_dir(run).join("jobs").join(file_name(job))
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::Database {
            path: self.db.clone(),
            message: e.to_string(),
        }
    }

    /// The database, switched to the file when another process has made it since.
    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn_making(false)
    }

    /// The database; `make`: the file, made now if needed (to record a run).
    fn conn_making(&self, make: bool) -> Result<MutexGuard<'_, Connection>, StoreError> {
        // A panic while holding the lock cannot leave SQLite inconsistent (every write is a
        // transaction), so a poisoned lock is still usable.
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.on_disk.load(Ordering::Acquire) && (make || self.db.exists()) {
            *conn = Self::open_file(&self.dir, &self.db)?;
            self.on_disk.store(true, Ordering::Release);
        }
        Ok(conn)
    }

    /// Records a new run with all its jobs `submitted`, under a fresh name.
    ///
    /// # Errors
    /// When the database fails.
    pub fn create_run(&self, new: &NewRun<'_>) -> Result<RunRecord, StoreError> {
        let plan_json =
            serde_json::to_string(new.plan).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut conn = self.conn_making(true)?;
        let err = self.err();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let base = names::random_base();
        let counter: i64 = tx
            .query_row(
                "INSERT INTO name_counters (base, counter) VALUES (?1, 1)
                 ON CONFLICT(base) DO UPDATE SET counter = counter + 1
                 RETURNING counter",
                params![base],
                |r| r.get(0),
            )
            .map_err(&err)?;
        let name = format!("{base}-{counter}");
        let now = now_ms();
        tx.execute(
            "INSERT INTO runs (name, workflow, status, executor, variables, plan, project, git, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                name,
                new.plan.workflow,
                RunStatus::Submitted.as_str(),
                new.executor,
                new.variables.to_string(),
                plan_json,
                new.project.to_string_lossy(),
                new.git.as_ref().map(ToString::to_string),
                now
            ],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO jobs (run_id, job_id, position, workflow, status) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(&err)?;
            for (position, job) in new.plan.jobs.iter().enumerate() {
                insert
                    .execute(params![
                        id,
                        job.id,
                        i64::try_from(position).unwrap_or(i64::MAX),
                        job.workflow,
                        JobStatus::Submitted.as_str()
                    ])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        drop(conn);
        self.run(&name)
    }

    /// Records what `run` reuses for its `depends-on: WORKFLOW:TAG` dependencies: for each
    /// `(reference, workflow, from)`, a job of its own called `reference` (`prepare:latest`),
    /// `reused`, pointing at job `from` (`run/job`) of the tagged run. Listed before the
    /// planned jobs; given again (a resume), the record says what the tag names now.
    ///
    /// # Errors
    /// When the database fails.
    pub fn record_reused(
        &self,
        run: &RunRecord,
        reused: &[(&str, &str, &str)],
    ) -> Result<(), StoreError> {
        if reused.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let err = self.err();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        {
            let mut upsert = tx
                .prepare(
                    "INSERT INTO jobs (run_id, job_id, position, workflow, status, reused_from, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(run_id, job_id) DO UPDATE SET
                        status = excluded.status, reused_from = excluded.reused_from,
                        finished_at = excluded.finished_at",
                )
                .map_err(&err)?;
            let count = i64::try_from(reused.len()).unwrap_or(i64::MAX);
            let now = now_ms();
            for (i, (reference, workflow, from)) in reused.iter().enumerate() {
                upsert
                    .execute(params![
                        run.id,
                        reference,
                        i64::try_from(i).unwrap_or(0) - count,
                        workflow,
                        JobStatus::Reused.as_str(),
                        from,
                        now
                    ])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)
    }

    /// The plan a run was created with.
    ///
    /// # Errors
    /// When the run does not exist or its plan cannot be read.
    pub fn plan(&self, run: &RunRecord) -> Result<Plan, StoreError> {
        let text: String = self
            .conn()?
            .query_row(
                "SELECT plan FROM runs WHERE id = ?1",
                params![run.id],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        serde_json::from_str(&text).map_err(|e| {
            StoreError::Invalid(format!(
                "the stored plan of run `{}` is unreadable: {e}",
                run.name
            ))
        })
    }

    fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
        let status: String = row.get("status")?;
        let variables: String = row.get("variables")?;
        let git: Option<String> = row.get("git")?;
        let tags: Option<String> = row.get("tags")?;
        Ok(RunRecord {
            id: row.get("id")?,
            name: row.get("name")?,
            workflow: row.get("workflow")?,
            status: status.parse().unwrap_or(RunStatus::Failed),
            executor: row.get("executor")?,
            variables: serde_json::from_str(&variables).unwrap_or(serde_json::Value::Null),
            project: row.get("project")?,
            git: git.and_then(|g| serde_json::from_str(&g).ok()),
            driver_pid: row.get("driver_pid")?,
            orphaned: {
                let pid: Option<u32> = row.get("driver_pid")?;
                let finished = status
                    .parse::<RunStatus>()
                    .is_ok_and(RunStatus::is_finished);
                !finished && pid.is_none_or(|p| !super::process_alive(p))
            },
            message: row.get("message")?,
            created_at: row.get("created_at")?,
            started_at: row.get("started_at")?,
            finished_at: row.get("finished_at")?,
            tags: tags
                .map(|t| t.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }

    const RUN_COLUMNS: &'static str = "id, name, workflow, status, executor, variables, project, git, driver_pid, message,
        created_at, started_at, finished_at,
        (SELECT group_concat(t.name, ',') FROM (SELECT name FROM tags WHERE run_id = runs.id ORDER BY name) t) AS tags";

    /// The run called `name`.
    ///
    /// # Errors
    /// [`StoreError::RunNotFound`] (with a suggestion) when there is none.
    pub fn run(&self, name: &str) -> Result<RunRecord, StoreError> {
        let conn = self.conn()?;
        let found = conn
            .query_row(
                &format!("SELECT {} FROM runs WHERE name = ?1", Self::RUN_COLUMNS),
                params![name],
                Self::run_from_row,
            )
            .optional()
            .map_err(self.err())?;
        if let Some(run) = found {
            return Ok(run);
        }
        let mut stmt = conn.prepare("SELECT name FROM runs").map_err(self.err())?;
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.err())?
            .filter_map(Result::ok)
            .collect();
        Err(StoreError::RunNotFound {
            name: name.to_owned(),
            suggestion: did_you_mean(name, names.iter().map(String::as_str)).map(str::to_owned),
        })
    }

    /// Runs, newest first: all of them, or only unfinished ones and those of the last day.
    ///
    /// # Errors
    /// When the database fails.
    pub fn runs(&self, all: bool) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.conn()?;
        let since = if all {
            i64::MIN
        } else {
            now_ms() - 24 * 3600 * 1000
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM runs WHERE created_at >= ?1 OR status IN ('submitted', 'running', 'stopping', 'aborting')
                 ORDER BY created_at DESC, id DESC",
                Self::RUN_COLUMNS
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![since], Self::run_from_row)
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The jobs of a run, in plan order.
    ///
    /// # Errors
    /// When the database fails.
    pub fn jobs(&self, run: &RunRecord) -> Result<Vec<JobRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT job_id, workflow, status, exit_code, reason, attempts, executor_id, reused_from, started_at, finished_at
                 FROM jobs WHERE run_id = ?1 ORDER BY position",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![run.id], |r| {
                let status: String = r.get(2)?;
                Ok(JobRecord {
                    job_id: r.get(0)?,
                    workflow: r.get(1)?,
                    status: status.parse().unwrap_or(JobStatus::Failed),
                    exit_code: r.get(3)?,
                    reason: r.get(4)?,
                    attempts: r.get(5)?,
                    executor_id: r.get(6)?,
                    reused_from: r.get(7)?,
                    started_at: r.get(8)?,
                    finished_at: r.get(9)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Sets a run's status (and `message`); finished statuses set `finished_at`, `running`
    /// sets `started_at` the first time.
    ///
    /// # Errors
    /// When the database fails.
    pub fn set_run_status(
        &self,
        run: &RunRecord,
        status: RunStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.conn()?
            .execute(
                "UPDATE runs SET status = ?2, message = COALESCE(?3, message),
                    started_at = CASE WHEN ?2 = 'running' AND started_at IS NULL THEN ?4 ELSE started_at END,
                    finished_at = CASE WHEN ?2 IN ('done', 'failed', 'stopped', 'aborted') THEN ?4 ELSE NULL END
                 WHERE id = ?1",
                params![run.id, status.as_str(), message, now],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records the process that drives a run (`None` when it lets go).
    ///
    /// # Errors
    /// When the database fails.
    pub fn set_driver(&self, run: &RunRecord, pid: Option<u32>) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "UPDATE runs SET driver_pid = ?2 WHERE id = ?1",
                params![run.id, pid],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Makes process `pid` the driver of `run`, if its driver and status are still what the
    /// caller saw (`expected`, `run.status`): returns false when another process claimed it,
    /// or `dstack stop` changed it, in between.
    ///
    /// # Errors
    /// When the database fails.
    pub fn claim(
        &self,
        run: &RunRecord,
        expected: Option<u32>,
        pid: u32,
    ) -> Result<bool, StoreError> {
        let changed = self
            .conn()?
            .execute(
                "UPDATE runs SET driver_pid = ?3 WHERE id = ?1 AND driver_pid IS ?2 AND status = ?4",
                params![run.id, expected, pid, run.status.as_str()],
            )
            .map_err(self.err())?;
        Ok(changed == 1)
    }

    /// Marks `run` running, if its status is still `run.status` (what its driver claimed it
    /// with) and is not `stopping` or `aborting`: returns false when `dstack stop` changed it
    /// in between, or had asked for a stop already.
    ///
    /// # Errors
    /// When the database fails.
    pub fn start(&self, run: &RunRecord) -> Result<bool, StoreError> {
        let changed = self
            .conn()?
            .execute(
                "UPDATE runs SET status = 'running', message = NULL,
                    started_at = COALESCE(started_at, ?3), finished_at = NULL
                 WHERE id = ?1 AND status = ?2 AND status NOT IN ('stopping', 'aborting')",
                params![run.id, run.status.as_str(), now_ms()],
            )
            .map_err(self.err())?;
        Ok(changed == 1)
    }

    /// Applies `update` to one job.
    ///
    /// # Errors
    /// When the database fails.
    pub fn update_job(
        &self,
        run: &RunRecord,
        job: &str,
        update: &JobUpdate<'_>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.conn()?
            .execute(
                "UPDATE jobs SET
                    status = COALESCE(?3, status),
                    exit_code = CASE WHEN ?3 = 'submitted' THEN NULL ELSE COALESCE(?4, exit_code) END,
                    reason = CASE WHEN ?3 = 'submitted' THEN NULL ELSE COALESCE(?5, reason) END,
                    attempts = COALESCE(?6, attempts),
                    executor_id = COALESCE(?7, executor_id),
                    reused_from = COALESCE(?8, reused_from),
                    started_at = CASE WHEN ?9 THEN ?11 ELSE started_at END,
                    finished_at = CASE WHEN ?10 THEN ?11 WHEN ?3 IS NOT NULL THEN NULL ELSE finished_at END
                 WHERE run_id = ?1 AND job_id = ?2",
                params![
                    run.id,
                    job,
                    update.status.map(JobStatus::as_str),
                    update.exit_code,
                    update.reason,
                    update.attempts,
                    update.executor_id,
                    update.reused_from,
                    update.started,
                    update.finished,
                    now
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records a failure of a job.
    ///
    /// # Errors
    /// When the database fails.
    pub fn fail_job(
        &self,
        run: &RunRecord,
        job: &str,
        reason: &FailureReason,
    ) -> Result<(), StoreError> {
        let exit_code = match reason {
            FailureReason::ExitCode { code } => Some(*code),
            _ => None,
        };
        let text = reason.to_string();
        self.update_job(
            run,
            job,
            &JobUpdate {
                status: Some(JobStatus::Failed),
                exit_code,
                reason: Some(&text),
                finished: true,
                ..JobUpdate::default()
            },
        )
    }

    /// Puts `tag` on a finished run, moving it from another run if needed; returns the name of
    /// that other run (a `depends-on: WORKFLOW:TAG` now reuses `run` instead).
    ///
    /// # Errors
    /// An invalid tag name, an unfinished run, or a database failure.
    pub fn tag(&self, run: &RunRecord, tag: &str) -> Result<Option<String>, StoreError> {
        if !crate::config::valid_name(tag) {
            return Err(StoreError::Invalid(format!(
                "`{tag}` is not a valid tag: use letters, digits, `-`, `_` and `.`"
            )));
        }
        if !run.status.is_finished() {
            return Err(StoreError::Invalid(format!(
                "run `{}` is {}; tag it when it has finished",
                run.name, run.status
            )));
        }
        let mut conn = self.conn()?;
        let err = self.err();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let before: Option<String> = tx
            .query_row(
                "SELECT runs.name FROM tags JOIN runs ON runs.id = tags.run_id
                 WHERE tags.name = ?1 AND tags.run_id != ?2",
                params![tag, run.id],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)?;
        tx.execute(
            "INSERT INTO tags (name, run_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET run_id = excluded.run_id, created_at = excluded.created_at",
            params![tag, run.id, now_ms()],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(before)
    }

    /// Removes `tag`; returns the run it was on.
    ///
    /// # Errors
    /// [`StoreError::TagNotFound`] when no run has it.
    pub fn untag(&self, tag: &str) -> Result<String, StoreError> {
        let run = self.tagged(tag)?;
        self.conn()?
            .execute("DELETE FROM tags WHERE name = ?1", params![tag])
            .map_err(self.err())?;
        Ok(run.name)
    }

    /// Every tag with the name of its run, by tag name.
    ///
    /// # Errors
    /// When the database fails.
    pub fn tags(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT tags.name, runs.name, tags.created_at FROM tags JOIN runs ON runs.id = tags.run_id ORDER BY tags.name")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The run tagged `tag`.
    ///
    /// # Errors
    /// [`StoreError::TagNotFound`] (with a suggestion) when there is none.
    pub fn tagged(&self, tag: &str) -> Result<RunRecord, StoreError> {
        let name: Option<String> = self
            .conn()?
            .query_row(
                "SELECT runs.name FROM tags JOIN runs ON runs.id = tags.run_id WHERE tags.name = ?1",
                params![tag],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        match name {
            Some(name) => self.run(&name),
            None => {
                let tags = self.tags()?;
                Err(StoreError::TagNotFound {
                    tag: tag.to_owned(),
                    suggestion: did_you_mean(tag, tags.iter().map(|(t, _, _)| t.as_str()))
                        .map(str::to_owned),
                })
            }
        }
    }

    /// Deletes a run that was just created and never ran, when its creation cannot be
    /// completed (its embedder failed to store what belongs with it).
    ///
    /// # Errors
    /// A run that has started, or a database or file failure.
    pub fn discard_new_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        if run.status != RunStatus::Submitted || run.started_at.is_some() {
            return Err(StoreError::Invalid(format!(
                "run `{}` has started; only a run that never ran can be discarded",
                run.name
            )));
        }
        self.conn()?
            .execute("DELETE FROM runs WHERE id = ?1", params![run.id])
            .map_err(self.err())?;
        match std::fs::remove_dir_all(self.run_dir(&run.name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                path: self.run_dir(&run.name),
                source,
            }),
        }
    }

    /// Deletes a finished run: its record, jobs, logs and artifacts.
    ///
    /// # Errors
    /// An unfinished run, or a database or file failure.
    pub fn delete_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        if !run.status.is_finished() {
            return Err(StoreError::Invalid(format!(
                "run `{}` is {}; stop it before deleting it",
                run.name, run.status
            )));
        }
        // The record goes first: a crash in between leaves an orphan folder, never a record
        // that points at missing files.
        self.conn()?
            .execute("DELETE FROM runs WHERE id = ?1", params![run.id])
            .map_err(self.err())?;
        let dir = self.run_dir(&run.name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path: dir, source }),
        }
    }
}

/// A job id as a file name (`train/shard-1` -> `train__shard-1`).
fn file_name(job: &str) -> String {
    job.replace('/', "__")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::JobSpec;

    fn plan() -> Plan {
        Plan {
            workflow: "train".into(),
            jobs: vec![
                JobSpec {
                    id: "prepare".into(),
                    workflow: "prepare".into(),
                    ..JobSpec::default()
                },
                JobSpec {
                    id: "train".into(),
                    workflow: "train".into(),
                    depends_on: vec!["prepare".into()],
                    ..JobSpec::default()
                },
            ],
            stages: vec![vec!["prepare".into()], vec!["train".into()]],
            notes: Vec::new(),
            warnings: crate::Diagnostics::default(),
        }
    }

    fn new_run<'a>(plan: &'a Plan, root: &'a Path) -> NewRun<'a> {
        NewRun {
            plan,
            variables: serde_json::json!({"epochs": 3}),
            executor: "local",
            project: root,
            git: None,
        }
    }

    #[test]
    fn runs_jobs_and_tags_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RunStore::open(dir.path()).expect("opens");
        let plan = plan();
        let run = store
            .create_run(&new_run(&plan, dir.path()))
            .expect("creates");
        assert!(run.name.ends_with("-1"), "{}", run.name);
        assert_eq!(run.status, RunStatus::Submitted);
        assert_eq!(store.plan(&run).expect("plan"), plan);
        let jobs = store.jobs(&run).expect("jobs");
        assert_eq!(
            jobs.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(),
            ["prepare", "train"]
        );

        store
            .update_job(
                &run,
                "prepare",
                &JobUpdate {
                    status: Some(JobStatus::Running),
                    attempts: Some(1),
                    executor_id: Some("123"),
                    started: true,
                    ..JobUpdate::default()
                },
            )
            .expect("update");
        store
            .fail_job(&run, "prepare", &FailureReason::ExitCode { code: 3 })
            .expect("fail");
        let job = &store.jobs(&run).expect("jobs")[0];
        assert_eq!(
            (job.status, job.exit_code, job.attempts),
            (JobStatus::Failed, Some(3), 1)
        );
        assert_eq!(job.reason.as_deref(), Some("exited with code 3"));
        assert!(job.started_at.is_some() && job.finished_at.is_some());

        assert!(
            matches!(store.tag(&run, "latest"), Err(StoreError::Invalid(_))),
            "unfinished runs are not tagged"
        );
        store
            .set_run_status(&run, RunStatus::Failed, Some("prepare failed"))
            .expect("status");
        let run = store.run(&run.name).expect("run");
        assert_eq!(store.tag(&run, "latest").expect("tag"), None);
        assert_eq!(store.tag(&run, "latest").expect("again"), None, "not moved");
        assert!(matches!(
            store.tag(&run, "bad tag"),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.tagged("latest").expect("tagged").name, run.name);
        assert_eq!(store.run(&run.name).expect("run").tags, ["latest"]);
        assert!(
            matches!(store.tagged("lates"), Err(StoreError::TagNotFound { suggestion: Some(s), .. }) if s == "latest")
        );
        assert_eq!(store.untag("latest").expect("untag"), run.name);
        assert!(store.tags().expect("tags").is_empty());

        let missing = store.run("cowardly-goose-999").expect_err("missing");
        assert!(matches!(missing, StoreError::RunNotFound { .. }));
        store.delete_run(&run).expect("delete");
        assert!(store.runs(true).expect("runs").is_empty());
    }

    #[test]
    fn a_run_started_again_forgets_why_it_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RunStore::open(dir.path()).expect("opens");
        let plan = plan();
        let run = store
            .create_run(&new_run(&plan, dir.path()))
            .expect("creates");
        store
            .set_run_status(&run, RunStatus::Stopped, Some("stopped by the user"))
            .expect("stops");
        let stopped = store.run(&run.name).expect("run");
        assert_eq!(stopped.message.as_deref(), Some("stopped by the user"));
        assert!(store.start(&stopped).expect("starts"), "a resume starts it");
        let resumed = store.run(&run.name).expect("run");
        assert_eq!(resumed.status, RunStatus::Running);
        assert_eq!(resumed.message, None);
    }

    #[test]
    fn the_store_is_made_with_its_first_run() {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("state");
        let plan = plan();
        let reader = RunStore::open(&dir).expect("opens");
        assert!(reader.runs(true).expect("runs").is_empty());
        assert!(reader.tags().expect("tags").is_empty());
        assert!(matches!(
            reader.run("cowardly-goose-1"),
            Err(StoreError::RunNotFound { .. })
        ));
        assert!(!dir.exists(), "reading makes nothing");

        // Another process (here: another store) records a run: the reader sees it.
        let writer = RunStore::open(&dir).expect("opens");
        let run = writer
            .create_run(&new_run(&plan, top.path()))
            .expect("creates");
        assert!(dir.join("dstack.db").is_file() && dir.join("runs").is_dir());
        assert!(dir.join(".gitignore").is_file());
        assert_eq!(reader.run(&run.name).expect("seen").name, run.name);
        // The reader records into the same file.
        let second = reader
            .create_run(&new_run(&plan, top.path()))
            .expect("creates");
        assert_eq!(writer.runs(true).expect("runs").len(), 2);
        assert_ne!(second.name, run.name);
    }

    #[test]
    fn a_store_that_cannot_be_made_says_where() {
        let top = tempfile::tempdir().expect("tempdir");
        let file = top.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        let store = RunStore::open(file.join("state")).expect("opens: nothing is made yet");
        let plan = plan();
        let e = store
            .create_run(&new_run(&plan, top.path()))
            .expect_err("cannot make a folder in a file");
        assert!(
            matches!(&e, StoreError::Io { path, .. } if path == &file.join("state")),
            "{e:?}"
        );
    }

    #[test]
    fn names_count_per_base_and_stay_unique_across_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan();
        let a = RunStore::open(dir.path()).expect("opens");
        let b = RunStore::open(dir.path()).expect("opens again");
        let mut names = std::collections::HashSet::new();
        for i in 0..50 {
            let store = if i % 2 == 0 { &a } else { &b };
            let run = store
                .create_run(&new_run(&plan, dir.path()))
                .expect("creates");
            assert!(names.insert(run.name.clone()), "duplicate {}", run.name);
        }
        assert_eq!(a.runs(true).expect("runs").len(), 50);
    }

    #[test]
    fn newer_schemas_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(RunStore::open(dir.path()).expect("opens"));
        let conn = Connection::open(dir.path().join("dstack.db")).expect("sqlite");
        conn.pragma_update(None, "user_version", 99)
            .expect("pragma");
        drop(conn);
        let err = RunStore::open(dir.path()).expect_err("newer");
        assert!(err.to_string().contains("newer dstack"), "{err}");
    }
}
