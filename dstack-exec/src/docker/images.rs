//! Images: references, pulls with progress.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptions, CreateImageOptionsBuilder};
use dstack_core::resources::format_bytes;
use futures_util::StreamExt as _;

use super::client::describe;

/// How `/images/create` wants a reference: `fromImage` and `tag`. A reference without a tag
/// means `latest` (without one, the engine would pull every tag); with a digest, the
/// reference is passed whole.
pub(crate) fn pull_options(image: &str) -> CreateImageOptions {
    let (name, tag) = split_reference(image);
    let mut builder = CreateImageOptionsBuilder::default().from_image(name);
    if let Some(tag) = tag {
        builder = builder.tag(tag);
    }
    builder.build()
}

/// `(name, tag)` of a reference: `ubuntu` -> (`ubuntu`, `latest`), `localhost:5000/a/b:1` ->
/// (`localhost:5000/a/b`, `1`), `a@sha256:...` -> (`a@sha256:...`, none).
pub(crate) fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], Some(&image[last + i + 1..])),
        None => (image, Some("latest")),
    }
}

/// Pulls `image`, calling `progress` with a line now and then (at most once a second, and at
/// the start and the end). `Err` holds the engine's reason.
pub(crate) async fn pull(
    docker: &Docker,
    image: &str,
    mut progress: impl FnMut(String),
) -> Result<(), String> {
    progress(format!("pulling image `{image}`"));
    let mut stream = docker.create_image(Some(pull_options(image)), None, None);
    let mut layers = Layers::default();
    let mut last = Instant::now();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| describe(&e))?;
        layers.update(
            info.id.as_deref(),
            info.status.as_deref(),
            info.progress_detail
                .as_ref()
                .and_then(|d| Some((d.current?, d.total?))),
        );
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            if let Some(line) = layers.summary() {
                progress(format!("pulling image `{image}`: {line}"));
            }
        }
    }
    progress(format!("pulled image `{image}`"));
    Ok(())
}

/// The layers of a pull and how far each is.
#[derive(Debug, Default)]
struct Layers {
    /// Layer id -> (downloaded bytes, size, done).
    layers: HashMap<String, (u64, u64, bool)>,
}

impl Layers {
    fn update(&mut self, id: Option<&str>, status: Option<&str>, bytes: Option<(i64, i64)>) {
        let (Some(id), Some(status)) = (id, status) else {
            return;
        };
        // Lines without a layer (`Pulling from library/ubuntu`) carry the tag as their id.
        let layer_status = matches!(
            status,
            "Pulling fs layer"
                | "Waiting"
                | "Downloading"
                | "Verifying Checksum"
                | "Download complete"
                | "Extracting"
                | "Pull complete"
                | "Already exists"
        );
        if !layer_status {
            return;
        }
        let entry = self.layers.entry(id.to_owned()).or_insert((0, 0, false));
        match status {
            "Downloading" => {
                if let Some((current, total)) = bytes {
                    entry.0 = u64::try_from(current).unwrap_or(0);
                    entry.1 = u64::try_from(total).unwrap_or(0);
                }
            }
            "Download complete" | "Verifying Checksum" | "Extracting" => entry.0 = entry.1,
            "Pull complete" | "Already exists" => {
                entry.0 = entry.1;
                entry.2 = true;
            }
            _ => {}
        }
    }

    fn summary(&self) -> Option<String> {
        if self.layers.is_empty() {
            return None;
        }
        let (mut current, mut total, mut done) = (0, 0, 0);
        for (c, t, d) in self.layers.values() {
            current += c;
            total += t;
            done += usize::from(*d);
        }
        Some(format!(
            "{} of {} downloaded, {done} of {} layers done",
            format_bytes(round_mb(current)),
            format_bytes(round_mb(total)),
            self.layers.len()
        ))
    }
}

/// Rounds to whole megabytes above one, so that progress reads `120 MB`, not `120034567 B`.
fn round_mb(bytes: u64) -> u64 {
    if bytes >= 1_000_000 {
        (bytes + 500_000) / 1_000_000 * 1_000_000
    } else {
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_reference("ubuntu"), ("ubuntu", Some("latest")));
        assert_eq!(split_reference("python:3.11"), ("python", Some("3.11")));
        assert_eq!(
            split_reference("localhost:5000/team/img"),
            ("localhost:5000/team/img", Some("latest"))
        );
        assert_eq!(
            split_reference("localhost:5000/team/img:v2"),
            ("localhost:5000/team/img", Some("v2"))
        );
        assert_eq!(
            split_reference("ubuntu@sha256:abcd"),
            ("ubuntu@sha256:abcd", None)
        );
    }

    #[test]
    fn progress_lines() {
        let mut l = Layers::default();
        assert_eq!(l.summary(), None);
        l.update(Some("3.11"), Some("Pulling from library/python"), None);
        assert_eq!(l.summary(), None);
        l.update(Some("a"), Some("Pulling fs layer"), None);
        l.update(Some("b"), Some("Already exists"), None);
        l.update(
            Some("a"),
            Some("Downloading"),
            Some((20_000_000, 50_000_000)),
        );
        assert_eq!(
            l.summary().as_deref(),
            Some("20 MB of 50 MB downloaded, 1 of 2 layers done")
        );
        l.update(Some("a"), Some("Pull complete"), None);
        assert_eq!(
            l.summary().as_deref(),
            Some("50 MB of 50 MB downloaded, 2 of 2 layers done")
        );
    }
}
