//! GPUs: which the engine has, which a job may have, and which are free.
//!
//! Docker's `count: N` always hands out GPUs 0..N-1 (two 1-GPU jobs would share GPU 0), and
//! it has no notion of a GPU model. So the executor keeps a pool of the engine's GPUs (listed
//! once with `nvidia-smi` in a helper container, or configured), picks free ones that match a
//! job's `name` and `memory`, and passes their ids explicitly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use dstack_core::JobSpec;
use dstack_core::resources::{GpuRequest, format_bytes};
use futures_util::StreamExt as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::client::{DockerError, describe};
use super::config::GpuConfig;
use super::spec::LABEL_HELPER;

/// Whether an engine's refusal to start a container means it has no NVIDIA runtime.
pub(crate) fn no_nvidia_runtime(detail: &str) -> bool {
    detail.contains("could not select device driver")
        || detail.contains("unknown or invalid runtime name: nvidia")
        || detail.contains("nvidia-container-cli")
}

/// The engine's GPUs, from `nvidia-smi --query-gpu=index,uuid,name,memory.total
/// --format=csv,noheader,nounits` (memory in MiB).
pub(crate) fn parse_nvidia_smi(text: &str) -> Result<Vec<GpuConfig>, String> {
    let mut gpus = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [_, uuid, name, memory] = fields[..] else {
            return Err(format!("unexpected line from nvidia-smi: `{line}`"));
        };
        let memory = memory
            .parse::<u64>()
            .ok()
            .map(|mib| mib.saturating_mul(1 << 20));
        gpus.push(GpuConfig {
            id: uuid.to_owned(),
            name: name.to_owned(),
            memory,
        });
    }
    Ok(gpus)
}

/// Lowercase letters and digits only: `v100` matches `Tesla V100-SXM2-16GB`, `rtx3090`
/// matches `NVIDIA GeForce RTX 3090`.
fn squash(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether `gpu` satisfies the model and memory of `request`.
pub(crate) fn matches(gpu: &GpuConfig, request: &GpuRequest) -> bool {
    let model = request
        .name
        .as_deref()
        .is_none_or(|name| squash(&gpu.name).contains(&squash(name)));
    let memory = request
        .memory_bytes
        .is_none_or(|want| gpu.memory.is_some_and(|have| have >= want));
    model && memory
}

/// `2 GPUs of model `v100` with at least 16 GB each`.
pub(crate) fn describe_request(request: &GpuRequest) -> String {
    let mut text = if request.count == 1 {
        "1 GPU".to_owned()
    } else {
        format!("{} GPUs", request.count)
    };
    if let Some(name) = &request.name {
        text.push_str(&format!(" of model `{name}`"));
    }
    if let Some(memory) = request.memory_bytes {
        text.push_str(&format!(" with at least {}", format_bytes(memory)));
        if request.count > 1 {
            text.push_str(" each");
        }
    }
    text
}

fn describe_pool(gpus: &[GpuConfig]) -> String {
    match gpus.len() {
        0 => "no GPU".to_owned(),
        1 => format!("1 GPU: {}", gpus[0]),
        n => format!(
            "{n} GPUs: {}",
            gpus.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The GPUs the executor hands out, and which are in use.
#[derive(Debug)]
pub(crate) struct GpuPool {
    gpus: Vec<GpuConfig>,
    busy: Mutex<Vec<bool>>,
    freed: Notify,
}

impl GpuPool {
    pub(crate) fn new(gpus: Vec<GpuConfig>) -> GpuPool {
        let busy = Mutex::new(vec![false; gpus.len()]);
        GpuPool {
            gpus,
            busy,
            freed: Notify::new(),
        }
    }

    /// Checks that `job` can ever get its GPUs here.
    pub(crate) fn check(&self, job: &JobSpec) -> Result<(), DockerError> {
        let Some(request) = job.resources.gpu.as_ref().filter(|g| g.count > 0) else {
            return Ok(());
        };
        let matching = self.gpus.iter().filter(|g| matches(g, request)).count();
        if matching >= request.count as usize {
            return Ok(());
        }
        Err(DockerError::NoSuchGpu {
            job: job.id.clone(),
            wanted: describe_request(request),
            available: describe_pool(&self.gpus),
        })
    }

    /// Waits until `request.count` matching GPUs are free and takes them; `None` when
    /// `cancel` fires first.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        job: &JobSpec,
        cancel: &CancellationToken,
    ) -> Result<Option<Lease>, DockerError> {
        let Some(request) = job.resources.gpu.as_ref().filter(|g| g.count > 0) else {
            return Ok(Some(Lease {
                pool: self.clone(),
                taken: Vec::new(),
            }));
        };
        self.check(job)?;
        loop {
            // Registered before looking, so that a release in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut busy = self
                    .busy
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let free: Vec<usize> = (0..self.gpus.len())
                    .filter(|&i| !busy[i] && matches(&self.gpus[i], request))
                    .take(request.count as usize)
                    .collect();
                if free.len() == request.count as usize {
                    for &i in &free {
                        busy[i] = true;
                    }
                    return Ok(Some(Lease {
                        pool: self.clone(),
                        taken: free,
                    }));
                }
            }
            tokio::select! {
                () = freed => {}
                () = cancel.cancelled() => return Ok(None),
            }
        }
    }
}

/// GPUs taken by a job; given back when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    pool: Arc<GpuPool>,
    taken: Vec<usize>,
}

impl Lease {
    /// The device ids to pass to Docker.
    pub(crate) fn device_ids(&self) -> Vec<String> {
        self.taken
            .iter()
            .map(|&i| self.pool.gpus[i].id.clone())
            .collect()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.taken.is_empty() {
            return;
        }
        {
            let mut busy = self
                .pool
                .busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for &i in &self.taken {
                busy[i] = false;
            }
        }
        self.pool.freed.notify_waiters();
    }
}

/// Lists the engine's GPUs by running `nvidia-smi` in a helper container of `image` with
/// every GPU. On an engine without the NVIDIA runtime, the engine refuses to start it: that
/// is [`DockerError::NoNvidiaRuntime`].
pub(crate) async fn discover(
    docker: &Docker,
    host: &str,
    image: &str,
) -> Result<Vec<GpuConfig>, DockerError> {
    let engine = |action: &str, e: &bollard::errors::Error| DockerError::Engine {
        host: host.to_owned(),
        action: action.to_owned(),
        detail: describe(e),
    };
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(vec![
            "nvidia-smi".to_owned(),
            "--query-gpu=index,uuid,name,memory.total".to_owned(),
            "--format=csv,noheader,nounits".to_owned(),
        ]),
        labels: Some(HashMap::from([(
            LABEL_HELPER.to_owned(),
            "gpu-list".to_owned(),
        )])),
        host_config: Some(HostConfig {
            device_requests: Some(vec![DeviceRequest {
                driver: Some("nvidia".to_owned()),
                count: Some(-1),
                capabilities: Some(vec![vec!["gpu".to_owned(), "utility".to_owned()]]),
                ..DeviceRequest::default()
            }]),
            network_mode: Some("none".to_owned()),
            privileged: Some(false),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let name = super::spec::container_name("gpu-list", "nvidia-smi", 1);
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| engine("create a container to list its GPUs", &e))?;
    let result = list(docker, host, &name).await;
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(&name, Some(remove)).await;
    result
}

async fn list(docker: &Docker, host: &str, name: &str) -> Result<Vec<GpuConfig>, DockerError> {
    if let Err(e) = docker.start_container(name, None).await {
        let detail = describe(&e);
        return Err(if no_nvidia_runtime(&detail) {
            DockerError::NoNvidiaRuntime {
                host: host.to_owned(),
                detail,
            }
        } else {
            DockerError::Engine {
                host: host.to_owned(),
                action: "start `nvidia-smi` to list its GPUs".to_owned(),
                detail,
            }
        });
    }
    let wait = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let code = match docker.wait_container(name, Some(wait)).next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => {
            return Err(DockerError::Engine {
                host: host.to_owned(),
                action: "run `nvidia-smi` to list its GPUs".to_owned(),
                detail: describe(&e),
            });
        }
        None => -1,
    };
    let logs = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(name, Some(logs));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(Ok(chunk)) = stream.next().await {
        match chunk {
            bollard::container::LogOutput::StdErr { message } => err.extend_from_slice(&message),
            other => out.extend_from_slice(&other.into_bytes()),
        }
    }
    let fail = |detail: String| DockerError::Engine {
        host: host.to_owned(),
        action: "list its GPUs with `nvidia-smi`".to_owned(),
        detail,
    };
    if code != 0 {
        return Err(fail(format!(
            "`nvidia-smi` exited with code {code}: {}",
            String::from_utf8_lossy(&err).trim()
        )));
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out)).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(id: &str, name: &str, gib: u64) -> GpuConfig {
        GpuConfig {
            id: id.into(),
            name: name.into(),
            memory: Some(gib << 30),
        }
    }

    fn job(count: u32, name: Option<&str>, memory: Option<u64>) -> JobSpec {
        let mut job = JobSpec {
            id: "train".into(),
            ..JobSpec::default()
        };
        job.resources.gpu = Some(GpuRequest {
            count,
            name: name.map(Into::into),
            memory_bytes: memory,
        });
        job
    }

    #[test]
    fn nvidia_smi_output() {
        let text =
            "0, GPU-aaa, Tesla V100-SXM2-16GB, 16160\n1, GPU-bbb, NVIDIA A100-SXM4-40GB, 40960\n";
        let gpus = parse_nvidia_smi(text).expect("parsed");
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].id, "GPU-aaa");
        assert_eq!(gpus[0].name, "Tesla V100-SXM2-16GB");
        assert_eq!(gpus[0].memory, Some(16160 << 20));
        assert_eq!(
            gpus[1].to_string(),
            "GPU-bbb (NVIDIA A100-SXM4-40GB, 40 GiB)"
        );
        assert!(parse_nvidia_smi("garbage").is_err());
        assert_eq!(parse_nvidia_smi("\n").expect("empty"), Vec::new());
    }

    #[test]
    fn models_and_memory() {
        let v100 = gpu("0", "Tesla V100-SXM2-16GB", 16);
        let rtx = gpu("1", "NVIDIA GeForce RTX 3090", 24);
        let any = GpuRequest {
            count: 1,
            name: None,
            memory_bytes: None,
        };
        assert!(matches(&v100, &any));
        let by = |name: &str| GpuRequest {
            name: Some(name.into()),
            ..any.clone()
        };
        assert!(matches(&v100, &by("v100")));
        assert!(matches(&v100, &by("V100")));
        assert!(!matches(&v100, &by("a100")));
        assert!(matches(&rtx, &by("rtx3090")));
        assert!(matches(&rtx, &by("RTX 3090")));
        let big = GpuRequest {
            memory_bytes: Some(20 << 30),
            ..any.clone()
        };
        assert!(!matches(&v100, &big));
        assert!(matches(&rtx, &big));
    }

    #[test]
    fn impossible_requests_name_what_there_is() {
        let pool = GpuPool::new(vec![gpu("GPU-a", "Tesla T4", 15)]);
        assert!(pool.check(&job(1, Some("t4"), None)).is_ok());
        let e = pool
            .check(&job(2, Some("v100"), Some(16 << 30)))
            .expect_err("none");
        assert_eq!(
            e.to_string(),
            "job `train` asks for 2 GPUs of model `v100` with at least 16 GiB each, but the Docker engine has 1 GPU: GPU-a (Tesla T4, 15 GiB)"
        );
        let e = GpuPool::new(Vec::new())
            .check(&job(1, None, None))
            .expect_err("none");
        assert!(
            e.to_string()
                .ends_with("asks for 1 GPU, but the Docker engine has no GPU"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn concurrent_jobs_get_different_gpus_and_wait_for_free_ones() {
        let pool = Arc::new(GpuPool::new(vec![
            gpu("GPU-a", "Tesla T4", 15),
            gpu("GPU-b", "Tesla T4", 15),
        ]));
        let cancel = CancellationToken::new();
        let one = job(1, None, None);
        let first = pool
            .acquire(&one, &cancel)
            .await
            .expect("ok")
            .expect("lease");
        let second = pool
            .acquire(&one, &cancel)
            .await
            .expect("ok")
            .expect("lease");
        assert_eq!(first.device_ids(), vec!["GPU-a".to_owned()]);
        assert_eq!(second.device_ids(), vec!["GPU-b".to_owned()]);
        // Both taken: a third job waits until one is given back.
        let waiter = tokio::spawn({
            let pool = pool.clone();
            let cancel = cancel.clone();
            async move {
                pool.acquire(&job(1, None, None), &cancel)
                    .await
                    .expect("ok")
                    .map(|l| l.device_ids())
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        assert_eq!(
            waiter.await.expect("joined"),
            Some(vec!["GPU-b".to_owned()])
        );
        // A waiting job is released by cancellation.
        let two = job(2, None, None);
        let blocked = pool.acquire(&two, &cancel);
        cancel.cancel();
        assert!(blocked.await.expect("ok").is_none());
        drop(first);
    }
}
