//! `dstack-exec`: the executors that run the jobs of a [`dstack_core::Plan`].
//!
//! The run engine (the `Executor` trait, the scheduler and the run store) and the executors
//! built on it (local processes, Docker through bollard, Slurm) land here; until then this
//! crate only fixes the dependency direction: executors depend on `dstack-core`, never the
//! other way around.

pub use dstack_core;
