//! The `curl` provider's jobs: an HTTP(S) download, streamed to disk on the host side.
//!
//! The body goes to `OUTPUT.part` and is renamed to `OUTPUT` only when complete, so a failed
//! or cancelled download never leaves a file that looks finished. HTTP errors (404...),
//! refused connections and bodies shorter than their `Content-Length` fail the job with the
//! reason.
//!
//! Cancellation (a stop, Ctrl-C, the job's `timeout`) shuts the request's agent down, which
//! interrupts a read the server leaves waiting: the job ends at once, not when the server
//! answers. Only a connection still being made is not interrupted (bounded by
//! [`CONNECT_TIMEOUT`]): the job ends after [`CANCEL_GRACE`], and the thread behind it ends
//! with that connection, removing what it wrote.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dstack_core::Download;
use dstack_core::resources::format_bytes;
use dstack_core::run::{FailureReason, JobOutcome, Reporter, Stream};
use tokio_util::sync::CancellationToken;

/// How long name resolution and connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a cancelled download may take to end before the job ends without it.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

fn failed(message: String) -> JobOutcome {
    JobOutcome::Failed(FailureReason::Error { message })
}

/// Downloads `d.url` to `working_dir/d.output`.
pub(crate) async fn run(
    d: &Download,
    working_dir: &Path,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> JobOutcome {
    let url = d.url.clone();
    let output = d.output.clone();
    let target = working_dir.join(&d.output);
    let config = ureq::Agent::config_builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .user_agent(concat!("dstack-rs/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let token = cancel.clone();
    let mut task = tokio::task::spawn_blocking({
        let agent = agent.clone();
        move || fetch(&agent, &url, &target, &output, reporter.as_ref(), &token)
    });
    let finished = tokio::select! {
        finished = &mut task => finished,
        () = cancel.cancelled() => {
            // Interrupts the request wherever it waits on the server; the thread then sees
            // the cancellation and removes the partial file.
            agent.shutdown();
            match tokio::time::timeout(CANCEL_GRACE, &mut task).await {
                Ok(finished) => finished,
                // Still connecting: the thread ends with the connection attempt.
                Err(_) => return JobOutcome::Cancelled,
            }
        }
    };
    match finished {
        Ok(outcome) => outcome,
        Err(e) => failed(format!("the download task failed: {e}")),
    }
}

fn fetch(
    agent: &ureq::Agent,
    url: &str,
    target: &Path,
    output: &str,
    reporter: &dyn Reporter,
    cancel: &CancellationToken,
) -> JobOutcome {
    reporter.started(&format!("download:{url}"));
    reporter.log(Stream::Stderr, format!("downloading {url}\n").as_bytes());
    let response = match agent.get(url).call() {
        Err(_) if cancel.is_cancelled() => return JobOutcome::Cancelled,
        Ok(r) => r,
        Err(ureq::Error::StatusCode(code)) => {
            return failed(format!(
                "downloading `{url}` failed: the server answered HTTP {code}"
            ));
        }
        Err(e) => return failed(format!("downloading `{url}` failed: {e}")),
    };
    let expected = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(parent) = target.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        return failed(format!("cannot create `{}`: {e}", parent.display()));
    }
    let mut part = target.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let mut file = match std::fs::File::create(&part) {
        Ok(f) => std::io::BufWriter::with_capacity(1 << 20, f),
        Err(e) => return failed(format!("cannot write `{}`: {e}", part.display())),
    };
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    let mut next_note: u64 = 64 << 20;
    let outcome = loop {
        if cancel.is_cancelled() {
            break JobOutcome::Cancelled;
        }
        match body.read(&mut buf) {
            // A shut-down connection may end a body without a length as if it were whole.
            Ok(0) if cancel.is_cancelled() => break JobOutcome::Cancelled,
            Ok(0) => break JobOutcome::Succeeded,
            Ok(n) => {
                if let Err(e) = file.write_all(&buf[..n]) {
                    break failed(format!("cannot write `{}`: {e}", part.display()));
                }
                total += n as u64;
                if total >= next_note {
                    reporter.note(&format!("{url}: {} downloaded", format_bytes(total)));
                    next_note += 64 << 20;
                }
            }
            Err(_) if cancel.is_cancelled() => break JobOutcome::Cancelled,
            Err(e) => {
                break failed(format!(
                    "downloading `{url}` failed after {total} bytes: {e}"
                ));
            }
        }
    };
    let outcome = match outcome {
        JobOutcome::Succeeded => match (expected, file.flush()) {
            (_, Err(e)) => failed(format!("cannot write `{}`: {e}", part.display())),
            (Some(len), _) if len != total => failed(format!(
                "downloading `{url}` failed: the body has {total} bytes, the server announced {len}"
            )),
            _ => match std::fs::rename(&part, target) {
                Ok(()) => {
                    reporter.log(
                        Stream::Stderr,
                        format!("saved {} to {output}\n", format_bytes(total)).as_bytes(),
                    );
                    JobOutcome::Succeeded
                }
                Err(e) => failed(format!(
                    "cannot move the download to `{}`: {e}",
                    target.display()
                )),
            },
        },
        other => other,
    };
    if outcome != JobOutcome::Succeeded {
        let _ = std::fs::remove_file(&part);
    }
    outcome
}
