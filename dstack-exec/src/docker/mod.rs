//! The Docker executor: every job in a container of a Docker engine, through the Engine API
//! (bollard; never the `docker` command).
//!
//! - **Engine.** `docker.host` of the executor configuration, else `DOCKER_HOST`, else
//!   `unix:///var/run/docker.sock`. The API version is negotiated (engines vary: Debian's
//!   20.10 speaks 1.41). [`select`] and [`probe`] are synchronous and answer within
//!   [`client::PING_TIMEOUT`] (a missing socket at once), inside or outside a tokio runtime.
//! - **Before a run** ([`Executor::prepare`]): every image is looked up; one the engine lacks
//!   must be pullable (the registry is asked for its manifest, else a pull is tried), so a
//!   typo fails the run before any job wastes time. Jobs that ask for GPUs need the NVIDIA
//!   runtime and GPUs that match (listed once, see [`gpu`]).
//! - **A job** runs as `/bin/sh -c "set -e; COMMANDS"` with an init as PID 1, in
//!   `/workflow/WORKING_DIR`, where its private tree is mounted read-write; each dependency's
//!   artifact is mounted read-only at its path. `cpu` becomes a CPU quota (NanoCpus), `memory`
//!   a memory limit without swap, `shm_size` the size of `/dev/shm`, `gpu` an NVIDIA device
//!   request with explicit device ids, `ports` bindings on `publish-address`. Output goes to
//!   two files on a bind mount that dstack follows from before the start (nothing is lost),
//!   stdout and stderr apart, line by line (see `output.rs`); what comes before the
//!   redirection is read from the attach stream. The exit code and an OOM kill are read from
//!   the container's state.
//! - **Cleanup.** Containers are named `dstack-RUN-JOB-ATTEMPT-RANDOM` (the name is the job's
//!   executor id, recorded before the container exists) and labelled with store, run, job,
//!   workflow and attempt. Cancellation (Ctrl-C, SIGTERM, `dstack stop`, a timeout) stops the
//!   container (SIGTERM, SIGKILL after `stop-timeout`; at once on [`Executor::hurry`]); every
//!   container is removed after its job unless `keep-containers`. A container that a crashed
//!   driver left behind is removed by [`Executor::reap`] (its name) and, before a job starts,
//!   by its labels, with its output files. If the job's future is dropped without finishing, a
//!   guard removes the container and files from another thread.
//! - **Security.** Never privileged, no Docker socket mounted, Docker's `bridge` network
//!   unless `network` says otherwise, ports published on 127.0.0.1 unless configured, the
//!   user configurable ([`UserConfig`]).
//! - `curl` jobs download on the host, as with the local executor.

pub mod client;
mod config;
pub mod gpu;
mod images;
mod job;
mod output;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use dstack_core::JobSpec;
use dstack_core::run::{Capabilities, Executor, ExecutorError, JobOutcome, JobRequest, Reporter};
use tokio_util::sync::CancellationToken;

pub use client::DockerError;
use client::{Address, describe, status};
pub use config::{DEFAULT_STOP_TIMEOUT, DockerConfig, GpuConfig, PullPolicy, UserConfig};
use gpu::GpuPool;
pub use spec::{
    LABEL_ATTEMPT, LABEL_HELPER, LABEL_JOB, LABEL_RUN, LABEL_STORE, LABEL_WORKFLOW, NAME_PREFIX,
    OUTPUT_DIR, WORKFLOW_DIR, store_id,
};

use crate::Selected;

/// The Docker executor for `--executor docker`.
///
/// # Errors
/// When no engine answers at the configured address.
pub fn select(config: &DockerConfig) -> Result<Selected, ExecutorError> {
    let executor = DockerExecutor::connect(config)?;
    Ok(Selected {
        executor: Arc::new(executor),
        note: None,
    })
}

/// The Docker executor for `auto`: `Err(why)` when no engine answers, so the caller falls
/// back to local processes and says why.
///
/// # Errors
/// When no engine answers.
pub fn probe(config: &DockerConfig) -> Result<Selected, ExecutorError> {
    let executor = DockerExecutor::connect(config)?;
    let note = format!(
        "running jobs in Docker containers (executor `docker`, engine at {})",
        executor.inner.address
    );
    Ok(Selected {
        executor: Arc::new(executor),
        note: Some(note),
    })
}

/// Runs jobs in containers of a Docker engine. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct DockerExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: DockerConfig,
    address: Address,
    version: ClientVersion,
    docker: Docker,
    /// Fired by [`Executor::hurry`]: stopping containers are killed at once.
    hurry: CancellationToken,
    /// What the engine is (rootless, Docker Desktop), asked once.
    facts: tokio::sync::OnceCell<Facts>,
    /// The GPUs to hand out, listed once.
    gpus: tokio::sync::OnceCell<Arc<GpuPool>>,
    /// One pull at a time per image.
    pulls: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What matters about the engine for the user containers run as.
#[derive(Clone, Copy, Debug, Default)]
struct Facts {
    /// Rootless Docker (or Podman): the container's root is the user already.
    rootless: bool,
    /// Docker Desktop: its file sharing maps ownership to the user already.
    desktop: bool,
}

impl DockerExecutor {
    /// Connects to the engine of `config` (see [`DockerConfig::host`]) and negotiates the API
    /// version. Synchronous, bounded by a few seconds; a missing socket fails at once.
    ///
    /// # Errors
    /// An unsupported address, or no engine answering there.
    pub fn connect(config: &DockerConfig) -> Result<DockerExecutor, DockerError> {
        let address = Address::resolve(config.host.as_deref())?;
        let version = address.negotiate()?;
        // Each request's answer may take as long as a graceful stop.
        let timeout = Duration::from_secs(120).max(config.stop_timeout() + Duration::from_secs(60));
        let docker = address.client(&version, timeout)?;
        Ok(DockerExecutor {
            inner: Arc::new(Inner {
                config: config.clone(),
                address,
                version,
                docker,
                hurry: CancellationToken::new(),
                facts: tokio::sync::OnceCell::new(),
                gpus: tokio::sync::OnceCell::new(),
                pulls: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The engine's address (`unix:///var/run/docker.sock`).
    #[must_use]
    pub fn host(&self) -> String {
        self.inner.address.to_string()
    }

    /// The API version spoken with the engine (`1.41`).
    #[must_use]
    pub fn api_version(&self) -> String {
        format!(
            "{}.{}",
            self.inner.version.major_version, self.inner.version.minor_version
        )
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &DockerConfig {
        &self.inner.config
    }
}

impl Inner {
    fn host(&self) -> String {
        self.address.to_string()
    }

    fn engine_error(&self, action: impl Into<String>, e: &bollard::errors::Error) -> DockerError {
        DockerError::Engine {
            host: self.host(),
            action: action.into(),
            detail: describe(e),
        }
    }

    /// The image `job` runs in.
    fn image_of(&self, job: &JobSpec) -> Result<String, DockerError> {
        job.image
            .clone()
            .or_else(|| self.config.default_image.clone())
            .ok_or_else(|| DockerError::NoImage {
                job: job.id.clone(),
            })
    }

    async fn facts(&self) -> Facts {
        *self
            .facts
            .get_or_init(|| async {
                match self.docker.info().await {
                    Ok(info) => Facts {
                        rootless: info
                            .security_options
                            .unwrap_or_default()
                            .iter()
                            .any(|o| o.contains("name=rootless")),
                        desktop: info
                            .operating_system
                            .is_some_and(|os| os.contains("Docker Desktop")),
                    },
                    Err(e) => {
                        tracing::warn!("cannot ask the Docker engine what it is: {}", describe(&e));
                        Facts::default()
                    }
                }
            })
            .await
    }

    /// The GPU pool: configured, or listed with `image` (once).
    async fn gpu_pool(&self, image: &str) -> Result<Arc<GpuPool>, DockerError> {
        self.gpus
            .get_or_try_init(|| async {
                let gpus = match &self.config.gpus {
                    Some(gpus) => gpus.clone(),
                    None => {
                        let image = self.config.gpu_probe_image.as_deref().unwrap_or(image);
                        self.ensure_image_quietly(image, "GPU listing").await?;
                        gpu::discover(&self.docker, &self.host(), image).await?
                    }
                };
                Ok(Arc::new(GpuPool::new(gpus)))
            })
            .await
            .cloned()
    }

    /// Makes sure the engine has `image` (pulling it without progress lines): for helper
    /// containers and the checks before a run.
    async fn ensure_image_quietly(&self, image: &str, jobs: &str) -> Result<(), DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(self.engine_error(format!("look up image `{image}`"), &e)),
        }
        let unavailable = |reason: String, never_pull: bool| DockerError::ImageUnavailable {
            image: image.to_owned(),
            jobs: jobs.to_owned(),
            reason,
            never_pull,
        };
        if self.config.pull == PullPolicy::Never {
            return Err(unavailable(
                "pulling is disabled (`pull: never`)".into(),
                true,
            ));
        }
        images::pull(&self.docker, image, |line| tracing::info!("{line}"))
            .await
            .map_err(|reason| unavailable(reason, false))
    }

    /// Checks that `image` is on the engine or can be pulled; pulls it now only when the
    /// registry cannot say so without a pull (the pull with progress happens in the job).
    async fn check_image(&self, image: &str, jobs: &str) -> Result<(), DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(self.engine_error(format!("look up image `{image}`"), &e)),
        }
        if self.config.pull != PullPolicy::Never
            && self
                .docker
                .inspect_registry_image(image, None)
                .await
                .is_ok()
        {
            return Ok(());
        }
        // The registry did not answer for it (unknown image, no registry, a login needed,
        // or a mirror the distribution endpoint does not use): a real pull says which.
        self.ensure_image_quietly(image, jobs).await
    }

    /// Removes (or, with `keep-containers`, kills) containers of this store's `run` and `job`
    /// that an earlier driver left.
    async fn sweep(&self, store: &str, run: &str, job: &str) {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_STORE}={store}"),
                format!("{LABEL_RUN}={run}"),
                format!("{LABEL_JOB}={job}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(found) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        for container in found {
            if let Some(id) = container.id {
                tracing::info!(%run, %job, "removing container {id} left by an earlier driver");
                self.dispose(&id).await;
            }
        }
    }

    /// Removes a container (killing it first if it runs) and its output files, or with
    /// `keep-containers` only kills it. Errors are logged: the container may be gone already.
    async fn dispose(&self, name: &str) {
        let keep = self.config.keep_containers;
        let files = if keep {
            None
        } else {
            output::dir_of(&self.docker, name).await
        };
        dispose(&self.docker, name, keep).await;
        if let Some(dir) = files {
            let _ = tokio::task::spawn_blocking(move || output::remove(&dir)).await;
        }
    }
}

/// See [`Inner::dispose`].
async fn dispose(docker: &Docker, name: &str, keep: bool) {
    let result = if keep {
        docker
            .kill_container(
                name,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal("SIGKILL")
                        .build(),
                ),
            )
            .await
    } else {
        docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
    };
    match result {
        // Gone already, or (kill) not running.
        Err(e) if matches!(status(&e), Some(404 | 409)) => {}
        Err(e) => tracing::warn!("cannot remove container `{name}`: {}", describe(&e)),
        Ok(()) => {}
    }
}

/// Joins several problems into one error, keeping the first one's help.
fn combine(problems: Vec<DockerError>) -> Result<(), ExecutorError> {
    let mut problems = problems.into_iter();
    let Some(first) = problems.next() else {
        return Ok(());
    };
    let rest: Vec<String> = problems.map(|p| p.to_string()).collect();
    if rest.is_empty() {
        return Err(first.into());
    }
    let help = first.help();
    let mut message = first.to_string();
    for r in rest {
        message.push_str("; ");
        message.push_str(&r);
    }
    let error = ExecutorError::new(message);
    Err(match help {
        Some(h) => error.with_help(h),
        None => error,
    })
}

#[async_trait]
impl Executor for DockerExecutor {
    fn name(&self) -> &str {
        "docker"
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

    async fn prepare(&self, jobs: &[JobSpec]) -> Result<(), ExecutorError> {
        let inner = &self.inner;
        let mut problems = Vec::new();
        let mut by_image: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for job in jobs.iter().filter(|j| j.download.is_none()) {
            match inner.image_of(job) {
                Ok(image) => by_image.entry(image).or_default().push(&job.id),
                Err(e) => problems.push(e),
            }
        }
        let checks = by_image.iter().map(|(image, jobs)| {
            let jobs = jobs
                .iter()
                .map(|j| format!("`{j}`"))
                .collect::<Vec<_>>()
                .join(", ");
            async move { inner.check_image(image, &jobs).await }
        });
        for result in futures_util::future::join_all(checks).await {
            if let Err(e) = result {
                problems.push(e);
            }
        }
        combine(problems)?;

        let gpu_jobs: Vec<&JobSpec> = jobs
            .iter()
            .filter(|j| j.download.is_none() && j.resources.gpu_count() > 0)
            .collect();
        if let Some(first) = gpu_jobs.first() {
            let image = inner.image_of(first)?;
            let pool = inner.gpu_pool(&image).await?;
            combine(
                gpu_jobs
                    .iter()
                    .filter_map(|job| pool.check(job).err())
                    .collect(),
            )?;
        }
        Ok(())
    }

    async fn run(
        &self,
        request: JobRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> JobOutcome {
        self.inner.run_job(request, reporter, cancel).await
    }

    fn hurry(&self) {
        self.inner.hurry.cancel();
    }

    async fn reap(&self, executor_ids: &[String]) -> Result<(), ExecutorError> {
        for id in executor_ids.iter().filter(|id| id.starts_with(NAME_PREFIX)) {
            self.inner.dispose(id).await;
        }
        Ok(())
    }
}
