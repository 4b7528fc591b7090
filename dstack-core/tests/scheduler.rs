//! The scheduler's rules, driven through a scripted in-process executor: dependency order,
//! failure propagation, `keep_going`, the parallelism limit (observed), timeouts, retries,
//! cancellation, capabilities, artifacts and tags. The real local executor is exercised
//! end to end by the CLI tests of the `examples` crate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dstack_core::run::{
    Capabilities, Event, Executor, FailureReason, JobOutcome, JobRequest, JobStatus, Reporter,
    RunOptions, RunStatus, RunStore, Scheduler, Stream,
};
use dstack_core::{Overrides, Project, ProviderRegistry, Sources};
use tokio_util::sync::CancellationToken;

/// Runs a job by reading its first command: `sleep MS`, `fail CODE`, `flaky N` (fails its first
/// N attempts), `write PATH` (creates PATH/out.txt in the working directory), `hang`.
#[derive(Debug, Default)]
struct Scripted {
    running: AtomicUsize,
    max_running: AtomicUsize,
    attempts: Mutex<HashMap<String, u32>>,
    gpus: bool,
}

#[async_trait]
impl Executor for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: true,
            gpus: self.gpus,
            ports: true,
            limits: true,
            downloads: true,
            ignores_images: false,
        }
    }

    async fn run(
        &self,
        request: JobRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> JobOutcome {
        reporter.started(&format!("scripted-{}", request.job.id));
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        reporter.log(
            Stream::Stdout,
            format!("hello from {}\n", request.job.id).as_bytes(),
        );
        let command = request.job.commands.first().cloned().unwrap_or_default();
        let (verb, arg) = command.split_once(' ').unwrap_or((command.as_str(), ""));
        let outcome = match verb {
            "sleep" => {
                let ms = arg.parse().unwrap_or(0);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => JobOutcome::Succeeded,
                    () = cancel.cancelled() => JobOutcome::Cancelled,
                }
            }
            "hang" => {
                cancel.cancelled().await;
                JobOutcome::Cancelled
            }
            "hang-once" => {
                let first = {
                    let mut attempts = self.attempts.lock().expect("lock");
                    let n = attempts.entry(request.job.id.clone()).or_default();
                    *n += 1;
                    *n == 1
                };
                if first {
                    cancel.cancelled().await;
                    JobOutcome::Cancelled
                } else {
                    JobOutcome::Succeeded
                }
            }
            "fail" => JobOutcome::Failed(FailureReason::ExitCode {
                code: arg.parse().unwrap_or(1),
            }),
            "flaky" => {
                let mut attempts = self.attempts.lock().expect("lock");
                let n = attempts.entry(request.job.id.clone()).or_default();
                *n += 1;
                if *n <= arg.parse().unwrap_or(0) {
                    JobOutcome::Failed(FailureReason::ExitCode { code: 3 })
                } else {
                    JobOutcome::Succeeded
                }
            }
            "write" => {
                let dir = request.working_dir().join(arg);
                std::fs::create_dir_all(&dir).expect("mkdir");
                std::fs::write(dir.join("out.txt"), &request.job.id).expect("write");
                JobOutcome::Succeeded
            }
            "read" => {
                // The dependency's artifact was handed over: the scripted executor links it
                // itself, as the local executor does.
                dstack_core::run::artifacts::hand_over(&request.inputs, &request.working_dir())
                    .expect("hand over");
                match std::fs::read_to_string(request.working_dir().join(arg).join("out.txt")) {
                    Ok(text) => {
                        reporter.log(Stream::Stdout, format!("read {text}\n").as_bytes());
                        JobOutcome::Succeeded
                    }
                    Err(e) => JobOutcome::Failed(FailureReason::Error {
                        message: e.to_string(),
                    }),
                }
            }
            _ => JobOutcome::Succeeded,
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    store: Arc<RunStore>,
}

fn fixture(workflows: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join(".dstack")).expect("mkdir");
    std::fs::write(root.join(".dstack/workflows.yaml"), workflows).expect("write");
    let store = Arc::new(RunStore::open(root.join(".dstack/state")).expect("store"));
    Fixture {
        _dir: dir,
        root,
        store,
    }
}

fn plan(f: &Fixture, target: &str) -> dstack_core::Plan {
    let sources = Sources::read(&f.root).expect("read");
    let project =
        Project::from_sources(&f.root, &sources, ProviderRegistry::default()).expect("loads");
    project.plan(target, &Overrides::new()).expect("plans")
}

fn wf(name: &str, command: &str, deps: &[&str], extra: &str) -> String {
    format!(
        "  - name: {name}\n    provider: docker\n    image: busybox\n    commands: ['{command}']\n    depends-on: [{}]\n{extra}",
        deps.join(", ")
    )
}

async fn drive(
    f: &Fixture,
    executor: Arc<Scripted>,
    target: &str,
    options: RunOptions,
) -> (dstack_core::run::RunSummary, Vec<Event>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let subscriber: dstack_core::run::Subscriber =
        Arc::new(move |e: &Event| sink.lock().expect("lock").push(e.clone()));
    let scheduler = Scheduler::new(f.store.clone(), executor, &f.root, vec![subscriber]);
    let plan = plan(f, target);
    let run = scheduler
        .submit(&plan, serde_json::json!({}))
        .expect("submits");
    let summary = scheduler
        .drive(&run, &options, CancellationToken::new())
        .await
        .expect("drives");
    let events = events.lock().expect("lock").clone();
    (summary, events)
}

fn statuses(summary: &dstack_core::run::RunSummary) -> Vec<(String, JobStatus)> {
    summary
        .jobs
        .iter()
        .map(|j| (j.job_id.clone(), j.status))
        .collect()
}

fn opts(parallelism: usize) -> RunOptions {
    RunOptions {
        parallelism,
        retry_delay: Duration::from_millis(10),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn dependencies_run_first_and_events_arrive_in_order() {
    let f = fixture(&format!(
        "workflows:\n{}{}{}",
        wf("a", "sleep 20", &[], ""),
        wf("b", "sleep 1", &["a"], ""),
        wf("c", "sleep 1", &["b"], "")
    ));
    let (summary, events) = drive(&f, Arc::default(), "c", opts(4)).await;
    assert_eq!(summary.run.status, RunStatus::Done);
    let order: Vec<(String, JobStatus)> = events
        .iter()
        .filter_map(|e| match e {
            Event::JobStatus { job, status, .. } if *status != JobStatus::Submitted => {
                Some((job.clone(), *status))
            }
            _ => None,
        })
        .collect();
    let expected: Vec<(String, JobStatus)> = ["a", "b", "c"]
        .iter()
        .flat_map(|j| {
            [
                ((*j).to_owned(), JobStatus::Running),
                ((*j).to_owned(), JobStatus::Done),
            ]
        })
        .collect();
    assert_eq!(order, expected);
    assert!(matches!(events.first(), Some(Event::RunStarted { .. })));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            status: RunStatus::Done,
            ..
        })
    ));
    assert!(events.iter().any(
        |e| matches!(e, Event::Log { job, text, .. } if job == "b" && text == "hello from b\n")
    ));
    let log = std::fs::read_to_string(f.store.log_path(&summary.run.name, "b")).expect("log");
    assert!(
        log.starts_with("o ") && log.ends_with(" hello from b\n"),
        "{log}"
    );
}

#[tokio::test]
async fn the_first_failure_stops_the_rest() {
    let f = fixture(&format!(
        "workflows:\n{}{}{}{}",
        wf("bad", "fail 7", &[], ""),
        wf("slow", "hang", &[], ""),
        wf("after", "sleep 1", &["bad"], ""),
        wf("all", "sleep 1", &["slow", "after"], "")
    ));
    let (summary, _) = drive(&f, Arc::default(), "all", opts(2)).await;
    assert_eq!(summary.run.status, RunStatus::Failed);
    let s: HashMap<String, JobStatus> = statuses(&summary).into_iter().collect();
    assert_eq!(s["bad"], JobStatus::Failed);
    assert_eq!(
        s["slow"],
        JobStatus::Stopped,
        "the running job is cancelled"
    );
    assert_eq!(s["after"], JobStatus::Skipped);
    assert_eq!(s["all"], JobStatus::Skipped);
    let bad = summary
        .jobs
        .iter()
        .find(|j| j.job_id == "bad")
        .expect("bad");
    assert_eq!(
        (bad.exit_code, bad.reason.as_deref()),
        (Some(7), Some("exited with code 7"))
    );
}

#[tokio::test]
async fn keep_going_runs_what_does_not_depend_on_the_failure() {
    let f = fixture(&format!(
        "workflows:\n{}{}{}{}{}",
        wf("bad", "fail 1", &[], ""),
        wf("good", "sleep 30", &[], ""),
        wf("after-bad", "sleep 1", &["bad"], ""),
        wf("after-good", "sleep 1", &["good"], ""),
        wf("all", "sleep 1", &["after-bad", "after-good"], "")
    ));
    let options = RunOptions {
        keep_going: true,
        ..opts(1)
    };
    let (summary, _) = drive(&f, Arc::default(), "all", options).await;
    let s: HashMap<String, JobStatus> = statuses(&summary).into_iter().collect();
    assert_eq!(summary.run.status, RunStatus::Failed);
    assert_eq!(s["good"], JobStatus::Done);
    assert_eq!(s["after-good"], JobStatus::Done);
    assert_eq!(s["after-bad"], JobStatus::Skipped);
    assert_eq!(s["all"], JobStatus::Skipped);
    let skipped = summary
        .jobs
        .iter()
        .find(|j| j.job_id == "after-bad")
        .expect("job");
    assert_eq!(
        skipped.reason.as_deref(),
        Some("dependency `bad` did not succeed")
    );
}

#[tokio::test]
async fn the_parallelism_limit_is_honoured() {
    let mut w = String::from("workflows:\n");
    let names: Vec<String> = (0..8).map(|i| format!("j{i}")).collect();
    for n in &names {
        w.push_str(&wf(n, "sleep 40", &[], ""));
    }
    let deps: Vec<&str> = names.iter().map(String::as_str).collect();
    w.push_str(&wf("all", "sleep 1", &deps, ""));
    for limit in [1, 3] {
        let f = fixture(&w);
        let executor = Arc::new(Scripted::default());
        let (summary, _) = drive(&f, executor.clone(), "all", opts(limit)).await;
        assert_eq!(summary.run.status, RunStatus::Done);
        assert_eq!(
            executor.max_running.load(Ordering::SeqCst),
            limit,
            "at most {limit} at once, and that many used"
        );
    }
}

#[tokio::test]
async fn timeouts_cancel_and_fail_the_job() {
    let f = fixture(&format!(
        "workflows:\n{}",
        wf("slow", "hang", &[], "    timeout: 1\n")
    ));
    let (summary, _) = drive(&f, Arc::default(), "slow", opts(1)).await;
    assert_eq!(summary.run.status, RunStatus::Failed);
    assert_eq!(summary.jobs[0].status, JobStatus::Failed);
    assert_eq!(
        summary.jobs[0].reason.as_deref(),
        Some("timed out after 1s")
    );
}

#[tokio::test]
async fn retries_back_off_and_succeed() {
    let f = fixture(&format!(
        "workflows:\n{}{}",
        wf("flaky", "flaky 2", &[], "    retries: 2\n"),
        wf("hopeless", "flaky 5", &[], "    retries: 1\n")
    ));
    let (summary, events) = drive(&f, Arc::default(), "flaky", opts(1)).await;
    assert_eq!(summary.run.status, RunStatus::Done);
    assert_eq!(summary.jobs[0].attempts, 3);
    let delays: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::JobRetrying { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [10, 20], "the delay doubles");

    let (summary, _) = drive(&f, Arc::default(), "hopeless", opts(1)).await;
    assert_eq!(summary.run.status, RunStatus::Failed);
    assert_eq!(summary.jobs[0].attempts, 2);
}

#[tokio::test]
async fn cancelling_stops_the_run_and_resume_finishes_it() {
    let f = fixture(&format!(
        "workflows:\n{}{}{}",
        wf("a", "flaky 0", &[], ""),
        wf("b", "hang-once", &["a"], ""),
        wf("c", "sleep 1", &["b"], "")
    ));
    let executor = Arc::new(Scripted::default());
    let scheduler = Scheduler::new(f.store.clone(), executor.clone(), &f.root, Vec::new());
    let run = scheduler
        .submit(&plan(&f, "c"), serde_json::json!({}))
        .expect("submits");
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stopper.cancel();
    });
    let summary = scheduler
        .drive(&run, &opts(2), cancel)
        .await
        .expect("drives");
    assert_eq!(summary.run.status, RunStatus::Stopped);
    let s: HashMap<String, JobStatus> = statuses(&summary).into_iter().collect();
    assert_eq!(
        (s["a"], s["b"], s["c"]),
        (JobStatus::Done, JobStatus::Stopped, JobStatus::Skipped)
    );

    // Resuming runs what did not succeed, and only that.
    let summary = scheduler
        .drive(&summary.run, &opts(2), CancellationToken::new())
        .await
        .expect("resumes");
    assert_eq!(summary.run.status, RunStatus::Done);
    let attempts = executor.attempts.lock().expect("lock").clone();
    assert_eq!(attempts.get("a"), Some(&1), "`a` is not run again");
    assert_eq!(attempts.get("b"), Some(&2));
}

#[tokio::test]
async fn capabilities_are_checked_before_anything_starts() {
    let f = fixture(&format!(
        "workflows:\n{}",
        wf("gpu", "sleep 1", &[], "    resources:\n      gpu: 2\n")
    ));
    let scheduler = Scheduler::new(
        f.store.clone(),
        Arc::new(Scripted::default()),
        &f.root,
        Vec::new(),
    );
    let err = scheduler
        .submit(&plan(&f, "gpu"), serde_json::json!({}))
        .expect_err("no GPUs");
    assert_eq!(
        err.to_string(),
        "the `scripted` executor cannot run this plan:\n  - job `gpu` needs 2 GPU(s), which this executor cannot give"
    );
    assert!(
        f.store.runs(true).expect("runs").is_empty(),
        "nothing recorded"
    );
    let with_gpus = Scheduler::new(
        f.store.clone(),
        Arc::new(Scripted {
            gpus: true,
            ..Scripted::default()
        }),
        &f.root,
        Vec::new(),
    );
    assert!(
        with_gpus
            .submit(&plan(&f, "gpu"), serde_json::json!({}))
            .is_ok()
    );
}

#[tokio::test]
async fn artifacts_are_handed_over_and_tags_reuse_them() {
    let f = fixture(&format!(
        "workflows:\n{}{}{}",
        wf("prepare", "write data", &[], "    artifacts: [data]\n"),
        wf("train", "read data", &["prepare"], ""),
        wf("retrain", "read data", &["prepare:latest"], "")
    ));
    let (summary, events) = drive(&f, Arc::default(), "train", opts(2)).await;
    assert_eq!(summary.run.status, RunStatus::Done, "{events:?}");
    assert!(events.iter().any(
        |e| matches!(e, Event::Log { job, text, .. } if job == "train" && text == "read prepare\n")
    ));
    let stored = f
        .store
        .artifacts_dir(&summary.run.name, "prepare")
        .join("data/out.txt");
    assert_eq!(std::fs::read_to_string(stored).expect("stored"), "prepare");
    assert!(
        !f.store.job_tree(&summary.run.name, "prepare").exists(),
        "trees of finished jobs are removed"
    );

    // `prepare:latest` before any tag: a clear error before anything runs.
    let scheduler = Scheduler::new(
        f.store.clone(),
        Arc::new(Scripted::default()),
        &f.root,
        Vec::new(),
    );
    let err = scheduler
        .submit(&plan(&f, "retrain"), serde_json::json!({}))
        .expect_err("no tag");
    assert_eq!(
        err.to_string(),
        "`depends-on: prepare:latest` of workflow `retrain`: no run is tagged `latest`"
    );

    f.store.tag(&summary.run, "latest").expect("tag");
    let (again, events) = drive(&f, Arc::default(), "retrain", opts(2)).await;
    assert_eq!(again.run.status, RunStatus::Done, "{events:?}");
    // `prepare` is not run again: the run records it as reused, from the tagged run.
    let jobs: Vec<(&str, JobStatus, Option<&str>)> = again
        .jobs
        .iter()
        .map(|j| (j.job_id.as_str(), j.status, j.reused_from.as_deref()))
        .collect();
    let from = format!("{}/prepare", summary.run.name);
    assert_eq!(
        jobs,
        [
            ("prepare:latest", JobStatus::Reused, Some(from.as_str())),
            ("retrain", JobStatus::Done, None)
        ]
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::JobStatus { job, status: JobStatus::Running, .. } if job.starts_with("prepare"))),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::Log { job, text, .. } if job == "retrain" && text == "read prepare\n")));

    // A deleted artifact store is caught before anything starts.
    std::fs::remove_dir_all(f.store.artifacts_dir(&summary.run.name, "prepare")).expect("rm");
    let err = scheduler
        .submit(&plan(&f, "retrain"), serde_json::json!({}))
        .expect_err("missing artifacts");
    assert!(err.to_string().contains("artifact `data` of run"), "{err}");
    assert!(
        err.to_string()
            .contains("is missing from the artifact store"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_artifact_fails_the_job() {
    let f = fixture(&format!(
        "workflows:\n{}",
        wf("lazy", "sleep 1", &[], "    artifacts: [model]\n")
    ));
    let (summary, _) = drive(&f, Arc::default(), "lazy", opts(1)).await;
    assert_eq!(summary.jobs[0].status, JobStatus::Failed);
    assert_eq!(
        summary.jobs[0].reason.as_deref(),
        Some("declared artifact `model` was not produced")
    );
}

#[tokio::test]
async fn finished_runs_are_not_resumed() {
    let f = fixture(&format!("workflows:\n{}", wf("a", "sleep 1", &[], "")));
    let (summary, _) = drive(&f, Arc::default(), "a", opts(1)).await;
    let scheduler = Scheduler::new(
        f.store.clone(),
        Arc::new(Scripted::default()),
        &f.root,
        Vec::new(),
    );
    let err = scheduler
        .drive(&summary.run, &opts(1), CancellationToken::new())
        .await
        .expect_err("done");
    assert_eq!(
        err.to_string(),
        format!(
            "run `{}` is done: there is nothing to resume",
            summary.run.name
        )
    );
}

/// `dstack stop` on a new run before any driver claimed it (the driver was still writing the
/// run's files, or had not started yet): the run stays stopped and nothing runs.
#[tokio::test]
async fn a_run_stopped_before_it_was_claimed_does_not_start() {
    let f = fixture(&format!(
        "workflows:\n{}{}",
        wf("a", "sleep 1", &[], ""),
        wf("b", "sleep 1", &["a"], "")
    ));
    let executor = Arc::new(Scripted::default());
    let scheduler = Scheduler::new(f.store.clone(), executor.clone(), &f.root, Vec::new());
    let run = scheduler
        .submit(&plan(&f, "b"), serde_json::json!({}))
        .expect("submits");
    // What `stop` does when it finds no driver: it ends the run itself.
    f.store
        .set_run_status(&run, RunStatus::Stopped, Some("stopped by the user"))
        .expect("stop");
    let summary = scheduler
        .drive(&run, &opts(2), CancellationToken::new())
        .await
        .expect("drives");
    assert_eq!(summary.run.status, RunStatus::Stopped);
    assert_eq!(summary.run.message.as_deref(), Some("stopped by the user"));
    assert_eq!(
        executor.max_running.load(Ordering::SeqCst),
        0,
        "nothing ran"
    );

    // Given back on purpose (`resume`), the stopped run runs.
    let summary = scheduler
        .drive(&summary.run, &opts(2), CancellationToken::new())
        .await
        .expect("resumes");
    assert_eq!(summary.run.status, RunStatus::Done);
}

/// `dstack stop` on a new run whose driver is known but has not started it (a detached run:
/// the parent records the child's process before the child claims the run): the child must
/// not mark it running over the request, and runs nothing.
#[tokio::test]
async fn a_stop_asked_before_the_driver_started_is_not_lost() {
    for (asked, ended) in [
        (RunStatus::Stopping, RunStatus::Stopped),
        (RunStatus::Aborting, RunStatus::Aborted),
    ] {
        let f = fixture(&format!("workflows:\n{}", wf("a", "hang", &[], "")));
        let executor = Arc::new(Scripted::default());
        let scheduler = Scheduler::new(f.store.clone(), executor.clone(), &f.root, Vec::new());
        let run = scheduler
            .submit(&plan(&f, "a"), serde_json::json!({}))
            .expect("submits");
        f.store
            .set_driver(&run, Some(std::process::id()))
            .expect("driver");
        f.store
            .set_run_status(&run, asked, Some("stopped by the user"))
            .expect("stop");
        let summary = tokio::time::timeout(
            Duration::from_secs(30),
            scheduler.drive(&run, &opts(2), CancellationToken::new()),
        )
        .await
        .expect("does not hang")
        .expect("drives");
        assert_eq!(summary.run.status, ended);
        assert_eq!(summary.run.driver_pid, None, "the driver let go");
        assert_eq!(statuses(&summary), [("a".to_owned(), JobStatus::Skipped)]);
        assert_eq!(
            executor.max_running.load(Ordering::SeqCst),
            0,
            "nothing ran"
        );
    }
}
