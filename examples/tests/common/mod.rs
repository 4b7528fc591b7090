//! What the CLI tests of the Docker and Slurm executors share: waiting with a deadline and
//! `dstack` processes run in the background.
#![allow(dead_code)] // each test file uses its own part

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// How long any awaited condition may take (a loaded CI machine, a cold engine or cluster).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `condition` until it holds; fails with `what` after [`DEADLINE`].
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads `from` into a string, in a thread, as it comes.
pub fn collect(mut from: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let into = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// A `dstack` process started in the background, with its output collected.
pub struct Spawned {
    pub child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Spawned {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// The run's name (the first line of stdout).
    pub fn run_name(&self) -> String {
        let mut name = String::new();
        wait_for("the run's name on stdout", || {
            name = self
                .stdout
                .lock()
                .unwrap()
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            !name.is_empty()
        });
        name
    }

    /// Waits for it to end: its exit code (128 + N for signal N), stdout and stderr.
    pub fn wait(mut self) -> (i32, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "dstack did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the readers drain.
        std::thread::sleep(Duration::from_millis(100));
        let code = std::os::unix::process::ExitStatusExt::signal(&status)
            .map_or_else(|| status.code().unwrap_or(-1), |s| 128 + s);
        (
            code,
            self.stdout.lock().unwrap().clone(),
            self.stderr.lock().unwrap().clone(),
        )
    }
}

/// Runs `command` to its end: its exit code, stdout and stderr.
pub fn output(mut command: Command) -> (i32, String, String) {
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Spawned {
    /// Starts `command` in the background, collecting its output.
    pub fn start(mut command: Command) -> Spawned {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Spawned {
            child,
            stdout,
            stderr,
        }
    }
}

/// `dstack ps RUN --format json` as `output` gave it: the run with its jobs.
pub fn ps_json((code, out, err): (i32, String, String)) -> serde_json::Value {
    assert_eq!(code, 0, "{err}");
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    runs.into_iter().next().unwrap()
}
