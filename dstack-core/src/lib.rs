//! `dstack-core`: the workflow model of dstack, as a library.
//!
//! Teams keep `.dstack/workflows.yaml` (and `.dstack/variables.yaml`) in their repository.
//! This crate loads them into typed values with located diagnostics, substitutes `${{ }}`
//! variables, turns workflows into jobs through providers, and plans the `depends-on` graph.
//!
//! ```
//! use dstack_core::{Overrides, Project, ProviderRegistry, Sources};
//!
//! let sources = Sources {
//!     workflows: Some("workflows:\n  - name: hello\n    provider: docker\n    image: ubuntu\n    commands: [echo hi]\n".into()),
//!     ..Sources::default()
//! };
//! let project = Project::from_sources(".", &sources, ProviderRegistry::default())?;
//! let plan = project.plan("hello", &Overrides::new())?;
//! assert_eq!(plan.jobs[0].commands, ["echo hi"]);
//! # Ok::<(), dstack_core::Error>(())
//! ```
//!
//! The crate knows nothing of Docker, Slurm or Python: executors live in `dstack-exec`, the
//! Python bindings in `dstack-py`. It never prints; problems are returned as [`Diagnostics`].

pub mod config;
pub mod diag;
pub mod error;
pub mod params;
pub mod plan;
pub mod program;
pub mod provider;
pub mod resources;
pub mod run;
pub mod schema;
pub mod variables;
pub mod yaml;

mod parallel;

pub use config::{CustomProvider, Dependency, Project, ProviderRef, Sources, Workflow};
pub use diag::{Code, Diagnostic, Diagnostics, Location, Severity};
pub use error::Error;
pub use params::Params;
pub use plan::{Download, JobSpec, Plan};
pub use program::{Program, ProgramError, ProgramInput, ProgramRunner, RepoProviders};
pub use provider::{Provider, ProviderRegistry};
pub use resources::{GpuRequest, Resources};
pub use variables::Overrides;
pub use yaml::{Pos, Scalar};
