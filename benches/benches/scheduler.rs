//! Scheduler overhead per job: a plan of N independent no-op jobs (and a chain of N) driven
//! through an in-process executor that returns at once, so everything measured is dstack's
//! own work: the run record, the job's private tree (an empty project here), state changes in
//! SQLite, events.
//!
//! `cargo bench -p benches --bench scheduler`

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dstack_core::run::{
    Capabilities, Executor, JobOutcome, JobRequest, Reporter, RunOptions, RunStore, Scheduler,
};
use dstack_core::{Overrides, Project, ProviderRegistry, Sources};
use tokio_util::sync::CancellationToken;

/// Starts and succeeds at once.
#[derive(Debug)]
struct Noop;

#[async_trait]
impl Executor for Noop {
    fn name(&self) -> &str {
        "noop"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: true,
            gpus: true,
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
        _cancel: CancellationToken,
    ) -> JobOutcome {
        reporter.started(&request.job.id);
        JobOutcome::Succeeded
    }
}

fn project(n: usize, chain: bool) -> (tempfile::TempDir, dstack_core::Plan) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join(".dstack")).expect("mkdir");
    let mut w = String::from("workflows:\n");
    for i in 0..n {
        let deps = if chain && i > 0 {
            format!("[j{}]", i - 1)
        } else {
            "[]".to_owned()
        };
        w.push_str(&format!(
            "  - {{name: j{i}, provider: docker, image: busybox, commands: [true], depends-on: {deps}}}\n"
        ));
    }
    let all: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
    w.push_str(&format!(
        "  - {{name: all, provider: docker, image: busybox, commands: [true], depends-on: [{}]}}\n",
        all.join(", ")
    ));
    std::fs::write(dir.path().join(".dstack/workflows.yaml"), &w).expect("write");
    let sources = Sources::read(dir.path()).expect("read");
    let plan = Project::from_sources(dir.path(), &sources, ProviderRegistry::default())
        .expect("loads")
        .plan("all", &Overrides::new())
        .expect("plans");
    (dir, plan)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("scheduler");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (shape, chain) in [("fan-out", false), ("chain", true)] {
        let n = 500;
        let (dir, plan) = project(n, chain);
        // The state lives beside the project, as `.dstack/state`: one store for all iterations.
        let store = Arc::new(RunStore::open(dir.path().join(".dstack/state")).expect("store"));
        let scheduler = Scheduler::new(store, Arc::new(Noop), dir.path(), Vec::new());
        let options = RunOptions {
            parallelism: 2,
            ..RunOptions::default()
        };
        group.throughput(Throughput::Elements(n as u64 + 1));
        group.bench_with_input(BenchmarkId::new(shape, n + 1), &plan, |b, plan| {
            b.iter(|| {
                let run = scheduler
                    .submit(plan, serde_json::json!({}))
                    .expect("submits");
                let summary = runtime
                    .block_on(scheduler.drive(&run, &options, CancellationToken::new()))
                    .expect("drives");
                assert!(summary.succeeded());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
