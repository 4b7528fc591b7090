//! What Slurm says of jobs (`squeue`), what a job's batch script recorded (`status`,
//! `retries`), and what the two mean for the job's outcome.

use std::collections::HashMap;

use dstack_core::JobSpec;
use dstack_core::run::{FailureReason, JobOutcome};

/// The `squeue` output format: one line per job (array tasks included), fields split by `|`.
pub const SQUEUE_FORMAT: &str = "JobArrayID:|,State:|,Reason:|,exit_code:|,NodeList:|";

/// One job as `squeue` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, `OUT_OF_MEMORY`,
    /// `NODE_FAIL`...
    pub state: String,
    /// Why it is pending or ended (`Dependency`, `DependencyNeverSatisfied`, `Resources`,
    /// `NonZeroExitCode`...).
    pub reason: String,
    /// Its exit status as `wait` gives it (code × 256 + signal), when it ended.
    pub exit_status: Option<i32>,
    /// The nodes it runs on.
    pub nodes: String,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting in the queue (for its dependencies, resources, priority, a hold).
    Queued,
    /// Allocated: running, or being cleaned up (`COMPLETING`): its processes may still run.
    Running,
    /// Over; nothing of it runs.
    Ended,
}

impl Observed {
    /// Its phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        match self.state.as_str() {
            "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
                Phase::Queued
            }
            "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "STOPPED" | "SIGNALING"
            | "STAGE_OUT" | "RESIZING" => Phase::Running,
            _ => Phase::Ended,
        }
    }
}

/// What is known of a job being followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not read yet.
    Unknown,
    /// As `squeue` shows it.
    Listed(Observed),
    /// `squeue` does not know it (any more).
    Gone,
}

/// Parses `squeue --noheader --Format=SQUEUE_FORMAT` output into jobs by id (`ARRAY_TASK`).
#[must_use]
pub fn parse_squeue(text: &str) -> HashMap<String, Observed> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('|').map(str::trim);
            let id = fields.next().filter(|id| !id.is_empty())?;
            let state = fields.next()?;
            let reason = fields.next().unwrap_or("");
            let exit_status = fields.next().and_then(|c| c.parse().ok());
            let nodes = fields.next().unwrap_or("");
            Some((
                id.to_owned(),
                Observed {
                    state: state.to_owned(),
                    reason: reason.to_owned(),
                    exit_status,
                    nodes: nodes.to_owned(),
                },
            ))
        })
        .collect()
}

/// The job id (or array id) that `squeue --jobs` takes for an executor id (`123_4` → `123`).
#[must_use]
pub fn array_of(executor_id: &str) -> Option<&str> {
    let array = executor_id.split_once('_').map_or(executor_id, |(a, _)| a);
    let valid = !array.is_empty() && array.bytes().all(|b| b.is_ascii_digit());
    let task_valid = executor_id
        .split_once('_')
        .is_none_or(|(_, t)| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    (valid && task_valid).then_some(array)
}

/// What a job's batch script recorded when it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The Slurm job (`ARRAY_TASK`) that wrote it: a record of an earlier submission of the
    /// same job is not this one's.
    pub slurm_id: String,
    /// How many attempts it made.
    pub attempts: u32,
    /// How it ended.
    pub result: Result<(), FailureReason>,
}

/// Parses a `status` file (`SLURM_ID ATTEMPTS RESULT [DETAIL]`).
#[must_use]
pub fn parse_status(text: &str, job: &JobSpec) -> Option<Status> {
    let line = text.lines().next()?;
    let mut words = line.splitn(3, ' ');
    let slurm_id = words.next()?.to_owned();
    let attempts = words.next()?.parse().ok()?;
    let result = parse_result(words.next().unwrap_or(""), job);
    Some(Status {
        slurm_id,
        attempts,
        result,
    })
}

/// `RESULT [DETAIL]` of a status or retries line.
pub fn parse_result(text: &str, job: &JobSpec) -> Result<(), FailureReason> {
    let (result, detail) = text.split_once(' ').unwrap_or((text, ""));
    match result {
        "ok" => Ok(()),
        "exit" => Err(FailureReason::ExitCode {
            code: detail.trim().parse().unwrap_or(1),
        }),
        "timeout" => Err(FailureReason::TimedOut {
            secs: detail
                .trim()
                .parse()
                .unwrap_or(job.timeout_secs.unwrap_or(0)),
        }),
        "missing-artifact" => Err(FailureReason::MissingArtifact {
            path: detail.to_owned(),
        }),
        _ => Err(FailureReason::Error {
            message: if detail.is_empty() {
                format!("the job's batch script ended with `{text}`")
            } else {
                detail.to_owned()
            },
        }),
    }
}

/// One failed attempt of a job that is tried again (a line of `retries`): the attempt, the
/// delay before the next one in milliseconds, why it failed.
#[must_use]
pub fn parse_retry(line: &str, job: &JobSpec) -> Option<(u32, u64, FailureReason)> {
    let mut words = line.splitn(3, ' ');
    let attempt = words.next()?.parse().ok()?;
    let delay = words.next()?.parse().ok()?;
    let reason = parse_result(words.next().unwrap_or(""), job).err()?;
    Some((attempt, delay, reason))
}

/// Why dstack asked Slurm to cancel a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// The run (or this job) was stopped.
    ByUs,
    /// It waited for a dependency that failed (`DependencyNeverSatisfied`).
    Dependency,
}

/// How a job ended: from Slurm's last word on it (`seen`), what its script recorded (`status`,
/// when written by this submission), and whether dstack cancelled it.
#[must_use]
pub fn outcome(
    executor_id: &str,
    job: &JobSpec,
    seen: &Seen,
    status: Option<&Status>,
    cancelled: Option<Cancelled>,
) -> JobOutcome {
    let status = status.filter(|s| s.slurm_id == executor_id);
    let recorded_ok = status.is_some_and(|s| s.result.is_ok());
    let completed = match seen {
        Seen::Listed(o) => o.state == "COMPLETED",
        Seen::Gone | Seen::Unknown => true,
    };
    if recorded_ok && completed {
        return JobOutcome::Succeeded;
    }
    match cancelled {
        Some(Cancelled::ByUs) => return JobOutcome::Cancelled,
        Some(Cancelled::Dependency) => return dependency_failed(),
        None => {}
    }
    let recorded_failure = status.and_then(|s| s.result.clone().err());
    let Seen::Listed(observed) = seen else {
        return JobOutcome::Failed(recorded_failure.unwrap_or_else(|| {
            FailureReason::ExecutorLost {
                detail: format!(
                    "Slurm no longer knows job {executor_id} and its batch script recorded no result"
                ),
            }
        }));
    };
    let reason = match observed.state.as_str() {
        "COMPLETED" | "FAILED" => recorded_failure.unwrap_or_else(|| {
            let code = observed.exit_status.map_or(1, |s| s >> 8);
            FailureReason::Error {
                message: format!(
                    "the batch script failed before it could run the job (Slurm: {}, exit code {code})",
                    observed.state
                ),
            }
        }),
        "CANCELLED" if observed.reason == "DependencyNeverSatisfied" => {
            return dependency_failed();
        }
        "CANCELLED" => FailureReason::Error {
            message: format!(
                "Slurm job {executor_id} was cancelled outside dstack (`scancel`, or by an administrator)"
            ),
        },
        "TIMEOUT" => match job.timeout_secs {
            Some(secs) => FailureReason::TimedOut { secs },
            None => FailureReason::Error {
                message: "killed by Slurm at its time limit (the partition's, as the job has no `timeout`)".to_owned(),
            },
        },
        "OUT_OF_MEMORY" => FailureReason::OutOfMemory {
            limit_bytes: job.resources.memory_bytes,
        },
        "NODE_FAIL" => FailureReason::ExecutorLost {
            detail: format!(
                "node {} failed (Slurm: NODE_FAIL)",
                if observed.nodes.is_empty() {
                    "?"
                } else {
                    &observed.nodes
                }
            ),
        },
        other => FailureReason::ExecutorLost {
            detail: format!(
                "Slurm ended job {executor_id} as {other}{}",
                if observed.reason.is_empty() || observed.reason == "None" {
                    String::new()
                } else {
                    format!(" ({})", observed.reason)
                }
            ),
        },
    };
    JobOutcome::Failed(reason)
}

fn dependency_failed() -> JobOutcome {
    JobOutcome::Failed(FailureReason::Error {
        message: "a dependency did not succeed (Slurm: DependencyNeverSatisfied); cancelled"
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(state: &str, reason: &str) -> Seen {
        Seen::Listed(Observed {
            state: state.into(),
            reason: reason.into(),
            exit_status: Some(0),
            nodes: "vm".into(),
        })
    }

    #[test]
    fn squeue_lines_parse() {
        let jobs = parse_squeue(
            "3142_0|CANCELLED|DependencyNeverSatisfied|0|\n3141_1|FAILED|NonZeroExitCode|768|vm|\n\n3143|RUNNING|None|0|vm,vm2|\n",
        );
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs["3141_1"].exit_status, Some(768));
        assert_eq!(jobs["3141_1"].phase(), Phase::Ended);
        assert_eq!(jobs["3143"].nodes, "vm,vm2");
        assert_eq!(jobs["3143"].phase(), Phase::Running);
        assert_eq!(array_of("3141_1"), Some("3141"));
        assert_eq!(array_of("3141"), Some("3141"));
        assert_eq!(array_of("31x"), None);
        assert_eq!(array_of("3141_"), None);
    }

    #[test]
    fn slurm_states_map_to_outcomes_with_their_reason() {
        let mut job = JobSpec {
            id: "train".into(),
            timeout_secs: Some(30),
            ..JobSpec::default()
        };
        job.resources.memory_bytes = Some(1 << 30);
        let ok = Status {
            slurm_id: "5_1".into(),
            attempts: 1,
            result: Ok(()),
        };
        let exit = Status {
            slurm_id: "5_1".into(),
            attempts: 2,
            result: Err(FailureReason::ExitCode { code: 3 }),
        };
        let o = |seen: &Seen, status: Option<&Status>| outcome("5_1", &job, seen, status, None);
        assert_eq!(
            o(&listed("COMPLETED", "None"), Some(&ok)),
            JobOutcome::Succeeded
        );
        assert_eq!(o(&Seen::Gone, Some(&ok)), JobOutcome::Succeeded);
        assert_eq!(
            o(&listed("FAILED", "NonZeroExitCode"), Some(&exit)),
            JobOutcome::Failed(FailureReason::ExitCode { code: 3 })
        );
        // A record of an earlier submission is not this job's.
        let stale = Status {
            slurm_id: "4_0".into(),
            ..ok.clone()
        };
        assert!(matches!(
            o(&Seen::Gone, Some(&stale)),
            JobOutcome::Failed(FailureReason::ExecutorLost { .. })
        ));
        assert_eq!(
            o(&listed("TIMEOUT", "TimeLimit"), None),
            JobOutcome::Failed(FailureReason::TimedOut { secs: 30 })
        );
        assert_eq!(
            o(&listed("OUT_OF_MEMORY", "OutOfMemory"), None),
            JobOutcome::Failed(FailureReason::OutOfMemory {
                limit_bytes: Some(1 << 30)
            })
        );
        assert_eq!(
            o(&listed("NODE_FAIL", "NodeDown"), None),
            JobOutcome::Failed(FailureReason::ExecutorLost {
                detail: "node vm failed (Slurm: NODE_FAIL)".into()
            })
        );
        let JobOutcome::Failed(FailureReason::Error { message }) =
            o(&listed("CANCELLED", "DependencyNeverSatisfied"), None)
        else {
            panic!("a failure");
        };
        assert!(message.contains("DependencyNeverSatisfied"), "{message}");
        let JobOutcome::Failed(FailureReason::Error { message }) =
            o(&listed("CANCELLED", "None"), None)
        else {
            panic!("a failure");
        };
        assert!(message.contains("cancelled outside dstack"), "{message}");
        assert_eq!(
            outcome(
                "5_1",
                &job,
                &listed("CANCELLED", "None"),
                None,
                Some(Cancelled::ByUs)
            ),
            JobOutcome::Cancelled
        );
        assert_eq!(
            outcome(
                "5_1",
                &job,
                &listed("COMPLETED", "None"),
                Some(&ok),
                Some(Cancelled::ByUs)
            ),
            JobOutcome::Succeeded,
            "a job that finished before the cancellation reached it succeeded"
        );
        let JobOutcome::Failed(FailureReason::Error { message }) =
            o(&listed("FAILED", "NonZeroExitCode"), None)
        else {
            panic!("a failure");
        };
        assert!(message.contains("before it could run the job"), "{message}");
    }

    #[test]
    fn status_and_retry_lines_parse() {
        let job = JobSpec::default();
        let s = parse_status("7_3 2 missing-artifact out dir\n", &job).expect("parses");
        assert_eq!(s.slurm_id, "7_3");
        assert_eq!(s.attempts, 2);
        assert_eq!(
            s.result,
            Err(FailureReason::MissingArtifact {
                path: "out dir".into()
            })
        );
        let s =
            parse_status("7_3 1 error cannot copy the project into /x\n", &job).expect("parses");
        assert_eq!(
            s.result,
            Err(FailureReason::Error {
                message: "cannot copy the project into /x".into()
            })
        );
        assert_eq!(
            parse_status("7_3 1 timeout 5\n", &job)
                .expect("parses")
                .result,
            Err(FailureReason::TimedOut { secs: 5 })
        );
        assert_eq!(parse_status("", &job), None);
        assert_eq!(
            parse_retry("1 2000 exit 4", &job),
            Some((1, 2000, FailureReason::ExitCode { code: 4 }))
        );
    }
}
