//! How many threads the large steps of a load or a plan may use.
//!
//! Reading a long `workflows:` list and materialising the workflows of a large plan are split
//! over the processors the process may run on (`std::thread::available_parallelism`, which
//! follows CPU affinity and cgroup quotas), read once per process. Everything else runs on
//! the calling thread, and so does everything when there is one processor. Threads are
//! scoped: none outlives the call that started it.

use std::sync::OnceLock;

/// The number of processors this process may use, at least 1.
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}
