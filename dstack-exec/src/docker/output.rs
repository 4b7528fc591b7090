//! A job's output through files: the container's stdout and stderr are appended to two files
//! on a bind mount, which dstack follows as they grow. The engine copies nothing (its attach
//! stream moved every byte through containerd's FIFOs and dockerd, at about half the speed).
//!
//! - **Where.** On the host, `STORE/runs/RUN/docker/CONTAINER/{stdout,stderr}` (beside the
//!   job's tree, [`host_dir`]); in the container, the folder is mounted at [`OUTPUT_DIR`] and
//!   the job's shell starts with `exec >>OUTPUT_DIR/stdout 2>>OUTPUT_DIR/stderr`. Both files
//!   exist before the container does, writable by the container's user ([`create`]), and are
//!   opened by dstack before it starts, never again by path (the folder may be the
//!   container user's: see [`Follower::start`]).
//! - **Following.** One thread per job reads both files from where it stopped (chunks of
//!   256 KiB, at most 4 MiB per file and turn), and when there is nothing new, waits 2 ms,
//!   doubling up to 50 ms. Lines go to the [`Reporter`] as they did from the attach stream:
//!   stdout and stderr apart, each in order. After the container has exited, [`Follower::drain`]
//!   reads both files to their end (nothing in the container can write any more: its init
//!   has exited, and with it every process of its PID namespace) and reports the unfinished
//!   last lines.
//! - **Disk.** What was reported is given back to the file system as it goes (holes punched
//!   every 8 MiB, the files' lengths unchanged), so a job printing gigabytes holds a few MiB of
//!   disk, not gigabytes. Not with `keep-containers`: the files are kept whole.
//! - **Truncation.** A command that opens `/dev/stdout` or `/dev/stderr` with `>` truncates the
//!   file (with the attach stream it was a pipe): the follower sees the file shorter than what it
//!   read, says so once, and reads the file again from its start. Output written between its
//!   last read and the truncation is lost.
//! - **Cleanup.** The folder is removed with the container ([`remove`]); with
//!   `keep-containers`, both stay. A container left by a crashed driver is found by its mount
//!   ([`dir_of`]) when it is reaped.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bollard::Docker;
use dstack_core::run::{Reporter, Stream};

use crate::output::FileTail;

/// Where the output folder is mounted in the container.
pub const OUTPUT_DIR: &str = "/.dstack-output";

/// At most this much is read of one file before the other one is read.
const BURST: u64 = 4 << 20;
/// Disk blocks of what was reported are given back every time this much more was reported.
const RELEASE_EVERY: u64 = 8 << 20;
/// Waits between reads that found nothing: from the first to the last, doubling.
const IDLE_FIRST: Duration = Duration::from_millis(2);
const IDLE_LAST: Duration = Duration::from_millis(50);

/// The host folder of container `name`'s output files: `STORE/runs/RUN/docker/NAME` when the
/// tree is a run's (`STORE/runs/RUN/jobs/JOB`), else `.NAME.output` beside the tree.
pub(crate) fn host_dir(tree: &Path, name: &str) -> PathBuf {
    let jobs = tree.parent();
    match jobs.and_then(Path::parent) {
        Some(run) if jobs.and_then(Path::file_name).is_some_and(|n| n == "jobs") => {
            run.join("docker").join(name)
        }
        _ => jobs.unwrap_or(tree).join(format!(".{name}.output")),
    }
}

/// Whether `dir` is an output folder of container `name` (what [`host_dir`] gives).
fn is_output_dir(dir: &Path, name: &str) -> bool {
    dir.file_name().is_some_and(|n| {
        n.to_str()
            .is_some_and(|n| n == name || n == format!(".{name}.output"))
    })
}

/// The container's user as numbers, when it is given as numbers (`UID` or `UID:GID`).
fn numeric_user(user: Option<&str>) -> Option<(u32, Option<u32>)> {
    let user = user?;
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = uid.parse().ok()?;
    let gid = match gid {
        Some(g) => Some(g.parse().ok()?),
        None => None,
    };
    Some((uid, gid))
}

/// Creates the folder `dir` and the empty files `stdout` and `stderr` in it, writable by the
/// container's `user` (`None`: the image's). A user given as numbers that is us, or that we
/// (root) make the owner, gets private files (folder 0700, files 0600); any other user (a name,
/// the image's) gets files that everyone may append to but only we may read (0622, in a
/// folder 0711 whose content cannot be listed).
pub(crate) fn create(dir: &Path, user: Option<&str>) -> Result<(), String> {
    let fail = |what: &Path, e: std::io::Error| format!("cannot create `{}`: {e}", what.display());
    let mut attempts = 0;
    loop {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(parent, e))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            // The run's `docker` folder was removed in between, by the clean-up of its last
            // other job ([`remove`]): made again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 10 => attempts += 1,
            made => break made.map_err(|e| fail(dir, e))?,
        }
    }
    let me = std::fs::metadata(dir).map_err(|e| fail(dir, e))?.uid();
    let owner = match numeric_user(user) {
        Some((uid, _)) if uid == me => Some(None),
        Some((uid, gid)) if me == 0 => Some(Some((uid, gid))),
        _ => None,
    };
    let (dir_mode, file_mode) = if owner.is_some() {
        (0o700, 0o600)
    } else {
        (0o711, 0o622)
    };
    let set = |path: &Path, mode: u32| -> Result<(), String> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail(path, e))?;
        if let Some(Some((uid, gid))) = owner {
            std::os::unix::fs::chown(path, Some(uid), gid).map_err(|e| fail(path, e))?;
        }
        Ok(())
    };
    for name in ["stdout", "stderr"] {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| fail(&path, e))?;
        set(&path, file_mode)?;
    }
    set(dir, dir_mode)
}

/// Removes an output folder (gone already is fine), and the run's `docker` folder with its
/// last one.
pub(crate) fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove the output files `{}`: {e}", dir.display());
    }
    // `STORE/runs/RUN/docker/NAME` (not `.NAME.output` beside a tree elsewhere, whose folder
    // is not ours): the folder goes when it is empty (other jobs' folders keep it).
    let in_run = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.'));
    if let Some(parent) = dir.parent()
        && in_run
        && parent.file_name().is_some_and(|n| n == "docker")
    {
        let _ = std::fs::remove_dir(parent);
    }
}

/// The output folder of a container (by name or id), read from its mounts: for containers
/// that a crashed driver left.
pub(crate) async fn dir_of(docker: &Docker, container: &str) -> Option<PathBuf> {
    let inspected = docker.inspect_container(container, None).await.ok()?;
    let name = inspected.name?;
    let name = name.trim_start_matches('/');
    let source = inspected
        .mounts?
        .into_iter()
        .find(|m| m.destination.as_deref() == Some(OUTPUT_DIR))?
        .source?;
    let dir = PathBuf::from(source);
    is_output_dir(&dir, name).then_some(dir)
}

/// Follows a job's two output files in a thread of its own. Dropped without [`drain`]
/// (the job's future dropped, the start failed), the thread stops at its next turn.
///
/// [`drain`]: Follower::drain
pub(crate) struct Follower {
    control: Option<mpsc::Sender<()>>,
    thread: Option<tokio::task::JoinHandle<()>>,
}

impl Follower {
    /// Starts following the files in `dir`; `release`: give back the disk blocks of what was
    /// reported.
    ///
    /// Both files are opened here, before the container starts, and only here: the folder
    /// may belong to the container's user, who could put a symbolic link (to a file of the
    /// host, which dstack would then read, and punch holes in) or a FIFO (on which a reader
    /// would wait forever) in place of a file once the job runs.
    pub(crate) fn start(
        dir: &Path,
        reporter: Arc<dyn Reporter>,
        release: bool,
    ) -> Result<Follower, String> {
        let (control, rx) = mpsc::channel();
        let tail = |name: &str, stream: Stream| {
            let tail = FileTail::new(dir.join(name), stream, 0, true);
            let mut tail = if release { tail.releasing() } else { tail };
            tail.open_now()
                .map_err(|e| format!("cannot open `{}`: {e}", tail.path().display()))?;
            Ok::<_, String>(tail)
        };
        let tails = [
            tail("stdout", Stream::Stdout)?,
            tail("stderr", Stream::Stderr)?,
        ];
        let thread =
            tokio::task::spawn_blocking(move || follow(tails, reporter.as_ref(), release, &rx));
        Ok(Follower {
            control: Some(control),
            thread: Some(thread),
        })
    }

    /// The container has exited: reads both files to their end, reports the last lines.
    pub(crate) async fn drain(mut self) {
        // The sender lives until the thread is done: its end would mean "stop now".
        let control = self.control.take();
        if let Some(control) = &control {
            let _ = control.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.await;
        }
        drop(control);
    }
}

/// The follower's loop: reads what is new until told to drain (`()`: then to the end) or
/// until its sender is gone (then at once).
fn follow(
    mut tails: [FileTail; 2],
    reporter: &dyn Reporter,
    release: bool,
    control: &mpsc::Receiver<()>,
) {
    let mut released = [0u64; 2];
    let mut release = release;
    let mut told = [false; 2];
    let mut draining = false;
    let mut idle = IDLE_FIRST;
    loop {
        let mut progress = false;
        for (i, tail) in tails.iter_mut().enumerate() {
            match tail.read(BURST, reporter) {
                Ok(read) if read.truncated => {
                    if !told[i] {
                        told[i] = true;
                        reporter.note(&format!(
                            "the job truncated its {} (a command that opens /dev/{} with `>`?): output written just before may be missing",
                            name(i),
                            name(i)
                        ));
                    }
                    tail.restart();
                    released[i] = 0;
                    progress = true;
                }
                Ok(read) => progress |= read.bytes > 0,
                Err(e) => {
                    if !told[i] {
                        told[i] = true;
                        reporter.note(&format!(
                            "cannot read the job's {} from `{}`: {e}",
                            name(i),
                            tail.path().display()
                        ));
                    }
                }
            }
            if release && tail.reported() >= released[i] + RELEASE_EVERY {
                match tail.release_reported(released[i]) {
                    Ok((to, true)) => released[i] = to,
                    Ok((_, false)) => release = false,
                    Err(e) => {
                        tracing::debug!("cannot punch holes in `{}`: {e}", tail.path().display());
                        release = false;
                    }
                }
            }
        }
        if progress {
            idle = IDLE_FIRST;
            if draining {
                continue;
            }
            match control.try_recv() {
                Ok(()) => draining = true,
                Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            continue;
        }
        if draining {
            break;
        }
        match control.recv_timeout(idle) {
            Ok(()) => draining = true,
            Err(mpsc::RecvTimeoutError::Timeout) => idle = (idle * 2).min(IDLE_LAST),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
    for tail in &mut tails {
        tail.finish(reporter);
    }
}

fn name(i: usize) -> &'static str {
    if i == 0 { "stdout" } else { "stderr" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_beside_the_tree() {
        assert_eq!(
            host_dir(Path::new("/s/runs/r-1/jobs/train__0"), "dstack-r-1-x"),
            Path::new("/s/runs/r-1/docker/dstack-r-1-x")
        );
        assert_eq!(
            host_dir(Path::new("/tmp/scratch/tree"), "dstack-p"),
            Path::new("/tmp/scratch/.dstack-p.output")
        );
        assert!(is_output_dir(
            Path::new("/s/runs/r/docker/dstack-a"),
            "dstack-a"
        ));
        assert!(is_output_dir(
            Path::new("/tmp/.dstack-a.output"),
            "dstack-a"
        ));
        assert!(!is_output_dir(Path::new("/home/me"), "dstack-a"));
    }

    #[test]
    fn users_as_numbers() {
        assert_eq!(numeric_user(Some("1000")), Some((1000, None)));
        assert_eq!(numeric_user(Some("1000:50")), Some((1000, Some(50))));
        assert_eq!(numeric_user(Some("nobody")), None);
        assert_eq!(numeric_user(Some("1000:staff")), None);
        assert_eq!(numeric_user(None), None);
    }

    #[derive(Default)]
    struct Collect(std::sync::Mutex<Vec<String>>);

    impl Reporter for Collect {
        fn started(&self, _: &str) {}
        fn log(&self, _: Stream, bytes: &[u8]) {
            let text = String::from_utf8_lossy(bytes).into_owned();
            self.0.lock().expect("lock").push(text);
        }
        fn note(&self, _: &str) {}
    }

    /// The folder may be the container user's: what it puts there once the job runs (a
    /// symbolic link to a file of the host, a FIFO) is never opened; the files are opened
    /// before the start, or the job does not start.
    #[tokio::test]
    async fn files_swapped_by_the_job_are_not_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        let secret = root.path().join("secret");
        std::fs::write(&secret, "host secret\n").expect("secret");
        let dir = root.path().join("docker/dstack-x");
        create(&dir, None).expect("create");

        // Swapped before the start: refused.
        std::fs::remove_file(dir.join("stdout")).expect("rm");
        std::os::unix::fs::symlink(&secret, dir.join("stdout")).expect("symlink");
        let r = Arc::new(Collect::default());
        let e = Follower::start(&dir, r.clone(), true)
            .err()
            .expect("a symlink");
        assert!(e.contains("stdout"), "{e}");
        std::fs::remove_file(dir.join("stdout")).expect("rm");
        std::fs::write(dir.join("stdout"), "").expect("file");
        std::fs::remove_file(dir.join("stderr")).expect("rm");
        nix::unistd::mkfifo(&dir.join("stderr"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        let e = Follower::start(&dir, r.clone(), true)
            .err()
            .expect("a fifo");
        assert!(
            e.contains("stderr") && e.contains("not a regular file"),
            "{e}"
        );
        std::fs::remove_file(dir.join("stderr")).expect("rm");
        std::fs::write(dir.join("stderr"), "").expect("file");

        // Swapped once it runs: the files opened at the start are the ones read.
        let follower = Follower::start(&dir, r.clone(), true).expect("start");
        let mut job = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("stdout"))
            .expect("the job's stdout");
        std::fs::remove_file(dir.join("stdout")).expect("rm");
        std::os::unix::fs::symlink(&secret, dir.join("stdout")).expect("symlink");
        std::io::Write::write_all(&mut job, b"from the job\n").expect("write");
        follower.drain().await;
        assert_eq!(*r.0.lock().expect("lock"), ["from the job\n"]);
        assert_eq!(
            std::fs::read_to_string(&secret).expect("secret"),
            "host secret\n"
        );
        remove(&dir);
        assert!(secret.exists());
    }

    #[test]
    fn files_for_the_user() {
        use std::os::unix::fs::MetadataExt as _;
        let root = tempfile::tempdir().expect("tempdir");
        let me = std::fs::metadata(root.path()).expect("meta").uid();
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").mode() & 0o777;

        let private = root.path().join("a/docker/mine");
        create(&private, Some(&me.to_string())).expect("create");
        assert_eq!(mode(&private), 0o700);
        assert_eq!(mode(&private.join("stdout")), 0o600);
        assert_eq!(
            std::fs::metadata(private.join("stderr"))
                .expect("meta")
                .len(),
            0
        );

        let named = root.path().join("named");
        create(&named, Some("nobody")).expect("create");
        assert_eq!(mode(&named), 0o711);
        assert_eq!(mode(&named.join("stdout")), 0o622);
        assert_eq!(mode(&named.join("stderr")), 0o622);
        // Never two jobs in one folder.
        assert!(create(&named, None).is_err());
        remove(&named);
        assert!(!named.exists());
        remove(&named);
    }

    /// The run's `docker` folder goes with the files of its last job; a folder that is not a
    /// run's stays.
    #[test]
    fn the_docker_folder_goes_with_its_last_job() {
        let root = tempfile::tempdir().expect("tempdir");
        let docker = root.path().join("runs/r-1/docker");
        let (a, b) = (docker.join("dstack-a"), docker.join("dstack-b"));
        create(&a, None).expect("create");
        create(&b, None).expect("create");
        remove(&a);
        assert!(b.join("stdout").exists());
        remove(&b);
        assert!(!docker.exists());
        assert!(root.path().join("runs/r-1").exists());
        // Made again for a later job.
        create(&a, None).expect("create");
        remove(&a);
        assert!(!docker.exists());

        let elsewhere = root.path().join("docker");
        let c = host_dir(&elsewhere.join("tree"), "dstack-c");
        create(&c, None).expect("create");
        remove(&c);
        assert!(!c.exists() && elsewhere.exists());
    }
}
