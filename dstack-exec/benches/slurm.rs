//! The Slurm executor on a real cluster: how long handing a 1,000-job DAG to Slurm takes, and
//! how much of our CPU one poll of a 1,000-job run costs.
//!
//! ```text
//! eval "$(bash scripts/setup-slurm.sh)"
//! cargo bench -p dstack-exec --bench slurm -- [JOBS] [ROUNDS]
//! ```
//!
//! For each DAG shape (`chain`: every job waits for the previous one; `random`: every job
//! waits for one to three earlier ones; `wide`: one root, every other job waits for it), over
//! four resource shapes (so four job arrays), every job `true`:
//!
//! - *submit*: [`DagExecutor::submit_dag`] + [`DagExecutor::start_dag`] (write the jobs' files,
//!   `sbatch` the held arrays, one `scontrol` for names and dependencies, release);
//! - *to queued*: the whole `Engine::drive` path from its start until every job is queued in
//!   Slurm with its id in the run store (claim, project scan, prepare, submit, store writes);
//! - *one bulk read*: while the first job is held back by a gate (so 1,000 wait in the
//!   queue), one read of all the jobs' states (`tracker::squeue`: one `squeue` per job array,
//!   four here): our CPU (this process and its `squeue` children, from `/proc/self/stat`) and
//!   wall time, averaged over 50 reads;
//! - *driving process*: while `Engine::drive` follows the same 1,001 queued jobs with a 1 s
//!   poll interval, the CPU the whole process (and its children) uses per poll, over 10 s.
//!
//! Each round cancels its jobs afterwards. Not a criterion bench: every iteration puts a
//! thousand jobs in a shared queue, so rounds are few and explicit.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dstack_core::Overrides;
use dstack_core::run::{
    DagExecutor, DagJob, DagRequest, DagRun, Event, Executor, JobRequest, JobStatus, RunOptions,
    tree::ProjectFiles,
};
use dstack_exec::slurm::{SlurmConfig, SlurmExecutor, tracker};
use dstack_exec::{Engine, ExecConfig, ExecutorKind};
use tokio_util::sync::CancellationToken;

/// The workflows file of an `n`-job DAG of `shape`.
fn workflows(n: usize, shape: &str, gate: &Path) -> String {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut text = String::from("workflows:\n");
    for i in 0..n {
        let _ = writeln!(
            text,
            "  - name: job-{i:04}\n    provider: docker\n    image: ubuntu"
        );
        if i == 0 {
            let _ = writeln!(
                text,
                "    commands: [\"while [ ! -e {} ]; do sleep 0.2; done\"]",
                gate.display()
            );
        } else {
            text.push_str("    commands: [\"true\"]\n");
        }
        match i % 4 {
            1 => text.push_str("    resources: {cpu: 1}\n"),
            2 => text.push_str("    resources: {cpu: 1, memory: 64MiB}\n"),
            3 => text.push_str("    timeout: 30m\n"),
            _ => {}
        }
        if i > 0 {
            let deps: Vec<usize> = match shape {
                "chain" => vec![i - 1],
                "wide" => vec![0],
                _ => {
                    let k = 1 + usize::try_from(next() % 3).unwrap();
                    let mut d: Vec<usize> = (0..k)
                        .map(|_| usize::try_from(next()).unwrap() % i)
                        .collect();
                    d.sort_unstable();
                    d.dedup();
                    d
                }
            };
            let names: Vec<String> = deps.iter().map(|d| format!("job-{d:04}")).collect();
            let _ = writeln!(text, "    depends-on: [{}]", names.join(", "));
        }
    }
    // A target that depends on every job.
    let all: Vec<String> = (0..n).map(|d| format!("job-{d:04}")).collect();
    let _ = writeln!(
        text,
        "  - name: all\n    provider: docker\n    image: ubuntu\n    commands: [\"true\"]\n    depends-on: [{}]",
        all.join(", ")
    );
    text
}

/// CPU time of this process and its waited-for children, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap())
        .collect();
    fields.iter().sum::<u64>() as f64 / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits until the controller has nothing queued, running or completing, then 2 s more: a
/// round's cancellations must not weigh on the next one's figures.
async fn quiet() {
    loop {
        let out = tokio::process::Command::new("squeue")
            .args([
                "--noheader",
                "--states=PENDING,RUNNING,COMPLETING,CONFIGURING",
            ])
            .output()
            .await
            .unwrap();
        if out.stdout.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[allow(clippy::too_many_lines)]
async fn round(n: usize, shape: &str) -> (f64, f64, f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("p");
    let gate = dir.path().join("gate");
    std::fs::create_dir_all(root.join(".dstack")).unwrap();
    std::fs::write(
        root.join(".dstack/workflows.yaml"),
        workflows(n, shape, &gate),
    )
    .unwrap();
    let config = SlurmConfig {
        poll_interval: Some("1s".into()),
        ..SlurmConfig::default()
    };
    let engine = Engine::with_state_dir(&root, root.join(".dstack/state"))
        .unwrap()
        .with_git(false)
        .with_exec_config(ExecConfig {
            slurm: config.clone(),
            ..ExecConfig::default()
        });
    let executor = Arc::new(SlurmExecutor::new(&config).unwrap());

    // 1. The executor alone: submit_dag + start_dag.
    let project = engine.project().unwrap();
    let plan = project.plan("all", &Overrides::new()).unwrap();
    let files = Arc::new(ProjectFiles::scan(&root, &root.join(".dstack/state")).unwrap());
    let state_dir = dir.path().join("direct");
    let run = DagRun::new("bench-direct", &state_dir);
    let jobs: Vec<DagJob> = plan
        .jobs
        .iter()
        .map(|job| DagJob {
            request: JobRequest {
                run: run.name.clone(),
                job: job.clone(),
                tree: state_dir.join("runs/bench-direct/jobs").join(&job.id),
                inputs: Vec::new(),
                attempt: 1,
            },
            artifacts_dir: state_dir.join("runs/bench-direct/artifacts").join(&job.id),
            after: job.depends_on.clone(),
            after_submitted: Vec::new(),
        })
        .collect();
    executor.prepare(&plan.jobs).await.unwrap();
    quiet().await;
    let request = DagRequest {
        run: run.clone(),
        files,
        jobs,
        keep_failed_trees: false,
        retry_delay: Duration::from_secs(1),
    };
    let start = Instant::now();
    let ids = executor.submit_dag(&request).await.unwrap();
    executor.start_dag(&run, &ids).await.unwrap();
    let submit = start.elapsed().as_secs_f64();

    // 3. Polls of the 1,000 queued jobs (behind the gated first one).
    let tools =
        dstack_exec::slurm::command::Tools::find(None, std::env::var_os("PATH").as_deref(), None)
            .unwrap();
    let _ = tracker::squeue(&tools, &ids).await.unwrap();
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let (c0, w0) = (cpu_seconds(), Instant::now());
        for _ in 0..10 {
            let seen = tracker::squeue(&tools, &ids).await.unwrap();
            assert!(seen.len() >= ids.len(), "{} of {}", seen.len(), ids.len());
        }
        cpu.push((cpu_seconds() - c0) / 10.0);
        wall.push(w0.elapsed().as_secs_f64() / 10.0);
    }
    executor.reap(&ids).await.unwrap();
    quiet().await;

    // 2. The whole drive path, until every job is queued with its id recorded.
    let submission = engine
        .submit("all", &Overrides::new(), ExecutorKind::Slurm)
        .unwrap();
    let queued: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = queued.clone();
    let subscriber = Arc::new(move |e: &Event| {
        if matches!(
            e,
            Event::JobStatus {
                status: JobStatus::Submitted,
                ..
            }
        ) {
            seen.lock().unwrap().get_or_insert_with(Instant::now);
        }
    });
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let driver = tokio::spawn({
        let engine = engine.clone();
        let run = submission.run.clone();
        let cancel = cancel.clone();
        async move {
            engine
                .drive(
                    &run,
                    &RunOptions::default(),
                    vec![subscriber],
                    cancel,
                    CancellationToken::new(),
                )
                .await
        }
    });
    while queued.lock().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let to_queued = queued
        .lock()
        .unwrap()
        .unwrap()
        .duration_since(start)
        .as_secs_f64();
    // The driving process while the run is on the cluster (job 0 held back by its gate): its
    // CPU (tracker, the 1,000 followers, log flushing, the store watcher, squeue children)
    // per poll interval (1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c0 = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let driving = (cpu_seconds() - c0) / 10.0;
    cancel.cancel();
    let _ = driver.await.unwrap().unwrap();
    quiet().await;
    (submit, to_queued, median(cpu), median(wall), driving)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{n}-job DAGs (+1 target job), {rounds} round(s) each; figures are medians\n\n| shape | submit_dag + start_dag | drive until all queued | one bulk read: CPU (ours + squeue) | one bulk read: wall | driving process: CPU per 1 s poll |\n|---|---:|---:|---:|---:|---:|"
    );
    for shape in ["chain", "random", "wide"] {
        let mut results = Vec::new();
        for _ in 0..rounds {
            results.push(runtime.block_on(round(n, shape)));
        }
        let pick =
            |f: fn(&(f64, f64, f64, f64, f64)) -> f64| median(results.iter().map(f).collect());
        println!(
            "| {shape} | {:.0} ms | {:.0} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            pick(|r| r.0) * 1000.0,
            pick(|r| r.1) * 1000.0,
            pick(|r| r.2) * 1000.0,
            pick(|r| r.3) * 1000.0,
            pick(|r| r.4) * 1000.0,
        );
    }
}
