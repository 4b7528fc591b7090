//! The `docker:` section of the executor configuration file.

use std::fmt;
use std::time::Duration;

use dstack_core::resources::{MEMORY_UNITS_HELP, format_bytes, parse_memory};
use serde::{Deserialize, Deserializer};

/// How long a cancelled container gets between SIGTERM and SIGKILL, unless configured.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The `docker:` section of the executor configuration.
///
/// ```yaml
/// docker:
///   host: unix:///var/run/docker.sock   # else DOCKER_HOST, else this socket
///   user: auto                          # auto | image | UID[:GID] | NAME[:GROUP]
///   network: bridge                     # bridge | none | host | a network's name
///   publish-address: 127.0.0.1          # where `ports` are published on the host
///   keep-containers: false              # keep finished containers (debugging)
///   stop-timeout: 5                     # seconds between SIGTERM and SIGKILL
///   pull: missing                       # missing | always | never
///   default-image: ubuntu:22.04         # for jobs that name no image
///   gpus:                               # the GPUs to hand out (default: ask the engine)
///     - {id: GPU-5a3c..., name: Tesla V100-SXM2-16GB, memory: 16GiB}
///   gpu-probe-image: nvidia/cuda:12.2.0-base-ubuntu22.04
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DockerConfig {
    /// The engine's address (`unix:///PATH`, `tcp://HOST:PORT`, `http://HOST:PORT`); else
    /// `DOCKER_HOST`; else `unix:///var/run/docker.sock`.
    pub host: Option<String>,
    /// Who runs the commands inside the container.
    pub user: UserConfig,
    /// The network containers join: Docker's `bridge` unless configured; `host` only when
    /// asked for.
    pub network: Option<String>,
    /// The host address `ports` are published on (default `127.0.0.1`: only this machine
    /// reaches them; `0.0.0.0` for every interface).
    pub publish_address: Option<String>,
    /// Keeps containers after their job (stopped) instead of removing them, to look at them
    /// with `docker inspect` / `docker logs`.
    pub keep_containers: bool,
    /// Seconds a cancelled container gets between SIGTERM and SIGKILL (default 5).
    #[serde(deserialize_with = "seconds")]
    pub stop_timeout: Option<u64>,
    /// When to pull images.
    pub pull: PullPolicy,
    /// The image of jobs that name none (jobs of custom providers).
    pub default_image: Option<String>,
    /// The GPUs this executor hands out; when absent, the engine's GPUs are listed with
    /// `nvidia-smi` in a helper container.
    pub gpus: Option<Vec<GpuConfig>>,
    /// The image of the helper container that lists the engine's GPUs (default: the image of
    /// the first job that asks for GPUs). `nvidia-smi` is brought in by the NVIDIA runtime.
    pub gpu_probe_image: Option<String>,
}

impl DockerConfig {
    /// The grace period of a cancelled container.
    #[must_use]
    pub fn stop_timeout(&self) -> Duration {
        self.stop_timeout
            .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_secs)
    }

    /// The network containers join.
    #[must_use]
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or("bridge")
    }

    /// The host address ports are published on.
    #[must_use]
    pub fn publish_address(&self) -> &str {
        self.publish_address.as_deref().unwrap_or("127.0.0.1")
    }
}

/// Who runs a job's commands inside its container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UserConfig {
    /// The user running dstack (`UID:GID`, with `HOME=/tmp`) when that keeps the files jobs
    /// write in their tree owned by that user: dstack runs as a user other than root, and the
    /// engine is neither rootless nor Docker Desktop (both of which map the container's root
    /// to the user already). Otherwise the image's own user.
    #[default]
    Auto,
    /// The image's own user (often root).
    Image,
    /// A user as Docker takes it: `UID[:GID]` or `NAME[:GROUP]`.
    Named(String),
}

impl<'de> Deserialize<'de> for UserConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A number (`user: 1000`) is a uid.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u32),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Text(t) => t,
            Raw::Number(n) => n.to_string(),
        };
        match text.trim() {
            "" => Err(serde::de::Error::custom(
                "`user` is empty: use `auto`, `image`, `UID[:GID]` or `NAME[:GROUP]`",
            )),
            "auto" => Ok(UserConfig::Auto),
            "image" => Ok(UserConfig::Image),
            other => Ok(UserConfig::Named(other.to_owned())),
        }
    }
}

/// When to pull images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull images the engine does not have.
    #[default]
    Missing,
    /// Pull before every job (to follow a moving tag).
    Always,
    /// Never pull: a missing image fails the run before it starts.
    Never,
}

/// A GPU the executor may hand out.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// What Docker's device request names it by: a UUID (`GPU-5a3c...`) or an index (`0`).
    pub id: String,
    /// Its model, as `nvidia-smi` prints it (`Tesla V100-SXM2-16GB`): `v100/gpu` and
    /// `gpu: {name: v100}` match a part of it, ignoring case.
    #[serde(default)]
    pub name: String,
    /// Its memory (`16GiB`), for `gpu: {memory: ...}`.
    #[serde(default, deserialize_with = "memory")]
    pub memory: Option<u64>,
}

fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Other(serde_json::Value),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => Ok(Some(n)),
        Raw::Other(serde_json::Value::Null) => Ok(None),
        Raw::Other(serde_json::Value::String(s)) => Err(serde::de::Error::custom(format!(
            "`stop-timeout` is a number of seconds, not `{s}`"
        ))),
        Raw::Other(other) => Err(serde::de::Error::custom(format!(
            "`stop-timeout` is a number of seconds, not `{other}`"
        ))),
    }
}

fn memory<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(f64),
    }
    let text = match Option::<Raw>::deserialize(deserializer)? {
        None => return Ok(None),
        Some(Raw::Text(t)) => t,
        Some(Raw::Number(n)) => n.to_string(),
    };
    parse_memory(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("GPU memory: {e} ({MEMORY_UNITS_HELP})")))
}

impl fmt::Display for GpuConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "unknown model"
        } else {
            &self.name
        };
        write!(f, "{} ({name}", self.id)?;
        if let Some(m) = self.memory {
            write!(f, ", {}", format_bytes(m))?;
        }
        f.write_str(")")
    }
}
