//! The Docker executor against a real Docker engine: projects on disk, run through the
//! `Engine` (the API the CLI and Python use), containers observed through the engine's API.
//!
//! Needs an engine and the test images `dstack-busybox:test` and `python:3.11`:
//! `bash scripts/setup-docker.sh` installs, starts and builds what is missing. Without them
//! every test here fails, saying so: none is skipped.
//!
//! Waiting is done by polling for a condition with a deadline, never by sleeping alone; no
//! test asserts a duration.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use dstack_core::Overrides;
use dstack_core::run::{
    Event, Executor, JobRecord, JobStatus, RunOptions, RunStatus, RunSummary, Stream, Subscriber,
};
use dstack_exec::docker::{
    self, DockerConfig, DockerExecutor, GpuConfig, LABEL_JOB, LABEL_RUN, LABEL_STORE, PullPolicy,
    UserConfig,
};
use dstack_exec::{Engine, EngineError, ExecConfig, ExecutorKind};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// The tiny test image (a static busybox).
const BUSYBOX: &str = "dstack-busybox:test";
/// The Python test image (Debian's Python 3.11).
const PYTHON: &str = "python:3.11";
/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

/// The engine (default address: `DOCKER_HOST` or the default socket) with the test images, or
/// a failure that says how to get them.
fn engine() -> DockerExecutor {
    DockerExecutor::connect(&DockerConfig::default()).unwrap_or_else(|e| {
        panic!(
            "the Docker tests need a Docker engine: {e}\n  help: {}\n  \
             (`bash scripts/setup-docker.sh` installs and starts one, with the test images)",
            e.help().unwrap_or_default()
        )
    })
}

/// A client of our own for looking at containers.
fn client() -> Docker {
    let executor = engine();
    let host = executor.host();
    let docker = match host.strip_prefix("unix://") {
        Some(path) => Docker::connect_with_unix(path, 120, &api(&executor)),
        None => Docker::connect_with_http(&host, 120, &api(&executor)),
    };
    docker.unwrap()
}

fn api(executor: &DockerExecutor) -> bollard::ClientVersion {
    let (major, minor) = executor
        .api_version()
        .split_once('.')
        .map_or((1, 41), |(a, b)| (a.parse().unwrap(), b.parse().unwrap()));
    bollard::ClientVersion {
        major_version: major,
        minor_version: minor,
    }
}

async fn require_image(docker: &Docker, image: &str) {
    if docker.inspect_image(image).await.is_err() {
        panic!(
            "the Docker tests need the image `{image}`: run `bash scripts/setup-docker.sh` to build it"
        );
    }
}

/// Every container (running or not) with these labels.
async fn containers(docker: &Docker, labels: &[String]) -> Vec<ContainerInspectResponse> {
    let filters = HashMap::from([("label", labels.to_vec())]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let mut out = Vec::new();
    for c in docker.list_containers(Some(options)).await.unwrap() {
        if let Ok(inspected) = docker
            .inspect_container(c.id.as_deref().unwrap(), None)
            .await
        {
            out.push(inspected);
        }
    }
    out
}

async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Projects
// ---------------------------------------------------------------------------------------------

/// A project in a temporary folder, its state next to it.
struct Project {
    _dir: TempDir,
    root: PathBuf,
    state: PathBuf,
    config: DockerConfig,
}

impl Project {
    fn new(workflows: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let state = dir.path().join("state");
        std::fs::create_dir_all(root.join(".dstack")).unwrap();
        std::fs::write(root.join(".dstack/workflows.yaml"), workflows).unwrap();
        Project {
            _dir: dir,
            root,
            state,
            config: DockerConfig::default(),
        }
    }

    fn with(mut self, config: DockerConfig) -> Project {
        self.config = config;
        self
    }

    fn file(&self, path: &str, text: &str) -> &Project {
        let path = self.root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    fn engine(&self) -> Engine {
        Engine::with_state_dir(&self.root, &self.state)
            .unwrap()
            .with_git(false)
            .with_exec_config(ExecConfig {
                docker: self.config.clone(),
                ..ExecConfig::default()
            })
    }

    /// The labels that select this project's containers (of its store).
    fn labels(&self) -> Vec<String> {
        std::fs::create_dir_all(&self.state).unwrap();
        vec![format!("{LABEL_STORE}={}", docker::store_id(&self.state))]
    }

    /// Every output folder of this store's jobs (`runs/RUN/docker/CONTAINER`), with the files
    /// in it and their lengths, and the runs' `docker` folders.
    fn output_files(&self) -> Vec<(PathBuf, u64)> {
        let mut found = Vec::new();
        for run in std::fs::read_dir(self.state.join("runs"))
            .into_iter()
            .flatten()
        {
            let docker = run.unwrap().path().join("docker");
            if docker.exists() {
                found.push((docker.clone(), 0));
            }
            for dir in std::fs::read_dir(docker).into_iter().flatten() {
                let dir = dir.unwrap().path();
                found.push((dir.clone(), 0));
                for file in std::fs::read_dir(&dir).into_iter().flatten() {
                    let file = file.unwrap().path();
                    let len = std::fs::metadata(&file).map_or(0, |m| m.len());
                    found.push((file, len));
                }
            }
        }
        found
    }

    /// Runs `workflow` with the Docker executor to its end.
    async fn run(&self, workflow: &str) -> Ran {
        self.run_with(
            workflow,
            &Overrides::new(),
            RunOptions::default(),
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await
    }

    async fn run_with(
        &self,
        workflow: &str,
        overrides: &Overrides,
        options: RunOptions,
        cancel: CancellationToken,
        hurry: CancellationToken,
    ) -> Ran {
        let engine = self.engine();
        let submission = engine
            .submit(workflow, overrides, ExecutorKind::Docker)
            .unwrap_or_else(|e| panic!("submit {workflow}: {e}"));
        assert_eq!(submission.run.executor, "docker");
        let events = Arc::new(Mutex::new(Vec::new()));
        let subscriber: Subscriber = {
            let events = events.clone();
            Arc::new(move |e: &Event| events.lock().unwrap().push(e.clone()))
        };
        let result = engine
            .drive(&submission.run, &options, vec![subscriber], cancel, hurry)
            .await;
        let events = events.lock().unwrap().clone();
        Ran {
            engine,
            name: submission.run.name.clone(),
            result,
            events,
        }
    }
}

/// A run that ended.
struct Ran {
    engine: Engine,
    name: String,
    result: Result<RunSummary, EngineError>,
    events: Vec<Event>,
}

impl Ran {
    fn summary(&self) -> &RunSummary {
        self.result
            .as_ref()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.name))
    }

    fn job(&self, id: &str) -> &JobRecord {
        self.summary()
            .jobs
            .iter()
            .find(|j| j.job_id == id)
            .unwrap_or_else(|| panic!("no job {id}"))
    }

    fn succeeded(&self) -> &Ran {
        let summary = self.summary();
        assert!(
            summary.succeeded(),
            "run {} did not succeed: {:?}\nlogs:\n{}",
            self.name,
            summary.jobs,
            self.all_logs()
        );
        self
    }

    /// The job's output lines of `stream`, without newlines.
    fn lines(&self, job: &str, stream: Stream) -> Vec<String> {
        self.engine
            .logs(&self.name, None, None)
            .unwrap()
            .into_iter()
            .filter(|l| l.job == job && l.record.stream == stream)
            .map(|l| {
                String::from_utf8_lossy(&l.record.line)
                    .trim_end_matches('\n')
                    .to_owned()
            })
            .collect()
    }

    fn all_logs(&self) -> String {
        self.engine
            .logs(&self.name, None, None)
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {:?} {}",
                            l.job,
                            l.record.stream,
                            String::from_utf8_lossy(&l.record.line)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn notes(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Note { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// The artifact file `path` of job `job`, as stored.
    fn artifact(&self, job: &str, path: &str) -> String {
        let dir = self.engine.store().artifacts_dir(&self.name, job);
        std::fs::read_to_string(dir.join(path))
            .unwrap_or_else(|e| panic!("artifact {job}/{path}: {e}"))
    }

    fn run_labels(&self) -> Vec<String> {
        vec![
            format!(
                "{LABEL_STORE}={}",
                docker::store_id(self.engine.store().dir())
            ),
            format!("{LABEL_RUN}={}", self.name),
        ]
    }

    /// Asserts that no container of this run is left.
    async fn nothing_left(&self, docker: &Docker) -> &Ran {
        let left = containers(docker, &self.run_labels()).await;
        assert!(
            left.is_empty(),
            "containers left by run {}: {:?}",
            self.name,
            left.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
        );
        self
    }
}

fn busybox(yaml: &str) -> String {
    yaml.replace("IMAGE", BUSYBOX)
}

// ---------------------------------------------------------------------------------------------
// Running jobs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_engine_answers_in_a_version_both_speak() {
    let executor = engine();
    let (major, minor) = executor
        .api_version()
        .split_once('.')
        .map(|(a, b)| (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap()))
        .unwrap();
    assert_eq!(major, 1);
    assert!((24..=53).contains(&minor), "API 1.{minor}");
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    require_image(&docker, PYTHON).await;
    let caps = executor.capabilities();
    assert!(caps.images && caps.gpus && caps.ports && caps.limits && caps.downloads);
    assert!(!caps.ignores_images);
}

/// The documentation's docker example (its image replaced by the test image: no registry is
/// reachable here).
#[tokio::test]
async fn docs_hello_world_keeps_its_artifact() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: hello
    provider: docker
    image: IMAGE
    commands:
      - mkdir -p output
      - echo 'Hello, world!' > output/hello.txt
      - echo done
    artifacts:
      - output
    resources:
      cpu: 1
      memory: 1GB
",
    ));
    let ran = p.run("hello").await;
    ran.succeeded().nothing_left(&docker).await;
    assert_eq!(ran.artifact("hello", "output/hello.txt"), "Hello, world!\n");
    assert_eq!(ran.lines("hello", Stream::Stdout), vec!["done"]);
    let job = ran.job("hello");
    assert_eq!(job.status, JobStatus::Done);
    assert_eq!(job.exit_code, Some(0));
    let id = job.executor_id.as_deref().unwrap();
    assert!(id.starts_with("dstack-"), "{id}");
    assert_eq!(
        ran.engine
            .artifacts(&ran.name)
            .unwrap()
            .iter()
            .map(|a| a.path.clone())
            .collect::<Vec<_>>(),
        vec!["output".to_owned()]
    );
}

#[tokio::test]
async fn a_pipeline_hands_artifacts_over_read_only() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: prepare
    provider: docker
    image: IMAGE
    commands:
      - mkdir -p data/raw
      - echo 42 > data/raw/answer
    artifacts: [data]
  - name: train
    provider: docker
    image: IMAGE
    depends-on: [prepare]
    working_dir: src
    commands:
      - cat ../data/raw/answer 2>/dev/null || echo 'not at ../data'
      - 'echo \"answer: $(cat data/raw/answer)\"'
      - if touch data/raw/mine 2>/dev/null; then echo writable; else echo read-only; fi
      - mkdir -p model && cat data/raw/answer > model/weights
    artifacts: [model]
",
    ));
    p.file("src/code.txt", "code\n");
    let ran = p.run("train").await;
    ran.succeeded().nothing_left(&docker).await;
    assert_eq!(
        ran.lines("train", Stream::Stdout),
        vec!["not at ../data", "answer: 42", "read-only"]
    );
    assert_eq!(ran.artifact("train", "model/weights"), "42\n");
    assert_eq!(ran.artifact("prepare", "data/raw/answer"), "42\n");
}

#[tokio::test]
async fn the_python_provider_runs_its_script_with_the_environment() {
    let docker = client();
    require_image(&docker, PYTHON).await;
    let p = Project::new(
        "workflows:
  - name: train
    provider: python
    python: 3.11
    script: train.py --name world
    environment:
      PYTHONUNBUFFERED: '1'
      GREETING: hello
    artifacts: [out]
",
    );
    p.file(
        ".dstack/variables.yaml",
        "variables:\n  train:\n    batch-size: 64\n",
    )
    .file(
        "train.py",
        "import os, sys\n\
         print(os.environ['GREETING'], sys.argv[2], 'batch', os.environ['BATCH_SIZE'])\n\
         print(sys.version_info[:2], file=sys.stderr)\n\
         print('cwd', os.getcwd(), 'run', os.environ['DSTACK_WORKFLOW'])\n\
         os.makedirs('out', exist_ok=True)\n\
         open('out/result.txt', 'w').write('trained\\n')\n",
    );
    let ran = p.run("train").await;
    ran.succeeded().nothing_left(&docker).await;
    assert_eq!(
        ran.lines("train", Stream::Stdout),
        vec!["hello world batch 64", "cwd /workflow run train"]
    );
    assert_eq!(ran.lines("train", Stream::Stderr), vec!["(3, 11)"]);
    assert_eq!(ran.artifact("train", "out/result.txt"), "trained\n");
}

#[tokio::test]
async fn exit_codes_streams_and_the_first_failing_command() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: fails
    provider: docker
    image: IMAGE
    commands:
      - echo to-out
      - echo to-err >&2
      - printf 'no newline at the end'
      - sh -c 'exit 3'
      - echo never
",
    ));
    let ran = p.run("fails").await;
    ran.nothing_left(&docker).await;
    let summary = ran.summary();
    assert!(!summary.succeeded());
    assert_eq!(summary.run.status, RunStatus::Failed);
    let job = ran.job("fails");
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.exit_code, Some(3));
    assert_eq!(job.reason.as_deref(), Some("exited with code 3"));
    assert_eq!(
        ran.lines("fails", Stream::Stdout),
        vec!["to-out", "no newline at the end"]
    );
    assert_eq!(ran.lines("fails", Stream::Stderr), vec!["to-err"]);
}

#[tokio::test]
async fn out_of_memory_is_reported_with_the_limit() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: hog
    provider: docker
    image: IMAGE
    commands:
      - echo starting
      # The engine watches for OOM kills only once the container runs: an allocation in
      # its first milliseconds could be killed unseen (then the job reports code 137).
      - sleep 1
      - x=$(head -c 200000000 /dev/zero | tr '\\0' a)
      - echo survived ${#x}
    resources:
      memory: 32MiB
",
    ));
    let ran = p.run("hog").await;
    ran.nothing_left(&docker).await;
    let job = ran.job("hog");
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.reason.as_deref(), Some("out of memory (limit 32 MiB)"));
    assert_eq!(ran.lines("hog", Stream::Stdout), vec!["starting"]);
}

// ---------------------------------------------------------------------------------------------
// Output (through files on a bind mount, see `docker::OUTPUT_DIR`)
// ---------------------------------------------------------------------------------------------

/// Each stream keeps its order, the two stay apart, long lines come in pieces, the last line
/// without a newline arrives, and nothing of the output files is left after the job.
#[tokio::test]
async fn output_keeps_its_order_and_its_streams() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: talk
    provider: docker
    image: IMAGE
    commands:
      - i=0; while [ $i -lt 500 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done
      - head -c 150000 /dev/zero | tr '\\0' x; echo
      - printf 'last without newline'
",
    ));
    let ran = p.run("talk").await;
    ran.succeeded().nothing_left(&docker).await;
    let out = ran.lines("talk", Stream::Stdout);
    let err = ran.lines("talk", Stream::Stderr);
    let expected: Vec<String> = (0..500).map(|i| format!("out {i}")).collect();
    assert_eq!(out[..500], expected[..]);
    let lengths: Vec<usize> = out[500..out.len() - 1].iter().map(String::len).collect();
    assert_eq!(lengths, [65536, 65536, 150_000 - 2 * 65536]);
    assert_eq!(out.last().map(String::as_str), Some("last without newline"));
    let expected: Vec<String> = (0..500).map(|i| format!("err {i}")).collect();
    assert_eq!(err, expected);
    assert!(p.output_files().is_empty(), "{:?}", p.output_files());
}

/// Tens of megabytes arrive whole: every byte, in order (the follower gives back the disk
/// blocks of what it read as it goes: the offsets stay right).
#[tokio::test]
async fn a_large_output_arrives_whole() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: big
    provider: docker
    image: IMAGE
    commands:
      - i=0; while [ $i -lt 1000 ]; do echo \"stderr line $i\" >&2; i=$((i+1)); done &
      - seq 1 4000000
      - wait
",
    ));
    let ran = p.run("big").await;
    ran.succeeded().nothing_left(&docker).await;
    let out = ran.lines("big", Stream::Stdout);
    assert_eq!(out.len(), 4_000_000);
    let bytes: usize = out.iter().map(|l| l.len() + 1).sum();
    // `seq 1 4000000`: 9 one-digit numbers, 90 of two digits... with their newlines.
    let expected: usize = (1..=4_000_000u32).map(|n| n.to_string().len() + 1).sum();
    assert_eq!(bytes, expected);
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, l)| l.parse::<usize>().ok() == Some(i + 1)),
        "in order, none missing or twice"
    );
    let err = ran.lines("big", Stream::Stderr);
    let expected: Vec<String> = (0..1000).map(|i| format!("stderr line {i}")).collect();
    assert_eq!(err, expected);
    assert!(p.output_files().is_empty(), "{:?}", p.output_files());
}

/// A background process still writing when the script ends dies with the container (as with
/// the local executor, and as with the attach stream before): the job ends with its script,
/// and what the process wrote until then is kept, in order, each line once.
#[tokio::test]
async fn background_output_ends_with_the_script() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: bg
    provider: docker
    image: IMAGE
    commands:
      - (i=0; while true; do echo \"bg $i\"; i=$((i+1)); done) &
      - (sleep 600; echo never) &
      - until [ -s /.dstack-output/stdout ]; do sleep 0.1; done
      - echo main done >&2
",
    ));
    let ran = p.run("bg").await;
    ran.succeeded().nothing_left(&docker).await;
    let out = ran.lines("bg", Stream::Stdout);
    assert!(!out.is_empty());
    // The last line may be cut where the process was killed.
    let complete = &out[..out.len() - 1];
    for (i, line) in complete.iter().enumerate() {
        assert_eq!(line, &format!("bg {i}"), "in order, each once");
    }
    assert!(!out.iter().any(|l| l == "never"));
    assert_eq!(ran.lines("bg", Stream::Stderr), vec!["main done"]);
}

/// A command that opens `/dev/stderr` with `>` truncates the output file (a pipe before):
/// what comes after still arrives, in order, nothing twice.
#[tokio::test]
async fn a_job_that_truncates_its_output() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: trunc
    provider: docker
    image: IMAGE
    commands:
      - echo before >&2
      - echo reopened > /dev/stderr
      - i=0; while [ $i -lt 100 ]; do echo \"after $i\" >&2; i=$((i+1)); done
      - echo out stays
",
    ));
    let ran = p.run("trunc").await;
    ran.succeeded().nothing_left(&docker).await;
    let err = ran.lines("trunc", Stream::Stderr);
    let expected: Vec<String> = (0..100).map(|i| format!("after {i}")).collect();
    assert_eq!(err[err.len() - 100..], expected[..], "{err:?}");
    assert!(
        err.iter().filter(|l| *l == "reopened").count() == 1,
        "{err:?}"
    );
    assert!(
        err.iter().filter(|l| *l == "before").count() <= 1,
        "{err:?}"
    );
    assert_eq!(ran.lines("trunc", Stream::Stdout), vec!["out stays"]);
}

/// The output folder is writable by the container's user (root here, or its owner): a job
/// that replaces its output files by a symbolic link to a file of the host and by a FIFO
/// makes dstack neither read that file nor punch holes in it nor wait on the FIFO; what the
/// job writes to the files it had arrives.
#[tokio::test]
async fn output_files_swapped_by_the_job_are_not_followed() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("secret");
    // Over the 8 MiB after which holes are punched in what was read.
    let text = "host secret\n".repeat(800_000);
    std::fs::write(&secret, &text).unwrap();
    let p = Project::new(&busybox(&format!(
        "workflows:
  - name: swap
    provider: docker
    image: IMAGE
    commands:
      - rm /.dstack-output/stdout /.dstack-output/stderr
      - ln -s {} /.dstack-output/stdout
      - mkfifo /.dstack-output/stderr
      - echo after the swap
      - echo err after the swap >&2
",
        secret.display()
    )));
    let ran = tokio::time::timeout(Duration::from_secs(120), p.run("swap"))
        .await
        .expect("no wait on the FIFO");
    ran.succeeded().nothing_left(&docker).await;
    assert_eq!(ran.lines("swap", Stream::Stdout), vec!["after the swap"]);
    assert_eq!(
        ran.lines("swap", Stream::Stderr),
        vec!["err after the swap"]
    );
    assert!(
        std::fs::read_to_string(&secret).unwrap() == text,
        "the host file is intact"
    );
    assert!(p.output_files().is_empty(), "{:?}", p.output_files());
}

/// A user that dstack knows only by the image (so it cannot own the files): the files let
/// anyone append, and the job's output arrives.
#[tokio::test]
async fn an_image_user_unknown_to_dstack_writes_its_output() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let image = "dstack-busybox-user4321:test";
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", image, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    build
        .stdin
        .take()
        .unwrap()
        .write_all(format!("FROM {BUSYBOX}\nUSER 4321:4321\n").as_bytes())
        .unwrap();
    assert!(build.wait().unwrap().success(), "docker build");
    let p = Project::new(&format!(
        "workflows:
  - name: who
    provider: docker
    image: {image}
    commands:
      - echo \"$(id -u):$(id -g)\"
      - echo to-err >&2
"
    ))
    .with(DockerConfig {
        user: UserConfig::Image,
        ..DockerConfig::default()
    });
    let ran = p.run("who").await;
    ran.succeeded().nothing_left(&docker).await;
    assert_eq!(ran.lines("who", Stream::Stdout), vec!["4321:4321"]);
    assert_eq!(ran.lines("who", Stream::Stderr), vec!["to-err"]);
    assert!(p.output_files().is_empty(), "{:?}", p.output_files());
}

/// Cancelled while it prints as fast as it can: no container, no output files, and the
/// output until the stop in the log.
#[tokio::test]
async fn cancelled_mid_output_leaves_no_container_and_no_files() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Arc::new(Project::new(&busybox(
        "workflows:
  - name: chatty
    provider: docker
    image: IMAGE
    commands:
      - seq 1 1000000000
",
    )));
    let labels = p.labels();
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (p, cancel) = (p.clone(), cancel.clone());
        async move {
            p.run_with(
                "chatty",
                &Overrides::new(),
                RunOptions::default(),
                cancel,
                CancellationToken::new(),
            )
            .await
        }
    });
    wait_for("output in the files", || {
        let p = p.clone();
        async move {
            p.output_files()
                .iter()
                .any(|(f, len)| f.ends_with("stdout") && *len > 1_000_000)
        }
    })
    .await;
    cancel.cancel();
    let ran = run.await.unwrap();
    ran.nothing_left(&docker).await;
    assert!(containers(&docker, &labels).await.is_empty());
    assert_eq!(ran.job("chatty").status, JobStatus::Stopped);
    assert!(p.output_files().is_empty(), "{:?}", p.output_files());
    let out = ran.lines("chatty", Stream::Stdout);
    assert!(out.len() > 1000, "{}", out.len());
    let complete = &out[..out.len() - 1];
    assert!(
        complete
            .iter()
            .enumerate()
            .all(|(i, l)| l.parse::<usize>().ok() == Some(i + 1)),
        "in order, each once"
    );
}

/// `cpu`, `memory` and `shm_size` as the job sees them: the cgroup's CPU quota (v2
/// `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), memory limit, `/dev/shm`.
#[tokio::test]
async fn limits_are_visible_inside_the_container() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: limits
    provider: docker
    image: IMAGE
    commands:
      - |
        if [ -f /sys/fs/cgroup/cpu.max ]; then
          echo \"cpu $(cat /sys/fs/cgroup/cpu.max)\"
          echo \"memory $(cat /sys/fs/cgroup/memory.max)\"
        else
          echo \"cpu $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)\"
          echo \"memory $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)\"
        fi
      - echo \"shm $(df -k /dev/shm | tail -n 1 | awk '{print $2}')\"
    resources:
      cpu: 2
      memory: 64MiB
      shm_size: 16MiB
",
    ));
    let ran = p.run("limits").await;
    ran.succeeded().nothing_left(&docker).await;
    let out = ran.lines("limits", Stream::Stdout);
    let cpu: Vec<u64> = out[0]
        .strip_prefix("cpu ")
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(cpu[0], 2 * cpu[1], "quota of 2 CPUs: {out:?}");
    assert_eq!(out[1], format!("memory {}", 64 << 20));
    assert_eq!(out[2], "shm 16384");
}

#[tokio::test]
async fn cancellation_stops_the_container_and_leaves_nothing() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    // The job ignores SIGTERM: only the stop timeout's SIGKILL ends it.
    let p = Project::new(&busybox(
        "workflows:
  - name: stubborn
    provider: docker
    image: IMAGE
    commands:
      - trap 'echo got TERM' TERM
      - echo up
      - while true; do sleep 1; done
",
    ))
    .with(DockerConfig {
        stop_timeout: Some(1),
        ..DockerConfig::default()
    });
    let labels = p.labels();
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            let ran = p
                .run_with(
                    "stubborn",
                    &Overrides::new(),
                    RunOptions::default(),
                    cancel,
                    CancellationToken::new(),
                )
                .await;
            (p, ran)
        }
    });
    wait_for("the container to run", || async {
        containers(&docker, &labels)
            .await
            .iter()
            .any(|c| c.state.as_ref().and_then(|s| s.running) == Some(true))
    })
    .await;
    cancel.cancel();
    let (_p, ran) = run.await.unwrap();
    ran.nothing_left(&docker).await;
    assert_eq!(ran.summary().run.status, RunStatus::Stopped);
    assert_eq!(ran.job("stubborn").status, JobStatus::Stopped);
    assert!(containers(&docker, &labels).await.is_empty());
}

/// A second Ctrl-C (`hurry`) kills at once, whatever the stop timeout.
#[tokio::test]
async fn hurry_kills_without_waiting_for_the_stop_timeout() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: stubborn
    provider: docker
    image: IMAGE
    commands:
      - trap 'echo got TERM' TERM
      - while true; do sleep 1; done
",
    ))
    .with(DockerConfig {
        // Longer than the test's deadline: only `hurry` can end it in time.
        stop_timeout: Some(3600),
        ..DockerConfig::default()
    });
    let labels = p.labels();
    let (cancel, hurry) = (CancellationToken::new(), CancellationToken::new());
    let run = tokio::spawn({
        let (cancel, hurry) = (cancel.clone(), hurry.clone());
        async move {
            let ran = p
                .run_with(
                    "stubborn",
                    &Overrides::new(),
                    RunOptions::default(),
                    cancel,
                    hurry,
                )
                .await;
            (p, ran)
        }
    });
    wait_for("the container to run", || async {
        containers(&docker, &labels)
            .await
            .iter()
            .any(|c| c.state.as_ref().and_then(|s| s.running) == Some(true))
    })
    .await;
    cancel.cancel();
    hurry.cancel();
    let (_p, ran) = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("hurry ends the run before the deadline")
        .unwrap();
    ran.nothing_left(&docker).await;
    assert_eq!(ran.job("stubborn").status, JobStatus::Stopped);
}

#[tokio::test]
async fn a_timeout_kills_the_container() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: slow
    provider: docker
    image: IMAGE
    timeout: 1
    commands:
      - echo started
      - sleep 600
",
    ));
    let ran = p.run("slow").await;
    ran.nothing_left(&docker).await;
    let job = ran.job("slow");
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.reason.as_deref(), Some("timed out after 1s"));
    assert_eq!(ran.lines("slow", Stream::Stdout), vec!["started"]);
}

/// A job whose future is dropped (its task aborted, its runtime gone) still takes its
/// container with it.
#[tokio::test]
async fn a_dropped_job_removes_its_container() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Arc::new(Project::new(&busybox(
        "workflows:
  - name: forever
    provider: docker
    image: IMAGE
    commands: [sleep 600]
",
    )));
    let labels = p.labels();
    let task = tokio::spawn({
        let p = p.clone();
        async move { p.run("forever").await.name }
    });
    wait_for("the container to run", || async {
        containers(&docker, &labels)
            .await
            .iter()
            .any(|c| c.state.as_ref().and_then(|s| s.running) == Some(true))
    })
    .await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for("the container to be removed", || async {
        containers(&docker, &labels).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_missing_image_fails_the_run_before_any_job_starts() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: first
    provider: docker
    image: IMAGE
    commands: [echo ran > /workflow/ran]
  - name: second
    provider: docker
    image: dstack-test/no-such-image:1
    depends-on: [first]
    commands: [echo hi]
",
    ));
    let ran = p.run("second").await;
    let error = ran
        .result
        .as_ref()
        .map(|_| ())
        .expect_err("the run cannot start");
    let text = error.to_string();
    assert!(
        text.contains(
            "image `dstack-test/no-such-image:1` (job(s) `second`) is not on the Docker engine and cannot be pulled: "
        ),
        "{text}"
    );
    let EngineError::Run(dstack_core::run::RunError::Executor { error, .. }) = error else {
        panic!("not an executor error: {error:?}");
    };
    assert!(
        error.help.as_deref().unwrap().contains("docker pull IMAGE"),
        "{error:?}"
    );
    let jobs = ran
        .engine
        .store()
        .jobs(&ran.engine.run(&ran.name).unwrap())
        .unwrap();
    assert!(jobs.iter().all(|j| j.started_at.is_none()), "{jobs:?}");
    ran.nothing_left(&docker).await;

    // With `pull: never`, the same, and the help says how to allow pulls.
    let p = p.with(DockerConfig {
        pull: PullPolicy::Never,
        ..DockerConfig::default()
    });
    let error = p.run("second").await.result.map(|_| ()).expect_err("never");
    assert!(
        error
            .to_string()
            .contains("pulling is disabled (`pull: never`)"),
        "{error}"
    );
}

#[tokio::test]
async fn ports_are_published_on_localhost_and_reported() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = Project::new(&busybox(&format!(
        "workflows:
  - name: serve
    provider: docker
    image: IMAGE
    ports: [{port}]
    commands:
      - echo hello-from-the-container | nc -l -p {port}
"
    )));
    let labels = p.labels();
    let p = Arc::new(p);
    let run = tokio::spawn({
        let p = p.clone();
        async move { p.run("serve").await }
    });
    wait_for("the container to run", || async {
        containers(&docker, &labels)
            .await
            .iter()
            .any(|c| c.state.as_ref().and_then(|s| s.running) == Some(true))
    })
    .await;
    // The server may need a moment after the start: retry until it answers.
    let mut answer = String::new();
    let start = Instant::now();
    while answer.is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "nothing answered on port {port}"
        );
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"\n");
            let _ = s.read_to_string(&mut answer);
        }
        if answer.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(answer, "hello-from-the-container\n");
    let ran = run.await.unwrap();
    ran.succeeded().nothing_left(&docker).await;
    assert!(
        ran.notes()
            .contains(&format!("port {port} is published at 127.0.0.1:{port}")),
        "{:?}",
        ran.notes()
    );
}

#[tokio::test]
async fn users_inside_the_container() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let workflows = busybox(
        "workflows:
  - name: who
    provider: docker
    image: IMAGE
    commands:
      - echo \"$(id -u):$(id -g) $HOME\"
",
    );
    // The tree belongs to whoever runs the tests: `auto` runs as that user (root keeps the
    // image's user, root here).
    let p = Project::new(&workflows);
    let ran = p.run("who").await;
    ran.succeeded();
    let me = std::fs::metadata(ran.engine.store().dir()).map(|m| {
        use std::os::unix::fs::MetadataExt as _;
        (m.uid(), m.gid())
    });
    let (uid, gid) = me.unwrap();
    let expected = if uid == 0 {
        "0:0 /root".to_owned()
    } else {
        format!("{uid}:{gid} /tmp")
    };
    let line = ran.lines("who", Stream::Stdout).join("");
    // busybox's image has no HOME for root: it is `/` or `/root` depending on the engine.
    assert!(
        line == expected || (uid == 0 && line.starts_with("0:0 ")),
        "{line} != {expected}"
    );

    let p = Project::new(&workflows).with(DockerConfig {
        user: UserConfig::Named("1234:5678".into()),
        ..DockerConfig::default()
    });
    let ran = p.run("who").await;
    ran.succeeded().nothing_left(&docker).await;
    assert_eq!(ran.lines("who", Stream::Stdout), vec!["1234:5678 /tmp"]);
}

/// `keep-containers` keeps finished containers (stopped) for debugging.
#[tokio::test]
async fn kept_containers_stay_stopped() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(
        "workflows:
  - name: once
    provider: docker
    image: IMAGE
    commands: [echo kept]
",
    ))
    .with(DockerConfig {
        keep_containers: true,
        ..DockerConfig::default()
    });
    let ran = p.run("once").await;
    ran.succeeded();
    let kept = containers(&docker, &ran.run_labels()).await;
    assert_eq!(kept.len(), 1);
    let c = &kept[0];
    assert_eq!(c.state.as_ref().and_then(|s| s.running), Some(false));
    let name = ran.job("once").executor_id.clone().unwrap();
    assert_eq!(
        c.name.as_deref().map(|n| n.trim_start_matches('/')),
        Some(name.as_str())
    );
    // Its output files stay beside it, and the run says where.
    let files = ran
        .engine
        .store()
        .run_dir(&ran.name)
        .join("docker")
        .join(&name);
    assert_eq!(
        std::fs::read_to_string(files.join("stdout")).unwrap(),
        "kept\n"
    );
    assert!(
        ran.notes()
            .iter()
            .any(|n| n.contains(&files.display().to_string())),
        "{:?}",
        ran.notes()
    );
    remove(&docker, c.id.as_deref().unwrap()).await;
}

// ---------------------------------------------------------------------------------------------
// GPUs
// ---------------------------------------------------------------------------------------------

const GPU_WORKFLOW: &str = "workflows:
  - name: train
    provider: docker
    image: IMAGE
    ports: [PORT]
    environment:
      MODE: gpu
    commands: [nvidia-smi]
    resources:
      cpu: 2
      memory: 256MiB
      shm_size: 128MiB
      gpu:
        count: 1
        name: v100
";

fn fake_gpus() -> Vec<GpuConfig> {
    vec![
        GpuConfig {
            id: "GPU-00000000-fake-t4".into(),
            name: "Tesla T4".into(),
            memory: Some(15 << 30),
        },
        GpuConfig {
            id: "GPU-11111111-fake-v100".into(),
            name: "Tesla V100-SXM2-16GB".into(),
            memory: Some(16 << 30),
        },
    ]
}

/// This engine has no NVIDIA runtime: the run fails before any job, saying what to install.
#[tokio::test]
async fn gpus_without_the_nvidia_runtime_fail_with_what_to_do() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let p = Project::new(&busybox(&GPU_WORKFLOW.replace("PORT", "18080")));
    let ran = p.run("train").await;
    let error = ran
        .result
        .as_ref()
        .map(|_| ())
        .expect_err("no NVIDIA runtime");
    let EngineError::Run(dstack_core::run::RunError::Executor { error, .. }) = error else {
        panic!("not an executor error: {error:?}");
    };
    assert!(
        error.message.starts_with(&format!(
            "the Docker engine at {} cannot give containers GPUs: it has no NVIDIA runtime (the engine said: could not select device driver \"nvidia\"",
            engine().host()
        )),
        "{}",
        error.message
    );
    assert!(
        error
            .help
            .as_deref()
            .unwrap()
            .contains("nvidia-ctk runtime configure"),
        "{error:?}"
    );
    // The helper container that looked for GPUs is gone too.
    let helpers = containers(&docker, &[format!("{}=gpu-list", docker::LABEL_HELPER)]).await;
    assert!(helpers.is_empty(), "{helpers:?}");
    ran.nothing_left(&docker).await;
}

/// The container a GPU job gets, exactly as the engine recorded it: created (the engine only
/// refuses it at start, for want of the NVIDIA runtime), kept with `keep-containers`, inspected.
#[tokio::test]
async fn the_gpu_container_spec_as_the_engine_sees_it() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = Project::new(&busybox(&GPU_WORKFLOW.replace("PORT", &port.to_string()))).with(
        DockerConfig {
            gpus: Some(fake_gpus()),
            keep_containers: true,
            user: UserConfig::Named("4321:4321".into()),
            ..DockerConfig::default()
        },
    );
    let ran = p.run("train").await;
    let job = ran.job("train");
    assert_eq!(job.status, JobStatus::Failed);
    let reason = job.reason.as_deref().unwrap();
    assert!(
        reason.contains("cannot give containers GPUs: it has no NVIDIA runtime"),
        "{reason}"
    );
    assert!(
        reason.contains("(help: install the NVIDIA Container Toolkit"),
        "{reason}"
    );

    let kept = containers(&docker, &ran.run_labels()).await;
    assert_eq!(kept.len(), 1, "the created container is kept");
    let c = &kept[0];
    let config = c.config.as_ref().unwrap();
    let host = c.host_config.as_ref().unwrap();
    let gpus = host.device_requests.as_ref().unwrap();
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].driver.as_deref(), Some("nvidia"));
    assert_eq!(
        gpus[0].device_ids.as_deref(),
        Some(&["GPU-11111111-fake-v100".to_owned()][..]),
        "the V100 of the pool, by id"
    );
    assert_eq!(gpus[0].count.unwrap_or(0), 0);
    assert_eq!(gpus[0].capabilities, Some(vec![vec!["gpu".to_owned()]]));
    assert_eq!(host.nano_cpus, Some(2_000_000_000));
    assert_eq!(host.memory, Some(256 << 20));
    assert_eq!(host.memory_swap, Some(256 << 20));
    assert_eq!(host.shm_size, Some(128 << 20));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.network_mode.as_deref(), Some("bridge"));
    assert_eq!(host.init, Some(true));
    let binding = &host.port_bindings.as_ref().unwrap()[&format!("{port}/tcp")]
        .as_ref()
        .unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        binding.host_port.as_deref(),
        Some(port.to_string().as_str())
    );
    let mounts = host.mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].target.as_deref(), Some("/workflow"));
    // The output folder, beside the job's tree in the run's folder.
    assert_eq!(mounts[1].target.as_deref(), Some(docker::OUTPUT_DIR));
    let output = mounts[1].source.as_deref().unwrap();
    assert!(
        output.ends_with(&format!(
            "/runs/{}/docker/{}",
            ran.name,
            ran.job("train").executor_id.as_deref().unwrap()
        )),
        "{mounts:?}"
    );
    assert!(
        mounts[0]
            .source
            .as_deref()
            .unwrap()
            .ends_with("/jobs/train"),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .all(|m| m.source.as_deref() != Some("/var/run/docker.sock")),
        "no Docker socket"
    );
    assert_eq!(config.user.as_deref(), Some("4321:4321"));
    assert_eq!(config.working_dir.as_deref(), Some("/workflow"));
    assert_eq!(
        config.entrypoint.as_deref(),
        Some(
            &[
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "exec >>/.dstack-output/stdout 2>>/.dstack-output/stderr\nset -e\nnvidia-smi\n"
                    .to_owned()
            ][..]
        )
    );
    let env = config.env.as_ref().unwrap();
    for var in [
        "MODE=gpu",
        "DSTACK_WORKFLOW=train",
        "DSTACK_JOB=train",
        &format!("DSTACK_RUN={}", ran.name),
    ] {
        assert!(env.iter().any(|e| e == var), "{var} in {env:?}");
    }
    let labels = config.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_RUN], ran.name);
    assert_eq!(labels[LABEL_JOB], "train");
    assert_eq!(labels["dstack.attempt"], "1");
    assert_eq!(c.state.as_ref().and_then(|s| s.running), Some(false));
    remove(&docker, c.id.as_deref().unwrap()).await;

    // A model that is not in the pool: refused before any job, naming what there is.
    let p = Project::new(&busybox(
        &GPU_WORKFLOW
            .replace("PORT", "18081")
            .replace("v100", "a100"),
    ))
    .with(DockerConfig {
        gpus: Some(fake_gpus()),
        ..DockerConfig::default()
    });
    let error = p
        .run("train")
        .await
        .result
        .map(|_| ())
        .expect_err("no a100");
    assert!(
        error.to_string().contains(
            "job `train` asks for 1 GPU of model `a100`, but the Docker engine has 2 GPUs: GPU-00000000-fake-t4 (Tesla T4, 15 GiB), GPU-11111111-fake-v100 (Tesla V100-SXM2-16GB, 16 GiB)"
        ),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Downloads (curl) through the Docker executor: on the host, against a real HTTP server
// ---------------------------------------------------------------------------------------------

/// A one-thread HTTP server on 127.0.0.1: `/ok` (a body), `/missing` (404), `/short` (a body
/// shorter than its Content-Length). It serves `requests` connections, then stops.
fn http_server(requests: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let response: &[u8] = match path.as_str() {
                "/ok" => b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello, data\n",
                "/short" => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\nonly this",
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            };
            let _ = stream.write_all(response);
        }
    });
    (port, handle)
}

#[tokio::test]
async fn curl_jobs_download_on_the_host_and_feed_containers() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let (port, server) = http_server(3);
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = Project::new(&busybox(&format!(
        "workflows:
  - name: download
    provider: curl
    url: http://127.0.0.1:{port}/ok
    output: data/file.txt
    artifacts: [data]
  - name: use
    provider: docker
    image: IMAGE
    depends-on: [download]
    commands: [cat data/file.txt]
  - name: missing
    provider: curl
    url: http://127.0.0.1:{port}/missing
    output: data/x
  - name: short
    provider: curl
    url: http://127.0.0.1:{port}/short
    output: data/x
  - name: refused
    provider: curl
    url: http://127.0.0.1:{refused}/ok
    output: data/x
"
    )));
    let ran = p.run("use").await;
    ran.succeeded().nothing_left(&docker).await;
    assert_eq!(ran.lines("use", Stream::Stdout), vec!["hello, data"]);
    assert_eq!(ran.artifact("download", "data/file.txt"), "hello, data\n");

    for (workflow, expected) in [
        ("missing", "the server answered HTTP 404".to_owned()),
        ("short", "failed after 9 bytes".to_owned()),
        (
            "refused",
            format!("downloading `http://127.0.0.1:{refused}/ok` failed"),
        ),
    ] {
        let ran = p.run(workflow).await;
        let job = ran.job(workflow);
        assert_eq!(job.status, JobStatus::Failed, "{workflow}");
        let reason = job.reason.as_deref().unwrap();
        assert!(reason.contains(&expected), "{workflow}: {reason}");
    }
    server.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Crashed drivers
// ---------------------------------------------------------------------------------------------

/// What a crashed driver left (a running container) is found and removed: by `reap` with the
/// recorded executor id, and by label before a job of the same run starts again.
#[tokio::test]
async fn leftovers_are_reaped_by_id_and_swept_by_label() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let executor = engine();

    // A container as a crashed driver would leave it: ours, running.
    let leftover = |name: &str, labels: Vec<(String, String)>| {
        let docker = docker.clone();
        let name = name.to_owned();
        async move {
            let body = bollard::models::ContainerCreateBody {
                image: Some(BUSYBOX.to_owned()),
                entrypoint: Some(vec!["sleep".into(), "600".into()]),
                labels: Some(labels.into_iter().collect()),
                ..Default::default()
            };
            let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
                .name(&name)
                .build();
            docker.create_container(Some(options), body).await.unwrap();
            docker.start_container(&name, None).await.unwrap();
        }
    };
    let name = format!("dstack-crashed-{}", std::process::id());
    leftover(&name, vec![("dstack.test".into(), name.clone())]).await;
    executor
        .reap(&[name.clone(), "download:http://x".into(), "not-ours".into()])
        .await
        .unwrap();
    assert!(
        containers(&docker, &[format!("dstack.test={name}")])
            .await
            .is_empty()
    );
    // Reaping what is gone already is fine.
    executor.reap(std::slice::from_ref(&name)).await.unwrap();

    // Before a job starts, containers of the same store, run and job go.
    let p = Project::new(&busybox(
        "workflows:
  - name: again
    provider: docker
    image: IMAGE
    commands: [echo fresh]
",
    ));
    let store = docker::store_id(&{
        std::fs::create_dir_all(&p.state).unwrap();
        p.state.clone()
    });
    // The run will be the store's first: its name is not known yet, so the leftover is made
    // for the run's name once submitted.
    let engine = p.engine();
    let submission = engine
        .submit("again", &Overrides::new(), ExecutorKind::Docker)
        .unwrap();
    let stale = format!("dstack-stale-{}", std::process::id());
    leftover(
        &stale,
        vec![
            (LABEL_STORE.into(), store.clone()),
            (LABEL_RUN.into(), submission.run.name.clone()),
            (LABEL_JOB.into(), "again".into()),
        ],
    )
    .await;
    let summary = engine
        .drive(
            &submission.run,
            &RunOptions::default(),
            Vec::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(summary.succeeded());
    let left = containers(&docker, &[format!("{LABEL_RUN}={}", submission.run.name)]).await;
    assert!(left.is_empty(), "{left:?}");
}

// ---------------------------------------------------------------------------------------------
// Configuration and selection
// ---------------------------------------------------------------------------------------------

#[test]
fn configuration_keys_are_checked() {
    let path = Path::new("/p/.dstack/config.yaml");
    let config = ExecConfig::from_yaml(
        "docker:
  host: unix:///run/docker.sock
  user: 1000
  network: none
  publish-address: 0.0.0.0
  keep-containers: true
  stop-timeout: 30
  pull: never
  default-image: ubuntu:22.04
  gpus:
    - {id: GPU-1, name: Tesla T4, memory: 16GB}
  gpu-probe-image: nvidia/cuda:12.2.0-base-ubuntu22.04
",
        path,
    )
    .unwrap();
    let d = config.docker;
    assert_eq!(d.host.as_deref(), Some("unix:///run/docker.sock"));
    assert_eq!(d.user, UserConfig::Named("1000".into()));
    assert_eq!(d.network(), "none");
    assert_eq!(d.publish_address(), "0.0.0.0");
    assert!(d.keep_containers);
    assert_eq!(d.stop_timeout(), Duration::from_secs(30));
    assert_eq!(d.pull, PullPolicy::Never);
    assert_eq!(d.default_image.as_deref(), Some("ubuntu:22.04"));
    assert_eq!(d.gpus.unwrap()[0].memory, Some(16_000_000_000));
    assert_eq!(
        d.gpu_probe_image.as_deref(),
        Some("nvidia/cuda:12.2.0-base-ubuntu22.04")
    );
    let defaults = ExecConfig::from_yaml("docker: {}\n", path).unwrap().docker;
    assert_eq!(defaults.user, UserConfig::Auto);
    assert_eq!(defaults.network(), "bridge");
    assert_eq!(defaults.publish_address(), "127.0.0.1");
    assert_eq!(defaults.stop_timeout(), Duration::from_secs(5));
    assert_eq!(defaults.pull, PullPolicy::Missing);
    assert_eq!(
        ExecConfig::from_yaml("docker:\n  user: image\n", path)
            .unwrap()
            .docker
            .user,
        UserConfig::Image
    );

    for (yaml, expected) in [
        ("docker:\n  hots: x\n", "unknown field `hots`"),
        (
            "docker:\n  pull: sometimes\n",
            "unknown variant `sometimes`",
        ),
        ("docker:\n  user: ''\n", "`user` is empty"),
        (
            "docker:\n  stop-timeout: soon\n",
            "`stop-timeout` is a number of seconds, not `soon`",
        ),
        (
            "docker:\n  gpus:\n    - {id: GPU-1, memory: 16}\n",
            "GPU memory: `16` has no unit",
        ),
        ("docker:\n  gpus:\n    - {name: T4}\n", "missing field `id`"),
    ] {
        let e = ExecConfig::from_yaml(yaml, path).expect_err(yaml);
        let text = e.to_string();
        assert!(text.starts_with("/p/.dstack/config.yaml: "), "{text}");
        assert!(text.contains(expected), "{yaml}: {text}");
    }
}

#[test]
fn unreachable_engines_are_reported_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let config = DockerConfig {
        host: Some(format!("unix://{}", socket.display())),
        ..DockerConfig::default()
    };
    let e = DockerExecutor::connect(&config).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no Docker engine answered at unix://{} (no such socket)",
            socket.display()
        )
    );
    assert!(e.help().unwrap().contains("--executor local"));

    // Something that is not an engine: a socket nobody serves.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(listener);
    let e = DockerExecutor::connect(&config).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "no Docker engine answered at unix://{} (",
            socket.display()
        )),
        "{e}"
    );

    let e = DockerExecutor::connect(&DockerConfig {
        host: Some("ssh://me@gpu-box".into()),
        ..DockerConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported Docker host `ssh://me@gpu-box`: use `unix:///PATH` or `tcp://HOST:PORT`"
    );

    // `--executor docker` fails; `auto` falls back to local processes and says why.
    let exec = ExecConfig {
        docker: config.clone(),
        ..ExecConfig::default()
    };
    let e = dstack_exec::select(ExecutorKind::Docker, &exec).unwrap_err();
    assert!(e.message.starts_with("no Docker engine answered at"), "{e}");
    let auto = dstack_exec::select(ExecutorKind::Auto, &exec).unwrap();
    assert_eq!(auto.executor.name(), "local");
    assert!(
        auto.note.as_deref().unwrap().starts_with(&format!(
            "no Docker engine answered at unix://{} (",
            socket.display()
        )),
        "{:?}",
        auto.note
    );
    assert!(
        auto.note
            .as_deref()
            .unwrap()
            .ends_with(": running jobs as local processes (executor `local`)"),
        "{:?}",
        auto.note
    );
}

#[test]
fn auto_picks_docker_when_an_engine_answers() {
    let _ = engine();
    let selected = dstack_exec::select(ExecutorKind::Auto, &ExecConfig::default()).unwrap();
    assert_eq!(selected.executor.name(), "docker");
    assert!(
        selected
            .note
            .as_deref()
            .unwrap()
            .starts_with("running jobs in Docker containers (executor `docker`, engine at "),
        "{:?}",
        selected.note
    );
}

/// `select` works from inside a runtime as well as outside one (the CLI, Python, the Engine).
#[tokio::test]
async fn selecting_inside_a_runtime() {
    let _ = engine();
    let selected = dstack_exec::select(ExecutorKind::Docker, &ExecConfig::default()).unwrap();
    assert_eq!(selected.executor.name(), "docker");
}

/// Jobs of custom providers may name no image: refused clearly, or run in `default-image`.
#[tokio::test]
async fn jobs_without_an_image() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let executor = engine();
    let job = dstack_core::JobSpec {
        id: "bare".into(),
        workflow: "bare".into(),
        commands: vec!["echo hi".into()],
        working_dir: ".".into(),
        ..Default::default()
    };
    let e = executor
        .prepare(std::slice::from_ref(&job))
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "job `bare` names no image, so it cannot run in a container"
    );
    assert!(e.help.unwrap().contains("default-image"));
    let with_default = DockerExecutor::connect(&DockerConfig {
        default_image: Some(BUSYBOX.into()),
        ..DockerConfig::default()
    })
    .unwrap();
    with_default.prepare(&[job]).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Pulls, from a registry on 127.0.0.1 (the engine treats 127.0.0.0/8 as an insecure registry)
// ---------------------------------------------------------------------------------------------

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A registry (Docker Registry HTTP API v2, the pull side) serving one image, `NAME:TAG`, made
/// of the test image's configuration and layer (from `docker save`, in `dir`). Returns its port.
async fn registry(docker: &Docker, dir: &Path, name: &str, tag: &str) -> u16 {
    use futures_util::StreamExt as _;
    let mut saved = Vec::new();
    let mut stream = docker.export_image(BUSYBOX);
    while let Some(chunk) = stream.next().await {
        saved.extend_from_slice(&chunk.unwrap());
    }
    std::fs::write(dir.join("saved.tar"), &saved).unwrap();
    let untar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(dir.join("saved.tar"))
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(untar.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let config = dir.join(manifest[0]["Config"].as_str().unwrap());
    let layer = dir.join(manifest[0]["Layers"][0].as_str().unwrap());
    let blob = |path: &Path, media: &str| {
        serde_json::json!({
            "mediaType": media,
            "size": std::fs::metadata(path).unwrap().len(),
            "digest": format!("sha256:{}", sha256(path)),
        })
    };
    let image_manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": blob(&config, "application/vnd.docker.container.image.v1+json"),
        // Served uncompressed: the engine detects the compression of what it downloads.
        "layers": [blob(&layer, "application/vnd.docker.image.rootfs.diff.tar.gzip")],
    });
    let manifest_path = dir.join("registry-manifest.json");
    std::fs::write(&manifest_path, image_manifest.to_string()).unwrap();
    let mut routes: HashMap<String, (String, PathBuf)> = HashMap::new();
    let manifest_digest = format!("sha256:{}", sha256(&manifest_path));
    for reference in [tag.to_owned(), manifest_digest.clone()] {
        routes.insert(
            format!("/v2/{name}/manifests/{reference}"),
            (
                "application/vnd.docker.distribution.manifest.v2+json".into(),
                manifest_path.clone(),
            ),
        );
    }
    for path in [&config, &layer] {
        routes.insert(
            format!("/v2/{name}/blobs/sha256:{}", sha256(path)),
            ("application/octet-stream".into(), path.clone()),
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let routes = routes.clone();
            let digest = manifest_digest.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    // A TLS handshake (the engine tries HTTPS first): not for us.
                    if request.first() == Some(&0x16) {
                        return;
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let mut words = request.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let (status, kind, body) = match routes.get(path) {
                    Some((kind, file)) => ("200 OK", kind.clone(), std::fs::read(file).unwrap()),
                    None if path == "/v2/" => ("200 OK", "application/json".into(), b"{}".to_vec()),
                    None => (
                        "404 Not Found",
                        "application/json".into(),
                        b"{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"unknown\"}]}"
                            .to_vec(),
                    ),
                };
                let mut head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                if path.contains("/manifests/") {
                    head.push_str(&format!("Docker-Content-Digest: {digest}\r\n"));
                }
                if path == "/v2/" {
                    head.push_str("Docker-Distribution-API-Version: registry/2.0\r\n");
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                if method != "HEAD" {
                    let _ = stream.write_all(&body);
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_missing_image_is_pulled_with_progress() {
    let docker = client();
    require_image(&docker, BUSYBOX).await;
    let tag = format!("t{}", std::process::id());
    let files = tempfile::tempdir().unwrap();
    let port = registry(&docker, files.path(), "dstack-test/pulled", &tag).await;
    let image = format!("127.0.0.1:{port}/dstack-test/pulled:{tag}");
    let p = Project::new(&format!(
        "workflows:
  - name: pulled
    provider: docker
    image: {image}
    commands: [echo from the pulled image]
"
    ));
    let ran = p.run("pulled").await;
    let _ = docker
        .remove_image(
            &image,
            Some(
                bollard::query_parameters::RemoveImageOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
            None,
        )
        .await;
    ran.succeeded().nothing_left(&docker).await;
    assert_eq!(
        ran.lines("pulled", Stream::Stdout),
        vec!["from the pulled image"]
    );
    let notes = ran.notes();
    assert_eq!(
        notes.first(),
        Some(&format!("pulling image `{image}`")),
        "{notes:?}"
    );
    assert_eq!(
        notes.last(),
        Some(&format!("pulled image `{image}`")),
        "{notes:?}"
    );
}
