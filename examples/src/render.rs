//! Live progress of a run in the terminal: one status line per job (indicatif) with the jobs'
//! logs printed above, prefixed with the job; plain lines when stderr is not a terminal.
//! `NO_COLOR` turns colours off.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dstack_core::run::{Event, JobStatus, Stream, Subscriber};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Colours, when stderr is a terminal and `NO_COLOR` is not set.
#[derive(Clone, Copy, Debug)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// Colours for stderr.
    pub fn stderr() -> Paint {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Paint {
            on: std::io::stderr().is_terminal() && !no_color,
        }
    }

    fn wrap(self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// A job status, coloured by outcome.
    pub fn status(self, status: JobStatus) -> String {
        let code = match status {
            JobStatus::Done | JobStatus::Reused => "32",
            JobStatus::Failed => "31",
            JobStatus::Skipped | JobStatus::Stopped | JobStatus::Aborted => "33",
            _ => "36",
        };
        self.wrap(code, status.as_str())
    }

    /// Dimmed text.
    pub fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
}

struct State {
    bars: HashMap<String, ProgressBar>,
    started: HashMap<String, Instant>,
    width: usize,
}

/// Renders events of one run.
pub struct Renderer {
    multi: Option<MultiProgress>,
    paint: Paint,
    /// Whether to print the jobs' output.
    show_logs: bool,
    state: Mutex<State>,
    /// Job output not written yet (plain mode only: with bars, each line is printed at once).
    pending: Mutex<Pending>,
}

/// Jobs' output lines gathered for one write: a job printing millions of lines costs a
/// `write` per 64 KiB rather than per line. Written when the other stream or any other line
/// comes, when 64 KiB are gathered, and otherwise within [`FLUSH_EVERY`].
struct Pending {
    stream: Stream,
    bytes: Vec<u8>,
}

/// The longest job output waits before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const PENDING_LIMIT: usize = 64 * 1024;

impl Pending {
    fn flush(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        let _ = match self.stream {
            Stream::Stdout => std::io::stdout().write_all(&self.bytes),
            Stream::Stderr => std::io::stderr().write_all(&self.bytes),
        };
        self.bytes.clear();
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Renderer {
    /// A renderer for stderr (bars when it is a terminal) and stdout (job output).
    pub fn new(show_logs: bool) -> Arc<Renderer> {
        let tty = std::io::stderr().is_terminal();
        let renderer = Arc::new(Renderer {
            multi: tty
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))),
            paint: Paint::stderr(),
            show_logs,
            state: Mutex::new(State {
                bars: HashMap::new(),
                started: HashMap::new(),
                width: 8,
            }),
            pending: Mutex::new(Pending {
                stream: Stream::Stdout,
                bytes: Vec::new(),
            }),
        });
        if renderer.multi.is_none() && show_logs {
            // Writes what waits when nothing else comes; ends with the renderer.
            let weak = Arc::downgrade(&renderer);
            let _ = std::thread::Builder::new()
                .name("dstack-output".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(FLUSH_EVERY);
                        match weak.upgrade() {
                            Some(renderer) => renderer.flush(),
                            None => return,
                        }
                    }
                });
        }
        renderer
    }

    /// Writes the job output that waits.
    pub fn flush(&self) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush();
    }

    /// The subscriber to hand to the engine.
    pub fn subscriber(self: &Arc<Self>) -> Subscriber {
        let me = self.clone();
        Arc::new(move |e: &Event| me.handle(e))
    }

    /// Prints a line on stderr without breaking the bars.
    pub fn eprintln(&self, line: &str) {
        self.flush();
        match &self.multi {
            Some(m) => m.suspend(|| {
                let _ = writeln!(std::io::stderr(), "{line}");
            }),
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    fn handle(&self, event: &Event) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Event::RunStarted { jobs, executor, .. } => {
                state.width = jobs.iter().map(String::len).max().unwrap_or(8).max(4);
                drop(state);
                self.eprintln(
                    &self
                        .paint
                        .dim(&format!("{} job(s) on executor `{executor}`", jobs.len())),
                );
            }
            Event::JobStatus {
                job,
                status,
                attempt,
                detail,
                ..
            } => {
                let width = state.width;
                let now = Instant::now();
                if *status == JobStatus::Running {
                    state.started.insert(job.clone(), now);
                }
                let elapsed = state.started.get(job).map(|t| now.duration_since(*t));
                let mut message = self.paint.status(*status);
                if *attempt > 1 {
                    message.push_str(&format!(" (attempt {attempt})"));
                }
                if status.is_finished()
                    && let Some(e) = elapsed.filter(|_| *status != JobStatus::Skipped)
                {
                    message.push_str(&format!(" in {}", short(e)));
                }
                if let Some(d) = detail {
                    message.push_str(&format!(": {d}"));
                }
                match &self.multi {
                    Some(multi) => {
                        let bar = state.bars.entry(job.clone()).or_insert_with(|| {
                            let bar = multi.add(ProgressBar::new_spinner());
                            bar.set_style(
                                ProgressStyle::with_template("{spinner} {prefix} {msg}")
                                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                            );
                            bar.set_prefix(format!("{job:width$}"));
                            bar.enable_steady_tick(Duration::from_millis(120));
                            bar
                        });
                        if status.is_finished() {
                            bar.finish_with_message(message);
                        } else {
                            bar.set_message(message);
                        }
                    }
                    None => {
                        drop(state);
                        // Plain output keeps to what matters: start and end.
                        if *status == JobStatus::Running || status.is_finished() {
                            self.eprintln(&format!("{job:width$}  {message}"));
                        }
                    }
                }
            }
            Event::JobRetrying {
                job,
                reason,
                next_attempt,
                delay_ms,
                ..
            } => {
                drop(state);
                self.eprintln(&format!(
                    "{job}: {reason}; attempt {next_attempt} in {}",
                    short(Duration::from_millis(*delay_ms))
                ));
            }
            Event::Log {
                job, stream, text, ..
            } => {
                if !self.show_logs {
                    return;
                }
                let width = state.width;
                drop(state);
                if self.multi.is_none() {
                    let mut pending = self
                        .pending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if pending.stream != *stream {
                        pending.flush();
                        pending.stream = *stream;
                    }
                    let bytes = &mut pending.bytes;
                    if self.paint.on {
                        bytes.extend_from_slice(
                            self.paint.dim(&format!("{job:width$} |")).as_bytes(),
                        );
                    } else {
                        let _ = write!(bytes, "{job:width$} |");
                    }
                    bytes.push(b' ');
                    bytes.extend_from_slice(text.as_bytes());
                    if !text.ends_with('\n') {
                        bytes.push(b'\n');
                    }
                    if pending.bytes.len() >= PENDING_LIMIT {
                        pending.flush();
                    }
                    return;
                }
                let prefix = self.paint.dim(&format!("{job:width$} |"));
                let mut line = format!("{prefix} {text}");
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                let print = || match stream {
                    Stream::Stdout => {
                        let _ = std::io::stdout().write_all(line.as_bytes());
                    }
                    Stream::Stderr => {
                        let _ = std::io::stderr().write_all(line.as_bytes());
                    }
                };
                match &self.multi {
                    Some(m) => m.suspend(print),
                    None => print(),
                }
            }
            Event::Note { job, message, .. } => {
                drop(state);
                self.eprintln(&format!("{job}: {message}"));
            }
            Event::RunFinished { .. } => {
                self.flush();
                for bar in state.bars.values() {
                    if !bar.is_finished() {
                        bar.abandon();
                    }
                }
            }
        }
    }
}

/// `1.2s`, `3m 4s`.
pub fn short(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}
