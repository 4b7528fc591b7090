//! Artifacts: folders a job declares, saved after it succeeds and handed to its dependents.
//!
//! Saving moves the folder out of the job's private tree into the artifact store (a rename:
//! O(1) whatever the size). Handing over links the stored files into a dependent's tree at the
//! same relative paths: a reflink where the file system has them, else a hard link, else a
//! copy, so gigabytes are never copied when they need not be. A job must treat its inputs as
//! read-only (Docker mounts them read-only; the local executor shares the stored files).
//!
//! Stored artifact files are made read-only, so a job that does not run as root cannot change
//! its inputs; [`fingerprint`] and [`changed`] let an executor that links inputs detect a job
//! (running as root) that changed one anyway, and fail it with a clear message.
//!
//! An artifact path must stay inside the working directory, also through symlinks; a declared
//! artifact that the job did not produce fails the job.

use std::io;
use std::path::{Path, PathBuf};

use super::executor::{FailureReason, Input};

fn error(message: String) -> FailureReason {
    FailureReason::Error { message }
}

/// Where artifact `path` of a job is, checked: it exists and neither it nor anything inside it
/// leads out of `tree` through a symlink.
///
/// # Errors
/// [`FailureReason::MissingArtifact`] when it does not exist, an error when it escapes.
pub fn locate(tree: &Path, working_dir: &Path, path: &str) -> Result<PathBuf, FailureReason> {
    let full = working_dir.join(path);
    if std::fs::symlink_metadata(&full).is_err() {
        return Err(FailureReason::MissingArtifact {
            path: path.to_owned(),
        });
    }
    let tree = tree
        .canonicalize()
        .map_err(|e| error(format!("cannot read the job's tree: {e}")))?;
    let real = full.canonicalize().map_err(|_| {
        error(format!(
            "artifact `{path}` is a symlink that points nowhere"
        ))
    })?;
    if !real.starts_with(&tree) {
        return Err(error(format!(
            "artifact `{path}` leads out of the working directory through a symlink (to `{}`)",
            real.display()
        )));
    }
    if real.is_dir() {
        for entry in
            walk(&real).map_err(|e| error(format!("cannot read artifact `{path}`: {e}")))?
        {
            if entry.is_symlink() {
                let target = entry.canonicalize().unwrap_or_else(|_| entry.clone());
                if !target.starts_with(&tree) {
                    return Err(error(format!(
                        "artifact `{path}` holds a symlink that leads out of the working directory: `{}`",
                        entry.strip_prefix(&real).unwrap_or(&entry).display()
                    )));
                }
            }
        }
    }
    Ok(full)
}

/// Every path under `dir` (not following symlinks), depth first.
///
/// # Errors
/// When a folder cannot be read.
pub fn walk(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    Ok(out)
}

/// Moves a job's declared artifacts from its working directory into `store` (at their relative
/// paths).
///
/// # Errors
/// The first artifact that is missing, escapes, or cannot be moved.
pub fn save(
    tree: &Path,
    working_dir: &Path,
    paths: &[String],
    store: &Path,
) -> Result<(), FailureReason> {
    // Check them all before moving any, so a failure leaves the tree as the job left it.
    let located: Vec<(PathBuf, &String)> = paths
        .iter()
        .map(|p| locate(tree, working_dir, p).map(|full| (full, p)))
        .collect::<Result<_, _>>()?;
    for (full, path) in located {
        let to = store.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                error(format!(
                    "cannot create the artifact store `{}`: {e}",
                    parent.display()
                ))
            })?;
        }
        if let Err(e) = std::fs::rename(&full, &to) {
            // Another file system (a tree on tmpfs, say): copy instead.
            link_tree(&full, &to, false).map_err(|e2| {
                error(format!(
                    "cannot save artifact `{path}`: {e}; copying failed too: {e2}"
                ))
            })?;
        }
        protect(&to).map_err(|e| error(format!("cannot make artifact `{path}` read-only: {e}")))?;
    }
    Ok(())
}

/// Removes the write permission of every file under `path` (folders stay writable, so runs
/// can still be deleted).
fn protect(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let files = if std::fs::symlink_metadata(path)?.is_dir() {
        walk(path)?
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let meta = std::fs::symlink_metadata(&file)?;
        if meta.is_file() {
            let mode = meta.permissions().mode() & !0o222;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// What the stored files of some inputs look like: path, producing job, size, modification
/// time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, String, u64, Option<std::time::SystemTime>)>);

/// Records the stored files of `inputs`, to check after the job that it left them alone.
#[must_use]
pub fn fingerprint(inputs: &[Input]) -> Fingerprint {
    let mut out = Vec::new();
    for input in inputs {
        let files = match std::fs::symlink_metadata(&input.source) {
            Ok(m) if m.is_dir() => walk(&input.source).unwrap_or_default(),
            Ok(_) => vec![input.source.clone()],
            Err(_) => Vec::new(),
        };
        for file in files {
            if let Ok(meta) = std::fs::symlink_metadata(&file)
                && meta.is_file()
            {
                out.push((
                    file,
                    input.from_job.clone(),
                    meta.len(),
                    meta.modified().ok(),
                ));
            }
        }
    }
    Fingerprint(out)
}

/// The first stored input file that changed since `before` was taken, as a failure.
#[must_use]
pub fn changed(before: &Fingerprint, inputs: &[Input]) -> Option<FailureReason> {
    for (file, from_job, len, modified) in &before.0 {
        let now = std::fs::symlink_metadata(file).ok();
        let same = now
            .as_ref()
            .is_some_and(|m| m.len() == *len && m.modified().ok() == *modified);
        if !same {
            let shown = inputs
                .iter()
                .find_map(|i| {
                    file.strip_prefix(&i.source)
                        .ok()
                        .map(|rest| Path::new(&i.path).join(rest))
                })
                .unwrap_or_else(|| file.clone());
            return Some(error(format!(
                "the job changed its input `{}` (an artifact of `{from_job}`), which is shared with the artifact store: inputs are read-only, write new files instead",
                shown.display()
            )));
        }
    }
    None
}

/// Makes `inputs` visible in `working_dir` at their relative paths: whatever the job's tree has
/// there is replaced.
///
/// # Errors
/// When a link or copy fails.
pub fn hand_over(inputs: &[Input], working_dir: &Path) -> Result<(), FailureReason> {
    for input in inputs {
        let to = working_dir.join(&input.path);
        match std::fs::symlink_metadata(&to) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&to),
            Ok(_) => std::fs::remove_file(&to),
            Err(_) => Ok(()),
        }
        .map_err(|e| {
            error(format!(
                "cannot replace `{}` with the artifact of `{}`: {e}",
                input.path, input.from_job
            ))
        })?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| error(format!("cannot create `{}`: {e}", parent.display())))?;
        }
        link_tree(&input.source, &to, true).map_err(|e| {
            error(format!(
                "cannot hand over artifact `{}` of `{}`: {e}",
                input.path, input.from_job
            ))
        })?;
    }
    Ok(())
}

/// Recreates `src` at `dest`: folders are created, symlinks recreated, files reflinked, else
/// hard-linked (when `share` is true), else copied.
///
/// # Errors
/// When `src` cannot be read or `dest` written.
pub fn link_tree(src: &Path, dest: &Path, share: bool) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_symlink() {
        return std::os::unix::fs::symlink(std::fs::read_link(src)?, dest);
    }
    if meta.is_file() {
        return link_file(src, dest, share, &mut true);
    }
    let mut reflinks = true;
    std::fs::create_dir_all(dest)?;
    for path in walk(src)? {
        let rel = path.strip_prefix(src).map_err(io::Error::other)?;
        let to = dest.join(rel);
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            std::fs::create_dir_all(&to)?;
        } else if meta.is_symlink() {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::os::unix::fs::symlink(std::fs::read_link(&path)?, &to)?;
        } else if meta.is_file() {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            link_file(&path, &to, share, &mut reflinks)?;
        }
    }
    Ok(())
}

/// Links one file; `reflinks` turns false after the first refused reflink, so a file system
/// without them costs one failed attempt per tree, not one per file.
fn link_file(src: &Path, dest: &Path, share: bool, reflinks: &mut bool) -> io::Result<()> {
    if *reflinks {
        if reflink_copy::reflink(src, dest).is_ok() {
            return Ok(());
        }
        *reflinks = false;
        // A failed attempt may leave an empty file behind.
        let _ = std::fs::remove_file(dest);
    }
    if share && std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dest).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("out/sub")).expect("mkdir");
        std::fs::write(tree.join("out/a.txt"), "a").expect("write");
        std::fs::write(tree.join("out/sub/b.txt"), "b").expect("write");
        (dir, tree)
    }

    #[test]
    fn save_moves_and_hand_over_links() {
        let (dir, tree) = tree();
        let store = dir.path().join("store");
        save(&tree, &tree, &["out".into()], &store).expect("saves");
        assert!(!tree.join("out").exists(), "moved, not copied");
        assert_eq!(
            std::fs::read_to_string(store.join("out/sub/b.txt")).expect("read"),
            "b"
        );

        let next = dir.path().join("next");
        std::fs::create_dir_all(next.join("out")).expect("mkdir");
        std::fs::write(next.join("out/stale.txt"), "stale").expect("write");
        let input = Input {
            from_job: "prepare".into(),
            source: store.join("out"),
            path: "out".into(),
        };
        hand_over(&[input], &next).expect("hands over");
        assert_eq!(
            std::fs::read_to_string(next.join("out/a.txt")).expect("read"),
            "a"
        );
        assert!(
            !next.join("out/stale.txt").exists(),
            "the artifact replaces what was there"
        );
    }

    #[test]
    fn missing_and_escaping_artifacts_are_refused() {
        let (dir, tree) = tree();
        let store = dir.path().join("store");
        assert_eq!(
            save(&tree, &tree, &["out".into(), "nope".into()], &store),
            Err(FailureReason::MissingArtifact {
                path: "nope".into()
            })
        );
        assert!(
            tree.join("out").exists(),
            "nothing moved when one artifact is missing"
        );

        std::fs::create_dir_all(dir.path().join("outside")).expect("mkdir");
        std::os::unix::fs::symlink(dir.path().join("outside"), tree.join("link")).expect("symlink");
        let err = save(&tree, &tree, &["link".into()], &store).expect_err("escapes");
        assert!(
            err.to_string()
                .contains("leads out of the working directory"),
            "{err}"
        );

        std::os::unix::fs::symlink("/etc/passwd", tree.join("out/sub/passwd")).expect("symlink");
        let err = save(&tree, &tree, &["out".into()], &store).expect_err("escapes inside");
        assert!(err.to_string().contains("holds a symlink"), "{err}");
    }
}
