//! One job in one container: create, attach, start, wait, read the state, clean up.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use dstack_core::run::{FailureReason, Input, JobOutcome, JobRequest, Reporter, Stream, artifacts};
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::client::{Address, DockerError, describe, status};
use super::config::{PullPolicy, UserConfig};
use super::gpu::{self, Lease};
use super::output::{self, Follower};
use super::spec::{self, Context};
use super::{Inner, images};
use crate::download;
use crate::output::Lines;

fn failed(message: impl Into<String>) -> JobOutcome {
    JobOutcome::Failed(FailureReason::Error {
        message: message.into(),
    })
}

impl Inner {
    pub(super) async fn run_job(
        &self,
        mut request: JobRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> JobOutcome {
        if let Some(d) = request.job.download.clone() {
            // Downloads stream on the host, into the job's tree, as with the local executor.
            let working_dir = request.working_dir();
            if !request.inputs.is_empty() {
                let inputs = request.inputs.clone();
                let wd = working_dir.clone();
                match tokio::task::spawn_blocking(move || artifacts::hand_over(&inputs, &wd)).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => return JobOutcome::Failed(reason),
                    Err(e) => return failed(format!("handing over inputs failed: {e}")),
                }
            }
            return download::run(&d, &working_dir, reporter, cancel).await;
        }
        let image = match self.image_of(&request.job) {
            Ok(image) => image,
            Err(e) => return failed(e.with_help()),
        };
        // The engine resolves mount sources on its own: they must be absolute.
        match absolute_paths(&mut request) {
            Ok(()) => {}
            Err(message) => return failed(message),
        }

        // The image: present, else pulled (one pull per image at a time).
        match self.image_ready(&image, reporter.as_ref(), &cancel).await {
            Ok(true) => {}
            Ok(false) => return JobOutcome::Cancelled,
            Err(e) => return failed(e.with_help()),
        }

        // GPUs: free ones that match, waited for if need be.
        let lease: Option<Lease> = if request.job.resources.gpu_count() > 0 {
            let pool = match self.gpu_pool(&image).await {
                Ok(pool) => pool,
                Err(e) => return failed(e.with_help()),
            };
            match pool.acquire(&request.job, &cancel).await {
                Ok(Some(lease)) => Some(lease),
                Ok(None) => return JobOutcome::Cancelled,
                Err(e) => return failed(e.with_help()),
            }
        } else {
            None
        };

        // Mount points of the inputs are made by us, owned by the tree's owner, rather than by
        // the engine (as root) inside the tree.
        let tree_owner = {
            let inputs = request.inputs.clone();
            let working_dir = request.working_dir();
            let tree = request.tree.clone();
            match tokio::task::spawn_blocking(move || {
                make_mount_points(&tree, &working_dir, &inputs)?;
                std::fs::metadata(&tree)
                    .map(|m| (m.uid(), m.gid()))
                    .map_err(|e| format!("cannot read `{}`: {e}", tree.display()))
            })
            .await
            {
                Ok(Ok(owner)) => owner,
                Ok(Err(message)) => return failed(message),
                Err(e) => return failed(format!("preparing the mounts failed: {e}")),
            }
        };
        let (user, home_in_tmp) = self.user_for(tree_owner).await;
        let store = spec::store_id(&spec::store_dir_of(&request.tree));
        let name = spec::container_name(&request.run, &request.job.id, request.attempt);
        let files = output::host_dir(&request.tree, &name);
        let context = Context {
            store: store.clone(),
            user,
            home_in_tmp,
            gpus: lease.as_ref().map(Lease::device_ids).unwrap_or_default(),
            output: Some(files.clone()),
        };
        let body = spec::container_body(&request, &image, &self.config, &context);

        // What an earlier driver of this run left for this job goes first.
        self.sweep(&store, &request.run, &request.job.id).await;
        if cancel.is_cancelled() {
            return JobOutcome::Cancelled;
        }
        // The output files exist, writable by the container's user, before the container.
        {
            let dir = files.clone();
            let user = context.user.clone();
            match tokio::task::spawn_blocking(move || output::create(&dir, user.as_deref())).await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    output::remove(&files);
                    return failed(format!("cannot prepare the job's output files: {message}"));
                }
                Err(e) => return failed(format!("preparing the output files failed: {e}")),
            }
        }
        // Recorded before the container exists: whatever happens next, `reap` can find it.
        reporter.started(&name);
        // Armed before the request: a future dropped while creating still cleans up.
        let guard = Guard::new(self, &name, &files);
        if self.config.keep_containers {
            reporter.note(&format!(
                "the output of container {name} is kept in {}",
                files.display()
            ));
        }
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self.docker.create_container(Some(options), body).await;
        if let Err(e) = created {
            guard.forget();
            return failed(
                self.engine_error(
                    format!("create the container of job `{}`", request.job.id),
                    &e,
                )
                .to_string(),
            );
        }
        for warning in created.iter().flat_map(|c| &c.warnings) {
            reporter.note(&format!("Docker: {warning}"));
        }
        let outcome = self
            .attach_start_wait(&request, &name, &files, reporter.clone(), &cancel)
            .await;
        guard.finish().await;
        drop(lease);
        outcome
    }

    /// `None` for the image's user, else `UID:GID`; and whether `HOME` should be `/tmp`.
    async fn user_for(&self, (uid, gid): (u32, u32)) -> (Option<String>, bool) {
        match &self.config.user {
            UserConfig::Image => (None, false),
            UserConfig::Named(user) => {
                let numeric = user
                    .split(':')
                    .next()
                    .is_some_and(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()));
                (
                    Some(user.clone()),
                    numeric && user != "0" && !user.starts_with("0:"),
                )
            }
            UserConfig::Auto => {
                if uid == 0 {
                    return (None, false);
                }
                let facts = self.facts().await;
                if facts.rootless || facts.desktop {
                    (None, false)
                } else {
                    (Some(format!("{uid}:{gid}")), true)
                }
            }
        }
    }

    /// Whether the image is ready (`Ok(false)`: cancelled while pulling).
    async fn image_ready(
        &self,
        image: &str,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<bool, DockerError> {
        let lock = {
            let mut pulls = self.pulls.lock().await;
            pulls.entry(image.to_owned()).or_default().clone()
        };
        let pull = async {
            let _one_at_a_time = lock.lock().await;
            let present = match self.docker.inspect_image(image).await {
                Ok(_) => true,
                Err(e) if status(&e) == Some(404) => false,
                Err(e) => return Err(self.engine_error(format!("look up image `{image}`"), &e)),
            };
            let pull = match self.config.pull {
                PullPolicy::Always => true,
                PullPolicy::Missing => !present,
                PullPolicy::Never => false,
            };
            if !pull && !present {
                return Err(DockerError::ImageUnavailable {
                    image: image.to_owned(),
                    jobs: String::new(),
                    reason: "pulling is disabled (`pull: never`)".into(),
                    never_pull: true,
                });
            }
            if pull {
                images::pull(&self.docker, image, |line| reporter.note(&line))
                    .await
                    .map_err(|reason| DockerError::ImageUnavailable {
                        image: image.to_owned(),
                        jobs: String::new(),
                        reason,
                        never_pull: false,
                    })?;
            }
            Ok(())
        };
        tokio::select! {
            r = pull => r.map(|()| true),
            () = cancel.cancelled() => Ok(false),
        }
    }

    async fn attach_start_wait(
        &self,
        request: &JobRequest,
        name: &str,
        files: &Path,
        reporter: Arc<dyn Reporter>,
        cancel: &CancellationToken,
    ) -> JobOutcome {
        let job = &request.job;
        // Attached before the start: what the shell or the init say before the output goes
        // to the files (an error opening them) is not missed either.
        let attach = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let output = match self.docker.attach_container(name, Some(attach)).await {
            Ok(attached) => attached.output,
            Err(e) => {
                return failed(
                    self.engine_error(format!("attach to the container of job `{}`", job.id), &e)
                        .to_string(),
                );
            }
        };
        let pump = tokio::spawn(pump(output, reporter.clone()));
        // Kept files are kept whole; others give back what was read as it goes.
        let follower = match Follower::start(files, reporter.clone(), !self.config.keep_containers)
        {
            Ok(follower) => follower,
            Err(message) => {
                pump.abort();
                return failed(format!("cannot read the job's output files: {message}"));
            }
        };
        if cancel.is_cancelled() {
            pump.abort();
            return JobOutcome::Cancelled;
        }
        if let Err(e) = self.docker.start_container(name, None).await {
            pump.abort();
            let detail = describe(&e);
            if gpu::no_nvidia_runtime(&detail) {
                return failed(
                    DockerError::NoNvidiaRuntime {
                        host: self.host(),
                        detail,
                    }
                    .with_help(),
                );
            }
            return failed(format!(
                "the Docker engine at {} cannot start the container of job `{}`: {detail}",
                self.host(),
                job.id
            ));
        }
        for line in published(&job.ports, self.config.publish_address()) {
            reporter.note(&line);
        }

        let wait = wait_for_exit(&self.docker, name);
        tokio::pin!(wait);
        let cancelled = tokio::select! {
            _ = &mut wait => false,
            () = cancel.cancelled() => true,
        };
        if cancelled {
            self.stop(name).await;
            let _ = wait.await;
        }
        // The output ends when the container has exited and everything was read. The attach
        // stream ends with the container: waiting for it first covers a wait that failed
        // while the container still ran.
        let _ = pump.await;
        follower.drain().await;
        if cancelled {
            return JobOutcome::Cancelled;
        }
        let state = match self.docker.inspect_container(name, None).await {
            Ok(inspected) => inspected.state.unwrap_or_default(),
            Err(e) => {
                return JobOutcome::Failed(FailureReason::ExecutorLost {
                    detail: format!(
                        "the container of job `{}` cannot be inspected: {}",
                        job.id,
                        describe(&e)
                    ),
                });
            }
        };
        let code = state.exit_code.unwrap_or(-1);
        let mut oom = state.oom_killed.unwrap_or(false);
        if code != 0 && !oom && job.resources.memory_bytes.is_some() {
            oom = self.late_oom(name, code).await;
        }
        if code == 0 {
            if oom {
                reporter.note("a process of the job was killed for using more memory than its limit, but the job succeeded");
            }
            return JobOutcome::Succeeded;
        }
        if oom {
            return JobOutcome::Failed(FailureReason::OutOfMemory {
                limit_bytes: job.resources.memory_bytes,
            });
        }
        if code == 137
            && let Some(limit) = job.resources.memory_bytes
        {
            reporter.note(&format!(
                "exit code 137: the job was killed with SIGKILL; with a memory limit of {}, most likely for using more (the engine did not report an out-of-memory kill, which happens when it comes right after the start)",
                dstack_core::resources::format_bytes(limit)
            ));
        }
        if let Some(error) = state.error.filter(|e| !e.is_empty()) {
            return failed(format!("the container of job `{}` failed: {error}", job.id));
        }
        JobOutcome::Failed(FailureReason::ExitCode {
            code: i32::try_from(code).unwrap_or(-1),
        })
    }

    /// The engine learns of an OOM kill through an event of its own, which may come after the
    /// container's exit (moby handles the two independently): a failed job with a memory
    /// limit looks again for a moment, longer when it died of SIGKILL (code 137) as OOM kills
    /// do.
    async fn late_oom(&self, name: &str, code: i64) -> bool {
        let looks = if code == 137 { 20 } else { 5 };
        for _ in 0..looks {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            match self.docker.inspect_container(name, None).await {
                Ok(c) if c.state.as_ref().and_then(|s| s.oom_killed) == Some(true) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Stops a container: SIGTERM, SIGKILL after the stop timeout, or at once on `hurry`.
    async fn stop(&self, name: &str) {
        let grace = i32::try_from(self.config.stop_timeout().as_secs()).unwrap_or(i32::MAX);
        let stop = self.docker.stop_container(
            name,
            Some(StopContainerOptionsBuilder::default().t(grace).build()),
        );
        tokio::select! {
            result = stop => {
                if let Err(e) = result
                    && !matches!(status(&e), Some(304 | 404))
                {
                    tracing::warn!("cannot stop container `{name}`: {}", describe(&e));
                }
            }
            () = self.hurry.cancelled() => {}
        }
        // Whether it stopped or not (hurry, an engine error): make sure.
        let kill = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let _ = self.docker.kill_container(name, Some(kill)).await;
    }
}

/// Where the container's ports are published: each on the same port of `address` (the
/// engine refuses to start the container when one is taken, so after the start this is
/// what holds).
fn published(ports: &[u16], address: &str) -> Vec<String> {
    ports
        .iter()
        .map(|port| format!("port {port} is published at {address}:{port}"))
        .collect()
}

/// Waits until the container is not running; its exit code (engine errors as `Err`).
async fn wait_for_exit(docker: &Docker, name: &str) -> Result<i64, String> {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    match docker.wait_container(name, Some(options)).next().await {
        Some(Ok(r)) => Ok(r.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(describe(&e)),
        None => Err("the engine closed the wait".into()),
    }
}

/// Sends what the container writes to its own stdout and stderr (before the script sends its
/// output to the files, or when it writes to them directly: the init) to the reporter, line by
/// line, stdout and stderr apart.
async fn pump(
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    reporter: Arc<dyn Reporter>,
) {
    let mut out = Lines::new(Stream::Stdout);
    let mut err = Lines::new(Stream::Stderr);
    while let Some(Ok(chunk)) = output.next().await {
        match chunk {
            LogOutput::StdErr { message } => err.push(&message, reporter.as_ref()),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.push(&message, reporter.as_ref());
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    out.flush(reporter.as_ref());
    err.flush(reporter.as_ref());
}

/// Makes the request's paths absolute (the engine resolves mount sources itself).
fn absolute_paths(request: &mut JobRequest) -> Result<(), String> {
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|e| format!("cannot resolve `{}`: {e}", p.display()))
    };
    request.tree = absolute(&request.tree)?;
    for input in &mut request.inputs {
        input.source = absolute(&input.source)?;
    }
    Ok(())
}

/// Creates, in the job's tree, an empty folder (or file) where each input will be mounted,
/// replacing what the tree has there (as the local executor's hand-over does). Refuses paths
/// that pass through a symbolic link, which could lead out of the tree.
fn make_mount_points(tree: &Path, working_dir: &Path, inputs: &[Input]) -> Result<(), String> {
    for input in inputs {
        let relative = working_dir
            .strip_prefix(tree)
            .unwrap_or(Path::new(""))
            .join(&input.path);
        let mut at = tree.to_path_buf();
        let components: Vec<Component<'_>> = relative.components().collect();
        for (i, component) in components.iter().enumerate() {
            let Component::Normal(part) = component else {
                continue;
            };
            at.push(part);
            let last = i + 1 == components.len();
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_symlink() && !last => {
                    return Err(format!(
                        "cannot mount artifact `{}` of `{}`: `{}` in the job's tree is a symbolic link",
                        input.path,
                        input.from_job,
                        at.display()
                    ));
                }
                Ok(m) if last => {
                    let removed = if m.is_dir() {
                        std::fs::remove_dir_all(&at)
                    } else {
                        std::fs::remove_file(&at)
                    };
                    removed.map_err(|e| {
                        format!(
                            "cannot replace `{}` with the artifact of `{}`: {e}",
                            input.path, input.from_job
                        )
                    })?;
                }
                Ok(m) if !m.is_dir() => {
                    return Err(format!(
                        "cannot mount artifact `{}` of `{}`: `{}` in the job's tree is a file",
                        input.path,
                        input.from_job,
                        at.display()
                    ));
                }
                _ => {}
            }
        }
        let made = if input.source.is_dir() {
            std::fs::create_dir_all(&at)
        } else {
            at.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::File::create(&at).map(drop))
        };
        made.map_err(|e| format!("cannot create `{}`: {e}", at.display()))?;
    }
    Ok(())
}

/// Removes a job's container if the job's future is dropped before it finished (a runtime
/// shut down, an aborted task): from a thread of its own, with a client of its own.
struct Guard {
    armed: Option<(Address, ClientVersion, String, bool)>,
    docker: Docker,
    /// The output files, removed after the container unless it is kept.
    files: PathBuf,
}

impl Guard {
    fn new(inner: &Inner, name: &str, files: &Path) -> Guard {
        Guard {
            armed: Some((
                inner.address.clone(),
                inner.version,
                name.to_owned(),
                inner.config.keep_containers,
            )),
            docker: inner.docker.clone(),
            files: files.to_path_buf(),
        }
    }

    /// No container to clean up (it was never created): only the output files.
    fn forget(mut self) {
        self.armed = None;
        output::remove(&self.files);
    }

    /// The job ended: remove its container and output files (or, kept, make sure it is
    /// stopped).
    async fn finish(mut self) {
        if let Some((_, _, name, keep)) = self.armed.take() {
            super::dispose(&self.docker, &name, keep).await;
            if !keep {
                let files = self.files.clone();
                let _ = tokio::task::spawn_blocking(move || output::remove(&files)).await;
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some((address, version, name, keep)) = self.armed.take() else {
            return;
        };
        let files = self.files.clone();
        let cleanup = move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(docker) = address.client(&version, std::time::Duration::from_secs(30)) {
                    super::dispose(&docker, &name, keep).await;
                }
            });
            if !keep {
                output::remove(&files);
            }
        };
        // Joined, so that a process on its way out still removes the container.
        let _ = std::thread::spawn(cleanup).join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_replace_and_refuse_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        let source = dir.path().join("store/data");
        std::fs::create_dir_all(&source).expect("source");
        std::fs::create_dir_all(tree.join("src/data")).expect("tree");
        std::fs::write(tree.join("src/data/old.txt"), "old").expect("old");
        let input = |path: &str| Input {
            from_job: "prepare".into(),
            source: source.clone(),
            path: path.into(),
        };
        make_mount_points(&tree, &tree.join("src"), &[input("data"), input("deep/er")])
            .expect("made");
        assert!(tree.join("src/data").is_dir());
        assert!(!tree.join("src/data/old.txt").exists());
        assert!(tree.join("src/deep/er").is_dir());

        std::os::unix::fs::symlink(dir.path(), tree.join("out")).expect("symlink");
        let e = make_mount_points(&tree, &tree, &[input("out/x")]).expect_err("symlink");
        assert!(e.contains("is a symbolic link"), "{e}");
        // A symlink as the mount point itself is simply replaced.
        std::os::unix::fs::symlink(dir.path(), tree.join("link")).expect("symlink");
        make_mount_points(&tree, &tree, &[input("link")]).expect("replaced");
        assert!(tree.join("link").is_dir() && !tree.join("link").is_symlink());
    }
}
