//! The `dstack` binary with the Slurm executor against a real Slurm cluster: a run, a detached
//! run whose driver dies while Slurm goes on (and `resume` follows it), Ctrl-C, `stop` after a
//! crash, Slurm's commands missing. Jobs are observed with `squeue`; waiting polls a condition
//! with a deadline.
//!
//! Needs a cluster that answers `sinfo` (`eval "$(bash scripts/setup-slurm.sh)"`); without one
//! these tests fail, saying so.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::{Spawned, output, ps_json, wait_for};

/// Fails, saying how to get one, when no Slurm cluster answers.
fn require_cluster() {
    let ok = Command::new("sinfo")
        .args(["--noheader", "--format=%T"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                    ["idle", "mixed", "allocated"]
                        .iter()
                        .any(|s| l.starts_with(s))
                })
        });
    assert!(
        ok,
        "these tests need a Slurm cluster that answers `sinfo`: run `eval \"$(bash scripts/setup-slurm.sh)\"`"
    );
}

/// The jobs of run `run` still queued or running in Slurm.
fn active_jobs(run: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args([
            "--noheader",
            "--array",
            "--states=PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED",
            "--format=%i %j %T",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|name| name == run || name.starts_with(&format!("{run}/")))
        })
        .map(str::to_owned)
        .collect()
}

/// A project (plain folder: no Git), its state folder and an executor configuration that
/// polls Slurm every 200 ms.
struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
    probe: PathBuf,
}

impl Project {
    fn new(workflows: &str) -> Project {
        require_cluster();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let state = dir.path().join("state");
        let probe = dir.path().join("probe");
        let config = dir.path().join("config.yaml");
        for d in [root.join(".dstack"), state.clone(), probe.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(
            root.join(".dstack/workflows.yaml"),
            workflows.replace("PROBE", &probe.to_string_lossy()),
        )
        .unwrap();
        std::fs::write(&config, "slurm:\n  poll-interval: 200ms\n").unwrap();
        Project {
            _dir: dir,
            root,
            state,
            config,
            probe,
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
            .env("DSTACK_CONFIG", &self.config)
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

    fn job_status(&self, run: &str, job: &str) -> String {
        let run = self.ps(run);
        run["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_id"] == job)
            .map(|j| j["status"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    }

    fn executor_ids(&self, run: &str) -> Vec<String> {
        let run = self.ps(run);
        run["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|j| j["executor_id"].as_str().map(str::to_owned))
            .collect()
    }
}

const PIPELINE: &str = "workflows:
  - name: prepare
    provider: docker
    image: ubuntu
    commands:
      - mkdir -p data
      - echo 21 > data/n
    artifacts: [data]
  - name: train
    provider: docker
    image: ubuntu
    depends-on: [prepare]
    commands:
      - echo \"trained $(( $(cat data/n) * 2 ))\"
    resources:
      cpu: 1
      memory: 64MiB
";

/// Run from the project's folder (no `-C`, the state found relative to it): every path the
/// cluster sees must still be absolute.
#[test]
fn run_with_the_slurm_executor() {
    let p = Project::new(PIPELINE);
    let output = Command::new(env!("CARGO_BIN_EXE_dstack"))
        .args(["run", "train", "--executor", "slurm"])
        .current_dir(&p.root)
        .env("NO_COLOR", "1")
        .env("DSTACK_NO_GIT", "1")
        .env_remove("DSTACK_STATE_DIR")
        .env("DSTACK_CONFIG", &p.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (code, out, err) = (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(p.root.join(".dstack/state/dstack.db").is_file());
    assert!(out.contains("trained 42"), "{out}");
    let run = out.lines().next().unwrap();
    let ps = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dstack"))
            .args(args)
            .current_dir(&p.root)
            .env_remove("DSTACK_STATE_DIR")
            .output()
            .unwrap();
        let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        runs.into_iter().next().unwrap()
    };
    let listed = ps(&["ps", run, "--format", "json"]);
    assert_eq!(listed["status"], "done");
    let ids: Vec<String> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["executor_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.iter().all(|id| id.contains('_')), "{ids:?}");
    assert!(active_jobs(run).is_empty());
}

const GATED: &str = "workflows:
  - name: first
    provider: docker
    image: ubuntu
    commands:
      - echo first started
      - while [ ! -e PROBE/gate ]; do sleep 0.1; done
      - echo first finished
  - name: second
    provider: docker
    image: ubuntu
    depends-on: [first]
    commands: [echo second ran]
";

/// `--detach`: the driver dies (SIGKILL) while the jobs are on the cluster; Slurm runs the
/// pipeline anyway, and `resume` follows the same jobs to the end (nothing submitted again).
#[test]
fn a_detached_run_goes_on_without_its_driver_and_resume_follows_it() {
    let p = Project::new(GATED);
    let (code, out, err) = p.dstack(&["run", "second", "--executor", "slurm", "--detach"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let run = out.lines().next().unwrap().to_owned();
    let mut driver = 0;
    wait_for("`first` running", || {
        let ps = p.ps(&run);
        driver = ps["driver_pid"].as_i64().unwrap_or(0);
        p.job_status(&run, "first") == "running"
    });
    let ids = p.executor_ids(&run);
    kill(
        Pid::from_raw(i32::try_from(driver).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the driver to be gone", || {
        !PathBuf::from(format!("/proc/{driver}")).exists()
    });
    std::fs::write(p.probe.join("gate"), "").unwrap();
    wait_for("Slurm to finish the pipeline without dstack", || {
        active_jobs(&run).is_empty()
    });
    let (code, out, err) = p.dstack(&["resume", &run]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("second ran"), "{out}");
    assert_eq!(p.ps(&run)["status"], "done");
    assert_eq!(p.executor_ids(&run), ids, "nothing was submitted again");
    let (_, logs, _) = p.dstack(&["logs", &run, "first"]);
    assert_eq!(logs.matches("first started").count(), 1, "{logs}");
    assert!(logs.contains("first finished"), "{logs}");
}

/// Ctrl-C cancels every job of the run: nothing stays queued or running.
#[test]
fn ctrl_c_cancels_every_job() {
    let p = Project::new(GATED);
    let dstack = p.spawn(&["run", "second", "--executor", "slurm"]);
    let run = dstack.run_name();
    wait_for("`first` running", || {
        p.job_status(&run, "first") == "running"
    });
    assert_eq!(active_jobs(&run).len(), 2);
    kill(dstack.pid(), Signal::SIGINT).unwrap();
    let (code, out, err) = dstack.wait();
    assert_eq!(code, 130, "{out}\n{err}");
    assert!(active_jobs(&run).is_empty(), "{:?}", active_jobs(&run));
    let ps = p.ps(&run);
    assert_eq!(ps["status"], "stopped");
    assert_eq!(p.job_status(&run, "first"), "stopped");
    assert_eq!(p.job_status(&run, "second"), "skipped");
}

/// `dstack stop` of a run whose driver died cancels its jobs in Slurm.
#[test]
fn stop_after_a_crash_cancels_the_jobs() {
    let p = Project::new(GATED);
    let dstack = p.spawn(&["run", "second", "--executor", "slurm"]);
    let run = dstack.run_name();
    wait_for("`first` running", || {
        p.job_status(&run, "first") == "running"
    });
    kill(dstack.pid(), Signal::SIGKILL).unwrap();
    let _ = dstack.wait();
    assert_eq!(
        active_jobs(&run).len(),
        2,
        "Slurm goes on without the driver"
    );
    let (code, out, err) = p.dstack(&["stop", &run]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(active_jobs(&run).is_empty(), "{:?}", active_jobs(&run));
    assert_eq!(p.ps(&run)["status"], "stopped");
}

/// Without Slurm's commands on PATH, the error names the missing command and what to do.
#[test]
fn missing_sbatch_on_path_is_an_error() {
    let p = Project::new(PIPELINE);
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err) = {
        let output = p
            .command(&["run", "train", "--executor", "slurm"])
            .env("PATH", empty.path())
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(
            "the Slurm command `sbatch` is not on PATH, so the `slurm` executor cannot submit jobs from this machine"
        ),
        "{err}"
    );
    assert!(err.contains("slurm.bin-dir"), "{err}");
}
