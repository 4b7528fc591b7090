//! The run engine end to end: the real `dstack` binary, real processes (the local executor),
//! real SQLite files, real signals and a real HTTP server on 127.0.0.1.
//!
//! Every test makes its own project in a temporary folder. Jobs report what they did to a
//! "probe" folder next to the project (outside every job's private tree): PIDs, start and end
//! times, how many times they ran. Tests observe those files and `dstack ps --format json`
//! rather than assuming; they wait for conditions by polling with a deadline, never by sleeping
//! alone.

use std::fmt;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Field 22 of `/proc/PID/stat` (start time) and the state letter, or `None` when the process
/// is gone.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// A process seen alive once: its pid and start time (so that a recycled pid is not taken for
/// it).
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: i32,
    start: u64,
}

impl Proc {
    /// The process whose pid is written in `file` (waits until the file holds one and the
    /// process is visible).
    fn from_file(file: &Path) -> Proc {
        let mut found = None;
        wait_for(&format!("a live pid in {}", file.display()), || {
            let pid = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            found = pid.and_then(|pid| {
                proc_stat(pid)
                    .filter(|(state, _)| *state != 'Z')
                    .map(|(_, start)| Proc { pid, start })
            });
            found.is_some()
        });
        found.expect("found")
    }

    fn of(pid: i32) -> Proc {
        let (_, start) = proc_stat(pid).expect("the process exists");
        Proc { pid, start }
    }

    /// Whether it still exists (a zombie counts as dead: it runs nothing).
    fn alive(self) -> bool {
        proc_stat(self.pid).is_some_and(|(state, start)| start == self.start && state != 'Z')
    }

    /// Waits (up to the deadline) until it is gone; panics if it stays.
    fn assert_gone(self, what: &str) {
        wait_for(&format!("{what} (pid {}) to be gone", self.pid), || {
            !self.alive()
        });
    }
}

/// Kills, by pid, what a failed test may have left: processes whose working directory or
/// command line lies in `dir` (job processes, detached drivers). Only processes this test
/// started can match: `dir` is its own temporary folder.
fn kill_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    let needle = dir.to_string_lossy().into_owned();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(me) {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if cwd.starts_with(&needle) || cmdline.contains(&needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Projects and the `dstack` binary
// ---------------------------------------------------------------------------------------------

/// What a finished `dstack` process did.
struct Out {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`dstack {}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    #[track_caller]
    fn code(&self, code: i32) -> &Out {
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    #[track_caller]
    fn ok(&self) -> &Out {
        self.code(0)
    }

    #[track_caller]
    fn stderr_has(&self, text: &str) -> &Out {
        assert!(
            self.stderr.contains(text),
            "stderr should contain {text:?}\n{self}"
        );
        self
    }

    #[track_caller]
    fn stdout_has(&self, text: &str) -> &Out {
        assert!(
            self.stdout.contains(text),
            "stdout should contain {text:?}\n{self}"
        );
        self
    }

    /// The run name `dstack run` prints first.
    #[track_caller]
    fn run_name(&self) -> String {
        let name = self.stdout.lines().next().unwrap_or_default().trim();
        assert!(
            name.split('-').count() >= 3
                && name
                    .rsplit('-')
                    .next()
                    .is_some_and(|n| n.parse::<u32>().is_ok()),
            "the first line of stdout should be a run name\n{self}"
        );
        name.to_owned()
    }
}

/// A `dstack` process running in the background, its output collected as it comes.
struct Spawned {
    child: Child,
    args: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Spawned {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("lock")).into_owned()
    }

    /// Waits (up to the deadline) for it to exit.
    fn wait(mut self) -> Out {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`dstack {}` did not exit within {DEADLINE:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.args,
                    String::from_utf8_lossy(&self.stdout.lock().expect("lock")),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Out {
            args: self.args.clone(),
            code: status.code(),
            stdout: String::from_utf8_lossy(&self.stdout.lock().expect("lock")).into_owned(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(mut from: impl std::io::Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let handle = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&chunk[..n]);
        }
    });
    (buf, handle)
}

struct Project {
    tmp: tempfile::TempDir,
    root: PathBuf,
    probe: PathBuf,
    state: Option<PathBuf>,
}

impl Drop for Project {
    fn drop(&mut self) {
        kill_leftovers(self.tmp.path());
    }
}

impl Project {
    /// A project whose `.dstack/workflows.yaml` is `workflows`, with `@PROBE` replaced by the
    /// absolute path of the probe folder.
    fn new(workflows: &str) -> Project {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("project");
        let probe = tmp.path().join("probe");
        std::fs::create_dir_all(root.join(".dstack")).expect("mkdir");
        std::fs::create_dir_all(&probe).expect("mkdir");
        let project = Project {
            tmp,
            root,
            probe,
            state: None,
        };
        project.write_workflows(workflows);
        // Runs capture the Git state by default: every project is a repository with one
        // commit, as a user's would be.
        project.git(&["init", "-q"]);
        project.git(&["add", "-A"]);
        project.git(&["commit", "-q", "-m", "initial"]);
        project
    }

    /// A project that is not a Git repository.
    fn without_git(workflows: &str) -> Project {
        let project = Project::new(workflows);
        std::fs::remove_dir_all(project.root.join(".git")).expect("rm .git");
        project
    }

    /// Runs `git ARGS` in the project, which must succeed; returns its stdout.
    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=dstack tests",
                "-c",
                "user.email=tests@dstack.invalid",
            ])
            .args(["-c", "init.defaultBranch=main", "-c", "core.autocrlf=false"])
            .args(args)
            .current_dir(&self.root)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .stdin(Stdio::null())
            .output()
            .expect("git starts");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keeps the state in a folder outside the project, through `DSTACK_STATE_DIR`.
    fn with_state_dir(mut self) -> Project {
        self.state = Some(self.tmp.path().join("state"));
        self
    }

    fn write_workflows(&self, workflows: &str) {
        let text = workflows.replace("@PROBE", self.probe.to_str().expect("utf-8 path"));
        std::fs::write(self.root.join(".dstack/workflows.yaml"), text).expect("write");
    }

    fn state_dir(&self) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| self.root.join(".dstack/state"))
    }

    fn probe(&self, name: &str) -> PathBuf {
        self.probe.join(name)
    }

    fn read_probe(&self, name: &str) -> String {
        std::fs::read_to_string(self.probe(name))
            .unwrap_or_else(|e| panic!("probe file {name}: {e}"))
    }

    /// How many lines a probe file has (0 when it does not exist).
    fn count(&self, name: &str) -> usize {
        std::fs::read_to_string(self.probe(name)).map_or(0, |t| t.lines().count())
    }

    fn touch(&self, name: &str) {
        std::fs::write(self.probe(name), "").expect("touch");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dstack"));
        c.arg("-C")
            .arg(&self.root)
            .args(args)
            .env("NO_COLOR", "1")
            // `auto` means Docker when an engine answers: these tests are about local
            // processes, whatever runs on the machine (tests/docker.rs covers Docker).
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .stdin(Stdio::null());
        match &self.state {
            Some(s) => c.env("DSTACK_STATE_DIR", s),
            None => c.env_remove("DSTACK_STATE_DIR"),
        };
        c
    }

    fn dstack(&self, args: &[&str]) -> Out {
        let out = self.command(args).output().expect("dstack starts");
        Out {
            args: args.join(" "),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `dstack run WORKFLOW --executor local EXTRA...`.
    fn run(&self, workflow: &str, extra: &[&str]) -> Out {
        let mut args = vec!["run", workflow, "--executor", "local"];
        args.extend_from_slice(extra);
        self.dstack(&args)
    }

    /// Starts `dstack ARGS` in the background, in its own process group (as a shell puts a
    /// foreground command), collecting its output.
    fn spawn(&self, args: &[&str]) -> Spawned {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("dstack starts");
        let (stdout, r1) = collect(child.stdout.take().expect("stdout"));
        let (stderr, r2) = collect(child.stderr.take().expect("stderr"));
        Spawned {
            child,
            args: args.join(" "),
            stdout,
            stderr,
            readers: vec![r1, r2],
        }
    }

    /// `dstack ps RUN --format json`: the run with its jobs.
    #[track_caller]
    fn ps(&self, run: &str) -> Value {
        let out = self.dstack(&["ps", run, "--format", "json"]);
        out.ok();
        let mut runs: Vec<Value> =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("ps json: {e}\n{out}"));
        assert_eq!(runs.len(), 1, "{out}");
        runs.remove(0)
    }

    /// `dstack ps -a --format json`.
    #[track_caller]
    fn ps_all(&self) -> Vec<Value> {
        let out = self.dstack(&["ps", "-a", "--format", "json"]);
        out.ok();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("ps json: {e}\n{out}"))
    }
}

/// The job `id` of a run as `ps --format json` shows it.
#[track_caller]
fn job<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == id))
        .unwrap_or_else(|| panic!("run has no job `{id}`: {run:#}"))
}

#[track_caller]
fn status(value: &Value) -> &str {
    value["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status in {value:#}"))
}

#[track_caller]
fn reason(value: &Value) -> &str {
    value["reason"].as_str().unwrap_or("")
}

#[track_caller]
fn assert_job(run: &Value, id: &str, expected_status: &str, reason_has: &str) {
    let j = job(run, id);
    assert_eq!(status(j), expected_status, "job `{id}`: {j:#}");
    assert!(
        reason(j).contains(reason_has),
        "the reason of job `{id}` should contain {reason_has:?}: {j:#}"
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Failure, keep-going, parallelism, timeouts, retries
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failure_stops_the_run_skips_dependents_and_stops_running_jobs() {
    let p = Project::new(
        r#"
workflows:
  - name: bad
    provider: docker
    image: busybox
    commands:
      - 'while test ! -f @PROBE/fail-now; do sleep 0.02; done'
      - echo about to fail
      - exit 3
      - echo never >> @PROBE/never
  - name: slow
    provider: docker
    image: busybox
    commands:
      - echo $$ > @PROBE/slow.pid
      - sleep 1000
  - name: after-bad
    provider: docker
    image: busybox
    depends-on: [bad]
    commands:
      - echo run >> @PROBE/after-bad.count
  - name: all
    provider: docker
    image: busybox
    depends-on: [after-bad, slow]
    commands:
      - echo run >> @PROBE/all.count
"#,
    );
    let dstack = p.spawn(&["run", "all", "--executor", "local", "-j", "2"]);
    // `slow` is running; only then does `bad` fail.
    let slow = Proc::from_file(&p.probe("slow.pid"));
    p.touch("fail-now");
    let out = dstack.wait();
    out.code(1).stdout_has("about to fail");
    let name = out.run_name();
    let run = p.ps(&name);
    assert_eq!(status(&run), "failed", "{run:#}");
    assert_job(&run, "bad", "failed", "exited with code 3");
    assert_eq!(job(&run, "bad")["exit_code"], 3);
    assert_job(&run, "slow", "stopped", "");
    assert_job(&run, "after-bad", "skipped", "");
    assert_job(&run, "all", "skipped", "");
    assert!(
        !p.probe("never").exists(),
        "the commands after the failing one must not run"
    );
    assert_eq!(p.count("after-bad.count") + p.count("all.count"), 0);
    // The slow job was running when `bad` failed: it is stopped, not left behind.
    slow.assert_gone("the stopped job `slow`");
    assert_eq!(run["driver_pid"], Value::Null, "{run:#}");
}

#[test]
fn keep_going_runs_what_does_not_depend_on_a_failure_and_resume_reruns_only_the_rest() {
    let p = Project::new(
        r#"
workflows:
  - name: bad
    provider: docker
    image: busybox
    commands:
      - echo run >> @PROBE/bad.count
      - test -f @PROBE/fixed
  - name: after-bad
    provider: docker
    image: busybox
    depends-on: [bad]
    commands:
      - echo run >> @PROBE/after-bad.count
  - name: good
    provider: docker
    image: busybox
    commands:
      - echo run >> @PROBE/good.count
  - name: all
    provider: docker
    image: busybox
    depends-on: [after-bad, good]
    commands:
      - echo run >> @PROBE/all.count
"#,
    );
    let out = p.run("all", &["--keep-going", "-j", "1"]);
    out.code(1);
    let name = out.run_name();
    let run = p.ps(&name);
    assert_eq!(status(&run), "failed", "{run:#}");
    assert_job(&run, "bad", "failed", "exited with code 1");
    assert_job(&run, "good", "done", "");
    assert_job(&run, "after-bad", "skipped", "`bad`");
    assert_job(&run, "all", "skipped", "");
    assert_eq!(
        (
            p.count("bad.count"),
            p.count("good.count"),
            p.count("after-bad.count")
        ),
        (1, 1, 0)
    );

    // Fixed: resume runs what did not succeed and keeps what did.
    p.touch("fixed");
    p.dstack(&["resume", &name]).ok().stdout_has(&name);
    let run = p.ps(&name);
    assert_eq!(status(&run), "done", "{run:#}");
    assert_eq!(
        run["message"],
        Value::Null,
        "the old failure is not kept: {run:#}"
    );
    for id in ["bad", "good", "after-bad", "all"] {
        assert_job(&run, id, "done", "");
    }
    assert_eq!(
        (
            p.count("bad.count"),
            p.count("good.count"),
            p.count("after-bad.count"),
            p.count("all.count")
        ),
        (2, 1, 1, 1),
        "only the failed and skipped jobs run again"
    );
    p.dstack(&["resume", &name])
        .code(1)
        .stderr_has("nothing to resume");
}

#[test]
fn the_parallelism_limit_is_honoured() {
    let mut yaml = String::from("workflows:\n");
    let names: Vec<String> = (1..=5).map(|i| format!("p{i}")).collect();
    for n in &names {
        yaml.push_str(&format!(
            "  - name: {n}
    provider: docker
    image: busybox
    commands:
      - s=$(date +%s%N); sleep 0.6; e=$(date +%s%N); echo \"$s $e\" > @PROBE/span-{n}
"
        ));
    }
    yaml.push_str(&format!(
        "  - name: all
    provider: docker
    image: busybox
    depends-on: [{}]
    commands:
      - s=$(date +%s%N); e=$(date +%s%N); echo \"$s $e\" > @PROBE/span-all
",
        names.join(", ")
    ));
    let p = Project::new(&yaml);
    let out = p.run("all", &["-j", "2"]);
    out.ok();

    let mut spans: Vec<(String, u128, u128)> = Vec::new();
    for n in names.iter().map(String::as_str).chain(["all"]) {
        let text = p.read_probe(&format!("span-{n}"));
        let mut parts = text
            .split_whitespace()
            .map(|t| t.parse::<u128>().expect("nanoseconds"));
        let (s, e) = (parts.next().expect("start"), parts.next().expect("end"));
        assert!(s <= e, "{n}: {text}");
        spans.push((n.to_owned(), s, e));
    }
    // Maximum number of jobs running at the same moment: ends sort before starts at the same
    // instant.
    let mut events: Vec<(u128, i32)> = spans
        .iter()
        .flat_map(|(_, s, e)| [(*s, 1), (*e, -1)])
        .collect();
    events.sort();
    let mut now = 0;
    let mut max = 0;
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    assert!(
        max <= 2,
        "more than 2 jobs ran at once with -j 2: {spans:?}"
    );
    assert_eq!(max, 2, "-j 2 should run 2 jobs at once: {spans:?}");
    // `all` started after every one of its dependencies ended.
    let all_start = spans
        .iter()
        .find(|(n, _, _)| n == "all")
        .map(|s| s.1)
        .expect("all");
    for (n, _, e) in &spans {
        if n != "all" {
            assert!(
                *e <= all_start,
                "`all` started before `{n}` ended: {spans:?}"
            );
        }
    }
}

#[test]
fn a_timeout_fails_the_job_and_kills_its_processes() {
    let p = Project::new(
        r#"
workflows:
  - name: hang
    provider: docker
    image: busybox
    timeout: 2s
    commands:
      - echo $$ > @PROBE/hang.pid
      - sleep 1000 &
      - echo $! > @PROBE/bg.pid
      - sleep 1000
"#,
    );
    let dstack = p.spawn(&["run", "hang", "--executor", "local"]);
    let shell = Proc::from_file(&p.probe("hang.pid"));
    let bg = Proc::from_file(&p.probe("bg.pid"));
    let out = dstack.wait();
    out.code(1);
    let name = out.run_name();
    let run = p.ps(&name);
    assert_eq!(status(&run), "failed", "{run:#}");
    assert_job(&run, "hang", "failed", "timed out after 2s");
    shell.assert_gone("the timed-out job's shell");
    bg.assert_gone("the timed-out job's background sleep");
}

#[test]
fn retries_run_a_failed_job_again() {
    let p = Project::new(
        r#"
workflows:
  - name: flaky
    provider: docker
    image: busybox
    retries: 2
    commands:
      - echo run >> @PROBE/flaky.count
      - test $(wc -l < @PROBE/flaky.count) -ge 2
  - name: broken
    provider: docker
    image: busybox
    retries: 1
    commands:
      - echo run >> @PROBE/broken.count
      - exit 7
  - name: all
    provider: docker
    image: busybox
    depends-on: [flaky, broken]
    commands:
      - 'true'
"#,
    );
    let out = p.run("all", &["--keep-going", "-j", "2"]);
    out.code(1).stderr_has("attempt 2");
    let run = p.ps(&out.run_name());
    assert_job(&run, "flaky", "done", "");
    assert_eq!(job(&run, "flaky")["attempts"], 2, "{run:#}");
    assert_job(&run, "broken", "failed", "exited with code 7");
    assert_eq!(job(&run, "broken")["attempts"], 2, "{run:#}");
    assert_job(&run, "all", "skipped", "");
    assert_eq!(
        p.count("flaky.count"),
        2,
        "flaky succeeds on its 2nd attempt, then stops"
    );
    assert_eq!(
        p.count("broken.count"),
        2,
        "retries: 1 means 2 attempts in all"
    );
}

// ---------------------------------------------------------------------------------------------
// Signals, crashes and resume
// ---------------------------------------------------------------------------------------------

const HANG: &str = r#"
workflows:
  - name: hang
    provider: docker
    image: busybox
    commands:
      - echo $$ > @PROBE/hang.pid
      - sleep 1000 &
      - echo $! > @PROBE/bg.pid
      - sleep 1000
  - name: after
    provider: docker
    image: busybox
    depends-on: [hang]
    commands:
      - echo run >> @PROBE/after.count
"#;

/// Runs `after` in the foreground, sends `signal` to dstack when `hang` is running, and checks
/// that the run ends `stopped` with nothing left behind.
fn stop_with_signal(signal: Signal, to_group: bool) {
    let p = Project::new(HANG);
    let dstack = p.spawn(&["run", "after", "--executor", "local"]);
    let shell = Proc::from_file(&p.probe("hang.pid"));
    let bg = Proc::from_file(&p.probe("bg.pid"));
    let driver = Proc::of(dstack.pid());
    if to_group {
        // Ctrl-C in a terminal: the foreground process group gets SIGINT.
        killpg(Pid::from_raw(dstack.pid()), signal).expect("signal");
    } else {
        kill(Pid::from_raw(dstack.pid()), signal).expect("signal");
    }
    let out = dstack.wait();
    out.code(130);
    let name = out.run_name();
    let run = p.ps(&name);
    assert_eq!(status(&run), "stopped", "{run:#}\n{out}");
    assert_job(&run, "hang", "stopped", "");
    assert_job(&run, "after", "skipped", "stopped");
    assert_eq!(run["driver_pid"], Value::Null, "{run:#}");
    assert_eq!(p.count("after.count"), 0);
    shell.assert_gone("the job's shell");
    bg.assert_gone("the job's background sleep");
    assert!(!driver.alive());
}

#[test]
fn ctrl_c_stops_the_run_and_leaves_no_process() {
    stop_with_signal(Signal::SIGINT, true);
}

#[test]
fn sigterm_stops_the_run_and_leaves_no_process() {
    stop_with_signal(Signal::SIGTERM, false);
}

#[test]
fn a_hangup_stops_the_run_and_leaves_no_process() {
    // The terminal closed, or the SSH session dropped.
    stop_with_signal(Signal::SIGHUP, true);
}

#[test]
fn a_second_ctrl_c_kills_jobs_that_ignore_sigterm() {
    let p = Project::new(
        r#"
workflows:
  - name: stubborn
    provider: docker
    image: busybox
    commands:
      - trap '' TERM
      - echo $$ > @PROBE/stubborn.pid
      - sleep 1000 &
      - echo $! > @PROBE/bg.pid
      - sleep 1000
"#,
    );
    let dstack = p.spawn(&["run", "stubborn", "--executor", "local"]);
    let shell = Proc::from_file(&p.probe("stubborn.pid"));
    let bg = Proc::from_file(&p.probe("bg.pid"));
    let group = Pid::from_raw(dstack.pid());
    killpg(group, Signal::SIGINT).expect("signal");
    wait_for("dstack to say it is stopping the run", || {
        dstack.stderr().contains("stopping the run")
    });
    killpg(group, Signal::SIGINT).expect("signal");
    let out = dstack.wait();
    out.code(130).stderr_has("killing the running jobs");
    let run = p.ps(&out.run_name());
    assert_eq!(status(&run), "stopped", "{run:#}");
    shell.assert_gone("the job's shell that ignores SIGTERM");
    bg.assert_gone("the job's background sleep that ignores SIGTERM");
}

#[test]
fn sigkill_of_dstack_then_resume_finishes_without_rerunning_finished_jobs() {
    let p = Project::new(
        r#"
workflows:
  - name: first
    provider: docker
    image: busybox
    commands:
      - echo run >> @PROBE/first.count
      - mkdir -p data
      - echo payload > data/v.txt
    artifacts: [data]
  - name: second
    provider: docker
    image: busybox
    depends-on: [first]
    commands:
      - echo run >> @PROBE/second.count
      - echo $$ > @PROBE/second-$(wc -l < @PROBE/second.count).pid
      - sleep 1000 &
      - echo $! > @PROBE/second-bg-$(wc -l < @PROBE/second.count).pid
      - 'while test ! -f @PROBE/go; do sleep 0.02; done'
      - mkdir -p model
      - cp data/v.txt model/v.txt
    artifacts: [model]
  - name: third
    provider: docker
    image: busybox
    depends-on: [second]
    commands:
      - echo run >> @PROBE/third.count
      - cat model/v.txt > @PROBE/third.out
"#,
    );
    let mut dstack = p.spawn(&["run", "third", "--executor", "local"]);
    let old_shell = Proc::from_file(&p.probe("second-1.pid"));
    let old_bg = Proc::from_file(&p.probe("second-bg-1.pid"));
    kill(Pid::from_raw(dstack.pid()), Signal::SIGKILL).expect("SIGKILL");
    let _ = dstack.child.wait();
    wait_for("dstack's run name on stdout", || {
        !dstack.stdout.lock().expect("lock").is_empty()
    });
    let name = String::from_utf8_lossy(&dstack.stdout.lock().expect("lock"))
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    drop(dstack);

    let run = p.ps(&name);
    assert!(
        !["done", "failed", "stopped", "aborted"].contains(&status(&run)),
        "the killed driver could not record an end: {run:#}"
    );
    assert_job(&run, "first", "done", "");

    let resume = p.spawn(&["resume", &name]);
    wait_for("the second attempt of `second`", || {
        p.count("second.count") == 2
    });
    // What the killed driver left running was reaped before `second` ran again.
    old_shell.assert_gone("the orphaned job shell of the killed driver");
    old_bg.assert_gone("the orphaned background sleep of the killed driver");
    let new_shell = Proc::from_file(&p.probe("second-2.pid"));
    let new_bg = Proc::from_file(&p.probe("second-bg-2.pid"));
    p.touch("go");
    let out = resume.wait();
    out.ok();
    let run = p.ps(&name);
    assert_eq!(status(&run), "done", "{run:#}\n{out}");
    for id in ["first", "second", "third"] {
        assert_job(&run, id, "done", "");
    }
    assert_eq!(
        p.count("first.count"),
        1,
        "`first` had finished: it must not run again"
    );
    assert_eq!(p.count("third.count"), 1);
    assert_eq!(p.read_probe("third.out"), "payload\n");
    new_shell.assert_gone("the resumed job's shell");
    new_bg.assert_gone("the resumed job's background sleep");

    p.dstack(&["resume", &name])
        .code(1)
        .stderr_has("nothing to resume");
}

const WAITER: &str = r#"
workflows:
  - name: w
    provider: docker
    image: busybox
    commands:
      - echo run >> @PROBE/w.count
      - echo $$ > @PROBE/w-$(wc -l < @PROBE/w.count).pid
      - sleep 1000 &
      - echo $! > @PROBE/w-bg-$(wc -l < @PROBE/w.count).pid
      - 'while test ! -f @PROBE/go; do sleep 0.02; done'
"#;

/// Starts `w` in the foreground, waits until its job runs, and SIGKILLs dstack: returns the
/// run's name and the orphaned job's shell and background process.
fn run_and_kill_driver(p: &Project) -> (String, Proc, Proc) {
    let mut dstack = p.spawn(&["run", "w", "--executor", "local"]);
    let shell = Proc::from_file(&p.probe("w-1.pid"));
    let bg = Proc::from_file(&p.probe("w-bg-1.pid"));
    kill(Pid::from_raw(dstack.pid()), Signal::SIGKILL).expect("SIGKILL");
    let _ = dstack.child.wait();
    let name = String::from_utf8_lossy(&dstack.stdout.lock().expect("lock"))
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    drop(dstack);
    assert!(
        !name.is_empty(),
        "dstack printed the run name before its job started"
    );
    (name, shell, bg)
}

#[test]
fn stop_of_a_run_whose_driver_was_killed_reaps_its_jobs() {
    let p = Project::new(WAITER);
    let (name, shell, bg) = run_and_kill_driver(&p);
    // Following the logs of a run that cannot end on its own says so instead of waiting.
    p.spawn(&["logs", "-f", &name])
        .wait()
        .code(1)
        .stderr_has("no process drives it any more");
    p.dstack(&["stop", &name])
        .ok()
        .stdout_has(&format!("run {name} stopped"));
    shell.assert_gone("the orphaned job shell");
    bg.assert_gone("the orphaned background sleep");
    let run = p.ps(&name);
    assert_eq!(status(&run), "stopped", "{run:#}");
    assert_job(&run, "w", "stopped", "");
    assert_eq!(run["driver_pid"], Value::Null, "{run:#}");
}

#[test]
fn concurrent_resumes_of_one_run_drive_it_once() {
    const RESUMES: usize = 8;
    let p = Project::new(WAITER);
    let (name, _, _) = run_and_kill_driver(&p);
    let mut resumes: Vec<Spawned> = (0..RESUMES).map(|_| p.spawn(&["resume", &name])).collect();
    // All but one resume should refuse and exit while the other drives the job, which waits
    // for `go`. The wrong outcome (several run the job) ends the wait too.
    wait_for(
        "the other resumes to refuse, or several to run the job",
        || {
            let exited = resumes
                .iter_mut()
                .map(|s| s.child.try_wait())
                .filter(|w| matches!(w, Ok(Some(_))))
                .count();
            p.count("w.count") >= 3 || exited >= RESUMES - 1
        },
    );
    p.touch("go");
    let outs: Vec<Out> = resumes.into_iter().map(Spawned::wait).collect();
    let all = outs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        p.count("w.count"),
        2,
        "the job ran once more, not once per resume\n{all}"
    );
    assert_eq!(
        outs.iter().filter(|o| o.code == Some(0)).count(),
        1,
        "one resume drives the run\n{all}"
    );
    for o in outs.iter().filter(|o| o.code != Some(0)) {
        o.code(1).stderr_has("is being driven by process");
    }
    assert_eq!(status(&p.ps(&name)), "done");
}

#[test]
fn concurrent_dstack_processes_share_one_store() {
    let p = Project::new(
        r#"
workflows:
  - name: w
    provider: docker
    image: busybox
    commands:
      - sleep 0.3
      - echo "$DSTACK_RUN" >> @PROBE/runs
"#,
    )
    .with_state_dir();
    let runs: Vec<Spawned> = (0..4)
        .map(|_| p.spawn(&["run", "w", "--executor", "local"]))
        .collect();
    // Readers while the runs write.
    let mut listings = 0;
    while p.count("runs") < 4 && listings < 50 {
        let all = p.ps_all();
        assert!(all.len() <= 4);
        listings += 1;
    }
    let mut names: Vec<String> = runs.into_iter().map(|s| s.wait().ok().run_name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4, "run names are unique: {names:?}");
    let all = p.ps_all();
    assert_eq!(all.len(), 4, "{all:#?}");
    for r in &all {
        assert_eq!(status(r), "done", "{r:#}");
        assert!(names.contains(&r["name"].as_str().unwrap_or_default().to_owned()));
    }
    let mut seen: Vec<String> = p.read_probe("runs").lines().map(str::to_owned).collect();
    seen.sort();
    assert_eq!(seen, names, "each run ran its job once, under its own name");
    // `DSTACK_STATE_DIR` moved the store out of the project.
    assert!(p.state_dir().join("dstack.db").is_file());
    assert!(!p.root.join(".dstack/state").exists());
}

// ---------------------------------------------------------------------------------------------
// Artifacts, tags, logs
// ---------------------------------------------------------------------------------------------

const PIPELINE: &str = r#"
workflows:
  - name: prepare
    provider: docker
    image: busybox
    commands:
      - echo run >> @PROBE/prepare.count
      - mkdir -p data/sub
      - wc -l < @PROBE/prepare.count | tr -d ' ' > data/a.txt
      - echo beta > data/sub/b.txt
      - echo prepared
      - echo a warning >&2
    artifacts: [data]
  - name: train
    provider: docker
    image: busybox
    depends-on: [prepare]
    commands:
      - cat data/a.txt data/sub/b.txt > @PROBE/train.saw
      - mkdir -p model
      - cat data/a.txt data/sub/b.txt > model/m.txt
    artifacts: [model]
  - name: train-tagged
    provider: docker
    image: busybox
    depends-on: [prepare:latest]
    commands:
      - cat data/a.txt data/sub/b.txt > @PROBE/tagged.saw
"#;

#[test]
fn artifacts_are_handed_over_listed_and_exported() {
    let p = Project::new(PIPELINE);
    let out = p.run("train", &[]);
    out.ok().stdout_has("prepared");
    let name = out.run_name();
    assert_eq!(p.read_probe("train.saw"), "1\nbeta\n");
    assert!(
        !p.root.join("data").exists() && !p.root.join("model").exists(),
        "jobs run in private trees, not in the project"
    );

    let listed = p.dstack(&["artifacts", &name]);
    listed.ok();
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("prepare") && l.contains("data") && l.contains(" 2 ")),
        "{listed}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("train") && l.contains("model") && l.contains(" 1 ")),
        "{listed}"
    );

    let dest = p.tmp.path().join("export");
    let exported = p.dstack(&[
        "artifacts",
        &name,
        "--output",
        dest.to_str().expect("utf-8"),
    ]);
    exported.ok();
    assert_eq!(
        std::fs::read_to_string(dest.join("prepare/data/a.txt")).expect("exported"),
        "1\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("prepare/data/sub/b.txt")).expect("exported"),
        "beta\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("train/model/m.txt")).expect("exported"),
        "1\nbeta\n"
    );
    // The export is a copy: changing it leaves the store alone.
    std::fs::write(dest.join("prepare/data/a.txt"), "changed").expect("write");
    let again = p.tmp.path().join("export2");
    p.dstack(&[
        "artifacts",
        &name,
        "--output",
        again.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(again.join("prepare/data/a.txt")).expect("exported"),
        "1\n"
    );
    // Exporting over an earlier export is refused rather than merged.
    p.dstack(&[
        "artifacts",
        &name,
        "--output",
        dest.to_str().expect("utf-8"),
    ])
    .code(1)
    .stderr_has("already exists");

    // Logs: stdout and stderr kept apart, prefixed with the job when there are several.
    let logs = p.dstack(&["logs", &name]);
    logs.ok()
        .stdout_has("prepare | prepared")
        .stderr_has("prepare | a warning");
    let one = p.dstack(&["logs", &name, "prepare", "--since", "1d"]);
    one.ok();
    assert_eq!(one.stdout, "prepared\n", "{one}");
    assert_eq!(one.stderr, "a warning\n", "{one}");
    let future = p.dstack(&["logs", &name, "--since", "0s"]);
    future.ok();
    assert!(!future.stdout.contains("prepared"), "{future}");
}

#[test]
fn a_dependent_job_that_changes_its_inputs_fails() {
    // Inputs are linked from the artifact store (O(1) hand-over), and stored files are
    // read-only: a job that does not run as root cannot change them; one that does (CI, here)
    // is caught afterwards and fails with the reason.
    let p = Project::new(
        r#"
workflows:
  - name: prepare
    provider: docker
    image: busybox
    commands:
      - mkdir -p data
      - echo original > data/v.txt
    artifacts: [data]
  - name: train
    provider: docker
    image: busybox
    depends-on: [prepare]
    commands:
      - echo appended by train >> data/v.txt
"#,
    );
    let out = p.run("train", &[]);
    out.code(1);
    let name = out.run_name();
    let stored = p
        .state_dir()
        .join("runs")
        .join(&name)
        .join("artifacts/prepare/data/v.txt");
    let text = std::fs::read_to_string(&stored).expect("stored artifact");
    let root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc")) == 0;
    if root {
        out.stderr_has("the job changed its input `data/v.txt` (an artifact of `prepare`), which is shared with the artifact store");
    } else {
        assert_eq!(
            text, "original\n",
            "the stored artifact is read-only\n{out}"
        );
        out.stderr_has("Permission denied");
    }
}

#[test]
fn artifact_paths_that_escape_the_working_directory_are_refused() {
    // Written paths are refused before anything runs.
    let p = Project::new(
        r#"
workflows:
  - name: up
    provider: docker
    image: busybox
    commands: ['true']
    artifacts: [../outside]
  - name: absolute
    provider: docker
    image: busybox
    commands: ['true']
    artifacts: [/etc]
"#,
    );
    p.run("up", &[])
        .code(1)
        .stderr_has("escapes the working directory");
    p.run("absolute", &[]).code(1).stderr_has("is absolute");
    assert!(
        p.ps_all().is_empty(),
        "no run is recorded for a refused plan"
    );

    // Symlinks that lead out are found when the artifacts are saved.
    let p = Project::new(
        r#"
workflows:
  - name: link-out
    provider: docker
    image: busybox
    commands:
      - ln -s @PROBE/outside out
    artifacts: [out]
  - name: link-up
    provider: docker
    image: busybox
    commands:
      - ln -s ../../../../.. up
    artifacts: [up]
  - name: link-inside
    provider: docker
    image: busybox
    commands:
      - mkdir -p out2
      - ln -s @PROBE/outside/keep.txt out2/keep.txt
    artifacts: [out2]
  - name: missing
    provider: docker
    image: busybox
    commands: ['true']
    artifacts: [never]
  - name: all
    provider: docker
    image: busybox
    depends-on: [link-out, link-up, link-inside, missing]
    commands: ['true']
"#,
    );
    std::fs::create_dir_all(p.probe("outside")).expect("mkdir");
    std::fs::write(p.probe("outside/keep.txt"), "keep").expect("write");
    let out = p.run("all", &["--keep-going"]);
    out.code(1);
    let name = out.run_name();
    let run = p.ps(&name);
    assert_job(
        &run,
        "link-out",
        "failed",
        "leads out of the working directory",
    );
    assert_job(
        &run,
        "link-up",
        "failed",
        "leads out of the working directory",
    );
    assert_job(&run, "link-inside", "failed", "holds a symlink");
    assert_job(
        &run,
        "missing",
        "failed",
        "declared artifact `never` was not produced",
    );
    assert_job(&run, "all", "skipped", "");
    assert_eq!(
        std::fs::read_to_string(p.probe("outside/keep.txt")).expect("still there"),
        "keep",
        "nothing outside the job's tree is moved"
    );
    let artifacts = p.state_dir().join("runs").join(&name).join("artifacts");
    assert!(
        files_under(&artifacts).is_empty(),
        "nothing was saved: {:?}",
        files_under(&artifacts)
    );
}

#[test]
fn a_tagged_dependency_reuses_artifacts_without_running_its_workflow() {
    let p = Project::new(PIPELINE);
    p.run("train-tagged", &[])
        .code(1)
        .stderr_has("no run is tagged `latest`");
    assert!(
        p.ps_all().is_empty(),
        "nothing is recorded when a tag is missing"
    );

    let first = p.run("prepare", &[]);
    first.ok();
    let first = first.run_name();
    p.dstack(&["tag", &first, "latest"])
        .ok()
        .stdout_has(&format!("tagged {first} as latest"));
    p.dstack(&["tags"])
        .ok()
        .stdout_has("latest")
        .stdout_has(&first);
    assert_eq!(p.ps(&first)["tags"], serde_json::json!(["latest"]));

    let out = p.run("train-tagged", &[]);
    out.ok()
        .stderr_has(&format!("reused: from {first}/prepare"));
    let reusing = out.run_name();
    let tagged_run = p.ps(&reusing);
    assert_eq!(status(&tagged_run), "done", "{tagged_run:#}");
    assert_eq!(p.count("prepare.count"), 1, "`prepare` must not run again");
    assert_eq!(p.read_probe("tagged.saw"), "1\nbeta\n");
    // What was reused is recorded with the run.
    let reused = job(&tagged_run, "prepare:latest");
    assert_eq!(status(reused), "reused", "{tagged_run:#}");
    assert_eq!(reused["workflow"], "prepare");
    assert_eq!(reused["reused_from"], format!("{first}/prepare").as_str());
    assert_eq!(
        tagged_run["jobs"].as_array().map(Vec::len),
        Some(2),
        "`prepare` is reused, not run: {tagged_run:#}"
    );

    // Moving the tag to a newer run hands over the newer artifacts.
    let second = p.run("prepare", &[]);
    second.ok();
    let second = second.run_name();
    p.dstack(&["tag", &second, "latest"])
        .ok()
        .stdout_has(&format!("tagged {second} as latest (moved from {first})"));
    p.run("train-tagged", &[]).ok();
    assert_eq!(p.read_probe("tagged.saw"), "2\nbeta\n");
    assert_eq!(p.count("prepare.count"), 2);

    // Tag errors.
    p.dstack(&["untag", "lates"])
        .code(1)
        .stderr_has("no run is tagged `lates`")
        .stderr_has("did you mean `latest`");
    p.dstack(&["tag", &second, "bad tag"])
        .code(1)
        .stderr_has("not a valid tag");
    p.dstack(&["untag", "latest"])
        .ok()
        .stdout_has(&format!("removed tag latest from {second}"));
    p.dstack(&["untag", "latest"])
        .code(1)
        .stderr_has("no run is tagged `latest`");
    p.run("train-tagged", &[])
        .code(1)
        .stderr_has("no run is tagged `latest`");
    assert_eq!(p.count("prepare.count"), 2);

    // A run that reused artifacts, tagged in turn, hands over those of the run they are in
    // (`prepare:kept` follows `reusing` to `first`), and prune keeps that run for it.
    p.dstack(&["tag", &reusing, "kept"]).ok();
    p.write_workflows(&format!(
        "{PIPELINE}  - name: train-kept\n    provider: docker\n    image: busybox\n    depends-on: [prepare:kept]\n    commands:\n      - cat data/a.txt > @PROBE/kept.saw\n"
    ));
    let pruned = p.dstack(&["prune"]);
    pruned.ok();
    assert!(!pruned.stdout.contains(&first), "{pruned}");
    assert!(pruned.stdout.contains(&second), "{pruned}");
    let out = p.run("train-kept", &[]);
    out.ok();
    assert_eq!(p.read_probe("kept.saw"), "1\n");
    assert_eq!(
        job(&p.ps(&out.run_name()), "prepare:kept")["reused_from"],
        format!("{first}/prepare").as_str()
    );
}

#[test]
fn a_deleted_artifact_store_is_reported() {
    let p = Project::new(PIPELINE);
    let out = p.run("prepare", &[]);
    out.ok();
    let name = out.run_name();
    p.dstack(&["tag", &name, "latest"]).ok();
    let store = p.state_dir().join("runs").join(&name).join("artifacts");
    assert!(
        store.is_dir(),
        "artifacts are stored in {}",
        store.display()
    );
    std::fs::remove_dir_all(&store).expect("rm");

    p.run("train-tagged", &[])
        .code(1)
        .stderr_has("missing from the artifact store");
    assert!(!p.probe("tagged.saw").exists());
    let dest = p.tmp.path().join("export");
    p.dstack(&[
        "artifacts",
        &name,
        "--output",
        dest.to_str().expect("utf-8"),
    ])
    .code(1)
    .stderr_has("missing from the artifact store");

    // The whole state folder gone: the store starts empty, and says so.
    std::fs::remove_dir_all(p.state_dir()).expect("rm");
    p.dstack(&["ps", "-a"]).ok().stdout_has("no runs");
    p.dstack(&["logs", &name])
        .code(1)
        .stderr_has(&format!("no run named `{name}`"));
}

#[test]
fn unknown_names_and_impossible_requests_are_refused() {
    let p = Project::new(
        r#"
workflows:
  - name: w
    provider: docker
    image: busybox
    commands:
      - echo hello
"#,
    );
    let out = p.run("w", &[]);
    out.ok();
    let name = out.run_name();
    let typo = format!("{}x", name);
    for args in [
        vec!["ps", typo.as_str()],
        vec!["logs", typo.as_str()],
        vec!["stop", typo.as_str()],
        vec!["resume", typo.as_str()],
        vec!["tag", typo.as_str(), "t"],
        vec!["artifacts", typo.as_str()],
    ] {
        p.dstack(&args)
            .code(1)
            .stderr_has(&format!("no run named `{typo}`"))
            .stderr_has(&format!("did you mean `{name}`"));
    }
    p.dstack(&["ps", "nosuch-run-1"])
        .code(1)
        .stderr_has("no run named `nosuch-run-1`");
    p.dstack(&["untag", "nosuch"])
        .code(1)
        .stderr_has("no run is tagged `nosuch`");
    p.dstack(&["resume", &name])
        .code(1)
        .stderr_has("nothing to resume");
    p.dstack(&["stop", &name])
        .code(1)
        .stderr_has("already ended");
    p.dstack(&["logs", &name, "nosuch"])
        .code(1)
        .stderr_has("has no workflow `nosuch`");
    p.dstack(&["logs", &name, "--since", "yesterdayish"])
        .code(2);
    p.dstack(&["artifacts", &name])
        .ok()
        .stdout_has(&format!("run {name} has no artifacts"));
    let export = p.tmp.path().join("export");
    p.dstack(&[
        "artifacts",
        &name,
        "--output",
        export.to_str().expect("utf-8"),
    ])
    .ok()
    .stdout_has("nothing exported");
    p.run("nosuch", &[]).code(1);
    p.run("w", &["-j", "0"]).code(2);
    p.dstack(&["run", "w", "--executor", "nope"]).code(2);
    assert_eq!(p.ps_all().len(), 1, "no refused command created a run");
}

#[test]
fn commands_that_record_nothing_leave_no_state() {
    let p = Project::new(
        r#"
workflows:
  - name: w
    provider: docker
    image: busybox
    commands:
      - echo hello
"#,
    );
    let state = p.state_dir();
    // Reading an empty store, and runs refused before they start, make no state folder.
    p.dstack(&["ps"]).ok().stdout_has("no runs");
    p.dstack(&["ps", "-a", "--format", "json"]).ok();
    p.dstack(&["tags"]).ok();
    p.dstack(&["prune"]).ok();
    p.dstack(&["logs", "cowardly-goose-1"])
        .code(1)
        .stderr_has("no run named `cowardly-goose-1`");
    p.run("w", &["--nope", "1"]).code(2);
    p.run("nosuch", &[]).code(1);
    assert!(!state.exists(), "{} was made", state.display());
    assert_eq!(p.git(&["status", "--porcelain", "--ignored"]), "");
    // The first run makes it.
    p.run("w", &[]).ok();
    assert!(state.join("dstack.db").is_file());
    assert_eq!(p.ps_all().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Downloads (the `curl` provider) against a real HTTP server
// ---------------------------------------------------------------------------------------------

const CSV: &str = "x1,x2,y\n1,2,3\n4,5,6\n";

/// A tiny HTTP/1.1 server on 127.0.0.1: `/data.csv` (200), `/short` (a body shorter than its
/// `Content-Length`), `/hang` (never answers), `/stall` (a tenth of its body, then nothing),
/// anything else 404. Returns its port.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    port
}

fn answer(mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("/");
    // The connection stays open, silent, for longer than any test.
    let wait = || std::thread::sleep(Duration::from_secs(600));
    let response = match path {
        "/hang" => return wait(),
        "/stall" => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
            let _ = stream.flush();
            return wait();
        }
        "/data.csv" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{CSV}",
            CSV.len()
        ),
        "/short" => {
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789"
                .to_owned()
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
            .to_owned(),
    };
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn curl_downloads_succeed_or_fail_with_the_reason() {
    let port = serve();
    let closed = closed_port();
    let p = Project::new(&format!(
        r#"
workflows:
  - name: get-ok
    provider: curl
    url: http://127.0.0.1:{port}/data.csv
    output: raw/data.csv
    artifacts: [raw]
  - name: get-404
    provider: curl
    url: http://127.0.0.1:{port}/missing.csv
    output: raw/missing.csv
    artifacts: [raw]
  - name: get-short
    provider: curl
    url: http://127.0.0.1:{port}/short
    output: raw/short.bin
    artifacts: [raw]
  - name: get-refused
    provider: curl
    url: http://127.0.0.1:{closed}/data.csv
    output: raw/refused.csv
    artifacts: [raw]
  - name: use
    provider: docker
    image: busybox
    depends-on: [get-ok]
    commands:
      - cat raw/data.csv > @PROBE/seen.csv
  - name: all
    provider: docker
    image: busybox
    depends-on: [use, get-404, get-short, get-refused]
    commands: ['true']
"#
    ));
    let out = p.run("all", &["--keep-going", "-j", "4"]);
    out.code(1);
    let name = out.run_name();
    let run = p.ps(&name);
    assert_job(&run, "get-ok", "done", "");
    assert_job(&run, "use", "done", "");
    assert_eq!(p.read_probe("seen.csv"), CSV, "the download is handed over");
    assert_job(&run, "get-404", "failed", "HTTP 404");
    assert_job(&run, "get-short", "failed", "/short");
    let short = reason(job(&run, "get-short"));
    assert!(
        short.contains("1000") || short.contains("10 bytes"),
        "the truncation is explained: {short}"
    );
    assert_job(
        &run,
        "get-refused",
        "failed",
        &format!("127.0.0.1:{closed}"),
    );
    assert!(
        reason(job(&run, "get-refused"))
            .to_lowercase()
            .contains("refused"),
        "{run:#}"
    );
    assert_job(&run, "all", "skipped", "");
    let leftovers: Vec<PathBuf> = files_under(&p.state_dir())
        .into_iter()
        .filter(|f| {
            let s = f.to_string_lossy();
            s.ends_with(".part")
                || s.ends_with("missing.csv")
                || s.ends_with("short.bin")
                || s.ends_with("refused.csv")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "failed downloads leave no file: {leftovers:?}"
    );

    let dest = p.tmp.path().join("export");
    p.dstack(&[
        "artifacts",
        &name,
        "--output",
        dest.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(dest.join("get-ok/raw/data.csv")).expect("exported"),
        CSV
    );
}

#[test]
fn a_download_the_server_leaves_waiting_ends_with_its_timeout_or_a_stop() {
    let port = serve();
    let p = Project::new(&format!(
        r#"
workflows:
  - name: stall
    provider: curl
    url: http://127.0.0.1:{port}/stall
    output: raw/stall.bin
    timeout: 1
  - name: hang
    provider: curl
    url: http://127.0.0.1:{port}/hang
    output: raw/hang.bin
"#
    ));
    // The job's timeout ends a download whose body stops coming (`wait` fails the test if
    // dstack has not ended within the deadline).
    let out = p.spawn(&["run", "stall", "--executor", "local"]).wait();
    out.code(1);
    assert_job(
        &p.ps(&out.run_name()),
        "stall",
        "failed",
        "timed out after 1s",
    );
    // Ctrl-C ends a download whose server never answers.
    let dstack = p.spawn(&["run", "hang", "--executor", "local"]);
    wait_for("the download to start", || {
        p.ps_all()
            .iter()
            .any(|r| r["workflow"] == "hang" && status(job(r, "hang")) == "running")
    });
    killpg(Pid::from_raw(dstack.pid()), Signal::SIGINT).expect("signal");
    let out = dstack.wait();
    out.code(130);
    let run = p.ps(&out.run_name());
    assert_eq!(status(&run), "stopped", "{run:#}");
    assert_job(&run, "hang", "stopped", "");
    let parts: Vec<PathBuf> = files_under(&p.state_dir())
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "partial downloads are removed: {parts:?}");
}

// ---------------------------------------------------------------------------------------------
// Detached runs, stop, prune
// ---------------------------------------------------------------------------------------------

#[test]
fn a_detached_run_is_followed_with_logs_and_listed_as_json() {
    let p = Project::new(
        r#"
workflows:
  - name: slow
    provider: docker
    image: busybox
    commands:
      - echo first line
      - echo to stderr >&2
      - 'while test ! -f @PROBE/go; do sleep 0.02; done'
      - echo last line
"#,
    );
    let out = p.run("slow", &["--detach"]);
    out.ok().stderr_has("background");
    let name = out.run_name();
    // It returned while the job waits for `go`: the run goes on without it.
    let mut run = Value::Null;
    wait_for("the detached run to be running", || {
        run = p.ps(&name);
        status(&run) == "running" && status(job(&run, "slow")) == "running"
    });
    let driver = Proc::of(
        run["driver_pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_else(|| panic!("a running run names its driver: {run:#}")),
    );
    let listed: Vec<Value> = {
        let o = p.dstack(&["ps", "--format", "json"]);
        o.ok();
        serde_json::from_str(&o.stdout).expect("json")
    };
    assert!(
        listed
            .iter()
            .any(|r| r["name"] == name.as_str() && status(r) == "running")
    );
    p.dstack(&["tag", &name, "early"])
        .code(1)
        .stderr_has("finished");
    p.dstack(&["resume", &name])
        .code(1)
        .stderr_has("is being driven by process");

    let mut follow = p
        .command(&["logs", &name, "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logs -f starts");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (stderr, stderr_reader) = collect(follow.stderr.take().expect("stderr"));
    let first = rx
        .recv_timeout(DEADLINE)
        .expect("logs -f prints the first line");
    assert_eq!(first, "first line");
    // Only now may the job go on: `logs -f` must pick up what is written after it started.
    p.touch("go");
    let last = rx
        .recv_timeout(DEADLINE)
        .expect("logs -f prints the last line");
    assert_eq!(last, "last line");
    assert!(
        rx.recv_timeout(DEADLINE).is_err(),
        "logs -f ends when the run ends, with nothing more"
    );
    let start = Instant::now();
    let code = loop {
        if let Some(s) = follow.try_wait().expect("try_wait") {
            break s.code();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "logs -f did not exit after the run ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let _ = stderr_reader.join();
    assert_eq!(code, Some(0));
    assert!(
        String::from_utf8_lossy(&stderr.lock().expect("lock")).contains("to stderr"),
        "stderr lines go to stderr"
    );

    let run = p.ps(&name);
    assert_eq!(status(&run), "done", "{run:#}");
    assert_eq!(run["driver_pid"], Value::Null, "{run:#}");
    driver.assert_gone("the detached driver");
}

/// Runs `hang` detached, waits until its job runs, and stops it with `dstack stop ARGS`.
fn stop_detached(abort: bool) {
    let p = Project::new(HANG);
    let out = p.run("after", &["--detach"]);
    out.ok();
    let name = out.run_name();
    let shell = Proc::from_file(&p.probe("hang.pid"));
    let bg = Proc::from_file(&p.probe("bg.pid"));
    let mut run = Value::Null;
    wait_for("the detached run to name its driver", || {
        run = p.ps(&name);
        run["driver_pid"].is_number()
    });
    let driver = Proc::of(
        run["driver_pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .expect("driver pid"),
    );
    let mut args = vec!["stop", name.as_str()];
    if abort {
        args.push("--abort");
    }
    let expected = if abort { "aborted" } else { "stopped" };
    p.dstack(&args)
        .ok()
        .stdout_has(&format!("run {name} {expected}"));
    shell.assert_gone("the stopped job's shell");
    bg.assert_gone("the stopped job's background sleep");
    driver.assert_gone("the detached driver");
    let run = p.ps(&name);
    assert_eq!(status(&run), expected, "{run:#}");
    assert_job(&run, "hang", expected, "");
    assert_job(&run, "after", "skipped", "");
    assert_eq!(p.count("after.count"), 0);
    assert_eq!(run["driver_pid"], Value::Null, "{run:#}");
}

#[test]
fn a_stop_saves_what_the_job_has_made_and_an_abort_does_not() {
    for abort in [false, true] {
        let p = Project::new(
            r#"
workflows:
  - name: train
    provider: docker
    image: busybox
    commands:
      - mkdir -p checkpoints
      - echo epoch-1 > checkpoints/1
      - touch @PROBE/ready
      - sleep 1000
    artifacts: [checkpoints, metrics]
"#,
        );
        let out = p.run("train", &["--detach"]);
        out.ok();
        let name = out.run_name();
        wait_for("the job to write its checkpoint", || {
            p.probe("ready").exists()
        });
        let mut args = vec!["stop", name.as_str()];
        if abort {
            args.push("--abort");
        }
        p.dstack(&args).ok();
        let run = p.ps(&name);
        let listed = p.dstack(&["artifacts", &name]);
        listed.ok();
        if abort {
            assert_job(&run, "train", "aborted", "");
            listed.stdout_has(&format!("run {name} has no artifacts"));
            continue;
        }
        // What was written is kept; what was not (`metrics`) is left out.
        assert_job(&run, "train", "stopped", "saved checkpoints");
        assert!(!reason(job(&run, "train")).contains("metrics"), "{run:#}");
        listed.stdout_has("checkpoints");
        assert!(!listed.stdout.contains("metrics"), "{listed}");
        let dest = p.tmp.path().join("export");
        p.dstack(&[
            "artifacts",
            &name,
            "--output",
            dest.to_str().expect("utf-8"),
        ])
        .ok();
        assert_eq!(
            std::fs::read_to_string(dest.join("train/checkpoints/1")).expect("exported"),
            "epoch-1\n"
        );
    }
}

#[test]
fn stop_of_a_detached_run_leaves_no_process() {
    stop_detached(false);
}

#[test]
fn stop_abort_of_a_detached_run_leaves_no_process() {
    stop_detached(true);
}

#[test]
fn prune_deletes_finished_untagged_runs_and_keeps_tagged_and_running_ones() {
    let p = Project::new(
        r#"
workflows:
  - name: w
    provider: docker
    image: busybox
    commands:
      - mkdir -p out
      - echo "$DSTACK_RUN" > out/name
    artifacts: [out]
  - name: wait
    provider: docker
    image: busybox
    commands:
      - 'while test ! -f @PROBE/go; do sleep 0.02; done'
"#,
    );
    let names: Vec<String> = (0..3)
        .map(|_| {
            let o = p.run("w", &[]);
            o.ok();
            o.run_name()
        })
        .collect();
    p.dstack(&["tag", &names[1], "keep"]).ok();
    let running = p.run("wait", &["--detach"]);
    running.ok();
    let running = running.run_name();
    wait_for("the detached run to be running", || {
        status(&p.ps(&running)) == "running"
    });

    let out = p.dstack(&["prune"]);
    out.ok()
        .stdout_has(&format!("deleted {}", names[0]))
        .stdout_has(&format!("deleted {}", names[2]))
        .stdout_has("2 run(s) deleted");
    assert!(
        !out.stdout.contains(&names[1]) && !out.stdout.contains(&running),
        "{out}"
    );
    let mut left: Vec<String> = p
        .ps_all()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    left.sort();
    let mut expected = vec![names[1].clone(), running.clone()];
    expected.sort();
    assert_eq!(left, expected);
    let runs_dir = p.state_dir().join("runs");
    assert!(!runs_dir.join(&names[0]).exists() && !runs_dir.join(&names[2]).exists());
    let export = p.tmp.path().join("export");
    p.dstack(&[
        "artifacts",
        &names[1],
        "--output",
        export.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(export.join("w/out/name")).expect("kept"),
        format!("{}\n", names[1])
    );

    p.touch("go");
    wait_for("the detached run to end", || {
        status(&p.ps(&running)) == "done"
    });
    p.dstack(&["prune"])
        .ok()
        .stdout_has(&format!("deleted {running}"));
    assert_eq!(p.ps_all().len(), 1);
}

#[test]
fn a_tagged_run_made_with_other_variables_is_pointed_out() {
    let p = Project::new(
        r#"
workflows:
  - name: prepare
    provider: docker
    image: busybox
    commands: [mkdir -p data, echo $SEED > data/seed]
    artifacts: [data]
  - name: train
    provider: docker
    image: busybox
    commands: [cat data/seed]
    depends-on: [prepare:latest]
"#,
    );
    std::fs::write(
        p.root.join(".dstack/variables.yaml"),
        "variables:\n  global:\n    seed: 1\n",
    )
    .expect("write");
    let prepared = p.run("prepare", &[]);
    prepared.ok();
    p.dstack(&["tag", &prepared.run_name(), "latest"]).ok();
    let same = p.run("train", &[]);
    same.ok().stdout_has("train | 1");
    assert!(!same.stderr.contains("other variables"), "{same}");
    p.run("train", &["--seed", "9"]).ok().stderr_has(&format!(
        "warning: `prepare:latest` reuses run `{}`, whose `prepare` ran with other variables: SEED was `1` (now `9`)",
        prepared.run_name()
    ));
}

// ---------------------------------------------------------------------------------------------
// Git: runs capture the user's exact tree
// ---------------------------------------------------------------------------------------------

/// Every entry under `root` as (relative path bytes, what it is), leaving out the folders
/// `skip` names (relative paths). Files carry their bytes and executable bit, links their
/// target.
fn tree_of(root: &Path, skip: &[&str]) -> Vec<(Vec<u8>, String)> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root");
            if skip.iter().any(|s| rel == Path::new(s)) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let what = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    std::fs::read_link(&path).expect("link").display()
                )
            } else {
                let bytes = std::fs::read(&path).expect("read");
                format!(
                    "file exec={} {:?}",
                    meta.permissions().mode() & 0o100 != 0,
                    String::from_utf8_lossy(&bytes)
                )
            };
            out.push((rel.as_os_str().as_bytes().to_vec(), what));
        }
    }
    out.sort();
    out
}

/// The folders of run `name` where a drive wrote the captured tree (`source-*`).
fn sources_of(p: &Project, name: &str) -> Vec<String> {
    std::fs::read_dir(p.state_dir().join("runs").join(name))
        .expect("run folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("source"))
        .collect()
}

#[test]
fn a_job_runs_exactly_the_users_tree_and_a_resume_runs_the_same_tree_after_edits() {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let p = Project::new(
        r"
workflows:
  - name: tree
    provider: docker
    image: ubuntu
    commands:
      - n=$(ls @PROBE | grep -c '^seen' || true); mkdir @PROBE/seen-$n; cp -a . @PROBE/seen-$n/
      - test -e @PROBE/go
",
    );
    let w = |rel: &str, bytes: &[u8]| {
        let path = p.root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    };
    // Committed state.
    w("a.txt", b"committed a\n");
    w("b.txt", b"to be deleted\n");
    w("c.txt", b"to be renamed\n");
    w("script.sh", b"#!/bin/sh\necho hi\n");
    w("src/model.py", b"print('model')\n");
    w(".gitignore", b"*.log\n");
    w("kept.log", b"tracked although ignored\n");
    p.git(&["add", "-A"]);
    p.git(&["add", "-f", "kept.log"]);
    p.git(&["commit", "-q", "-m", "files"]);
    // Local changes of every kind.
    w("a.txt", b"modified a\n");
    std::fs::remove_file(p.root.join("b.txt")).expect("rm");
    p.git(&["mv", "c.txt", "d.txt"]);
    w("staged.txt", b"staged new file\n");
    p.git(&["add", "staged.txt"]);
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    w("data/blob.bin", &binary);
    std::fs::set_permissions(
        p.root.join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(p.root.join(latin1), b"not utf-8 name\n").expect("write");
    std::os::unix::fs::symlink("src/model.py", p.root.join("link.py")).expect("symlink");
    w("debug.log", b"ignored, never captured\n");

    let status_before = p.git(&["status", "--porcelain", "-z", "--untracked-files=all"]);
    let index_before = std::fs::read(p.root.join(".git/index")).expect("index");
    let user_tree = tree_of(&p.root, &[".git", ".dstack/state", "debug.log"]);

    let out = p.run("tree", &[]);
    out.code(1);
    out.stderr_has("note: git: main @ ")
        .stderr_has("local changes: ");
    let name = out.run_name();
    let seen = tree_of(&p.probe("seen-0"), &[]);
    assert_eq!(
        seen, user_tree,
        "the job's tree differs from the user's working tree"
    );
    assert!(!p.probe("seen-0/debug.log").exists());

    // The user keeps editing; the resumed run still runs what was captured.
    w("a.txt", b"edited after the run\n");
    w("later.txt", b"new after the run\n");
    p.touch("go");
    p.dstack(&["resume", &name]).ok();
    let again = tree_of(&p.probe("seen-1"), &[]);
    assert_eq!(again, user_tree, "the resumed job saw other files");

    // The user's repository was only read.
    std::fs::write(p.root.join("a.txt"), b"modified a\n").expect("write");
    std::fs::remove_file(p.root.join("later.txt")).expect("rm");
    assert_eq!(
        p.git(&["status", "--porcelain", "-z", "--untracked-files=all"]),
        status_before
    );
    assert_eq!(
        std::fs::read(p.root.join(".git/index")).expect("index"),
        index_before,
        "the index was written"
    );
    // The captured tree is not left behind once the run is driven.
    assert_eq!(sources_of(&p, &name), Vec::<String>::new());
}

#[test]
fn outside_a_repository_a_run_needs_no_git_and_says_how() {
    let p = Project::without_git(
        r"
workflows:
  - name: hello
    provider: docker
    image: ubuntu
    commands:
      - echo hello > @PROBE/ran
",
    );
    let out = p.run("hello", &[]);
    out.code(1)
        .stderr_has("is not in a Git repository")
        .stderr_has("git init")
        .stderr_has("--no-git");
    assert!(p.count("ran") == 0, "nothing may run");
    assert_eq!(p.ps_all().len(), 0, "no run may be recorded");

    p.run("hello", &["--no-git"]).ok();
    assert_eq!(p.read_probe("ran"), "hello\n");
    let out = p
        .command(&["run", "hello", "--executor", "local"])
        .env("DSTACK_NO_GIT", "1")
        .output()
        .expect("dstack starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = p.ps_all();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["git"].is_null()), "{runs:?}");
    let list = p.dstack(&["ps"]);
    list.ok();
    let line = list.stdout.lines().nth(1).expect("a run line");
    assert!(line.ends_with("  -"), "{line}");
    let name = runs[0]["name"].as_str().expect("name");
    p.dstack(&["ps", name])
        .ok()
        .stdout_has("git       not recorded\n");
}

#[test]
fn ps_shows_the_commit_and_whether_the_tree_had_local_changes() {
    let p = Project::new(
        r"
workflows:
  - name: hello
    provider: docker
    image: ubuntu
    commands:
      - echo hello
",
    );
    let commit = p.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let clean = p.run("hello", &[]);
    clean.ok().stderr_has("no local changes");
    let clean = clean.run_name();
    std::fs::write(p.root.join("notes.md"), "draft\n").expect("write");
    let dirty = p.run("hello", &[]).run_name();

    let list = p.dstack(&["ps"]);
    list.ok();
    let line_of = |name: &str| {
        list.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {list}"))
            .to_owned()
    };
    let column = |name: &str, want: &str| {
        assert!(
            line_of(name).split_whitespace().any(|w| w == want),
            "{want} in {list}"
        );
    };
    column(&clean, &commit[..8]);
    column(&dirty, &format!("{}-dirty", &commit[..8]));
    let detail = p.dstack(&["ps", &dirty]);
    detail.ok().stdout_has(&format!(
        "git       main @ {}, local changes: 1 added",
        &commit[..12]
    ));
    let json = p.ps(&dirty);
    assert_eq!(json["git"]["dirty"], true);
    assert_eq!(json["git"]["commit"], commit.as_str());
    assert_eq!(p.ps(&clean)["git"]["dirty"], false);
    // The state folder never shows up in the user's `git status`.
    assert_eq!(
        p.git(&["status", "--porcelain", "--untracked-files=all"]),
        "?? notes.md\n"
    );
}

#[test]
fn a_repository_without_a_commit_runs_its_files() {
    let p = Project::without_git(
        r"
workflows:
  - name: hello
    provider: docker
    image: ubuntu
    commands:
      - cat input.txt > @PROBE/ran
",
    );
    std::fs::write(p.root.join("input.txt"), "first\n").expect("write");
    p.git(&["init", "-q"]);
    let out = p.run("hello", &[]);
    out.ok().stderr_has("(no commit yet)");
    assert_eq!(p.read_probe("ran"), "first\n");
    let list = p.dstack(&["ps"]);
    list.ok().stdout_has("(no commit)");
}

#[test]
fn a_resume_whose_commit_was_garbage_collected_fails_clearly_and_keeps_the_run() {
    let p = Project::new(
        r"
workflows:
  - name: flaky
    provider: docker
    image: ubuntu
    commands:
      - test -e @PROBE/go
",
    );
    std::fs::write(p.root.join("v.txt"), "2\n").expect("write");
    p.git(&["add", "-A"]);
    p.git(&["commit", "-q", "-m", "second"]);
    let commit = p.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let name = p.run("flaky", &[]).run_name();
    // The user rewrites history and collects garbage: the run's commit is gone.
    p.git(&["reset", "-q", "--hard", "HEAD^"]);
    p.git(&["reflog", "expire", "--expire=now", "--all"]);
    p.git(&["gc", "-q", "--prune=now"]);
    p.touch("go");
    let out = p.dstack(&["resume", &name]);
    out.code(1).stderr_has(&format!(
        "commit {commit} of this run is not in the Git repository"
    ));
    let run = p.ps(&name);
    assert_eq!(status(&run), "failed", "{run}");
    assert_eq!(
        sources_of(&p, &name),
        Vec::<String>::new(),
        "no half-written tree"
    );
}

#[test]
fn a_custom_provider_program_makes_the_jobs_that_run() {
    let p = Project::new(
        r"
workflows:
  - name: staged
    provider: stages
    names: [one, two]
",
    );
    std::fs::write(
        p.root.join(".dstack/providers.yaml"),
        "providers:\n  - name: stages\n    image: python:3.11\n    commands:\n      - python3 make_jobs.py\n",
    )
    .expect("write");
    let probe = p.probe("order");
    std::fs::write(
        p.root.join("make_jobs.py"),
        format!(
            r#"import json, os
w = json.load(open(os.environ["DSTACK_WORKFLOW_FILE"]))
names = w["params"]["names"]
jobs = [{{"id": n, "commands": ["echo {{}} >> {probe}".format(n)], "depends_on": names[:i][-1:]}}
        for i, n in enumerate(names)]
print(json.dumps({{"jobs": jobs}}))
"#,
            probe = probe.display()
        ),
    )
    .expect("write");
    p.git(&["add", "-A"]);
    p.git(&["commit", "-q", "-m", "provider"]);
    let plan = p.dstack(&["plan", "staged"]);
    plan.ok().stdout_has("staged/one").stdout_has("staged/two");
    p.run("staged", &[]).ok();
    assert_eq!(p.read_probe("order"), "one\ntwo\n");

    // A provider program that fails stops the run before anything starts.
    std::fs::write(
        p.root.join("make_jobs.py"),
        "raise SystemExit('no stages today')\n",
    )
    .expect("write");
    let out = p.run("staged", &[]);
    out.code(1)
        .stderr_has(
            "provider `stages` (from `.dstack/providers.yaml`) failed for workflow `staged`",
        )
        .stderr_has("no stages today");
    assert_eq!(p.ps_all().len(), 1, "no run recorded for the failed plan");
}

#[test]
fn a_corrupt_repository_is_a_clear_error_and_records_nothing() {
    let p = Project::new(
        r"
workflows:
  - name: hello
    provider: docker
    image: ubuntu
    commands:
      - echo hello > @PROBE/ran
",
    );
    // A HEAD that names no branch or commit.
    std::fs::write(p.root.join(".git/HEAD"), "not a reference\n").expect("write");
    let out = p.run("hello", &[]);
    out.code(1)
        .stderr_has("cannot read HEAD of the repository")
        .stderr_has("corrupted");
    assert_eq!(p.count("ran"), 0, "nothing may run");
    assert_eq!(p.ps_all().len(), 0, "no run may be recorded");
}

#[test]
fn a_provider_repository_at_a_relative_path_plans_from_the_project_folder_without_dash_c() {
    let p = Project::new(
        r"
workflows:
  - name: w
    provider:
      repo: ../providers-repo@v1
      name: hello
",
    );
    // The provider repository, next to the project: its program reads its input file.
    let repo = p.tmp.path().join("providers-repo");
    std::fs::create_dir_all(repo.join(".dstack")).expect("mkdir");
    std::fs::write(
        repo.join(".dstack/providers.yaml"),
        "providers:\n  - name: hello\n    image: dstack-busybox:test\n    commands: [\"sh make.sh\"]\n",
    )
    .expect("write");
    // A shell program: it runs on the host, or in its image when a Docker engine answers.
    std::fs::write(
        repo.join("make.sh"),
        r#"w=$(sed -n 's/^ *"workflow": "\(.*\)",$/\1/p' "$DSTACK_WORKFLOW_FILE")
echo "{\"jobs\": [{\"commands\": [\"echo $w\"]}]}"
"#,
    )
    .expect("write");
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t.invalid",
            "commit",
            "-q",
            "-m",
            "v1",
        ],
        &["tag", "v1"],
    ] {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .status()
            .expect("git");
        assert!(ok.success());
    }
    // No `-C`: the default `.` is relative, as a user types it.
    let out = Command::new(env!("CARGO_BIN_EXE_dstack"))
        .args(["plan", "w", "--format", "json"])
        .current_dir(&p.root)
        .env_remove("DSTACK_STATE_DIR")
        .output()
        .expect("dstack starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(plan["jobs"][0]["commands"][0], "echo w");
    // The provider cache lives in the state folder and never shows up in `git status`.
    assert!(p.root.join(".dstack/state/providers/repos").is_dir());
    assert_eq!(
        p.git(&["status", "--porcelain", "--untracked-files=all"]),
        ""
    );
    // The program ran in a copy: the cached checkout is as the commit has it.
    let trees = p.root.join(".dstack/state/providers/trees");
    let tree = std::fs::read_dir(&trees)
        .expect("trees")
        .map(|e| e.expect("entry").path())
        .find(|t| {
            !t.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .expect("a checkout");
    let mut names: Vec<String> = std::fs::read_dir(&tree)
        .expect("tree")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".dstack", "make.sh"]);
}
