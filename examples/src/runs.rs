//! The run commands: `run`, `resume`, `ps`, `logs`, `stop`, `tag`, `untag`, `tags`,
//! `artifacts`, `prune`. Each is a call into `dstack_exec::Engine` plus rendering.

use std::io::Write;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use dstack_core::Overrides;
use dstack_core::run::{JobRecord, RunOptions, RunRecord, RunStatus, Stream, now_ms};
use dstack_exec::{Engine, EngineError, ExecutorKind};
use tokio_util::sync::CancellationToken;

use crate::Failure;
use crate::render::{Paint, Renderer, short};

/// Options of the commands that drive a run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DriveArgs {
    /// Run at most N jobs at once (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// Keep running what does not depend on a failed job.
    #[arg(long)]
    pub keep_going: bool,
    /// Return at once, leaving the run to a background process; follow it with `dstack ps`
    /// and `dstack logs -f`.
    #[arg(long)]
    pub detach: bool,
}

impl DriveArgs {
    fn options(&self) -> Result<RunOptions, Failure> {
        let mut options = RunOptions {
            keep_going: self.keep_going,
            ..RunOptions::default()
        };
        if let Some(jobs) = self.jobs {
            if jobs == 0 {
                return Err(Failure::Usage("error: `-j` needs at least 1 job".into()));
            }
            options.parallelism = jobs;
        }
        Ok(options)
    }
}

/// How `ps` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ListFormat {
    /// A table.
    Text,
    /// JSON.
    Json,
}

fn user(e: impl std::fmt::Display) -> Failure {
    Failure::User(format!("error: {e}"))
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        match e {
            // As for `plan`: diagnostics render themselves, variables that match nothing on
            // the command line are a usage error.
            EngineError::Config(e) => Failure::from(e),
            e => user(e),
        }
    }
}

/// What `dstack run` was asked for.
pub struct RunRequest<'a> {
    pub workflow: &'a str,
    pub overrides: &'a Overrides,
    pub executor: &'a str,
    /// Capture and run the Git state (not `--no-git`).
    pub git: bool,
}

pub fn run(
    dir: &Path,
    request: &RunRequest<'_>,
    args: &DriveArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let kind = ExecutorKind::from_str(request.executor).map_err(|e| {
        Failure::Usage(format!(
            "error: {e}{}",
            e.help
                .as_ref()
                .map(|h| format!("\n  help: {h}"))
                .unwrap_or_default()
        ))
    })?;
    let options = args.options()?;
    let engine = Engine::open(dir)?.with_git(request.git);
    let submission = engine.submit(request.workflow, request.overrides, kind)?;
    for w in &submission.warnings {
        let w = if w.contains(": warning: ") {
            w.clone()
        } else {
            format!("warning: {w}")
        };
        let _ = writeln!(err, "{w}");
    }
    for n in &submission.notes {
        let _ = writeln!(err, "note: {n}");
    }
    let _ = writeln!(out, "{}", submission.run.name);
    let _ = out.flush();
    if args.detach {
        return detach(&engine, &submission.run, args, err);
    }
    drive_foreground(&engine, &submission.run, &options, err)
}

pub fn resume(
    dir: &Path,
    name: &str,
    args: &DriveArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let options = args.options()?;
    let engine = Engine::open(dir)?;
    let run = engine.resumable(name)?;
    let _ = writeln!(out, "{}", run.name);
    let _ = out.flush();
    if args.detach {
        return detach(&engine, &run, args, err);
    }
    drive_foreground(&engine, &run, &options, err)
}

/// Cancels `cancel` on the first SIGINT, SIGTERM or SIGHUP (the terminal closed, the SSH
/// session dropped) and `hurry` on the next ones.
fn handle_signals(
    cancel: CancellationToken,
    hurry: CancellationToken,
    renderer: Option<Arc<Renderer>>,
) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(user)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(user)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(user)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
            if cancel.is_cancelled() {
                if let Some(r) = &renderer {
                    r.eprintln("killing the running jobs");
                }
                hurry.cancel();
            } else {
                if let Some(r) = &renderer {
                    r.eprintln("stopping the run (press Ctrl-C again to kill its jobs at once)");
                }
                cancel.cancel();
            }
        }
    });
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(user)
}

fn drive_foreground(
    engine: &Engine,
    run: &RunRecord,
    options: &RunOptions,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let renderer = Renderer::new(true);
    let summary = runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        let hurry = CancellationToken::new();
        handle_signals(cancel.clone(), hurry.clone(), Some(renderer.clone()))?;
        engine
            .drive(run, options, vec![renderer.subscriber()], cancel, hurry)
            .await
            .map_err(Failure::from)
    });
    // The jobs' output that waits, before anything else is said, also after an error (the
    // renderer's drop would do it only when no one else, its flushing thread, holds it).
    renderer.flush();
    let summary = summary?;
    print_summary(&summary.run, &summary.jobs, err);
    match summary.run.status {
        RunStatus::Done => Ok(()),
        RunStatus::Stopped | RunStatus::Aborted => Err(Failure::Code(130)),
        _ => Err(Failure::Code(1)),
    }
}

fn print_summary(run: &RunRecord, jobs: &[JobRecord], err: &mut dyn Write) {
    let paint = Paint::stderr();
    let width = jobs.iter().map(|j| j.job_id.len()).max().unwrap_or(4);
    let _ = writeln!(err);
    for j in jobs {
        let mut line = format!("{:width$}  {}", j.job_id, paint.status(j.status));
        if let (Some(s), Some(f)) = (j.started_at, j.finished_at) {
            line.push_str(&format!(
                "  {}",
                short(Duration::from_millis(u64::try_from(f - s).unwrap_or(0)))
            ));
        }
        if let Some(r) = &j.reason {
            line.push_str(&format!("  {r}"));
        }
        if let Some(from) = &j.reused_from {
            line.push_str(&format!("  (from {from})"));
        }
        let _ = writeln!(err, "{line}");
    }
    let _ = writeln!(err, "run {} {}", run.name, run.status);
}

/// Leaves the run to a background `dstack __drive` process.
fn detach(
    engine: &Engine,
    run: &RunRecord,
    args: &DriveArgs,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().map_err(user)?;
    let dir = engine.store().run_dir(&run.name);
    std::fs::create_dir_all(&dir).map_err(user)?;
    let log_path = dir.join("driver.log");
    let log = std::fs::File::create(&log_path).map_err(user)?;
    let root = std::path::absolute(engine.root()).map_err(user)?;
    let mut command = std::process::Command::new(exe);
    command.arg("-C").arg(root).arg("__drive").arg(&run.name);
    if let Some(j) = args.jobs {
        command.arg("-j").arg(j.to_string());
    }
    if args.keep_going {
        command.arg("--keep-going");
    }
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(user)?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(user)?;
    engine
        .store()
        .set_driver(run, Some(child.id()))
        .map_err(user)?;
    let _ = writeln!(
        err,
        "running in the background (process {}); follow it with `dstack logs -f {}`",
        child.id(),
        run.name
    );
    Ok(())
}

/// `dstack __drive RUN`: the background process of a detached run.
pub fn drive_detached(dir: &Path, name: &str, args: &DriveArgs) -> Result<(), Failure> {
    let options = args.options()?;
    let engine = Engine::open(dir)?;
    let run = engine.run(name)?;
    let summary = runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        let hurry = CancellationToken::new();
        handle_signals(cancel.clone(), hurry.clone(), None)?;
        engine
            .drive(
                &run,
                &options,
                vec![Renderer::new(false).subscriber()],
                cancel,
                hurry,
            )
            .await
            .map_err(Failure::from)
    })?;
    print_summary(&summary.run, &summary.jobs, &mut std::io::stderr());
    Ok(())
}

fn age(ms: i64) -> String {
    let secs = u64::try_from((now_ms() - ms) / 1000).unwrap_or(0);
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
            .to_string()
            .split(' ')
            .next()
            .unwrap_or("0s")
    )
}

fn duration(run: &RunRecord) -> String {
    match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => short(Duration::from_millis(u64::try_from(f - s).unwrap_or(0))),
        (Some(s), None) => short(Duration::from_millis(
            u64::try_from(now_ms() - s).unwrap_or(0),
        )),
        _ => "-".into(),
    }
}

pub fn ps(
    dir: &Path,
    run: Option<&str>,
    all: bool,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let engine = Engine::open(dir)?;
    let store = engine.store();
    let runs = match run {
        Some(name) => vec![engine.run(name)?],
        None => store.runs(all).map_err(user)?,
    };
    let with_jobs: Vec<(RunRecord, Vec<JobRecord>)> = runs
        .into_iter()
        .map(|r| {
            let jobs = store.jobs(&r).unwrap_or_default();
            (r, jobs)
        })
        .collect();
    if let ListFormat::Json = format {
        let value: Vec<serde_json::Value> = with_jobs
            .iter()
            .map(|(r, jobs)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["jobs"] = serde_json::to_value(jobs).unwrap_or_default();
                v
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    if run.is_some() {
        for (r, jobs) in &with_jobs {
            let _ = writeln!(
                out,
                "run       {}\nworkflow  {}\nstatus    {}\nexecutor  {}\nsubmitted {}\nduration  {}",
                r.name,
                r.workflow,
                r.status,
                r.executor,
                age(r.created_at),
                duration(r)
            );
            if !r.tags.is_empty() {
                let _ = writeln!(out, "tags      {}", r.tags.join(", "));
            }
            let git = r
                .git
                .as_ref()
                .and_then(|g| g["describe"].as_str())
                .unwrap_or("not recorded");
            let _ = writeln!(out, "git       {git}");
            if r.orphaned {
                let _ = writeln!(
                    out,
                    "driver    gone: `dstack resume {0}` finishes the run, `dstack stop {0}` ends it",
                    r.name
                );
            }
            if let Some(m) = &r.message {
                let _ = writeln!(out, "message   {m}");
            }
            if r.variables.as_object().is_some_and(|o| !o.is_empty()) {
                let _ = writeln!(out, "variables {}", r.variables);
            }
            let width = jobs
                .iter()
                .map(|j| j.job_id.len())
                .max()
                .unwrap_or(3)
                .max(3);
            let _ = writeln!(
                out,
                "\n{:width$}  {:11}  {:4}  {:8}  {:8}  REASON",
                "JOB", "STATUS", "EXIT", "ATTEMPTS", "DURATION"
            );
            for j in jobs {
                let d = match (j.started_at, j.finished_at) {
                    (Some(s), Some(f)) => {
                        short(Duration::from_millis(u64::try_from(f - s).unwrap_or(0)))
                    }
                    _ => "-".into(),
                };
                let exit = j.exit_code.map_or_else(|| "-".into(), |c| c.to_string());
                let reason = j
                    .reason
                    .clone()
                    .or_else(|| j.reused_from.as_ref().map(|f| format!("reused from {f}")))
                    .unwrap_or_default();
                let line = format!(
                    "{:width$}  {:11}  {:4}  {:8}  {:8}  {reason}",
                    j.job_id,
                    j.status.as_str(),
                    exit,
                    j.attempts,
                    d
                );
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        return Ok(());
    }
    if with_jobs.is_empty() {
        let _ = writeln!(
            out,
            "no runs{}",
            if all {
                ""
            } else {
                " in the last day (all runs: `dstack ps -a`)"
            }
        );
        return Ok(());
    }
    let width = with_jobs
        .iter()
        .map(|(r, _)| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let wf_width = with_jobs
        .iter()
        .map(|(r, _)| r.workflow.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        out,
        "{:width$}  {:wf_width$}  {:9}  {:8}  {:5}  {:10}  {:8}  {:14}  TAGS",
        "RUN", "WORKFLOW", "STATUS", "EXECUTOR", "JOBS", "SUBMITTED", "DURATION", "COMMIT"
    );
    for (r, jobs) in &with_jobs {
        let done = jobs.iter().filter(|j| j.status.succeeded()).count();
        let status = if r.orphaned {
            format!("{}*", r.status)
        } else {
            r.status.to_string()
        };
        let line = format!(
            "{:width$}  {:wf_width$}  {:9}  {:8}  {:5}  {:10}  {:8}  {:14}  {}",
            r.name,
            r.workflow,
            status,
            r.executor,
            format!("{done}/{}", jobs.len()),
            age(r.created_at),
            duration(r),
            commit(r),
            r.tags.join(",")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if with_jobs.iter().any(|(r, _)| r.orphaned) {
        let _ = writeln!(
            out,
            "\n* no process drives this run any more: `dstack resume RUN` finishes it, `dstack stop RUN` ends it"
        );
    }
    Ok(())
}

/// The run's commit for `ps`: 8 hex digits, `-dirty` when it had local changes (as `git
/// describe --dirty` says), `(no commit)` in a repository without one, `-` without Git.
fn commit(r: &RunRecord) -> String {
    let Some(git) = &r.git else {
        return "-".to_owned();
    };
    let dirty = if git["dirty"].as_bool().unwrap_or(false) {
        "-dirty"
    } else {
        ""
    };
    match git["commit"].as_str() {
        Some(c) => format!("{}{dirty}", c.get(..8).unwrap_or(c)),
        None => "(no commit)".to_owned(),
    }
}

pub fn logs(
    dir: &Path,
    name: &str,
    workflow: Option<&str>,
    follow: bool,
    since: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let since_ms = match since {
        None => None,
        Some(text) => Some(match humantime::parse_duration(text) {
            Ok(d) => now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(_) => {
                let t = humantime::parse_rfc3339_weak(text).map_err(|_| Failure::Usage(format!("error: `--since {text}` is neither a duration (`10m`, `1d`) nor a time (`2026-11-25T10:00:00`)")))?;
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
        }),
    };
    let engine = Engine::open(dir)?;
    let run = engine.run(name)?;
    let multi = engine
        .store()
        .jobs(&run)
        .map_err(user)?
        .iter()
        .filter(|j| workflow.is_none_or(|w| j.workflow == w))
        .count()
        > 1;
    let mut print = |line: &dstack_exec::LogLine| {
        if since_ms.is_some_and(|s| line.record.at_ms < s) {
            return;
        }
        let mut text = Vec::with_capacity(line.record.line.len() + line.job.len() + 3);
        if multi {
            text.extend_from_slice(line.job.as_bytes());
            text.extend_from_slice(b" | ");
        }
        text.extend_from_slice(&line.record.line);
        let _ = match line.record.stream {
            Stream::Stdout => out.write_all(&text),
            Stream::Stderr => err.write_all(&text),
        };
    };
    if follow {
        engine.follow_logs(name, workflow, &CancellationToken::new(), &mut print)?;
    } else {
        for line in engine.logs(name, workflow, None)? {
            print(&line);
        }
    }
    Ok(())
}

pub fn stop(dir: &Path, name: &str, abort: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let engine = Engine::open(dir)?;
    let run = engine.stop(name, abort, Duration::from_secs(60))?;
    let _ = writeln!(out, "run {} {}", run.name, run.status);
    Ok(())
}

pub fn tag(dir: &Path, name: &str, tag: &str, out: &mut dyn Write) -> Result<(), Failure> {
    let engine = Engine::open(dir)?;
    let run = engine.run(name)?;
    let moved = engine.store().tag(&run, tag).map_err(user)?;
    let _ = match moved {
        Some(from) => writeln!(out, "tagged {} as {tag} (moved from {from})", run.name),
        None => writeln!(out, "tagged {} as {tag}", run.name),
    };
    Ok(())
}

pub fn untag(dir: &Path, tag: &str, out: &mut dyn Write) -> Result<(), Failure> {
    let engine = Engine::open(dir)?;
    let run = engine.store().untag(tag).map_err(user)?;
    let _ = writeln!(out, "removed tag {tag} from {run}");
    Ok(())
}

pub fn tags(dir: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let engine = Engine::open(dir)?;
    let tags = engine.store().tags().map_err(user)?;
    if tags.is_empty() {
        let _ = writeln!(
            out,
            "no tags (tag a finished run with `dstack tag RUN TAG`)"
        );
        return Ok(());
    }
    let width = tags
        .iter()
        .map(|(t, _, _)| t.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let _ = writeln!(out, "{:width$}  RUN", "TAG");
    for (tag, run, _) in tags {
        let _ = writeln!(out, "{tag:width$}  {run}");
    }
    Ok(())
}

pub fn artifacts(
    dir: &Path,
    name: &str,
    output: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let engine = Engine::open(dir)?;
    if let Some(dest) = output {
        let written = engine.export_artifacts(name, dest)?;
        if written.is_empty() {
            let _ = writeln!(out, "run {name} has no artifacts: nothing exported");
        }
        for path in written {
            let _ = writeln!(out, "{}", path.display());
        }
        return Ok(());
    }
    let list = engine.artifacts(name)?;
    if list.is_empty() {
        let _ = writeln!(out, "run {name} has no artifacts");
        return Ok(());
    }
    let width = list.iter().map(|a| a.job.len()).max().unwrap_or(3).max(3);
    let pw = list.iter().map(|a| a.path.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:width$}  {:pw$}  {:>6}  SIZE",
        "JOB", "PATH", "FILES"
    );
    for a in list {
        let _ = writeln!(
            out,
            "{:width$}  {:pw$}  {:>6}  {}",
            a.job,
            a.path,
            a.files,
            human_size(a.bytes)
        );
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

pub fn prune(dir: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let engine = Engine::open(dir)?;
    let pruned = engine.prune()?;
    for name in &pruned {
        let _ = writeln!(out, "deleted {name}");
    }
    let _ = writeln!(
        out,
        "{} run(s) deleted; tagged and unfinished runs are kept",
        pruned.len()
    );
    Ok(())
}
