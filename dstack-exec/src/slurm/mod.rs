//! The Slurm executor (sbatch, squeue, scancel). Arrives with its issue; until then it reports itself as
//! unavailable.

use dstack_core::run::ExecutorError;
use serde::Deserialize;

use crate::Selected;

/// The `slurm:` section of the executor configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlurmConfig {}

/// The Slurm executor for `slurm` (asked for explicitly).
///
/// # Errors
/// When no engine can be used.
pub fn select(_config: &SlurmConfig) -> Result<Selected, ExecutorError> {
    Err(
        ExecutorError::new("the `slurm` executor is not available in this version of dstack-rs")
            .with_help("use `--executor local` (or `auto`)"),
    )
}
