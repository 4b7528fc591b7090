//! `dstack-exec`: the executors that run the jobs of a [`dstack_core::Plan`].
//!
//! - [`LocalExecutor`]: jobs as local process trees, the embedded default.
//! - [`docker`]: jobs in containers of a Docker engine.
//! - [`slurm`]: jobs on a Slurm cluster.
//!
//! [`select`] makes one from an [`ExecutorKind`] and the [`ExecConfig`] of this machine.
//!
//! Executors implement [`dstack_core::run::Executor`]; the scheduler in `dstack-core` drives
//! them and needs no change for a new one.

pub mod config;
pub mod docker;
mod download;
pub mod engine;
pub mod git;
pub mod local;
mod output;
pub mod providers;
pub mod slurm;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use config::{ConfigFileError, ExecConfig};
pub use dstack_core;
use dstack_core::run::{Executor, ExecutorError};
pub use engine::{Artifact, Engine, EngineError, LogLine, Submission};
pub use local::LocalExecutor;

/// Which executor to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Docker when an engine answers, else local processes.
    #[default]
    Auto,
    /// Local processes.
    Local,
    /// Docker containers.
    Docker,
    /// A Slurm cluster.
    Slurm,
}

impl FromStr for ExecutorKind {
    type Err = ExecutorError;

    fn from_str(s: &str) -> Result<Self, ExecutorError> {
        match s {
            "auto" => Ok(ExecutorKind::Auto),
            "local" => Ok(ExecutorKind::Local),
            "docker" => Ok(ExecutorKind::Docker),
            "slurm" => Ok(ExecutorKind::Slurm),
            other => Err(ExecutorError::new(format!("unknown executor `{other}`"))
                .with_help("use `auto`, `local`, `docker` or `slurm`")),
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutorKind::Auto => "auto",
            ExecutorKind::Local => "local",
            ExecutorKind::Docker => "docker",
            ExecutorKind::Slurm => "slurm",
        })
    }
}

/// The executor chosen, and why (for `auto`).
#[derive(Debug, Clone)]
pub struct Selected {
    /// The executor.
    pub executor: Arc<dyn Executor>,
    /// What the user should know about the choice.
    pub note: Option<String>,
}

/// Makes the executor of `kind`, configured by `config`. `auto` is Docker when an engine
/// answers, else local processes (with a note that says why).
///
/// # Errors
/// When that executor cannot be used here.
pub fn select(kind: ExecutorKind, config: &ExecConfig) -> Result<Selected, ExecutorError> {
    match kind {
        ExecutorKind::Auto => Ok(
            docker::probe(&config.docker).unwrap_or_else(|why| Selected {
                executor: Arc::new(LocalExecutor::new()),
                note: Some(format!(
                    "{}: running jobs as local processes (executor `local`)",
                    why.message
                )),
            }),
        ),
        ExecutorKind::Local => Ok(Selected {
            executor: Arc::new(LocalExecutor::new()),
            note: None,
        }),
        ExecutorKind::Docker => docker::select(&config.docker),
        ExecutorKind::Slurm => slurm::select(&config.slurm),
    }
}
