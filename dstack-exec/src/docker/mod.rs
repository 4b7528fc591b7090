//! The Docker executor (bollard). Arrives with its issue; until then it reports itself as
//! unavailable.

use dstack_core::run::ExecutorError;
use serde::Deserialize;

use crate::Selected;

/// The `docker:` section of the executor configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DockerConfig {}

/// The Docker executor for `docker` (asked for explicitly).
///
/// # Errors
/// When no engine can be used.
pub fn select(_config: &DockerConfig) -> Result<Selected, ExecutorError> {
    Err(
        ExecutorError::new("the `docker` executor is not available in this version of dstack-rs")
            .with_help("use `--executor local` (or `auto`)"),
    )
}

/// The Docker executor for `auto`: `Err(why)` when no engine answers, so the caller falls
/// back to local processes and says why.
///
/// # Errors
/// When no engine answers.
pub fn probe(config: &DockerConfig) -> Result<Selected, ExecutorError> {
    select(config)
}
