//! How planning uses the processors.
//!
//! Materialising the workflows of a large plan is cut into pieces that threads claim one at a
//! time, in order, the calling thread among them ([`pieces`]). Claiming keeps a busy machine
//! from making things slower: when a helper thread does not get a processor (on the 2-vCPU
//! machines of BENCHMARKS.md a new thread often waits hundreds of microseconds to 2 ms for
//! one), the calling thread does the pieces it would have done, and waits at most for the one
//! piece the helper holds. The number of threads is the number of processors the process may
//! run on (`std::thread::available_parallelism`, which follows CPU affinity and cgroup
//! quotas), read once. Threads are scoped: none outlives the call that started it, and one
//! that cannot be started leaves its pieces to the others.
//!
//! Reading YAML, and writing the plan's JSON, stay on one thread: split the same way they were
//! slower, not faster, on those machines (the figures are in BENCHMARKS.md).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The number of processors this process may use, at least 1.
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs `work` on the pieces `0..n` on up to `threads` threads, the calling one included, and
/// returns its results in piece order, with the result of `first`, which the calling thread
/// runs before it claims pieces (work that must stay on it, or needs no sharing).
///
/// A panic in `work` is raised again on the calling thread, as if it had run there.
pub(crate) fn pieces<F, R, T>(
    n: usize,
    threads: usize,
    first: impl FnOnce() -> R,
    work: F,
) -> (R, Vec<T>)
where
    F: Fn(usize) -> T + Sync,
    T: Send,
{
    let next = AtomicUsize::new(0);
    let claim = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return done;
            }
            done.push((i, work(i)));
        }
    };
    let (first, mut done) = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.min(n + 1))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("dstack-core".into())
                    .spawn_scoped(scope, claim)
                    .ok()
            })
            .collect();
        let first = first();
        let mut done = claim();
        for helper in helpers {
            match helper.join() {
                Ok(theirs) => done.extend(theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        (first, done)
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    (first, done.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_once_in_order() {
        for threads in [1, 2, 3, 8] {
            for n in [0, 1, 2, 7, 100] {
                let (first, out) = pieces(n, threads, || "first", |i| i * 10);
                assert_eq!(first, "first");
                assert_eq!(
                    out,
                    (0..n).map(|i| i * 10).collect::<Vec<_>>(),
                    "{threads} {n}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "piece 3")]
    fn panics_come_back_to_the_caller() {
        let _ = pieces(
            10,
            3,
            || (),
            |i| {
                assert!(i != 3, "piece {i}");
                i
            },
        );
    }
}
