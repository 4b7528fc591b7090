//! The Git state of a run: captured at `dstack run`, reproduced in each job's tree.
//!
//! [`capture`] records where the project stands: the remote, the branch (or detached HEAD),
//! the commit, and the exact content of every path that differs between that commit's tree and
//! the working tree. [`Snapshot::save`] stores it with the run (contents included, so later
//! edits by the user do not matter) and [`Snapshot::load`] reads it back. [`materialise`] writes
//! commit + changes into a fresh folder, from the local repository's object database only: no
//! network, no checkout, the user's working tree and index are never touched.
//!
//! # What is captured
//!
//! Not a textual diff (a patch may not re-apply, and binary files, modes and odd names make it
//! fragile) but the working tree itself, relative to HEAD's tree: for every path that differs,
//! its final content and kind (file, executable file, symbolic link), or the fact that it is
//! gone. The index is only used as Git's stat cache: staged and unstaged changes alike end up
//! as "what the file holds now". Renames are a deletion plus an addition; untracked files are
//! additions; ignored files (`.gitignore`, `.git/info/exclude`, `core.excludesFile`), `.git/`,
//! the state folder and `.dstack/state/` are never captured. Contents are kept once per Git blob
//! id (`changes/<blob id>` next to `snapshot.json`).
//!
//! # Submodules
//!
//! An initialised submodule is captured recursively (its checked-out commit and its own local
//! changes) and materialised from its local object database (`.git/modules/NAME`, found
//! through the submodule's folder). A submodule that is not initialised (no `.git` in its
//! folder) is materialised as an empty folder, and the snapshot says so in [`Snapshot::notes`].
//!
//! # Limits and what is not reproduced
//!
//! - The captured contents are limited ([`DEFAULT_MAX_BYTES`], 1 GiB, see [`CaptureOptions`]):
//!   over it, capture fails with [`GitError::TooLarge`] naming the biggest files. Nothing is ever
//!   left out silently.
//! - Empty folders are not reproduced (Git does not track folders).
//! - Files under Git filters (Git LFS, `eol`/`autocrlf` conversion, `ident`) that are unchanged
//!   are written as Git stores them; changed ones as they are in the working tree.
//! - Nested repositories that are not submodules, sockets, fifos and devices are left out, with
//!   a note.
//! - The commit must stay in the local repository: a commit dropped by a rebase and a garbage
//!   collection gives [`GitError::CommitMissing`].

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use git2::{ErrorCode, ObjectType, Oid, Repository, StatusOptions};
use serde::{Deserialize, Serialize};

/// The default limit on the total size of the captured contents: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The version of the saved format (`snapshot.json` + `changes/`).
const FORMAT: u32 = 1;
/// The file holding the snapshot's metadata and list of changes.
const MANIFEST: &str = "snapshot.json";
/// The folder holding the changed contents, one file per blob id.
const CHANGES: &str = "changes";
/// How many of the biggest files [`GitError::TooLarge`] names.
const BIGGEST: usize = 10;
/// How many threads write a snapshot's contents.
const SAVE_THREADS: usize = 16;
/// How deep submodules may nest.
const MAX_DEPTH: usize = 16;

/// Why the Git state could not be captured or reproduced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// The project is not in a Git repository.
    #[error(
        "`{}` is not in a Git repository\n  help: dstack records the commit and the local changes of every run so that it can be reproduced; run `git init` (and commit your files) to make this folder a repository, or run the folder as it is, without recording a version (`--no-git`; `no_git=True` in Python)",
        path.display()
    )]
    NotARepository {
        /// The folder.
        path: PathBuf,
    },
    /// The run's commit is not in the local repository any more.
    #[error(
        "commit {commit} of this run is not in the Git repository at `{}`\n  help: a rebase or an amend followed by a garbage collection (`git gc`) removes commits; fetch or restore it to reproduce this run",
        repo.display()
    )]
    CommitMissing {
        /// The commit.
        commit: String,
        /// The repository searched.
        repo: PathBuf,
    },
    /// The local changes are bigger than the limit.
    #[error("{}", too_large(*.total, *.limit, .biggest))]
    TooLarge {
        /// Their total size in bytes.
        total: u64,
        /// The limit in bytes.
        limit: u64,
        /// The biggest changed files (relative to the repository), biggest first, with sizes.
        biggest: Vec<(PathBuf, u64)>,
    },
    /// A file could not be read or written.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A saved snapshot is damaged or was written by another version.
    #[error("the saved Git snapshot in `{}` cannot be used: {reason}", path.display())]
    Corrupt {
        /// Where it is.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Git itself failed (an unreadable repository, a broken object...).
    #[error("{0}")]
    Git(String),
}

fn too_large(total: u64, limit: u64, biggest: &[(PathBuf, u64)]) -> String {
    let mut s = format!(
        "the local changes to record add up to {}, over the limit of {}; the biggest changed files:",
        human(total),
        human(limit)
    );
    for (path, size) in biggest {
        s.push_str(&format!("\n    {} ({})", path.display(), human(*size)));
    }
    s.push_str(
        "\n  help: commit them, list them in `.gitignore` if jobs do not need them, or raise the limit",
    );
    s
}

/// `1536` → `1.5 KiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn git_err(context: impl fmt::Display, e: &git2::Error) -> GitError {
    GitError::Git(format!("{context}: {}", e.message()))
}

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> GitError {
    let path = path.into();
    move |source| GitError::Io { path, source }
}

/// A path as Git stores it: bytes, `/`-separated, relative to the repository.
///
/// Serialised as a string when it is UTF-8, else as `{"hex": "..."}`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawPath(Vec<u8>);

impl RawPath {
    /// Wraps raw bytes.
    #[must_use]
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        RawPath(bytes.into())
    }

    /// The bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether it is empty (the repository's root).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a relative file-system path.
    #[must_use]
    pub fn to_path_buf(&self) -> PathBuf {
        bytes_path(&self.0).to_path_buf()
    }
}

impl fmt::Display for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawPathRepr {
    Text(String),
    Bytes { hex: String },
}

impl Serialize for RawPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => RawPathRepr::Text(text.to_owned()),
            Err(_) => RawPathRepr::Bytes {
                hex: self.0.iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawPathRepr::deserialize(d)? {
            RawPathRepr::Text(text) => Ok(RawPath(text.into_bytes())),
            RawPathRepr::Bytes { hex } => {
                let digits = hex.as_bytes();
                if digits.len() % 2 != 0 {
                    return Err(serde::de::Error::custom("odd number of hex digits"));
                }
                digits
                    .chunks(2)
                    .map(|pair| {
                        std::str::from_utf8(pair)
                            .ok()
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                            .ok_or_else(|| serde::de::Error::custom("invalid hex digit"))
                    })
                    .collect::<Result<Vec<u8>, _>>()
                    .map(RawPath)
            }
        }
    }
}

/// Where HEAD pointed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Head {
    /// On a branch.
    Branch {
        /// Its short name (`main`).
        name: String,
    },
    /// HEAD pointed at a commit directly.
    Detached,
    /// On a branch with no commit yet (a new repository).
    Unborn {
        /// The branch's short name.
        branch: String,
    },
}

/// How many paths changed, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// In the commit, with other content or kind now.
    pub modified: u64,
    /// Not in the commit (untracked or staged new files, the new name of a renamed file).
    pub added: u64,
    /// In the commit, gone now (the old name of a renamed file too).
    pub deleted: u64,
}

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A regular file (Git mode 100644).
    File,
    /// An executable file (Git mode 100755).
    Executable,
    /// A symbolic link (Git mode 120000): the content is its target.
    Symlink,
}

impl FileKind {
    fn from_mode(mode: i32) -> Option<FileKind> {
        match mode {
            0o100_644 | 0o100_664 => Some(FileKind::File),
            0o100_755 => Some(FileKind::Executable),
            0o120_000 => Some(FileKind::Symlink),
            _ => None,
        }
    }
}

/// How a path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeStatus {
    /// See [`Counts::modified`].
    Modified,
    /// See [`Counts::added`].
    Added,
    /// See [`Counts::deleted`].
    Deleted,
}

/// What a changed path holds now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// File, executable or link.
    pub kind: FileKind,
    /// The Git blob id of the content (the name of its file in `changes/`).
    pub blob: String,
    /// The content's size in bytes.
    pub size: u64,
}

/// One path that differs from the commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Relative to the repository's root.
    pub path: RawPath,
    /// How.
    pub status: ChangeStatus,
    /// The content now; `None` when deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

/// A submodule of the repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submodule {
    /// Its name in `.gitmodules`.
    pub name: String,
    /// Its folder, relative to the repository's root.
    pub path: RawPath,
    /// The commit the superproject's HEAD records for it, if any.
    pub recorded: Option<String>,
    /// Its own state, or `None` when it is not initialised (materialised as an empty folder).
    pub snapshot: Option<Box<Snapshot>>,
}

impl Submodule {
    /// Whether it differs from what the superproject's commit records: another commit, local
    /// changes, or added since.
    #[must_use]
    pub fn changed(&self) -> bool {
        match &self.snapshot {
            None => false,
            Some(s) => s.dirty || s.commit != self.recorded,
        }
    }
}

/// Options of [`capture_with`].
#[derive(Clone, Copy, Debug)]
pub struct CaptureOptions {
    /// The most bytes of changed content to record (files and link targets, submodules
    /// included); over it, capture fails with [`GitError::TooLarge`].
    pub max_bytes: u64,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The Git state of a project at one moment: commit + the exact local changes.
///
/// The metadata serialises as JSON (the list of changes included); the contents are held in
/// memory after [`capture`] and on disk after [`Snapshot::save`] / [`Snapshot::load`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// The saved format's version.
    pub format: u32,
    /// The URL of `origin`, else of the first remote, without credentials.
    pub remote: Option<String>,
    /// The branch, detached HEAD, or unborn branch.
    pub head: Head,
    /// The commit (hex), `None` in a repository with no commit yet.
    pub commit: Option<String>,
    /// The project's folder relative to the repository's root (empty: the root).
    pub subdir: RawPath,
    /// Whether anything differs from the commit (submodules included).
    pub dirty: bool,
    /// The changes by kind (this repository's only, submodules apart).
    pub counts: Counts,
    /// The size of the changed contents in bytes (submodules included).
    pub total_bytes: u64,
    /// Every path that differs from the commit, sorted by path.
    pub changes: Vec<Change>,
    /// The submodules inside the project's folder.
    #[serde(default)]
    pub submodules: Vec<Submodule>,
    /// What the user should know (submodules not initialised, nested repositories left out...).
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(skip)]
    store: Store,
}

/// Where the changed contents are.
#[derive(Clone, Default)]
enum Store {
    /// Nowhere (a submodule's snapshot: its contents are in the top one's store).
    #[default]
    None,
    /// In memory, by blob id, after capture.
    Memory(Arc<HashMap<String, Vec<u8>>>),
    /// In `DIR/changes/`, after save or load.
    Dir(PathBuf),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::None => f.write_str("None"),
            Store::Memory(blobs) => write!(f, "Memory({} blobs)", blobs.len()),
            Store::Dir(dir) => write!(f, "Dir({})", dir.display()),
        }
    }
}

impl Store {
    /// The content of `blob`, checked against its id when read from disk.
    fn get(&self, blob: &str) -> Result<Cow<'_, [u8]>, GitError> {
        match self {
            Store::None => Err(GitError::Corrupt {
                path: PathBuf::new(),
                reason: "the snapshot holds no contents".to_owned(),
            }),
            Store::Memory(blobs) => blobs
                .get(blob)
                .map(|b| Cow::Borrowed(b.as_slice()))
                .ok_or_else(|| GitError::Corrupt {
                    path: PathBuf::new(),
                    reason: format!("content {blob} is missing"),
                }),
            Store::Dir(dir) => {
                let path = dir.join(blob);
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                let id = Oid::hash_object(ObjectType::Blob, &bytes)
                    .map_err(|e| git_err("cannot hash a file", &e))?;
                if id.to_string() != blob {
                    return Err(GitError::Corrupt {
                        path,
                        reason: format!("the content of blob {blob} has changed"),
                    });
                }
                Ok(Cow::Owned(bytes))
            }
        }
    }
}

impl Snapshot {
    /// Writes the snapshot into `dir` (created): `snapshot.json` and `changes/<blob id>`.
    /// Files are synced to disk; existing contents are kept (the same id is the same content).
    ///
    /// # Errors
    /// When a file cannot be written, or the contents are not available.
    pub fn save(&self, dir: &Path) -> Result<(), GitError> {
        let changes = dir.join(CHANGES);
        fs::create_dir_all(&changes).map_err(io_err(&changes))?;
        let mut blobs = BTreeSet::new();
        self.collect_blobs(&mut blobs);
        let mut todo = Vec::with_capacity(blobs.len());
        for blob in blobs {
            if !is_blob_id(blob) {
                return Err(GitError::Corrupt {
                    path: dir.to_path_buf(),
                    reason: format!("`{blob}` is not a blob id"),
                });
            }
            let path = changes.join(blob);
            if let Store::Dir(from) = &self.store
                && from == &changes
                && fs::symlink_metadata(&path).is_ok()
            {
                continue;
            }
            todo.push((blob, path));
        }
        // Each content is synced before it is renamed into place; syncs run on several threads
        // so that the file system can commit them together.
        let next = AtomicUsize::new(0);
        let write_some = || -> Result<(), GitError> {
            while let Some((blob, path)) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                write_atomically(path, &self.store.get(blob)?)?;
            }
            Ok(())
        };
        std::thread::scope(|scope| {
            let threads: Vec<_> = (1..todo.len().min(SAVE_THREADS))
                .map(|_| scope.spawn(write_some))
                .collect();
            let mine = write_some();
            threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(GitError::Git(
                            "a thread saving the snapshot panicked".to_owned(),
                        ))
                    })
                })
                .fold(mine, Result::and)
        })?;
        sync_dir(&changes)?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| GitError::Git(format!("cannot serialise the snapshot: {e}")))?;
        write_atomically(&dir.join(MANIFEST), &json)?;
        sync_dir(dir)
    }

    /// Reads a snapshot written by [`Snapshot::save`].
    ///
    /// # Errors
    /// When it cannot be read, was written by another version, or a content is missing or has
    /// another size. (Contents are checked against their ids when materialised.)
    pub fn load(dir: &Path) -> Result<Snapshot, GitError> {
        let manifest = dir.join(MANIFEST);
        let bytes = fs::read(&manifest).map_err(io_err(&manifest))?;
        let mut snapshot: Snapshot =
            serde_json::from_slice(&bytes).map_err(|e| GitError::Corrupt {
                path: manifest.clone(),
                reason: e.to_string(),
            })?;
        if snapshot.format != FORMAT {
            return Err(GitError::Corrupt {
                path: manifest,
                reason: format!(
                    "format {} (this version of dstack reads format {FORMAT})",
                    snapshot.format
                ),
            });
        }
        let changes = dir.join(CHANGES);
        let mut sizes = HashMap::new();
        snapshot.collect_sizes(&mut sizes);
        for (blob, size) in sizes {
            if !is_blob_id(blob) {
                return Err(GitError::Corrupt {
                    path: manifest,
                    reason: format!("`{blob}` is not a blob id"),
                });
            }
            let path = changes.join(blob);
            match fs::metadata(&path) {
                Ok(md) if md.len() == size => {}
                Ok(md) => {
                    return Err(GitError::Corrupt {
                        path,
                        reason: format!("{} bytes where {size} were saved", md.len()),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(GitError::Corrupt {
                        path,
                        reason: "a saved content is missing".to_owned(),
                    });
                }
                Err(e) => return Err(GitError::Io { path, source: e }),
            }
        }
        snapshot.store = Store::Dir(changes);
        Ok(snapshot)
    }

    /// The commit's short form (12 hex digits).
    #[must_use]
    pub fn short_commit(&self) -> Option<&str> {
        self.commit.as_deref().map(|c| &c[..c.len().min(12)])
    }

    /// One line for `dstack ps` / run details: `main @ 1a2b3c4d5e6f, local changes: 2
    /// modified, 1 added (3.2 KiB)`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = match (&self.head, self.short_commit()) {
            (Head::Branch { name }, Some(c)) => format!("{name} @ {c}"),
            (Head::Detached, Some(c)) => format!("detached HEAD @ {c}"),
            (Head::Unborn { branch }, _) => format!("{branch} (no commit yet)"),
            (Head::Branch { name }, None) => name.clone(),
            (Head::Detached, None) => "detached HEAD".to_owned(),
        };
        if !self.subdir.is_empty() {
            s.push_str(&format!(" in {}/", self.subdir));
        }
        if !self.dirty {
            s.push_str(", no local changes");
            return s;
        }
        let c = self.counts;
        let mut parts = Vec::new();
        for (n, what) in [
            (c.modified, "modified"),
            (c.added, "added"),
            (c.deleted, "deleted"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let subs = self.submodules.iter().filter(|m| m.changed()).count();
        if subs > 0 {
            parts.push(format!(
                "{subs} submodule{} changed",
                if subs == 1 { "" } else { "s" }
            ));
        }
        s.push_str(&format!(
            ", local changes: {} ({})",
            parts.join(", "),
            human(self.total_bytes)
        ));
        s
    }

    fn collect_blobs<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        for change in &self.changes {
            if let Some(content) = &change.content {
                out.insert(&content.blob);
            }
        }
        for sub in &self.submodules {
            if let Some(s) = &sub.snapshot {
                s.collect_blobs(out);
            }
        }
    }

    fn collect_sizes<'a>(&'a self, out: &mut HashMap<&'a str, u64>) {
        for change in &self.changes {
            if let Some(content) = &change.content {
                out.insert(&content.blob, content.size);
            }
        }
        for sub in &self.submodules {
            if let Some(s) = &sub.snapshot {
                s.collect_sizes(out);
            }
        }
    }
}

fn is_blob_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn write_atomically(path: &Path, content: &[u8]) -> Result<(), GitError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), GitError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(dir.len() + 1 + name.len());
    v.extend_from_slice(dir);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// Whether `path` is `prefix` or inside it (`prefix` empty: everything).
fn within(path: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty()
        || (path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/'))
}

/// `path` relative to `prefix` (which it is [`within`]).
fn strip<'a>(path: &'a [u8], prefix: &[u8]) -> &'a [u8] {
    if prefix.is_empty() {
        path
    } else if path.len() == prefix.len() {
        &[]
    } else {
        &path[prefix.len() + 1..]
    }
}

/// Whether every component of a relative path is a plain name (no `..`, `.git`, NUL...).
fn is_safe(path: &[u8]) -> bool {
    !path.is_empty() && path.split(|&b| b == b'/').all(is_safe_name)
}

fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.eq_ignore_ascii_case(b".git")
        && !name.contains(&0)
        && !name.contains(&b'/')
}

// ---------------------------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------------------------

/// Captures the Git state of the project at `root` (a repository's working tree or a folder
/// in it), leaving out `state_dir` and `.dstack/state/`, with the default limit.
///
/// # Errors
/// [`GitError::NotARepository`] outside a repository, [`GitError::TooLarge`] over the limit,
/// [`GitError::Io`] / [`GitError::Git`] when the repository cannot be read.
pub fn capture(root: &Path, state_dir: &Path) -> Result<Snapshot, GitError> {
    capture_with(root, state_dir, &CaptureOptions::default())
}

/// [`capture`] with options.
///
/// # Errors
/// As [`capture`].
pub fn capture_with(
    root: &Path,
    state_dir: &Path,
    options: &CaptureOptions,
) -> Result<Snapshot, GitError> {
    let root_abs = fs::canonicalize(root).map_err(io_err(root))?;
    let repo = open_repo(&root_abs)?;
    let workdir = workdir(&repo)?;
    let subdir = rel_bytes(&workdir, &root_abs).ok_or_else(|| {
        GitError::Git(format!(
            "`{}` is not in the working tree of the repository at `{}`",
            root.display(),
            workdir.display()
        ))
    })?;
    if subdir.split(|&b| b == b'/').any(|n| n == b".git") {
        return Err(GitError::Git(format!(
            "`{}` is inside the `.git` folder of a repository",
            root.display()
        )));
    }
    let mut excluded = Vec::new();
    let state_abs = if state_dir.is_absolute() {
        state_dir.to_path_buf()
    } else {
        root_abs.join(state_dir)
    };
    let state_abs = fs::canonicalize(&state_abs).unwrap_or(state_abs);
    for dir in [state_abs, root_abs.join(".dstack/state")] {
        if let Some(rel) = rel_bytes(&workdir, &dir).filter(|r| !r.is_empty()) {
            excluded.push(rel);
        }
    }
    let mut collector = Collector {
        blobs: HashMap::new(),
        sizes: Vec::new(),
        total: 0,
        limit: options.max_bytes,
        over: false,
    };
    let mut snapshot = capture_repo(
        &repo,
        &workdir,
        &subdir,
        &excluded,
        Path::new(""),
        &mut collector,
        0,
    )?;
    if collector.over {
        let mut biggest = collector.sizes;
        biggest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        biggest.truncate(BIGGEST);
        return Err(GitError::TooLarge {
            total: collector.total,
            limit: collector.limit,
            biggest,
        });
    }
    snapshot.store = Store::Memory(Arc::new(collector.blobs));
    Ok(snapshot)
}

/// The contents read so far, and the sizes of everything changed (for the limit's error).
struct Collector {
    blobs: HashMap<String, Vec<u8>>,
    sizes: Vec<(PathBuf, u64)>,
    total: u64,
    limit: u64,
    /// Past the limit: contents are no longer kept, only sizes.
    over: bool,
}

fn open_repo(path: &Path) -> Result<Repository, GitError> {
    Repository::discover(path).map_err(|e| {
        if e.code() == ErrorCode::NotFound {
            GitError::NotARepository {
                path: path.to_path_buf(),
            }
        } else {
            git_err(
                format_args!("cannot open the Git repository of `{}`", path.display()),
                &e,
            )
        }
    })
}

fn workdir(repo: &Repository) -> Result<PathBuf, GitError> {
    let dir = repo.workdir().ok_or_else(|| {
        GitError::Git(format!(
            "the Git repository at `{}` is bare: it has no working tree to run",
            repo.path().display()
        ))
    })?;
    fs::canonicalize(dir).map_err(io_err(dir))
}

/// `path` relative to `base` as Git path bytes, when it is inside.
fn rel_bytes(base: &Path, path: &Path) -> Option<Vec<u8>> {
    path.strip_prefix(base)
        .ok()
        .map(|p| p.as_os_str().as_bytes().to_vec())
}

struct HeadState<'r> {
    head: Head,
    commit: Option<Oid>,
    tree: Option<git2::Tree<'r>>,
}

fn read_head(repo: &Repository) -> Result<HeadState<'_>, GitError> {
    let context = || {
        format!(
            "cannot read HEAD of the repository at `{}`",
            repo.path().display()
        )
    };
    match repo.head() {
        Ok(reference) => {
            let commit = reference
                .peel_to_commit()
                .map_err(|e| git_err(context(), &e))?;
            let head = if repo.head_detached().map_err(|e| git_err(context(), &e))? {
                Head::Detached
            } else {
                Head::Branch {
                    name: String::from_utf8_lossy(reference.shorthand_bytes()).into_owned(),
                }
            };
            let tree = commit.tree().map_err(|e| git_err(context(), &e))?;
            Ok(HeadState {
                head,
                commit: Some(commit.id()),
                tree: Some(tree),
            })
        }
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
            let target = repo
                .find_reference("HEAD")
                .ok()
                .and_then(|r| r.symbolic_target_bytes().map(<[u8]>::to_vec))
                .unwrap_or_default();
            let branch = target.strip_prefix(b"refs/heads/").unwrap_or(&target);
            Ok(HeadState {
                head: Head::Unborn {
                    branch: String::from_utf8_lossy(branch).into_owned(),
                },
                commit: None,
                tree: None,
            })
        }
        Err(e) => Err(git_err(context(), &e)),
    }
}

fn read_remote(repo: &Repository) -> Option<String> {
    let remote = repo.find_remote("origin").ok().or_else(|| {
        let names = repo.remotes().ok()?;
        let first = names.iter().flatten().flatten().next()?.to_owned();
        repo.find_remote(&first).ok()
    })?;
    Some(redact_url(&String::from_utf8_lossy(remote.url_bytes())))
}

/// Drops the user information (`user:token@`) of `http(s)://` URLs.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return url.to_owned();
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[allow(clippy::too_many_lines)]
fn capture_repo(
    repo: &Repository,
    workdir: &Path,
    subdir: &[u8],
    excluded: &[Vec<u8>],
    prefix: &Path,
    col: &mut Collector,
    depth: usize,
) -> Result<Snapshot, GitError> {
    let HeadState { head, commit, tree } = read_head(repo)?;
    let mut notes = Vec::new();
    match repo.state() {
        git2::RepositoryState::Clean => {}
        state => notes.push(format!(
            "the repository at `{}` is in the middle of an operation ({state:?}): the working tree is captured as it is",
            workdir.display()
        )),
    }
    let in_scope = |path: &[u8]| within(path, subdir) && !excluded.iter().any(|x| within(path, x));
    let mut subdir_ignored = false;
    if !subdir.is_empty() && ignored(repo, &join(subdir, b""))? {
        subdir_ignored = true;
        notes.push(format!(
            "the project folder `{}` is ignored by Git: only what the commit has of it is used",
            RawPath::new(subdir)
        ));
    }

    // Every path Git sees as different from HEAD (staged or not), untracked folders whole.
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .include_unmodified(false)
        .exclude_submodules(true)
        .renames_head_to_index(false)
        .renames_index_to_workdir(false);
    if !subdir.is_empty() {
        opts.pathspec(subdir).disable_pathspec_match(true);
    }
    let statuses = repo.statuses(Some(&mut opts)).map_err(|e| {
        git_err(
            format_args!("cannot read the status of `{}`", workdir.display()),
            &e,
        )
    })?;
    let mut candidates = BTreeSet::new();
    let mut untracked_dirs = Vec::new();
    for entry in statuses.iter() {
        let path = entry.path_bytes();
        if let Some(dir) = path.strip_suffix(b"/") {
            untracked_dirs.push(dir.to_vec());
        } else {
            candidates.insert(path.to_vec());
        }
    }
    drop(statuses);
    // A project folder with nothing in the index is untracked as a whole; the status, limited
    // to it, does not report its untracked parent folder.
    if !subdir.is_empty() && !subdir_ignored {
        let index = repo.index().map_err(|e| {
            git_err(
                format_args!("cannot read the index of `{}`", workdir.display()),
                &e,
            )
        })?;
        let mut prefix = subdir.to_vec();
        prefix.push(b'/');
        if index.find_prefix(prefix).is_err() {
            untracked_dirs = vec![subdir.to_vec()];
        }
    }
    for dir in untracked_dirs {
        walk_untracked(
            repo,
            workdir,
            dir,
            subdir,
            &in_scope,
            &mut candidates,
            &mut notes,
        )?;
    }

    let mut changes = Vec::new();
    let mut counts = Counts::default();
    let total_before = col.total;
    for path in candidates {
        if !in_scope(&path) {
            continue;
        }
        if !is_safe(&path) {
            notes.push(format!(
                "`{}` cannot be recorded (a `.git`, `.` or `..` part): left out",
                RawPath::new(path)
            ));
            continue;
        }
        let head_entry = tree
            .as_ref()
            .and_then(|t| t.get_path(bytes_path(&path)).ok())
            .and_then(|e| FileKind::from_mode(e.filemode()).map(|k| (e.id(), k)));
        let full = workdir.join(bytes_path(&path));
        let display = prefix.join(bytes_path(&path));
        let Some((kind, blob, size, content)) =
            read_worktree_file(&full, &display, col.over, &mut notes)?
        else {
            if head_entry.is_some() {
                counts.deleted += 1;
                changes.push(Change {
                    path: RawPath(path),
                    status: ChangeStatus::Deleted,
                    content: None,
                });
            }
            continue;
        };
        let status = match head_entry {
            Some((id, k)) if id == blob && k == kind => continue,
            Some(_) => {
                counts.modified += 1;
                ChangeStatus::Modified
            }
            None => {
                counts.added += 1;
                ChangeStatus::Added
            }
        };
        col.total += size;
        col.sizes.push((display, size));
        if !col.over && col.total > col.limit {
            col.over = true;
            col.blobs = HashMap::new();
        }
        if let (false, Some(content)) = (col.over, content) {
            col.blobs.entry(blob.to_string()).or_insert(content);
        }
        changes.push(Change {
            path: RawPath(path),
            status,
            content: Some(Content {
                kind,
                blob: blob.to_string(),
                size,
            }),
        });
    }

    let mut submodules = Vec::new();
    let subs = repo.submodules().map_err(|e| {
        git_err(
            format_args!("cannot read the submodules of `{}`", workdir.display()),
            &e,
        )
    })?;
    for sm in subs {
        let path = sm.path().as_os_str().as_bytes().to_vec();
        if !in_scope(&path) || !is_safe(&path) {
            continue;
        }
        let name = String::from_utf8_lossy(sm.name_bytes()).into_owned();
        let recorded = tree
            .as_ref()
            .and_then(|t| t.get_path(bytes_path(&path)).ok())
            .filter(|e| e.kind() == Some(ObjectType::Commit))
            .map(|e| e.id().to_string());
        let dir = workdir.join(bytes_path(&path));
        let display = prefix.join(bytes_path(&path));
        let opened = if fs::symlink_metadata(dir.join(".git")).is_ok() {
            Repository::open(&dir).ok()
        } else {
            None
        };
        let snapshot = match opened {
            Some(sub) if depth + 1 < MAX_DEPTH => {
                let sub_workdir = workdir_of_submodule(&sub, &dir)?;
                Some(Box::new(capture_repo(
                    &sub,
                    &sub_workdir,
                    b"",
                    &[],
                    &display,
                    col,
                    depth + 1,
                )?))
            }
            Some(_) => {
                return Err(GitError::Git(format!(
                    "submodules nest deeper than {MAX_DEPTH} levels at `{}`",
                    display.display()
                )));
            }
            None => {
                notes.push(format!(
                    "submodule `{}` is not initialised: jobs get an empty folder (run `git submodule update --init` to include it)",
                    display.display()
                ));
                None
            }
        };
        submodules.push(Submodule {
            name,
            path: RawPath(path),
            recorded,
            snapshot,
        });
    }

    let dirty = !changes.is_empty() || submodules.iter().any(Submodule::changed);
    Ok(Snapshot {
        format: FORMAT,
        remote: read_remote(repo),
        head,
        commit: commit.map(|c| c.to_string()),
        subdir: RawPath::new(subdir),
        dirty,
        counts,
        total_bytes: col.total - total_before,
        changes,
        submodules,
        notes,
        store: Store::None,
    })
}

fn workdir_of_submodule(sub: &Repository, dir: &Path) -> Result<PathBuf, GitError> {
    let found = workdir(sub)?;
    let expected = fs::canonicalize(dir).map_err(io_err(dir))?;
    if found == expected {
        Ok(found)
    } else {
        Err(GitError::Git(format!(
            "the submodule at `{}` has its working tree at `{}`",
            dir.display(),
            found.display()
        )))
    }
}

/// Adds the files of an untracked folder that Git does not ignore to `out`.
fn walk_untracked(
    repo: &Repository,
    workdir: &Path,
    start: Vec<u8>,
    subdir: &[u8],
    in_scope: &dyn Fn(&[u8]) -> bool,
    out: &mut BTreeSet<Vec<u8>>,
    notes: &mut Vec<String>,
) -> Result<(), GitError> {
    // Above the project's folder, only the way down to it matters.
    let start = if within(subdir, &start) && subdir != start.as_slice() {
        subdir.to_vec()
    } else {
        start
    };
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        if !in_scope(&dir) {
            continue;
        }
        let full = workdir.join(bytes_path(&dir));
        if fs::symlink_metadata(full.join(".git")).is_ok() {
            notes.push(format!(
                "`{}` is a Git repository inside the repository but not a submodule: left out",
                RawPath::new(dir)
            ));
            continue;
        }
        let entries = match fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(GitError::Io {
                    path: full,
                    source: e,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&full))?;
            let name = entry.file_name();
            if name.as_bytes() == b".git" {
                continue;
            }
            let rel = join(&dir, name.as_bytes());
            let file_type = entry.file_type().map_err(io_err(entry.path()))?;
            if file_type.is_dir() {
                let mut as_dir = rel.clone();
                as_dir.push(b'/');
                if !ignored(repo, &as_dir)? {
                    stack.push(rel);
                }
            } else if in_scope(&rel) && !ignored(repo, &rel)? {
                out.insert(rel);
            }
        }
    }
    Ok(())
}

fn ignored(repo: &Repository, path: &[u8]) -> Result<bool, GitError> {
    repo.is_path_ignored(bytes_path(path)).map_err(|e| {
        git_err(
            format_args!("cannot check whether `{}` is ignored", RawPath::new(path)),
            &e,
        )
    })
}

/// What a working-tree path holds: kind, blob id, size and (unless `over` the limit, when only
/// the id and size are needed) the content.
type Read = (FileKind, Oid, u64, Option<Vec<u8>>);

/// Reads a working-tree path. `None` when it is not a file or link (gone, a folder, a
/// socket...).
fn read_worktree_file(
    full: &Path,
    display: &Path,
    over: bool,
    notes: &mut Vec<String>,
) -> Result<Option<Read>, GitError> {
    let gone = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory
    };
    let md = match fs::symlink_metadata(full) {
        Ok(md) => md,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => {
            return Err(GitError::Io {
                path: full.to_path_buf(),
                source: e,
            });
        }
    };
    let hash = |bytes: &[u8]| {
        Oid::hash_object(ObjectType::Blob, bytes).map_err(|e| git_err("cannot hash a file", &e))
    };
    let (kind, content) = if md.file_type().is_symlink() {
        let target = match fs::read_link(full) {
            Ok(t) => t,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => {
                return Err(GitError::Io {
                    path: full.to_path_buf(),
                    source: e,
                });
            }
        };
        (FileKind::Symlink, target.into_os_string().into_vec())
    } else if md.is_file() {
        let kind = if md.permissions().mode() & 0o100 != 0 {
            FileKind::Executable
        } else {
            FileKind::File
        };
        if over {
            // Past the limit: only the id and size, for the error message.
            let id = match Oid::hash_file(ObjectType::Blob, full) {
                Ok(id) => id,
                Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
                Err(e) => {
                    return Err(git_err(
                        format_args!("cannot read `{}`", full.display()),
                        &e,
                    ));
                }
            };
            return Ok(Some((kind, id, md.len(), None)));
        }
        match fs::read(full) {
            Ok(bytes) => (kind, bytes),
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => {
                return Err(GitError::Io {
                    path: full.to_path_buf(),
                    source: e,
                });
            }
        }
    } else {
        if !md.is_dir() {
            notes.push(format!(
                "`{}` is not a file, folder or link: left out",
                display.display()
            ));
        }
        return Ok(None);
    };
    let id = hash(&content)?;
    let size = content.len() as u64;
    Ok(Some((kind, id, size, Some(content))))
}

// ---------------------------------------------------------------------------------------------
// Materialise
// ---------------------------------------------------------------------------------------------

/// Writes the project as captured into `dest`: the tree of `snapshot.commit`, read from the
/// object database of the local repository containing `repo`, then the captured changes; when
/// the snapshot has a `subdir`, `dest` receives that folder's content. Submodules are written
/// from their own local repositories. `dest` is created and must be empty.
///
/// Nothing is fetched, checked out or written in the repository, its index or working tree.
///
/// # Errors
/// [`GitError::NotARepository`], [`GitError::CommitMissing`] when the commit is gone,
/// [`GitError::Corrupt`] for a damaged snapshot, [`GitError::Io`] when `dest` cannot be
/// written or is not empty.
pub fn materialise(repo: &Path, snapshot: &Snapshot, dest: &Path) -> Result<(), GitError> {
    let repository = open_repo(repo)?;
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    let mut entries = fs::read_dir(dest).map_err(io_err(dest))?;
    if entries.next().is_some() {
        return Err(GitError::Io {
            path: dest.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the folder to write the project into is not empty",
            ),
        });
    }
    materialise_repo(&repository, snapshot, &snapshot.store, dest, 0)
}

/// Writes the tree of `commit` (submodules as empty folders) into `dest`, which is created and
/// must not exist yet or be empty.
///
/// # Errors
/// As [`materialise`].
pub(crate) fn write_commit(repo: &Repository, commit: Oid, dest: &Path) -> Result<(), GitError> {
    let snapshot = Snapshot {
        format: FORMAT,
        remote: None,
        head: Head::Detached,
        commit: Some(commit.to_string()),
        subdir: RawPath::default(),
        dirty: false,
        counts: Counts::default(),
        total_bytes: 0,
        changes: Vec::new(),
        submodules: Vec::new(),
        notes: Vec::new(),
        store: Store::None,
    };
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    materialise_repo(repo, &snapshot, &Store::None, dest, 0)
}

fn corrupt(reason: impl Into<String>) -> GitError {
    GitError::Corrupt {
        path: PathBuf::new(),
        reason: reason.into(),
    }
}

/// Writes files into a fresh folder: parents made once, links last (so no write ever goes
/// through a link).
struct Writer<'a> {
    dest: &'a Path,
    dirs: HashSet<PathBuf>,
    links: Vec<(PathBuf, Vec<u8>)>,
}

impl Writer<'_> {
    fn dir(&mut self, rel: &[u8]) -> Result<PathBuf, GitError> {
        let path = self.dest.join(bytes_path(rel));
        if !rel.is_empty() && !self.dirs.contains(&path) {
            fs::create_dir_all(&path).map_err(io_err(&path))?;
            self.dirs.insert(path.clone());
        }
        Ok(path)
    }

    fn write(&mut self, rel: &[u8], kind: FileKind, content: &[u8]) -> Result<(), GitError> {
        let parent = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => &rel[..i],
            None => &[],
        };
        self.dir(parent)?;
        let path = self.dest.join(bytes_path(rel));
        match kind {
            FileKind::Symlink => self.links.push((path, content.to_vec())),
            FileKind::File | FileKind::Executable => {
                let mode = if kind == FileKind::Executable {
                    0o755
                } else {
                    0o644
                };
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.write_all(content).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), GitError> {
        for (path, target) in self.links {
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

fn materialise_repo(
    repo: &Repository,
    snapshot: &Snapshot,
    store: &Store,
    dest: &Path,
    depth: usize,
) -> Result<(), GitError> {
    if depth >= MAX_DEPTH {
        return Err(corrupt("submodules nest too deep"));
    }
    let subdir = snapshot.subdir.as_bytes();
    if !subdir.is_empty() && !is_safe(subdir) {
        return Err(corrupt(format!("unsafe folder `{}`", snapshot.subdir)));
    }
    let mut changes: HashMap<&[u8], &Change> = HashMap::new();
    for change in &snapshot.changes {
        let path = change.path.as_bytes();
        if !is_safe(path) || !within(path, subdir) || path == subdir {
            return Err(corrupt(format!("unsafe path `{}`", change.path)));
        }
        if change.content.is_none() != (change.status == ChangeStatus::Deleted) {
            return Err(corrupt(format!("inconsistent change of `{}`", change.path)));
        }
        changes.insert(strip(path, subdir), change);
    }
    let mut writer = Writer {
        dest,
        dirs: HashSet::new(),
        links: Vec::new(),
    };

    if let Some(commit) = &snapshot.commit {
        let oid = Oid::from_str(commit).map_err(|_| corrupt(format!("bad commit `{commit}`")))?;
        let commit_obj = repo.find_commit(oid).map_err(|e| {
            if e.code() == ErrorCode::NotFound {
                GitError::CommitMissing {
                    commit: commit.clone(),
                    repo: repo.workdir().unwrap_or(repo.path()).components().collect(),
                }
            } else {
                git_err(format_args!("cannot read commit {commit}"), &e)
            }
        })?;
        let read = |e: &git2::Error| git_err(format_args!("cannot read the tree of {commit}"), e);
        let mut tree = Some(commit_obj.tree().map_err(|e| read(&e))?);
        if !subdir.is_empty() {
            tree = match tree
                .as_ref()
                .and_then(|t| t.get_path(bytes_path(subdir)).ok())
            {
                Some(e) if e.kind() == Some(ObjectType::Tree) => {
                    Some(repo.find_tree(e.id()).map_err(|e| read(&e))?)
                }
                _ => None,
            };
        }
        let mut stack = Vec::new();
        if let Some(t) = tree {
            stack.push((t, Vec::new()));
        }
        while let Some((tree, prefix)) = stack.pop() {
            for entry in tree.iter() {
                let name = entry.name_bytes();
                if !is_safe_name(name) {
                    return Err(GitError::Git(format!(
                        "commit {commit} has an unsafe path `{}`",
                        RawPath::new(join(&prefix, name))
                    )));
                }
                let rel = join(&prefix, name);
                if changes.contains_key(rel.as_slice()) {
                    continue; // replaced or deleted (a whole folder when a file took its name)
                }
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        let sub = repo.find_tree(entry.id()).map_err(|e| read(&e))?;
                        stack.push((sub, rel));
                    }
                    Some(ObjectType::Blob) => {
                        let kind = FileKind::from_mode(entry.filemode()).unwrap_or(FileKind::File);
                        let blob = repo.find_blob(entry.id()).map_err(|e| read(&e))?;
                        writer.write(&rel, kind, blob.content())?;
                    }
                    Some(ObjectType::Commit) => {
                        writer.dir(&rel)?; // a submodule: filled below
                    }
                    _ => {}
                }
            }
        }
    }

    let mut sorted: Vec<_> = changes.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (rel, change) in sorted {
        if let Some(content) = &change.content {
            let bytes = store.get(&content.blob)?;
            writer.write(rel, content.kind, &bytes)?;
        }
    }

    for sm in &snapshot.submodules {
        let path = sm.path.as_bytes();
        if !is_safe(path) || !within(path, subdir) || path == subdir {
            return Err(corrupt(format!("unsafe submodule path `{}`", sm.path)));
        }
        let target = writer.dir(strip(path, subdir))?;
        let Some(sub_snapshot) = &sm.snapshot else {
            continue;
        };
        let sub_repo = open_submodule(repo, sm)?;
        materialise_repo(&sub_repo, sub_snapshot, store, &target, depth + 1)?;
    }
    writer.finish()
}

/// The local repository of a submodule: through its folder, else `.git/modules/NAME`.
fn open_submodule(repo: &Repository, sm: &Submodule) -> Result<Repository, GitError> {
    if let Some(workdir) = repo.workdir()
        && let Ok(sub) = Repository::open(workdir.join(sm.path.to_path_buf()))
    {
        return Ok(sub);
    }
    if is_safe(sm.name.as_bytes())
        && let Ok(sub) = Repository::open(repo.path().join("modules").join(&sm.name))
    {
        return Ok(sub);
    }
    Err(GitError::Git(format!(
        "the repository of submodule `{}` is not in `{}` any more\n  help: run `git submodule update --init` to restore it",
        sm.path,
        repo.path().display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_round_trip_through_json() {
        for bytes in [
            b"a/b.txt".to_vec(),
            b"caf\xe9/\xff\x00x".to_vec(),
            Vec::new(),
        ] {
            let path = RawPath::new(bytes);
            let json = serde_json::to_string(&path).expect("serialise");
            let back: RawPath = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, path, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&RawPath::new(b"a b".to_vec())).expect("json"),
            "\"a b\""
        );
        assert_eq!(
            serde_json::to_string(&RawPath::new(b"\xff".to_vec())).expect("json"),
            "{\"hex\":\"ff\"}"
        );
        assert_eq!(RawPath::new(b"caf\xe9".to_vec()).to_string(), "caf\\xe9");
    }

    #[test]
    fn credentials_are_dropped_from_http_urls() {
        assert_eq!(
            redact_url("https://user:token@example.com/a/b.git"),
            "https://example.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://token@example.com/a@b.git"),
            "https://example.com/a@b.git"
        );
        assert_eq!(
            redact_url("git@example.com:a/b.git"),
            "git@example.com:a/b.git"
        );
        assert_eq!(
            redact_url("ssh://git@example.com/a/b.git"),
            "ssh://git@example.com/a/b.git"
        );
    }

    #[test]
    fn paths_are_checked_and_scoped() {
        assert!(is_safe(b"a/b/c"));
        for bad in [
            &b""[..],
            b"../a",
            b"a/../b",
            b"a//b",
            b".git/config",
            b"a/.GIT/x",
            b"/a",
            b"a\0b",
        ] {
            assert!(!is_safe(bad), "{:?}", RawPath::new(bad));
        }
        assert!(within(b"sub/a", b"sub"));
        assert!(within(b"sub", b"sub"));
        assert!(!within(b"subway/a", b"sub"));
        assert!(within(b"x", b""));
        assert_eq!(strip(b"sub/a/b", b"sub"), b"a/b");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(12), "12 B");
    }
}
