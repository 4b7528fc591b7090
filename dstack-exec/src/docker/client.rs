//! Reaching the engine: its address, the API version both sides speak, and the errors of this
//! executor.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use dstack_core::run::ExecutorError;

/// How long `select`/`probe` wait for the engine to answer.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// What goes wrong with the Docker executor, each with what to do about it ([`DockerError::help`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// `host` / `DOCKER_HOST` is not an address this executor can use.
    #[error("unsupported Docker host `{host}`: use `unix:///PATH` or `tcp://HOST:PORT`")]
    UnsupportedHost {
        /// The address as given.
        host: String,
    },
    /// Nothing answered at the address.
    #[error("no Docker engine answered at {host} ({detail})")]
    Unreachable {
        /// The engine's address.
        host: String,
        /// What happened (no such socket, permission denied, connection refused...).
        detail: String,
    },
    /// The engine has no NVIDIA runtime (or no CDI devices), so containers cannot have GPUs.
    #[error(
        "the Docker engine at {host} cannot give containers GPUs: it has no NVIDIA runtime (the engine said: {detail})"
    )]
    NoNvidiaRuntime {
        /// The engine's address.
        host: String,
        /// The engine's own words.
        detail: String,
    },
    /// No set of the engine's GPUs satisfies a job's request.
    #[error("job `{job}` asks for {wanted}, but the Docker engine has {available}")]
    NoSuchGpu {
        /// The job.
        job: String,
        /// What it asks for (`2 GPUs of model v100`).
        wanted: String,
        /// What there is (`1 GPU: GPU-... (Tesla T4, 15 GiB)`, or `no GPU`).
        available: String,
    },
    /// An image is neither on the engine nor pullable.
    #[error(
        "image `{image}` (job(s) {jobs}) is not on the Docker engine and cannot be pulled: {reason}"
    )]
    ImageUnavailable {
        /// The image.
        image: String,
        /// The jobs that use it, quoted and joined.
        jobs: String,
        /// The engine's reason.
        reason: String,
        /// Pulling is disabled (`pull: never`).
        never_pull: bool,
    },
    /// A job that runs commands names no image, and there is no `default-image`.
    #[error("job `{job}` names no image, so it cannot run in a container")]
    NoImage {
        /// The job.
        job: String,
    },
    /// The engine refused or failed a request.
    #[error("the Docker engine at {host} failed to {action}: {detail}")]
    Engine {
        /// The engine's address.
        host: String,
        /// What was asked (`create the container of job `train``).
        action: String,
        /// The engine's own words.
        detail: String,
    },
}

impl DockerError {
    /// How to fix it.
    #[must_use]
    pub fn help(&self) -> Option<String> {
        match self {
            DockerError::UnsupportedHost { .. } => Some(
                "set `host` in the `docker:` section of the executor configuration, or `DOCKER_HOST`, to the engine's socket (`unix:///var/run/docker.sock`)".into(),
            ),
            DockerError::Unreachable { detail, .. } if detail.contains("ermission denied") => Some(
                "let your user use the engine (`sudo usermod -aG docker $USER`, then log in again), or use the local executor (`--executor local`; `executor=\"local\"` in Python)".into(),
            ),
            DockerError::Unreachable { .. } => Some(
                "start Docker (`sudo systemctl start docker`; in dstack-rs' repository `bash scripts/setup-docker.sh` installs and starts one), point `DOCKER_HOST` (or `host` in the `docker:` section of the executor configuration) at a running engine, or use the local executor (`--executor local`; `executor=\"local\"` in Python)".into(),
            ),
            DockerError::NoNvidiaRuntime { .. } => Some(
                "install the NVIDIA Container Toolkit on the engine's host and register it (`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker`), or run the workflow without `gpu` in its `resources`".into(),
            ),
            DockerError::NoSuchGpu { .. } => Some(
                "ask for a model and memory the engine has (`name` matches a part of the model, ignoring case), or list the GPUs to use under `gpus:` in the `docker:` section of the executor configuration".into(),
            ),
            DockerError::ImageUnavailable { never_pull: true, .. } => Some(
                "pull or build the image on the engine (`docker pull IMAGE`), or allow pulls (`pull: missing` in the `docker:` section of the executor configuration)".into(),
            ),
            DockerError::ImageUnavailable { .. } => Some(
                "check the image's name and tag; when the registry needs a login or cannot be reached from the engine, pull or build the image on the engine yourself (`docker pull IMAGE`, `docker build -t IMAGE .`)".into(),
            ),
            DockerError::NoImage { .. } => Some(
                "give the workflow an `image`, or set `default-image` in the `docker:` section of the executor configuration".into(),
            ),
            DockerError::Engine { .. } => None,
        }
    }

    /// The message with its help, for a job's failure reason.
    #[must_use]
    pub fn with_help(&self) -> String {
        match self.help() {
            Some(help) => format!("{self} (help: {help})"),
            None => self.to_string(),
        }
    }
}

impl From<DockerError> for ExecutorError {
    fn from(e: DockerError) -> Self {
        let help = e.help();
        let error = ExecutorError::new(e.to_string());
        match help {
            Some(h) => error.with_help(h),
            None => error,
        }
    }
}

/// Where the engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Address {
    /// A Unix socket.
    Unix(PathBuf),
    /// Plain HTTP over TCP (`tcp://HOST:PORT`, `http://HOST:PORT`).
    Tcp(String),
}

/// The default engine address.
pub(crate) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

impl Address {
    /// The address to use: `configured`, else `DOCKER_HOST`, else the default socket.
    pub(crate) fn resolve(configured: Option<&str>) -> Result<Address, DockerError> {
        let from_env = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
        let host = configured
            .map(str::to_owned)
            .or(from_env)
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Address::parse(host.trim())
    }

    pub(crate) fn parse(host: &str) -> Result<Address, DockerError> {
        let unsupported = || DockerError::UnsupportedHost {
            host: host.to_owned(),
        };
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(unsupported());
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let rest = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
            .ok_or_else(unsupported)?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(unsupported());
        }
        Ok(Address::Tcp(rest.to_owned()))
    }

    /// A client for this address speaking `version`, with `timeout` for each request's answer
    /// (not for streamed bodies: logs, waits).
    pub(crate) fn client(
        &self,
        version: &ClientVersion,
        timeout: Duration,
    ) -> Result<Docker, DockerError> {
        let secs = timeout.as_secs().max(1);
        let made = match self {
            Address::Unix(path) => {
                Docker::connect_with_unix(&path.to_string_lossy(), secs, version)
            }
            Address::Tcp(host) => {
                Docker::connect_with_http(&format!("tcp://{host}"), secs, version)
            }
        };
        made.map_err(|e| DockerError::Unreachable {
            host: self.to_string(),
            detail: describe(&e),
        })
    }

    /// Asks the engine for the API version both sides speak (`negotiate_version`), within
    /// [`PING_TIMEOUT`]. Synchronous: runs on its own thread with its own runtime, so it works
    /// inside and outside a tokio runtime. A missing socket is reported at once.
    pub(crate) fn negotiate(&self) -> Result<ClientVersion, DockerError> {
        let unreachable = |detail: String| DockerError::Unreachable {
            host: self.to_string(),
            detail,
        };
        if let Address::Unix(path) = self {
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(unreachable("no such socket".into()));
                }
                Err(e) => return Err(unreachable(e.to_string())),
                Ok(_) => {}
            }
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| unreachable(format!("cannot start a runtime: {e}")))?;
                    runtime.block_on(async {
                        let docker = self.client(API_DEFAULT_VERSION, PING_TIMEOUT)?;
                        match tokio::time::timeout(PING_TIMEOUT, docker.negotiate_version()).await {
                            Ok(Ok(docker)) => Ok(docker.client_version()),
                            Ok(Err(e)) => Err(unreachable(describe(&e))),
                            Err(_) => Err(unreachable(format!(
                                "no answer within {} s",
                                PING_TIMEOUT.as_secs()
                            ))),
                        }
                    })
                })
                .join()
                .unwrap_or_else(|_| Err(unreachable("the connection thread panicked".into())))
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Tcp(host) => write!(f, "tcp://{host}"),
        }
    }
}

/// What an engine error says, in the engine's words when it gave some; else the innermost
/// cause (`Connection refused (os error 111)`), not the client library's wrapping.
pub(crate) fn describe(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { message, .. } if !message.is_empty() => {
            message.trim().to_owned()
        }
        E::DockerResponseServerError { status_code, .. } => {
            format!("the engine answered HTTP {status_code}")
        }
        E::DockerStreamError { error } => error.trim().to_owned(),
        E::RequestTimeoutError => "the engine did not answer in time".into(),
        other => {
            let mut innermost: &dyn std::error::Error = other;
            while let Some(source) = innermost.source() {
                innermost = source;
            }
            let text = innermost.to_string();
            if text.is_empty() {
                other.to_string()
            } else {
                text
            }
        }
    }
}

/// The HTTP status of an engine error, if it is an answer.
pub(crate) fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("unix:///var/run/docker.sock"),
            Ok(Address::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            Address::parse("tcp://127.0.0.1:2375"),
            Ok(Address::Tcp("127.0.0.1:2375".into()))
        );
        assert_eq!(
            Address::parse("http://localhost:2375/"),
            Ok(Address::Tcp("localhost:2375".into()))
        );
        for bad in [
            "ssh://me@box",
            "unix://",
            "tcp://",
            "/var/run/docker.sock",
            "npipe:////./pipe/docker_engine",
        ] {
            let e = Address::parse(bad).expect_err(bad);
            assert_eq!(
                e.to_string(),
                format!("unsupported Docker host `{bad}`: use `unix:///PATH` or `tcp://HOST:PORT`")
            );
        }
        assert_eq!(
            Address::Unix("/run/docker.sock".into()).to_string(),
            "unix:///run/docker.sock"
        );
    }

    #[test]
    fn a_missing_socket_is_reported_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let address = Address::Unix(dir.path().join("docker.sock"));
        let e = address.negotiate().expect_err("no socket");
        assert_eq!(
            e.to_string(),
            format!(
                "no Docker engine answered at unix://{}/docker.sock (no such socket)",
                dir.path().display()
            )
        );
        assert!(e.help().is_some_and(|h| h.contains("setup-docker.sh")));
    }

    #[test]
    fn a_refused_connection_says_so() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let e = Address::Tcp(format!("127.0.0.1:{port}"))
            .negotiate()
            .expect_err("refused");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "no Docker engine answered at tcp://127.0.0.1:{port} ("
            )),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
