//! The Slurm executor against a real Slurm cluster: projects on disk, run through the `Engine`
//! (the API the CLI and Python use), jobs observed with Slurm's own commands (`squeue`,
//! `scontrol show job`, `scontrol write batch_script`).
//!
//! Needs a cluster that answers `sinfo`: `eval "$(bash scripts/setup-slurm.sh)"` makes a
//! one-node one on this machine when there is none. Without it every test here fails, saying
//! so: none is skipped.
//!
//! Waiting is done by polling for a condition with a deadline, never by sleeping alone; no
//! test asserts a duration.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dstack_core::Overrides;
use dstack_core::run::{Event, JobRecord, JobStatus, RunOptions, RunStatus, RunSummary};
use dstack_exec::slurm::SlurmConfig;
use dstack_exec::{Engine, EngineError, ExecConfig, ExecutorKind};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// Fails the test, saying how to get a cluster, unless one answers with a usable node.
fn require_cluster() {
    let out = Command::new("sinfo")
        .args(["--noheader", "--format=%T"])
        .output();
    let ok = out.as_ref().is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                ["idle", "mixed", "allocated", "completing"]
                    .iter()
                    .any(|s| l.starts_with(s))
            })
    });
    assert!(
        ok,
        "the Slurm tests need a Slurm cluster that answers `sinfo` with a usable node ({}).\n  \
         Start a one-node cluster on this machine with:  eval \"$(bash scripts/setup-slurm.sh)\"\n  \
         (or set SLURM_CONF to your cluster's slurm.conf)",
        match &out {
            Ok(o) => format!(
                "sinfo said: {}{}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("cannot run sinfo: {e}"),
        }
    );
}

fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `scontrol show job ID` as key/value pairs.
fn scontrol_job(id: &str) -> HashMap<String, String> {
    run_tool("scontrol", &["show", "job", "--oneliner", id])
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The batch script Slurm holds for job `id`.
fn batch_script(id: &str) -> String {
    run_tool("scontrol", &["write", "batch_script", id, "-"])
}

/// The jobs of run `run` (by name) that are still queued or running.
fn active_jobs(run: &str) -> Vec<String> {
    run_tool(
        "squeue",
        &[
            "--noheader",
            "--array",
            "--states=PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED",
            "--format=%i %j %T",
        ],
    )
    .lines()
    .filter(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|name| name == run || name.starts_with(&format!("{run}/")))
    })
    .map(str::to_owned)
    .collect()
}

/// What `squeue` says of executor id `id`: (state, reason).
fn slurm_state(id: &str) -> (String, String) {
    let array = id.split('_').next().unwrap();
    let out = run_tool(
        "squeue",
        &[
            "--noheader",
            "--array",
            "--states=all",
            &format!("--jobs={array}"),
            "--format=%i|%T|%r",
        ],
    );
    out.lines()
        .find_map(|l| {
            let mut f = l.split('|');
            (f.next()? == id).then(|| {
                (
                    f.next().unwrap_or("").to_owned(),
                    f.next().unwrap_or("").to_owned(),
                )
            })
        })
        .unwrap_or_else(|| ("GONE".into(), String::new()))
}

// ---------------------------------------------------------------------------------------------
// Projects and runs
// ---------------------------------------------------------------------------------------------

struct Project {
    _dir: TempDir,
    root: PathBuf,
    state: PathBuf,
    /// A folder next to the project, outside every job's tree, where jobs leave traces.
    probe: PathBuf,
}

fn project(name: &str, workflows: &str, files: &[(&str, &str)]) -> Project {
    let dir = tempfile::Builder::new()
        .prefix("dstack-slurm-")
        .tempdir()
        .unwrap();
    let root = dir.path().join(name);
    let probe = dir.path().join("probe");
    std::fs::create_dir_all(root.join(".dstack")).unwrap();
    std::fs::create_dir_all(&probe).unwrap();
    let workflows = workflows.replace("PROBE", &probe.to_string_lossy());
    std::fs::write(root.join(".dstack/workflows.yaml"), workflows).unwrap();
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let state = root.join(".dstack/state");
    Project {
        _dir: dir,
        root,
        state,
        probe,
    }
}

fn config() -> SlurmConfig {
    SlurmConfig {
        poll_interval: Some("200ms".into()),
        ..SlurmConfig::default()
    }
}

fn engine(p: &Project, slurm: SlurmConfig) -> Engine {
    require_cluster();
    Engine::with_state_dir(&p.root, &p.state)
        .unwrap()
        .with_git(false)
        .with_exec_config(ExecConfig {
            slurm,
            ..ExecConfig::default()
        })
}

fn options() -> RunOptions {
    RunOptions {
        keep_going: false,
        retry_delay: Duration::from_millis(100),
        ..RunOptions::default()
    }
}

type Events = Arc<Mutex<Vec<Event>>>;

/// Submits and drives `workflow` to its end.
async fn run(
    engine: &Engine,
    workflow: &str,
    overrides: &Overrides,
    options: &RunOptions,
) -> (Result<RunSummary, EngineError>, String, Events) {
    let submission = engine
        .submit(workflow, overrides, ExecutorKind::Slurm)
        .unwrap();
    let events: Events = Arc::default();
    let sink = events.clone();
    let result = engine
        .drive(
            &submission.run,
            options,
            vec![Arc::new(move |e: &Event| {
                sink.lock().unwrap().push(e.clone())
            })],
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await;
    (result, submission.run.name, events)
}

fn job<'a>(jobs: &'a [JobRecord], id: &str) -> &'a JobRecord {
    jobs.iter()
        .find(|j| j.job_id == id)
        .unwrap_or_else(|| panic!("no job `{id}` in {jobs:#?}"))
}

fn logs(engine: &Engine, run: &str, workflow: &str) -> String {
    engine
        .logs(run, Some(workflow), None)
        .unwrap()
        .iter()
        .map(|l| String::from_utf8_lossy(&l.record.line).into_owned())
        .collect()
}

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn executor_ids(engine: &Engine, run: &str) -> HashMap<String, String> {
    let record = engine.run(run).unwrap();
    engine
        .store()
        .jobs(&record)
        .unwrap()
        .into_iter()
        .filter_map(|j| Some((j.job_id.clone(), j.executor_id?)))
        .collect()
}

fn status_of(engine: &Engine, run: &str, job_id: &str) -> JobStatus {
    let record = engine.run(run).unwrap();
    job(&engine.store().jobs(&record).unwrap(), job_id).status
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The documentation's pipeline (python provider: `prepare` saves `data`, `train` reads it and
/// saves `checkpoint`), with `--tgpu 0` as this cluster has no GPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documentation_pipeline_runs_on_slurm() {
    let p = project(
        "docs",
        "workflows:
  - name: prepare
    provider: python
    script: prepare.py
    artifacts:
      - data
    resources:
      gpu: ${{ pgpu }}
  - name: train
    provider: python
    script: train.py
    artifacts:
      - checkpoint
    depends-on:
      - prepare
    resources:
      gpu: ${{ tgpu }}
",
        &[
            (
                ".dstack/variables.yaml",
                "variables:\n  prepare:\n    pgpu: 0\n  train:\n    tgpu: 1\n",
            ),
            (
                "prepare.py",
                "import os\nos.makedirs('data', exist_ok=True)\nopen('data/numbers.txt', 'w').write('\\n'.join(str(i) for i in range(10)))\nprint('prepared 10 numbers')\n",
            ),
            (
                "train.py",
                "import os\nnumbers = [int(x) for x in open('data/numbers.txt').read().split()]\nos.makedirs('checkpoint', exist_ok=True)\nopen('checkpoint/model.txt', 'w').write(str(sum(numbers)))\nprint('trained on', len(numbers), 'numbers')\n",
            ),
        ],
    );
    let engine = engine(&p, config());
    let mut overrides = Overrides::new();
    overrides.set_text("tgpu", "0");
    let (result, run, events) = run(&engine, "train", &overrides, &options()).await;
    let summary = result.unwrap();
    assert_eq!(summary.run.status, RunStatus::Done, "{summary:#?}");
    for j in &summary.jobs {
        assert_eq!(j.status, JobStatus::Done, "{j:#?}");
        let id = j.executor_id.as_deref().unwrap();
        assert!(
            id.split_once('_')
                .is_some_and(|(a, t)| a.parse::<u64>().is_ok() && t.parse::<u64>().is_ok()),
            "a Slurm array task id: {id}"
        );
        assert_eq!(scontrol_job(id)["JobState"], "COMPLETED");
        assert_eq!(scontrol_job(id)["JobName"], format!("{run}/{}", j.job_id));
    }
    assert!(logs(&engine, &run, "prepare").contains("prepared 10 numbers"));
    assert!(logs(&engine, &run, "train").contains("trained on 10 numbers"));
    let artifacts = engine.artifacts(&run).unwrap();
    let checkpoint = artifacts.iter().find(|a| a.path == "checkpoint").unwrap();
    assert_eq!(
        std::fs::read_to_string(checkpoint.stored.join("model.txt")).unwrap(),
        "45"
    );
    // The jobs ran in the order of their dependencies, and their trees are gone.
    let started: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::JobStatus {
                job,
                status: JobStatus::Running,
                ..
            } => Some(job.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["prepare", "train"]);
    assert!(
        !p.state
            .join("runs")
            .join(&run)
            .join("jobs")
            .join("train")
            .exists()
    );
    assert!(
        !p.state.join("runs").join(&run).join("slurm").exists(),
        "the executor's files go when the run ends"
    );
}

/// A diamond: `top` -> `left`, `right` -> `bottom`. Slurm holds the dependencies (checked with
/// `scontrol show job` while `top` waits for a gate), and `bottom` sees both artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_is_handed_to_slurm_with_native_dependencies() {
    let p = project(
        "diamond",
        "workflows:
  - name: top
    provider: docker
    image: ubuntu
    commands:
      - while [ ! -e PROBE/gate ]; do sleep 0.1; done
      - mkdir -p top && echo top > top/t.txt
    artifacts: [top]
  - name: left
    provider: docker
    image: ubuntu
    depends-on: [top]
    commands:
      - mkdir -p left && cat top/t.txt > left/l.txt && echo left >> left/l.txt
    artifacts: [left]
  - name: right
    provider: docker
    image: ubuntu
    depends-on: [top]
    commands:
      - mkdir -p right && cat top/t.txt > right/r.txt && echo right >> right/r.txt
    artifacts: [right]
  - name: bottom
    provider: docker
    image: ubuntu
    depends-on: [left, right]
    commands:
      - cat left/l.txt right/r.txt
",
        &[],
    );
    let engine = engine(&p, config());
    let submission = engine
        .submit("bottom", &Overrides::new(), ExecutorKind::Slurm)
        .unwrap();
    assert!(
        submission
            .warnings
            .iter()
            .any(|w| w.contains("images are not used")),
        "{:?}",
        submission.warnings
    );
    let name = submission.run.name.clone();
    let driver = tokio::spawn({
        let engine = engine.clone();
        let run = submission.run.clone();
        async move {
            engine
                .drive(
                    &run,
                    &options(),
                    Vec::new(),
                    CancellationToken::new(),
                    CancellationToken::new(),
                )
                .await
        }
    });
    wait_for("every job submitted", || {
        executor_ids(&engine, &name).len() == 4
    })
    .await;
    let ids = executor_ids(&engine, &name);
    wait_for("`top` running", || {
        scontrol_job(&ids["top"])["JobState"] == "RUNNING"
    })
    .await;
    let dependency = |job: &str| scontrol_job(&ids[job])["Dependency"].clone();
    assert_eq!(
        dependency("left"),
        format!("afterok:{}(unfulfilled)", ids["top"])
    );
    assert_eq!(
        dependency("right"),
        format!("afterok:{}(unfulfilled)", ids["top"])
    );
    let bottom = dependency("bottom");
    assert!(
        bottom.contains(&format!("afterok:{}(unfulfilled)", ids["left"]))
            && bottom.contains(&format!("afterok:{}(unfulfilled)", ids["right"])),
        "{bottom}"
    );
    assert_eq!(scontrol_job(&ids["bottom"])["JobState"], "PENDING");
    assert_eq!(scontrol_job(&ids["bottom"])["Reason"], "Dependency");
    std::fs::write(p.probe.join("gate"), "").unwrap();
    let summary = driver.await.unwrap().unwrap();
    assert_eq!(summary.run.status, RunStatus::Done, "{summary:#?}");
    assert_eq!(logs(&engine, &name, "bottom"), "top\nleft\ntop\nright\n");
}

/// With `--keep-going`, a failing job's dependents are skipped (Slurm cancels them: nothing
/// stays queued) and the independent branch runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_skips_its_dependents() {
    let p = project(
        "failing",
        "workflows:
  - name: broken
    provider: docker
    image: ubuntu
    commands:
      - echo about to fail
      - exit 3
      - echo never
  - name: after-broken
    provider: docker
    image: ubuntu
    depends-on: [broken]
    commands: [echo never]
  - name: after-after
    provider: docker
    image: ubuntu
    depends-on: [after-broken]
    commands: [echo never]
  - name: fine
    provider: docker
    image: ubuntu
    commands: [echo fine]
  - name: all
    provider: docker
    image: ubuntu
    depends-on: [after-after, fine]
    commands: [echo never]
",
        &[],
    );
    let engine = engine(&p, config());
    let opts = RunOptions {
        keep_going: true,
        ..options()
    };
    let (result, run, _) = run(&engine, "all", &Overrides::new(), &opts).await;
    let summary = result.unwrap();
    assert_eq!(summary.run.status, RunStatus::Failed);
    let broken = job(&summary.jobs, "broken");
    assert_eq!(broken.status, JobStatus::Failed);
    assert_eq!(broken.exit_code, Some(3));
    assert_eq!(broken.reason.as_deref(), Some("exited with code 3"));
    assert!(logs(&engine, &run, "broken").contains("about to fail"));
    assert!(!logs(&engine, &run, "broken").contains("never"));
    assert_eq!(job(&summary.jobs, "fine").status, JobStatus::Done);
    for (id, dep) in [
        ("after-broken", "broken"),
        ("after-after", "after-broken"),
        ("all", "after-after"),
    ] {
        let j = job(&summary.jobs, id);
        assert_eq!(j.status, JobStatus::Skipped, "{j:#?}");
        assert_eq!(
            j.reason.as_deref(),
            Some(format!("dependency `{dep}` did not succeed").as_str())
        );
        // Cancelled, by dstack or by Slurm itself (`--kill-on-invalid-dep`), whichever came
        // first: never left pending.
        let (state, reason) = slurm_state(j.executor_id.as_deref().unwrap());
        assert_eq!(state, "CANCELLED", "{id}: {reason}");
    }
    assert!(active_jobs(&run).is_empty(), "{:?}", active_jobs(&run));
}

/// Cancelling the run (Ctrl-C, `dstack stop`) cancels every job of it: the running one is
/// killed, the queued ones are gone, and nothing of the run stays in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_leaves_nothing_queued() {
    let p = project(
        "cancel",
        "workflows:
  - name: long
    provider: docker
    image: ubuntu
    commands:
      - echo $$ > PROBE/pid
      - exec sleep 300
  - name: next
    provider: docker
    image: ubuntu
    depends-on: [long]
    commands: [echo never]
  - name: last
    provider: docker
    image: ubuntu
    depends-on: [next]
    commands: [echo never]
",
        &[],
    );
    let engine = engine(&p, config());
    let submission = engine
        .submit("last", &Overrides::new(), ExecutorKind::Slurm)
        .unwrap();
    let name = submission.run.name.clone();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn({
        let engine = engine.clone();
        let run = submission.run.clone();
        let cancel = cancel.clone();
        async move {
            engine
                .drive(
                    &run,
                    &options(),
                    Vec::new(),
                    cancel,
                    CancellationToken::new(),
                )
                .await
        }
    });
    wait_for("`long` running", || {
        status_of(&engine, &name, "long") == JobStatus::Running && p.probe.join("pid").exists()
    })
    .await;
    let pid = std::fs::read_to_string(p.probe.join("pid"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(Path::new("/proc").join(&pid).exists());
    assert_eq!(active_jobs(&name).len(), 3, "{:?}", active_jobs(&name));
    cancel.cancel();
    let summary = driver.await.unwrap().unwrap();
    assert_eq!(summary.run.status, RunStatus::Stopped);
    assert_eq!(job(&summary.jobs, "long").status, JobStatus::Stopped);
    for id in ["next", "last"] {
        let j = job(&summary.jobs, id);
        assert_eq!(j.status, JobStatus::Skipped);
        assert_eq!(j.reason.as_deref(), Some("the run was stopped"));
    }
    assert!(active_jobs(&name).is_empty(), "{:?}", active_jobs(&name));
    for j in &summary.jobs {
        assert_eq!(
            slurm_state(j.executor_id.as_deref().unwrap()).0,
            "CANCELLED"
        );
    }
    wait_for("the job's process to be gone", || {
        !Path::new("/proc").join(&pid).exists()
    })
    .await;
}

/// A job's `timeout` is enforced on the node from the moment it starts (queue time is not
/// part of it), to the second, and `--time` gives Slurm a backstop in minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fails_the_job() {
    let p = project(
        "timeout",
        "workflows:
  - name: slow
    provider: docker
    image: ubuntu
    timeout: 2
    commands:
      - echo started
      - sleep 120
",
        &[],
    );
    let engine = engine(&p, config());
    let (result, run, _) = run(&engine, "slow", &Overrides::new(), &options()).await;
    let summary = result.unwrap();
    let slow = job(&summary.jobs, "slow");
    assert_eq!(slow.status, JobStatus::Failed);
    assert_eq!(slow.reason.as_deref(), Some("timed out after 2s"));
    assert!(logs(&engine, &run, "slow").contains("started"));
    let id = slow.executor_id.as_deref().unwrap();
    // 2 s + 5 s of grace + 60 s of margin: 2 minutes.
    assert_eq!(scontrol_job(id)["TimeLimit"], "00:02:00");
    assert_eq!(scontrol_job(id)["JobState"], "FAILED");
}

/// Resources become `#SBATCH` lines of the batch script Slurm holds, and Slurm enforces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_in_the_batch_script() {
    let p = project(
        "resources",
        "workflows:
  - name: sized
    provider: docker
    image: ubuntu
    timeout: 90
    commands:
      - echo cpus on node = $SLURM_CPUS_PER_TASK
    resources:
      cpu: 2
      memory: 300MiB
",
        &[],
    );
    let engine = engine(&p, config());
    let (result, run, _) = run(&engine, "sized", &Overrides::new(), &options()).await;
    let summary = result.unwrap();
    assert_eq!(summary.run.status, RunStatus::Done, "{summary:#?}");
    let id = job(&summary.jobs, "sized").executor_id.clone().unwrap();
    let script = batch_script(&id);
    for line in [
        "#SBATCH --cpus-per-task=2\n",
        "#SBATCH --mem=300M\n",
        "#SBATCH --time=3\n",
        "#SBATCH --kill-on-invalid-dep=yes\n",
    ] {
        assert!(script.contains(line), "`{line}` in:\n{script}");
    }
    let job = scontrol_job(&id);
    assert_eq!(job["NumCPUs"], "2");
    assert_eq!(job["MinMemoryNode"], "300M");
    assert_eq!(job["TimeLimit"], "00:03:00");
    assert!(logs(&engine, &run, "sized").contains("cpus on node = 2"));
}

/// GPUs become `--gres=gpu:N` / `--gres=gpu:NAME:N`. This cluster has none: Slurm refuses the
/// job, and the error says which job, which options and what Slurm said; nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_the_cluster_lacks_is_a_clear_error() {
    let p = project(
        "gpu",
        "workflows:
  - name: prepare
    provider: docker
    image: ubuntu
    commands: [echo prepare]
  - name: train
    provider: docker
    image: ubuntu
    depends-on: [prepare]
    commands: [nvidia-smi]
    resources:
      v100/gpu: 2
",
        &[],
    );
    let engine = engine(&p, config());
    let (result, run, _) = run(&engine, "train", &Overrides::new(), &options()).await;
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains("Slurm refused job(s) `train` (")
            && error.contains("--gres=gpu:v100:2")
            && error.contains("Invalid generic resource (gres) specification"),
        "{error}"
    );
    let record = engine.run(&run).unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert!(active_jobs(&run).is_empty(), "{:?}", active_jobs(&run));
    // The script that was refused is there to read.
    let scripts = p.state.join("runs").join(&run).join("slurm/scripts");
    let texts: Vec<String> = std::fs::read_dir(&scripts)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("\n#SBATCH --gres=gpu:v100:2\n")),
        "{texts:#?}"
    );
}

/// Strings from the user never become shell code: environment values, commands and paths
/// with quotes, `$(...)`, backquotes and line breaks arrive exactly as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_stay_data() {
    let p = project(
        "it's a $(project) dir",
        r#"workflows:
  - name: hostile
    provider: docker
    image: "ubuntu'; touch PROBE/pwned-image; '"
    environment:
      HOSTILE: "it's $(touch PROBE/pwned-env) `touch PROBE/pwned-tick` \"q\" \\ ${HOME}\nsecond line"
    commands:
      - mkdir -p "out dir"
      - printf '%s' "$HOSTILE" > "out dir/env.txt"
      - echo "it's fine; $(echo sub)" > "out dir/cmd.txt"
    artifacts:
      - out dir
  - name: reader
    provider: docker
    image: ubuntu
    depends-on: [hostile]
    commands:
      - cat "out dir/env.txt"
"#,
        &[],
    );
    let engine = engine(&p, config());
    let (result, run, _) = run(&engine, "reader", &Overrides::new(), &options()).await;
    let summary = result.unwrap();
    assert_eq!(summary.run.status, RunStatus::Done, "{summary:#?}");
    let expected = format!(
        "it's $(touch {0}/pwned-env) `touch {0}/pwned-tick` \"q\" \\ ${{HOME}}\nsecond line",
        p.probe.display()
    );
    let stored = engine
        .artifacts(&run)
        .unwrap()
        .into_iter()
        .find(|a| a.path == "out dir")
        .unwrap()
        .stored;
    assert_eq!(
        std::fs::read_to_string(stored.join("env.txt")).unwrap(),
        expected
    );
    assert_eq!(
        std::fs::read_to_string(stored.join("cmd.txt")).unwrap(),
        "it's fine; sub\n"
    );
    assert_eq!(logs(&engine, &run, "reader"), expected + "\n");
    let pwned: Vec<_> = std::fs::read_dir(&p.probe).unwrap().collect();
    assert!(pwned.is_empty(), "{pwned:?}");
}

/// Without `sbatch`, the executor cannot be used, and the error names it and how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sbatch_is_named() {
    let p = project(
        "missing",
        "workflows:\n  - name: a\n    provider: docker\n    image: ubuntu\n    commands: [true]\n",
        &[],
    );
    let empty = tempfile::tempdir().unwrap();
    // Slurm's other commands are there, sbatch is not.
    for tool in ["squeue", "scancel", "scontrol"] {
        std::os::unix::fs::symlink(
            Path::new(run_tool("sh", &["-c", &format!("command -v {tool}")]).trim()),
            empty.path().join(tool),
        )
        .unwrap();
    }
    let engine = engine(
        &p,
        SlurmConfig {
            bin_dir: Some(empty.path().to_path_buf()),
            ..config()
        },
    );
    let e = engine
        .submit("a", &Overrides::new(), ExecutorKind::Slurm)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "the Slurm command `sbatch` is not in `{}` (`slurm.bin-dir` of the executor configuration)\n  help: point `slurm.bin-dir` at the folder that holds sbatch, squeue, scancel and scontrol",
            empty.path().display()
        )
    );
}

/// A controller that does not answer: the error names the command that failed, what Slurm
/// said, and how to configure the executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_controller_is_a_clear_error() {
    let p = project(
        "unreachable",
        "workflows:\n  - name: a\n    provider: docker\n    image: ubuntu\n    commands: [true]\n",
        &[],
    );
    // The cluster's configuration, with a port nobody listens on.
    let conf = std::env::var_os("SLURM_CONF")
        .map_or_else(|| PathBuf::from("/etc/slurm/slurm.conf"), PathBuf::from);
    require_cluster();
    let text = std::fs::read_to_string(&conf).unwrap();
    let wrong: String = text
        .lines()
        .filter(|l| !l.starts_with("SlurmctldPort"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "SlurmctldPort=6999\n";
    let wrong_conf = p.probe.join("slurm.conf");
    std::fs::write(&wrong_conf, wrong).unwrap();
    let engine = engine(
        &p,
        SlurmConfig {
            slurm_conf: Some(wrong_conf.clone()),
            ..config()
        },
    );
    let (result, run, _) = run(&engine, "a", &Overrides::new(), &options()).await;
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("`scontrol show config` exited with 1: slurm_load_ctl_conf error: Unable to contact slurm controller"),
        "{e}"
    );
    assert!(
        e.contains(&format!("SLURM_CONF={}", wrong_conf.display())),
        "{e}"
    );
    assert!(e.contains("`slurm.slurm-conf`"), "{e}");
    assert_eq!(engine.run(&run).unwrap().status, RunStatus::Failed);
}

/// A job that fails is retried on the node (the run goes on without the driver), and the
/// retries reach the store and the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_happen_on_the_cluster() {
    let p = project(
        "retries",
        "workflows:
  - name: flaky
    provider: docker
    image: ubuntu
    retries: 2
    commands:
      - echo attempt >> PROBE/attempts
      - test $(wc -l < PROBE/attempts) -ge 2
      - mkdir -p out && echo ok > out/ok.txt
    artifacts: [out]
",
        &[],
    );
    let engine = engine(&p, config());
    let (result, run, events) = run(&engine, "flaky", &Overrides::new(), &options()).await;
    let summary = result.unwrap();
    assert_eq!(summary.run.status, RunStatus::Done, "{summary:#?}");
    assert_eq!(job(&summary.jobs, "flaky").attempts, 2);
    let retries: Vec<(u32, String)> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::JobRetrying {
                next_attempt,
                reason,
                ..
            } => Some((*next_attempt, reason.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [(2, "exited with code 1".to_owned())]);
    assert_eq!(
        std::fs::read_to_string(p.probe.join("attempts")).unwrap(),
        "attempt\nattempt\n"
    );
    assert!(
        engine
            .artifacts(&run)
            .unwrap()
            .iter()
            .any(|a| a.path == "out")
    );
}

/// The driver dies while jobs are queued and running: Slurm goes on with them. `resume`
/// re-attaches to them (the same Slurm jobs: nothing is submitted again), streams the output
/// that was written meanwhile, and finishes the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_driver_crash_reattaches() {
    let p = project(
        "resume",
        "workflows:
  - name: first
    provider: docker
    image: ubuntu
    commands:
      - echo before the crash
      - while [ ! -e PROBE/gate ]; do sleep 0.1; done
      - echo after the crash
      - mkdir -p data && echo 42 > data/x
    artifacts: [data]
  - name: second
    provider: docker
    image: ubuntu
    depends-on: [first]
    commands:
      - cat data/x
",
        &[],
    );
    let engine = engine(&p, config());
    let submission = engine
        .submit("second", &Overrides::new(), ExecutorKind::Slurm)
        .unwrap();
    let name = submission.run.name.clone();
    let driver = tokio::spawn({
        let engine = engine.clone();
        let run = submission.run.clone();
        async move {
            engine
                .drive(
                    &run,
                    &options(),
                    Vec::new(),
                    CancellationToken::new(),
                    CancellationToken::new(),
                )
                .await
        }
    });
    wait_for("`first` running and talking", || {
        status_of(&engine, &name, "first") == JobStatus::Running
            && logs(&engine, &name, "first").contains("before the crash")
    })
    .await;
    let before = executor_ids(&engine, &name);
    // The driver crashes: its task is gone mid-run, without a word to Slurm.
    driver.abort();
    assert!(driver.await.unwrap_err().is_cancelled());
    assert_eq!(engine.run(&name).unwrap().status, RunStatus::Running);
    assert_eq!(
        active_jobs(&name).len(),
        2,
        "Slurm goes on: {:?}",
        active_jobs(&name)
    );
    // `first` finishes while nobody watches.
    std::fs::write(p.probe.join("gate"), "").unwrap();
    wait_for("`first` to complete on the cluster", || {
        slurm_state(&before["first"]).0 == "COMPLETED"
    })
    .await;

    let run = engine.resumable(&name).unwrap();
    let summary = engine
        .drive(
            &run,
            &options(),
            Vec::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(summary.run.status, RunStatus::Done, "{summary:#?}");
    assert_eq!(
        executor_ids(&engine, &name),
        before,
        "nothing was submitted again"
    );
    let first = logs(&engine, &name, "first");
    assert_eq!(
        first.matches("before the crash").count(),
        1,
        "output is not reported twice: {first}"
    );
    assert!(first.contains("after the crash"), "{first}");
    assert_eq!(logs(&engine, &name, "second"), "42\n");
}

/// A job that failed while nobody watched is submitted again by `resume`, with its
/// dependents; what succeeded is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_submits_again_what_failed_unwatched() {
    let p = project(
        "resume-failed",
        "workflows:
  - name: ok
    provider: docker
    image: ubuntu
    commands: [echo ok]
  - name: flaky
    provider: docker
    image: ubuntu
    depends-on: [ok]
    commands:
      - while [ ! -e PROBE/gate ]; do sleep 0.1; done
      - test -e PROBE/fixed
  - name: end
    provider: docker
    image: ubuntu
    depends-on: [flaky]
    commands: [echo end]
",
        &[],
    );
    let engine = engine(&p, config());
    let submission = engine
        .submit("end", &Overrides::new(), ExecutorKind::Slurm)
        .unwrap();
    let name = submission.run.name.clone();
    let driver = tokio::spawn({
        let engine = engine.clone();
        let run = submission.run.clone();
        async move {
            engine
                .drive(
                    &run,
                    &options(),
                    Vec::new(),
                    CancellationToken::new(),
                    CancellationToken::new(),
                )
                .await
        }
    });
    wait_for("`flaky` running", || {
        status_of(&engine, &name, "flaky") == JobStatus::Running
    })
    .await;
    let before = executor_ids(&engine, &name);
    driver.abort();
    let _ = driver.await;
    std::fs::write(p.probe.join("gate"), "").unwrap();
    wait_for("`flaky` to fail and `end` to be cancelled by Slurm", || {
        slurm_state(&before["flaky"]).0 == "FAILED" && slurm_state(&before["end"]).0 == "CANCELLED"
    })
    .await;
    std::fs::write(p.probe.join("fixed"), "").unwrap();
    let run = engine.resumable(&name).unwrap();
    let summary = engine
        .drive(
            &run,
            &options(),
            Vec::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(summary.run.status, RunStatus::Done, "{summary:#?}");
    let after = executor_ids(&engine, &name);
    assert_eq!(after["ok"], before["ok"], "kept");
    assert_ne!(after["flaky"], before["flaky"], "submitted again");
    assert_ne!(after["end"], before["end"], "submitted again");
    assert_eq!(logs(&engine, &name, "end"), "end\n");
}

/// A hundred jobs of four resource shapes (four job arrays), followed in bulk: every one is
/// seen to its end, in dependency order, whichever array a poll read first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_jobs_of_several_shapes_are_followed_to_their_end() {
    let mut workflows = String::from("workflows:\n");
    for i in 0..100 {
        workflows.push_str(&format!(
            "  - name: job-{i:03}\n    provider: docker\n    image: ubuntu\n    commands: [\"echo {i} > PROBE/{i}\"]\n"
        ));
        match i % 4 {
            1 => workflows.push_str("    resources: {cpu: 1}\n"),
            2 => workflows.push_str("    resources: {memory: 64MiB}\n"),
            3 => workflows.push_str("    timeout: 10m\n"),
            _ => {}
        }
        if i > 0 {
            workflows.push_str(&format!("    depends-on: [job-{:03}]\n", (i * 7 + 3) % i));
        }
    }
    let all: Vec<String> = (0..100).map(|i| format!("job-{i:03}")).collect();
    workflows.push_str(&format!(
        "  - name: all\n    provider: docker\n    image: ubuntu\n    commands: [\"true\"]\n    depends-on: [{}]\n",
        all.join(", ")
    ));
    let p = project("hundred", &workflows, &[]);
    let engine = engine(&p, config());
    let (result, run, events) = run(&engine, "all", &Overrides::new(), &options()).await;
    let summary = result.unwrap();
    assert_eq!(summary.run.status, RunStatus::Done, "{summary:#?}");
    assert_eq!(summary.jobs.len(), 101);
    let arrays: std::collections::BTreeSet<String> = executor_ids(&engine, &run)
        .values()
        .map(|id| id.split('_').next().unwrap().to_owned())
        .collect();
    assert_eq!(arrays.len(), 4, "{arrays:?}");
    assert_eq!(std::fs::read_dir(&p.probe).unwrap().count(), 100);
    // Each job started after its dependency ended.
    let mut order = Vec::new();
    for e in events.lock().unwrap().iter() {
        if let Event::JobStatus { job, status, .. } = e {
            order.push((job.clone(), *status));
        }
    }
    let at = |job: &str, status: JobStatus| {
        order
            .iter()
            .position(|(j, s)| j == job && *s == status)
            .unwrap_or_else(|| panic!("{job} {status}"))
    };
    for i in 1..100 {
        let dep = format!("job-{:03}", (i * 7 + 3) % i);
        assert!(
            at(&dep, JobStatus::Done) < at(&format!("job-{i:03}"), JobStatus::Done),
            "job-{i:03} after {dep}"
        );
    }
}
