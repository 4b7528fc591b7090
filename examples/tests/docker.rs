//! The `dstack` binary with the Docker executor against a real Docker engine: runs, `auto`,
//! Ctrl-C and SIGTERM, a crashed driver and `resume`, an unreachable engine. Containers are
//! observed with the `docker` command (by label); waiting polls a condition with a deadline.
//!
//! Needs an engine and the test image `dstack-busybox:test` (`bash scripts/setup-docker.sh`);
//! without them these tests fail, saying so.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use serde_json::Value;

use common::{Spawned, output, ps_json, wait_for};

const BUSYBOX: &str = "dstack-busybox:test";
/// Fails, saying how to get one, when no engine with the test image answers.
fn require_engine() {
    let ok = Command::new("docker")
        .args(["image", "inspect", BUSYBOX])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "these tests need a Docker engine with the image `{BUSYBOX}`: run `bash scripts/setup-docker.sh`"
    );
}

/// A project (plain folder: no Git) and its state folder.
struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

impl Project {
    fn new(workflows: &str) -> Project {
        require_engine();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let state = dir.path().join("state");
        std::fs::create_dir_all(root.join(".dstack")).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            root.join(".dstack/workflows.yaml"),
            workflows.replace("IMAGE", BUSYBOX),
        )
        .unwrap();
        Project {
            _dir: dir,
            root,
            state,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dstack"));
        c.arg("-C")
            .arg(&self.root)
            .args(args)
            .env("NO_COLOR", "1")
            .env("DSTACK_NO_GIT", "1")
            .env("DSTACK_STATE_DIR", &self.state)
            .env_remove("DSTACK_CONFIG")
            .stdin(Stdio::null());
        c
    }

    fn dstack(&self, args: &[&str]) -> (i32, String, String) {
        output(self.command(args))
    }

    fn spawn(&self, args: &[&str]) -> Spawned {
        Spawned::start(self.command(args))
    }

    fn ps(&self, run: &str) -> Value {
        ps_json(self.dstack(&["ps", run, "--format", "json"]))
    }

    /// `docker ps -a` of this store's containers: `(name, state)`.
    fn containers(&self) -> Vec<(String, String)> {
        let store = dstack_exec::docker::store_id(&self.state);
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label={}={store}", dstack_exec::docker::LABEL_STORE),
                "--format",
                "{{.Names}} {{.State}}",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker ps: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
            .collect()
    }

    /// The output folders of this store's containers (`runs/RUN/docker/CONTAINER`).
    fn output_dirs(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for run in std::fs::read_dir(self.state.join("runs"))
            .into_iter()
            .flatten()
        {
            let docker = run.unwrap().path().join("docker");
            for dir in std::fs::read_dir(docker).into_iter().flatten() {
                found.push(dir.unwrap().path());
            }
        }
        found
    }

    fn running(&self) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|(_, s)| s == "running")
            .map(|(n, _)| n)
            .collect()
    }
}

const HELLO: &str = "workflows:
  - name: hello
    provider: docker
    image: IMAGE
    commands:
      - mkdir -p output
      - echo 'Hello, world!' > output/hello.txt
      - cat output/hello.txt
    artifacts: [output]
    resources:
      cpu: 1
      memory: 64MiB
";

#[test]
fn run_with_the_docker_executor() {
    let p = Project::new(HELLO);
    let (code, out, err) = p.dstack(&["run", "hello", "--executor", "docker"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let run = out.lines().next().unwrap().to_owned();
    assert!(out.contains("Hello, world!"), "{out}");
    let ps = p.ps(&run);
    assert_eq!(ps["executor"], "docker", "{ps:#}");
    assert_eq!(ps["status"], "done");
    let (code, out, _) = p.dstack(&["artifacts", &run]);
    assert_eq!(code, 0);
    assert!(out.contains("output"), "{out}");
    assert!(p.containers().is_empty(), "{:?}", p.containers());
}

/// With an engine answering, `auto` (the default) is Docker, and says so.
#[test]
fn auto_is_docker_when_an_engine_answers() {
    let p = Project::new(HELLO);
    let (code, out, err) = p.dstack(&["run", "hello"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("running jobs in Docker containers (executor `docker`, engine at "),
        "{err}"
    );
    let run = out.lines().next().unwrap().to_owned();
    assert_eq!(p.ps(&run)["executor"], "docker");
}

#[test]
fn an_unreachable_engine_is_an_error_for_docker_and_a_fallback_for_auto() {
    let p = Project::new(HELLO);
    let dead = p.state.join("nothing-here.sock");
    let host = format!("unix://{}", dead.display());
    let out = p
        .command(&["run", "hello", "--executor", "docker"])
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "no Docker engine answered at {host} (no such socket)"
        )),
        "{err}"
    );
    assert!(err.contains("--executor local"), "{err}");

    // `auto` runs the job as a local process instead, and says why.
    let out = p
        .command(&["run", "hello"])
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "no Docker engine answered at {host} (no such socket): running jobs as local processes (executor `local`)"
        )),
        "{err}"
    );
}

const SLEEPY: &str = "workflows:
  - name: sleepy
    provider: docker
    image: IMAGE
    commands:
      - echo up
      - test -f resume-now || sleep 600
      - echo finished
";

/// Prints a numbered line every 10 ms until `resume-now` exists in its tree, then 100 more.
const TICKING: &str = "workflows:
  - name: ticking
    provider: docker
    image: IMAGE
    commands:
      - i=0; while [ ! -f resume-now ]; do echo \"tick $i\"; i=$((i+1)); sleep 0.01; done
      - i=0; while [ $i -lt 100 ]; do echo \"end $i\"; i=$((i+1)); done
      - echo finished
";

/// Writes part of its artifacts, then waits.
const SAVING: &str = "workflows:
  - name: sleepy
    provider: docker
    image: IMAGE
    commands:
      - mkdir -p out && echo partial > out/p
      - echo up
      - sleep 600
    artifacts: [out, never]
";

/// A stopped run leaves no container, and keeps what its job wrote in the container.
fn stopped_by(signal: Signal) {
    let p = Project::new(SAVING);
    let dstack = p.spawn(&["run", "sleepy", "--executor", "docker"]);
    let run = dstack.run_name();
    wait_for("the job to write its artifact", || {
        p.dstack(&["logs", &run]).1.contains("up")
    });
    kill(dstack.pid(), signal).unwrap();
    let (code, out, err) = dstack.wait();
    assert_eq!(code, 130, "{out}\n{err}");
    assert!(p.containers().is_empty(), "{:?}", p.containers());
    let ps = p.ps(&run);
    assert_eq!(ps["status"], "stopped");
    let job = &ps["jobs"][0];
    assert_eq!(job["status"], "stopped", "{ps:#}");
    assert_eq!(job["reason"], "stopped; saved out", "{ps:#}");
    let (code, listed, err) = p.dstack(&["artifacts", &run]);
    assert_eq!(code, 0, "{err}");
    assert!(
        listed.contains("out") && !listed.contains("never"),
        "{listed}"
    );
}

#[test]
fn ctrl_c_leaves_no_container() {
    stopped_by(Signal::SIGINT);
}

#[test]
fn sigterm_leaves_no_container() {
    stopped_by(Signal::SIGTERM);
}

/// The driver dies (SIGKILL) while its container runs: the container outlives it, and
/// `resume` removes it before running the job again.
#[test]
fn a_crashed_driver_is_cleaned_up_by_resume() {
    let p = Project::new(SLEEPY);
    let dstack = p.spawn(&["run", "sleepy", "--executor", "docker"]);
    let run = dstack.run_name();
    wait_for("the container to run", || !p.running().is_empty());
    let left = p.running();
    kill(dstack.pid(), Signal::SIGKILL).unwrap();
    let _ = dstack.wait();
    assert_eq!(p.running(), left, "the container outlives its driver");

    // This time the job finishes (the project is copied afresh for the resumed run).
    std::fs::write(p.root.join("resume-now"), "").unwrap();
    let (code, out, err) = p.dstack(&["resume", &run]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("finished"), "{out}");
    assert!(p.containers().is_empty(), "{:?}", p.containers());
    assert!(p.output_dirs().is_empty(), "{:?}", p.output_dirs());
    assert_eq!(p.ps(&run)["status"], "done");
}

/// The driver dies while its container prints: the container goes on writing its output
/// files (nothing depends on the driver's process); `resume` removes the container and its
/// files and runs the job again, whose output then arrives whole, in order.
#[test]
fn a_crashed_driver_of_a_printing_job_is_resumed() {
    let p = Project::new(TICKING);
    let dstack = p.spawn(&["run", "ticking", "--executor", "docker"]);
    let run = dstack.run_name();
    wait_for("output in the files", || {
        p.output_dirs()
            .iter()
            .any(|d| std::fs::metadata(d.join("stdout")).is_ok_and(|m| m.len() > 0))
    });
    kill(dstack.pid(), Signal::SIGKILL).unwrap();
    let _ = dstack.wait();
    let dirs = p.output_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let stdout = dirs[0].join("stdout");
    let len = std::fs::metadata(&stdout).unwrap().len();
    wait_for("the orphan to go on writing", || {
        std::fs::metadata(&stdout).is_ok_and(|m| m.len() > len)
    });
    assert_eq!(p.running().len(), 1);

    std::fs::write(p.root.join("resume-now"), "").unwrap();
    let (code, out, err) = p.dstack(&["resume", &run]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(p.containers().is_empty(), "{:?}", p.containers());
    assert!(p.output_dirs().is_empty(), "{:?}", p.output_dirs());
    assert_eq!(p.ps(&run)["status"], "done");
    let (code, logs, err) = p.dstack(&["logs", &run]);
    assert_eq!(code, 0, "{err}");
    let ends: Vec<&str> = logs.lines().filter(|l| l.contains("end ")).collect();
    assert_eq!(ends.len(), 100, "{logs}");
    for (i, line) in ends.iter().enumerate() {
        assert!(line.ends_with(&format!("end {i}")), "{line}");
    }
    assert!(logs.contains("finished"), "{logs}");
}

/// `dstack stop` of a run whose driver died removes its container.
#[test]
fn stop_after_a_crash_removes_the_container() {
    let p = Project::new(SLEEPY);
    let dstack = p.spawn(&["run", "sleepy", "--executor", "docker"]);
    let run = dstack.run_name();
    wait_for("the container to run", || !p.running().is_empty());
    kill(dstack.pid(), Signal::SIGKILL).unwrap();
    let _ = dstack.wait();
    assert_eq!(p.output_dirs().len(), 1);
    let (code, out, err) = p.dstack(&["stop", &run]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(p.containers().is_empty(), "{:?}", p.containers());
    assert!(p.output_dirs().is_empty(), "{:?}", p.output_dirs());
}
