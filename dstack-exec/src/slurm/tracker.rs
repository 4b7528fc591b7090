//! Following many Slurm jobs at once: per poll, one `squeue` call per job array for every
//! followed job (of every run the executor drives; a run has one array per resource shape),
//! and one `scancel` call for every cancellation asked for since the last turn.
//!
//! Each followed job gets a `watch` channel of what Slurm last said of it; a tick channel
//! wakes the jobs that stream output; a trouble channel says when the controller does not
//! answer. The polling task runs while anything is followed or to be cancelled.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dstack_core::run::ExecutorError;
use tokio::sync::{Notify, watch};

use super::command::Tools;
use super::state::{Phase, SQUEUE_FORMAT, Seen, array_of, parse_squeue};

/// Follows Slurm jobs in bulk.
#[derive(Debug)]
pub struct Tracker {
    tools: Arc<Tools>,
    interval: Duration,
    inner: Mutex<Inner>,
    wake: Notify,
    ticks: watch::Sender<u64>,
    trouble: watch::Sender<Option<String>>,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, Followed>,
    /// To cancel at the next turn.
    cancel: BTreeSet<String>,
    /// Cancelled, still to be killed at once (a second Ctrl-C).
    kill: BTreeSet<String>,
    /// Everything cancelled so far (for `hurry`).
    cancelled: BTreeSet<String>,
    polling: bool,
}

#[derive(Debug)]
struct Followed {
    seen: watch::Sender<Seen>,
    followers: usize,
    /// Successive polls that read its array without listing it: `Gone` takes two, so a
    /// listing taken while the controller was still recording a change never ends a job.
    missing: u8,
}

/// One poll's worth of job states: by id, or why `squeue` failed.
pub type Snapshot = Result<HashMap<String, super::state::Observed>, ExecutorError>;

impl Tracker {
    /// A tracker that polls every `interval`.
    #[must_use]
    pub fn new(tools: Arc<Tools>, interval: Duration) -> Arc<Tracker> {
        Arc::new(Tracker {
            tools,
            interval,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            ticks: watch::Sender::new(0),
            trouble: watch::Sender::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts following `id`; what Slurm says of it arrives on the returned channel. Must be
    /// called within a tokio runtime.
    pub fn follow(self: &Arc<Self>, id: &str) -> watch::Receiver<Seen> {
        let mut inner = self.lock();
        let followed = inner.jobs.entry(id.to_owned()).or_insert_with(|| Followed {
            seen: watch::Sender::new(Seen::Unknown),
            followers: 0,
            missing: 0,
        });
        followed.followers += 1;
        let receiver = followed.seen.subscribe();
        self.ensure_polling(&mut inner);
        receiver
    }

    /// Stops following `id`.
    pub fn unfollow(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(followed) = inner.jobs.get_mut(id) {
            followed.followers = followed.followers.saturating_sub(1);
            if followed.followers == 0 {
                inner.jobs.remove(id);
            }
        }
    }

    /// A channel that changes after every poll.
    #[must_use]
    pub fn ticks(&self) -> watch::Receiver<u64> {
        self.ticks.subscribe()
    }

    /// A channel that says why the controller does not answer (`None` when it does).
    #[must_use]
    pub fn trouble(&self) -> watch::Receiver<Option<String>> {
        self.trouble.subscribe()
    }

    /// Asks for `id` to be cancelled at the next turn (at once: the polling task is woken).
    pub fn cancel(self: &Arc<Self>, id: &str) {
        let mut inner = self.lock();
        inner.cancel.insert(id.to_owned());
        inner.cancelled.insert(id.to_owned());
        self.ensure_polling(&mut inner);
        drop(inner);
        self.wake.notify_one();
    }

    /// Kills every job cancelled so far at once (`scancel --signal=KILL --full`).
    pub fn hurry(self: &Arc<Self>) {
        let mut inner = self.lock();
        let cancelled = inner.cancelled.clone();
        inner.kill.extend(cancelled);
        if !inner.kill.is_empty() {
            self.ensure_polling(&mut inner);
        }
        drop(inner);
        self.wake.notify_one();
    }

    fn ensure_polling(self: &Arc<Self>, inner: &mut Inner) {
        if !inner.polling {
            inner.polling = true;
            let me = self.clone();
            tokio::spawn(async move { me.poll_loop().await });
        }
    }

    async fn poll_loop(self: Arc<Self>) {
        loop {
            let (cancel, kill, ids) = {
                let mut inner = self.lock();
                if inner.jobs.is_empty() && inner.cancel.is_empty() && inner.kill.is_empty() {
                    inner.polling = false;
                    return;
                }
                (
                    std::mem::take(&mut inner.cancel),
                    std::mem::take(&mut inner.kill),
                    inner.jobs.keys().cloned().collect::<Vec<_>>(),
                )
            };
            if !cancel.is_empty() {
                let ids: Vec<String> = cancel.into_iter().collect();
                if let Err(e) = scancel(&self.tools, &ids, false).await {
                    tracing::warn!("{e}");
                }
            }
            if !kill.is_empty() {
                let ids: Vec<String> = kill.into_iter().collect();
                if let Err(e) = scancel(&self.tools, &ids, true).await {
                    tracing::warn!("{e}");
                }
            }
            if !ids.is_empty() {
                match squeue(&self.tools, &ids).await {
                    Ok(jobs) => {
                        // Only the jobs whose array this poll read: jobs followed since it
                        // began wait for the next one.
                        let read: BTreeSet<&str> =
                            ids.iter().filter_map(|id| array_of(id)).collect();
                        let mut inner = self.lock();
                        for (id, followed) in &mut inner.jobs {
                            if !array_of(id).is_some_and(|a| read.contains(a)) {
                                continue;
                            }
                            let now = match jobs.get(id) {
                                Some(observed) => {
                                    followed.missing = 0;
                                    Seen::Listed(observed.clone())
                                }
                                None => {
                                    followed.missing = followed.missing.saturating_add(1);
                                    if followed.missing < 2 {
                                        continue;
                                    }
                                    Seen::Gone
                                }
                            };
                            followed.seen.send_if_modified(|seen| {
                                if *seen == now {
                                    false
                                } else {
                                    *seen = now;
                                    true
                                }
                            });
                        }
                        drop(inner);
                        self.trouble.send_if_modified(|t| t.take().is_some());
                    }
                    Err(e) => {
                        let text = match &e.help {
                            Some(help) => format!("{} ({help})", e.message),
                            None => e.message.clone(),
                        };
                        self.trouble.send_if_modified(|t| {
                            if t.as_deref() == Some(text.as_str()) {
                                false
                            } else {
                                *t = Some(text);
                                true
                            }
                        });
                    }
                }
                self.ticks.send_modify(|t| *t = t.wrapping_add(1));
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// What Slurm says of `ids` (executor ids: `ARRAY_TASK` or plain job ids): one `squeue` call
/// per job array (a run has one per resource shape), all at once. Jobs Slurm does not know are
/// absent.
///
/// Not one call for every array: given several job ids, `squeue` loads every job the
/// controller holds and filters them itself (40 ms of CPU and 100 ms with 22,000 jobs held),
/// while for one id the controller answers with that job's records alone.
///
/// # Errors
/// When `squeue` fails (other than for knowing none of the jobs).
pub async fn squeue(tools: &Tools, ids: &[String]) -> Snapshot {
    let arrays: BTreeSet<&str> = ids.iter().filter_map(|id| array_of(id)).collect();
    let calls = arrays.into_iter().map(|array| async move {
        let args = [
            "--noheader".to_owned(),
            "--array".to_owned(),
            "--states=all".to_owned(),
            format!("--jobs={array}"),
            format!("--Format={SQUEUE_FORMAT}"),
        ];
        match tools.run("squeue", &args, None).await {
            Ok(out) => Ok(parse_squeue(&out.stdout)),
            // A job the controller no longer knows.
            Err(e) if e.message.contains("Invalid job id specified") => Ok(HashMap::new()),
            Err(e) => Err(e),
        }
    });
    let mut all = HashMap::new();
    for part in futures_util::future::join_all(calls).await {
        all.extend(part?);
    }
    Ok(all)
}

/// Cancels `ids` (`--signal=KILL --full` when `kill`). Jobs that already ended are not an
/// error.
///
/// # Errors
/// When `scancel` cannot run or the controller does not answer.
pub async fn scancel(tools: &Tools, ids: &[String], kill: bool) -> Result<(), ExecutorError> {
    let mut args: Vec<String> = if kill {
        vec!["--signal=KILL".to_owned(), "--full".to_owned()]
    } else {
        Vec::new()
    };
    args.extend(ids.iter().filter(|id| array_of(id).is_some()).cloned());
    if args.len() == usize::from(kill) * 2 {
        return Ok(());
    }
    match tools.run("scancel", &args, None).await {
        Ok(_) => Ok(()),
        Err(e)
            if e.message.contains("Invalid job id")
                || e.message.contains("already completing or completed")
                || e.message.contains("Job/step already completing") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Waits (polling every `interval`, at most `limit`) until none of `ids` is queued or running.
///
/// # Errors
/// When `squeue` fails, or jobs are still there after `limit`.
pub async fn wait_ended(
    tools: &Tools,
    ids: &[String],
    interval: Duration,
    limit: Duration,
) -> Result<(), ExecutorError> {
    let start = tokio::time::Instant::now();
    loop {
        let jobs = squeue(tools, ids).await?;
        let left: Vec<&String> = ids
            .iter()
            .filter(|id| jobs.get(*id).is_some_and(|o| o.phase() != Phase::Ended))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(ExecutorError::new(format!(
                "Slurm job(s) {} are still there {}s after they were cancelled",
                left.iter()
                    .take(10)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                limit.as_secs()
            )));
        }
        tokio::time::sleep(interval).await;
    }
}
