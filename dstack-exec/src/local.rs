//! The local executor: every job as a process tree on this machine. The embedded default.
//!
//! A job's commands run in one `sh`, in order, with `set -e` (the first failing command fails
//! the job, as the original's `cmd1 && cmd2` did), in the job's private tree, with the job's
//! environment on top of dstack's own. The shell leads its own process group, so cancelling or
//! timing out kills the whole tree, and whatever a job leaves running in the background is
//! killed when its shell exits. Dependencies' artifacts are linked into the tree.
//!
//! It cannot honour images, GPUs, published ports or CPU/memory limits: it says so through its
//! capabilities. Jobs that name an image run on the host with a warning; GPU jobs are refused.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dstack_core::JobSpec;
use dstack_core::run::artifacts;
use dstack_core::run::{
    Capabilities, Executor, ExecutorError, FailureReason, JobOutcome, JobRequest, Reporter, Stream,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio_util::sync::CancellationToken;

use crate::download;
use crate::output::{Lines, MAX_LINE};

/// How long a cancelled job gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// Runs jobs as local processes.
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    shell: String,
    grace: Duration,
    /// Fired by [`Executor::hurry`]: cancelled jobs are killed without waiting for the grace
    /// period.
    hurry: CancellationToken,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        LocalExecutor {
            shell: find_shell(),
            grace: GRACE,
            hurry: CancellationToken::new(),
        }
    }
}

impl LocalExecutor {
    /// A local executor with the default shell (`sh`) and grace period.
    #[must_use]
    pub fn new() -> Self {
        LocalExecutor::default()
    }

    /// Sets how long a cancelled job may take to stop after SIGTERM before it is killed.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

/// The script a job's commands become.
#[must_use]
pub fn script(job: &JobSpec) -> String {
    let mut script = String::from("set -e\n");
    for command in &job.commands {
        script.push_str(command);
        script.push('\n');
    }
    script
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: false,
            gpus: false,
            ports: false,
            limits: false,
            downloads: true,
            ignores_images: true,
        }
    }

    async fn run(
        &self,
        request: JobRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> JobOutcome {
        let working_dir = request.working_dir();
        if !request.inputs.is_empty() {
            let inputs = request.inputs.clone();
            let wd = working_dir.clone();
            let handed =
                tokio::task::spawn_blocking(move || artifacts::hand_over(&inputs, &wd)).await;
            match handed {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return JobOutcome::Failed(reason),
                Err(e) => {
                    return JobOutcome::Failed(FailureReason::Error {
                        message: format!("handing over inputs failed: {e}"),
                    });
                }
            }
        }
        if let Some(d) = &request.job.download {
            return download::run(d, &working_dir, reporter, cancel).await;
        }
        // Inputs are linked, not copied: check afterwards that the job left them alone.
        let before = (!request.inputs.is_empty()).then(|| artifacts::fingerprint(&request.inputs));
        let outcome = self
            .run_commands(&request, &working_dir, reporter, cancel)
            .await;
        match before.and_then(|b| artifacts::changed(&b, &request.inputs)) {
            Some(reason) if outcome != JobOutcome::Cancelled => JobOutcome::Failed(reason),
            _ => outcome,
        }
    }

    fn hurry(&self) {
        self.hurry.cancel();
    }

    async fn reap(&self, executor_ids: &[String]) -> Result<(), ExecutorError> {
        for id in executor_ids {
            let Some((pgid, start)) = id.split_once('@') else {
                continue;
            };
            let (Ok(pgid), Ok(start)) = (pgid.parse::<i32>(), start.parse::<u64>()) else {
                continue;
            };
            // Only the process group we started: a recycled pid has another start time.
            if process_start_time(pgid) == Some(start) {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
        Ok(())
    }
}

impl LocalExecutor {
    async fn run_commands(
        &self,
        request: &JobRequest,
        working_dir: &Path,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> JobOutcome {
        let mut command = tokio::process::Command::new(&self.shell);
        command
            .arg("-c")
            .arg(script(&request.job))
            .current_dir(working_dir)
            .envs(&request.job.env)
            .env("DSTACK_RUN", &request.run)
            .env("DSTACK_JOB", &request.job.id)
            .env("DSTACK_WORKFLOW", &request.job.workflow)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                return JobOutcome::Failed(FailureReason::Error {
                    message: format!(
                        "cannot start `{}` in `{}`: {e}",
                        self.shell,
                        working_dir.display()
                    ),
                });
            }
        };
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            return JobOutcome::Failed(FailureReason::Error {
                message: "the job's shell exited before it could be tracked".into(),
            });
        };
        let group = Pid::from_raw(pid);
        let start = process_start_time(pid).unwrap_or(0);
        reporter.started(&format!("{pid}@{start}"));

        let stdout = child
            .stdout
            .take()
            .map(|out| tokio::spawn(pump(out, Stream::Stdout, reporter.clone())));
        let stderr = child
            .stderr
            .take()
            .map(|err| tokio::spawn(pump(err, Stream::Stderr, reporter.clone())));

        let status = tokio::select! {
            status = child.wait() => Some(status),
            () = cancel.cancelled() => None,
        };
        let outcome = match status {
            Some(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt as _;
                if status.success() {
                    JobOutcome::Succeeded
                } else if let Some(code) = status.code() {
                    JobOutcome::Failed(FailureReason::ExitCode { code })
                } else {
                    JobOutcome::Failed(FailureReason::Signal {
                        signal: status.signal().unwrap_or(0),
                    })
                }
            }
            Some(Err(e)) => JobOutcome::Failed(FailureReason::ExecutorLost {
                detail: format!("waiting for the job's shell failed: {e}"),
            }),
            None => {
                let _ = killpg(group, Signal::SIGTERM);
                let stopped = tokio::select! {
                    waited = tokio::time::timeout(self.grace, child.wait()) => waited.is_ok(),
                    () = self.hurry.cancelled() => false,
                };
                if !stopped {
                    let _ = killpg(group, Signal::SIGKILL);
                    let _ = child.wait().await;
                }
                JobOutcome::Cancelled
            }
        };
        // Whatever the job left running in the background goes with it; this also closes the
        // pipes that background processes may hold, so the log readers end.
        let _ = killpg(group, Signal::SIGKILL);
        for reader in [stdout, stderr].into_iter().flatten() {
            let _ = reader.await;
        }
        outcome
    }
}

/// Sends a stream's output to the reporter, line by line ([`Lines`]: lines longer than 64 KiB
/// in pieces cut between characters, a last line without its newline at the end).
async fn pump(mut stream: impl AsyncRead + Unpin, which: Stream, reporter: Arc<dyn Reporter>) {
    let mut chunk = vec![0; MAX_LINE];
    let mut lines = Lines::new(which);
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.push(&chunk[..n], &*reporter),
        }
    }
    lines.flush(&*reporter);
}

/// `sh` resolved once through `PATH` (a long `PATH` costs a failed `execve` per entry and
/// job otherwise); `/bin/sh` when it is not found.
fn find_shell() -> String {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("sh"))
                .find(|candidate| candidate.is_file())
        })
        .map_or_else(
            || "/bin/sh".to_owned(),
            |p| p.to_string_lossy().into_owned(),
        )
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, in clock ticks since boot).
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Collect;

    #[tokio::test]
    async fn output_comes_in_lines_and_whole_characters() {
        // A line whose 64 KiB piece would end inside `€`, then a last line without `\n`.
        let mut text = "x".repeat(MAX_LINE - 1);
        text.push_str("€ and more\nshort\nthe end é");
        let collect = Arc::new(Collect::default());
        pump(text.as_bytes(), Stream::Stdout, collect.clone()).await;
        let pieces: Vec<Vec<u8>> = collect
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, b)| b.clone())
            .collect();
        assert!(
            pieces.iter().all(|p| std::str::from_utf8(p).is_ok()),
            "UTF-8"
        );
        assert_eq!(pieces.concat(), text.as_bytes(), "every byte, in order");
        assert_eq!(pieces[0].len(), MAX_LINE - 1, "cut before `€`");
        assert_eq!(
            &collect.texts()[1..],
            ["€ and more\n", "short\n", "the end é"]
        );
    }
}
