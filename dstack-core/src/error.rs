//! The error type of the library.

use std::path::PathBuf;

use crate::diag::Diagnostics;

/// Everything that can go wrong in `dstack-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The user's files (or variables) have problems: every one of them, located.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// A file exists but cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The diagnostics, when the error is about the user's files.
    #[must_use]
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            Error::Invalid(d) => Some(d),
            Error::Io { .. } => None,
        }
    }
}
