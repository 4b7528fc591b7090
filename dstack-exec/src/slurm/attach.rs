//! Following one submitted job to its end: its start, its output (streamed from the files on
//! the shared file system), its retries, its cancellation, its outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dstack_core::run::artifacts;
use dstack_core::run::{DagJob, DagRun, FailureReason, JobOutcome, Reporter, Stream};
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::layout::Layout;
use super::state::{self, Cancelled, Phase, Seen, Status};
use crate::output::FileTail;

/// At most this much output is read per file and turn (a job that prints gigabytes is
/// streamed over several turns).
const READ_LIMIT: u64 = 4 << 20;

/// Follows the job `executor_id` to its end.
pub(super) async fn attach(
    inner: &Arc<Inner>,
    run: &DagRun,
    job: DagJob,
    executor_id: String,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> JobOutcome {
    let layout = Layout::new(run, inner.settings.shared_dir.as_deref());
    let dir = layout.job_dir(&job.request.tree);
    let spec = &job.request.job;
    let mut output = Output::open(&dir);
    let mut seen_rx = inner.tracker.follow(&executor_id);
    // Stops following when this future ends, also when it is dropped half-way.
    let _following = Following {
        tracker: &inner.tracker,
        id: &executor_id,
    };
    let mut ticks = inner.tracker.ticks();
    let mut trouble = inner.tracker.trouble();
    let mut started = false;
    let mut cancelled: Option<Cancelled> = None;
    let mut told_trouble = false;
    let last = loop {
        let seen = seen_rx.borrow_and_update().clone();
        let phase = match &seen {
            Seen::Unknown => None,
            Seen::Listed(o) => Some(o.phase()),
            Seen::Gone => Some(Phase::Ended),
        };
        if let Seen::Listed(o) = &seen
            && o.phase() == Phase::Queued
            && o.reason == "DependencyNeverSatisfied"
            && cancelled.is_none()
        {
            // Slurm keeps it waiting for a dependency that failed: it will never run.
            inner.tracker.cancel(&executor_id);
            cancelled = Some(Cancelled::Dependency);
        }
        let ran = match &seen {
            Seen::Listed(o) => {
                o.phase() == Phase::Running
                    || (o.phase() == Phase::Ended && o.state != "CANCELLED")
                    || (o.phase() == Phase::Ended && dir.join("status").exists())
            }
            Seen::Gone => dir.join("status").exists(),
            Seen::Unknown => false,
        };
        if ran && !started {
            started = true;
            reporter.started(&executor_id);
            if let Some(gpu) = &spec.resources.gpu
                && gpu.memory_bytes.is_some()
            {
                reporter.note(
                    "Slurm has no request for GPU memory: the GPU's `memory` is not enforced (use `slurm.sbatch-args` with a constraint)",
                );
            }
        }
        if started {
            output.read(spec, &*reporter);
        }
        if phase == Some(Phase::Ended) {
            break seen;
        }
        tokio::select! {
            changed = seen_rx.changed() => {
                if changed.is_err() {
                    break Seen::Unknown;
                }
            }
            _ = ticks.changed(), if started => {}
            _ = trouble.changed() => {
                let now = trouble.borrow_and_update().clone();
                match now {
                    Some(text) if !told_trouble => {
                        reporter.note(&format!("cannot read the job's state from Slurm, retrying: {text}"));
                        told_trouble = true;
                    }
                    None => told_trouble = false,
                    Some(_) => {}
                }
            }
            () = cancel.cancelled(), if cancelled.is_none() => {
                inner.tracker.cancel(&executor_id);
                cancelled = Some(Cancelled::ByUs);
            }
        }
    };
    if cancel.is_cancelled() && cancelled.is_none() {
        cancelled = Some(Cancelled::ByUs);
    }

    // The last of the output, and how the job ended.
    let status = read_status(&dir, spec);
    // A shared file system may show the status file a moment after Slurm shows the end.
    let status = match status {
        None if matches!(&last, Seen::Listed(o) if o.state == "COMPLETED") => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            read_status(&dir, spec)
        }
        s => s,
    };
    output.read(spec, &*reporter);
    output.finish(&*reporter);
    let outcome = state::outcome(&executor_id, spec, &last, status.as_ref(), cancelled);
    if !matches!(&last, Seen::Listed(o) if o.phase() == Phase::Ended)
        && outcome != JobOutcome::Succeeded
    {
        // Given up on without Slurm saying it ended (unknown to it, or no longer followed):
        // make sure nothing of it runs.
        inner.tracker.cancel(&executor_id);
    }
    match outcome {
        JobOutcome::Succeeded if layout.separate() => {
            let shared = layout.shared(&job.artifacts_dir);
            let store = job.artifacts_dir.clone();
            let paths = spec.artifacts.clone();
            tokio::task::spawn_blocking(move || publish(&shared, &store, &paths))
                .await
                .unwrap_or_else(|e| {
                    Err(FailureReason::Error {
                        message: format!("saving artifacts failed: {e}"),
                    })
                })
                .map_or_else(JobOutcome::Failed, |()| JobOutcome::Succeeded)
        }
        JobOutcome::Failed(FailureReason::Error { message })
            if status.is_none() || message.starts_with("cannot ") =>
        {
            // What the batch script itself said (a shared folder missing on the node...).
            let said = slurm_output(&layout, &executor_id);
            JobOutcome::Failed(FailureReason::Error {
                message: if said.is_empty() {
                    message
                } else {
                    format!("{message}; the batch script said: {said}")
                },
            })
        }
        other => other,
    }
}

/// Unfollows a job when dropped.
struct Following<'a> {
    tracker: &'a super::tracker::Tracker,
    id: &'a str,
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.tracker.unfollow(self.id);
    }
}

/// The last lines Slurm's own output file of the task holds.
fn slurm_output(layout: &Layout, executor_id: &str) -> String {
    let path = layout
        .slurm_dir()
        .join("output")
        .join(format!("{executor_id}.out"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// The job's `status` file, if it wrote one.
pub(super) fn read_status(dir: &Path, spec: &dstack_core::JobSpec) -> Option<Status> {
    let text = std::fs::read_to_string(dir.join("status")).ok()?;
    state::parse_status(&text, spec)
}

/// Copies a job's artifacts from the shared folder into the artifact store.
fn publish(shared: &Path, store: &Path, paths: &[String]) -> Result<(), FailureReason> {
    if store.exists() {
        std::fs::remove_dir_all(store).map_err(|e| FailureReason::Error {
            message: format!("cannot clear `{}`: {e}", store.display()),
        })?;
    }
    for path in paths {
        let from = shared.join(path);
        let to = store.join(path);
        if std::fs::symlink_metadata(&from).is_err() {
            return Err(FailureReason::MissingArtifact { path: path.clone() });
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| FailureReason::Error {
                message: format!("cannot create `{}`: {e}", parent.display()),
            })?;
        }
        artifacts::link_tree(&from, &to, false).map_err(|e| FailureReason::Error {
            message: format!("cannot copy artifact `{path}` into the artifact store: {e}"),
        })?;
    }
    Ok(())
}

/// The job's output files and retries, read from where dstack stopped last time (kept in
/// `offsets`, so a re-attached job's output is not reported twice).
struct Output {
    offsets: PathBuf,
    streams: [FileTail; 2],
    retries: PathBuf,
    retries_seen: u64,
    saved: (u64, u64, u64),
}

impl Output {
    fn open(dir: &Path) -> Output {
        let offsets = dir.join("offsets");
        let saved: Vec<u64> = std::fs::read_to_string(&offsets)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let at = |i: usize| saved.get(i).copied().unwrap_or(0);
        Output {
            offsets,
            streams: [
                // Opened at every read: a client of a shared file system sees the node's
                // writes only when it opens the file.
                FileTail::new(dir.join("stdout"), Stream::Stdout, at(0), false),
                FileTail::new(dir.join("stderr"), Stream::Stderr, at(1), false),
            ],
            retries: dir.join("retries"),
            retries_seen: at(2),
            saved: (at(0), at(1), at(2)),
        }
    }

    /// Reports what is new: complete lines, and retries.
    fn read(&mut self, spec: &dstack_core::JobSpec, reporter: &dyn Reporter) {
        for tail in &mut self.streams {
            // A truncated file is read again once it is longer than what was read of it.
            if let Err(e) = tail.read(READ_LIMIT, reporter) {
                tracing::debug!("cannot read `{}`: {e}", tail.path().display());
            }
        }
        if let Ok(text) = std::fs::read_to_string(&self.retries) {
            let lines: Vec<&str> = text.lines().collect();
            let seen = usize::try_from(self.retries_seen).unwrap_or(usize::MAX);
            for line in lines.iter().skip(seen) {
                if let Some((attempt, delay, reason)) = state::parse_retry(line, spec) {
                    reporter.retrying(attempt + 1, &reason, Duration::from_millis(delay));
                }
            }
            self.retries_seen = u64::try_from(lines.len()).unwrap_or(u64::MAX);
        }
        self.save();
    }

    /// Reports the last, unfinished line of each stream.
    fn finish(&mut self, reporter: &dyn Reporter) {
        for tail in &mut self.streams {
            tail.finish(reporter);
        }
        self.save();
    }

    fn save(&mut self) {
        let now = (
            self.streams[0].reported(),
            self.streams[1].reported(),
            self.retries_seen,
        );
        if now != self.saved {
            let text = format!("{} {} {}\n", now.0, now.1, now.2);
            let tmp = self.offsets.with_extension("tmp");
            if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, &self.offsets).is_ok() {
                self.saved = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(Stream, String)>>);

    impl Reporter for Lines {
        fn started(&self, _: &str) {}
        fn log(&self, stream: Stream, bytes: &[u8]) {
            self.0
                .lock()
                .expect("lock")
                .push((stream, String::from_utf8_lossy(bytes).into_owned()));
        }
        fn note(&self, _: &str) {}
    }

    #[test]
    fn output_is_streamed_by_line_and_never_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = dstack_core::JobSpec::default();
        let lines = Lines::default();
        let mut output = Output::open(dir.path());
        std::fs::write(dir.path().join("stdout"), "one\ntw").expect("write");
        output.read(&spec, &lines);
        std::fs::write(dir.path().join("stdout"), "one\ntwo\nthree").expect("write");
        std::fs::write(dir.path().join("stderr"), "err\n").expect("write");
        output.read(&spec, &lines);
        // A driver that comes back starts where the last one stopped reporting.
        let mut again = Output::open(dir.path());
        again.read(&spec, &lines);
        again.finish(&lines);
        let got = lines.0.lock().expect("lock").clone();
        assert_eq!(
            got,
            [
                (Stream::Stdout, "one\n".to_owned()),
                (Stream::Stdout, "two\n".to_owned()),
                (Stream::Stderr, "err\n".to_owned()),
                (Stream::Stdout, "three".to_owned()),
            ]
        );
    }
}
