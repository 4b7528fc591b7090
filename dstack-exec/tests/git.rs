//! Capture and reproduction of a project's Git state, on real repositories made with the `git`
//! command line. Each test compares file trees byte for byte: the user's working tree as Git
//! sees it (`git ls-files --cached --others --exclude-standard`, minus what is gone) against
//! the tree `materialise` writes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use dstack_exec::git::{
    self, CaptureOptions, ChangeStatus, FileKind, GitError, Head, RawPath, Snapshot,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A scratch folder with a private Git configuration.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("gitconfig"),
            "[user]\n\tname = Test\n\temail = test@example.invalid\n[init]\n\tdefaultBranch = main\n\
             [commit]\n\tgpgsign = false\n[protocol \"file\"]\n\tallow = always\n[advice]\n\tdetachedHead = false\n",
        )
        .unwrap();
        Scratch { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `git ARGS` in `cwd` and returns its standard output.
    fn git(&self, cwd: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_CONFIG_GLOBAL", self.path().join("gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?} in {}: {}",
            cwd.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A new repository in `self/name`.
    fn repo(&self, name: &str) -> PathBuf {
        let root = self.path().join(name);
        fs::create_dir_all(&root).unwrap();
        self.git(&root, &["init", "-q"]);
        root
    }

    fn commit_all(&self, root: &Path, message: &str) {
        self.git(root, &["add", "-A"]);
        self.git(root, &["commit", "-q", "--allow-empty", "-m", message]);
    }

    fn head(&self, root: &Path) -> String {
        String::from_utf8(self.git(root, &["rev-parse", "HEAD"]))
            .unwrap()
            .trim()
            .to_owned()
    }
}

fn p(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn write(root: &Path, rel: &[u8], content: &[u8]) {
    let path = root.join(p(rel));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn set_exec(root: &Path, rel: &str, exec: bool) {
    let path = root.join(rel);
    let mode = if exec { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn symlink(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    let _ = fs::remove_file(&path);
    std::os::unix::fs::symlink(target, path).unwrap();
}

fn binary(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 256).unwrap() ^ seed)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tree comparison
// ---------------------------------------------------------------------------------------------

/// What a path holds, for comparison.
#[derive(Clone, PartialEq, Eq)]
enum Entry {
    File { exec: bool, content: Vec<u8> },
    Link(Vec<u8>),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::File { exec, content } => {
                write!(f, "file(exec={exec}, {} bytes)", content.len())
            }
            Entry::Link(t) => write!(f, "link -> {}", RawPath::new(t.clone())),
        }
    }
}

type Tree = BTreeMap<Vec<u8>, Entry>;

fn entry(path: &Path) -> Option<Entry> {
    let md = fs::symlink_metadata(path).ok()?;
    if md.file_type().is_symlink() {
        Some(Entry::Link(
            fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec(),
        ))
    } else if md.is_file() {
        Some(Entry::File {
            exec: md.permissions().mode() & 0o100 != 0,
            content: fs::read(path).unwrap(),
        })
    } else {
        None
    }
}

/// The user's working tree as Git sees it (tracked and untracked files, ignored ones left
/// out), relative to `root`, leaving out `exclude` (relative to `root`). Submodules (and any
/// folder with a `.git`) are listed from their own repositories.
fn user_tree(s: &Scratch, root: &Path, exclude: &[&[u8]]) -> Tree {
    let mut tree = Tree::new();
    let listed = s.git(
        root,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    );
    for rel in listed.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let rel = rel.strip_suffix(b"/").unwrap_or(rel);
        if exclude
            .iter()
            .any(|x| rel.starts_with(x) && rel.get(x.len()).is_none_or(|&b| b == b'/'))
        {
            continue;
        }
        let full = root.join(p(rel));
        if full.is_dir() && !full.is_symlink() {
            if full.join(".git").exists() && tree_has_commit(s, &full) {
                for (sub, e) in user_tree(s, &full, &[]) {
                    let mut path = rel.to_vec();
                    path.push(b'/');
                    path.extend_from_slice(&sub);
                    tree.insert(path, e);
                }
            }
            continue;
        }
        if let Some(e) = entry(&full) {
            tree.insert(rel.to_vec(), e);
        }
    }
    tree
}

fn tree_has_commit(s: &Scratch, dir: &Path) -> bool {
    !s.git(dir, &["rev-parse", "--show-toplevel"]).is_empty()
}

/// Every file and link under `dir`.
fn written_tree(dir: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(p(&rel))).unwrap() {
            let e = e.unwrap();
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(e.file_name().as_bytes());
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
            } else {
                tree.insert(path, entry(&e.path()).unwrap());
            }
        }
    }
    tree
}

#[track_caller]
fn assert_same(expected: &Tree, actual: &Tree) {
    if expected == actual {
        return;
    }
    let mut report = String::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => writeln!(report, "missing: {} ({v:?})", RawPath::new(k.clone())).unwrap(),
            Some(a) if a != v => writeln!(
                report,
                "differs: {} (expected {v:?}, got {a:?})",
                RawPath::new(k.clone())
            )
            .unwrap(),
            Some(_) => {}
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            writeln!(report, "extra: {} ({v:?})", RawPath::new(k.clone())).unwrap();
        }
    }
    panic!("the trees differ:\n{report}");
}

/// Saves, loads and materialises `snapshot`; also materialises the in-memory one. Returns the
/// loaded snapshot and the tree written from it.
fn round_trip(repo: &Path, snapshot: &Snapshot, scratch: &Path) -> (Snapshot, Tree) {
    let saved = scratch.join("saved");
    snapshot.save(&saved).unwrap();
    let loaded = Snapshot::load(&saved).unwrap();
    let from_memory = scratch.join("from-memory");
    git::materialise(repo, snapshot, &from_memory).unwrap();
    let from_disk = scratch.join("from-disk");
    git::materialise(repo, &loaded, &from_disk).unwrap();
    let tree = written_tree(&from_disk);
    assert_same(&tree, &written_tree(&from_memory));
    (loaded, tree)
}

fn statuses(snapshot: &Snapshot) -> BTreeMap<Vec<u8>, ChangeStatus> {
    snapshot
        .changes
        .iter()
        .map(|c| (c.path.as_bytes().to_vec(), c.status))
        .collect()
}

/// What the user's repository looks like to Git: status, index, HEAD. Must not change.
fn repo_state(s: &Scratch, root: &Path) -> (Vec<u8>, Vec<u8>, String) {
    (
        s.git(
            root,
            &["status", "--porcelain=v2", "-z", "--untracked-files=all"],
        ),
        fs::read(root.join(".git/index")).unwrap_or_default(),
        fs::read_to_string(root.join(".git/HEAD")).unwrap(),
    )
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_kind_of_local_change_is_reproduced_byte_for_byte() {
    let s = Scratch::new();
    let root = s.repo("project");
    write(&root, b"README.md", b"hello\n");
    write(&root, b".gitignore", b"*.log\nbuild/\n");
    write(&root, b".dstack/workflows.yaml", b"workflows: []\n");
    write(&root, b"src/main.py", b"print(1)\n");
    write(&root, b"src/util.py", b"def f():\n    return 1\n");
    write(&root, b"data/blob.bin", &binary(0, 4096));
    write(&root, b"run.sh", b"#!/bin/sh\necho run\n");
    set_exec(&root, "run.sh", true);
    write(&root, b"script.py", b"#!/usr/bin/env python3\n");
    write(&root, b"old_name.txt", b"renamed with git mv\n");
    write(&root, b"plain_mv.txt", b"renamed with mv\n");
    write(&root, b"gone.txt", b"removed with git rm\n");
    write(&root, b"gone2.txt", b"removed with rm\n");
    write(&root, b"staged_only.txt", b"v1\n");
    write(&root, b"staged_then_reverted.txt", b"same\n");
    write(&root, b"dir_to_file/a.txt", b"a\n");
    write(&root, b"file_to_dir", b"a file\n");
    write(&root, b"caf\xe9.txt", b"latin-1 name\n");
    write(&root, b"nested/deep/file.txt", b"deep\n");
    write(&root, b"unchanged.txt", b"unchanged\n");
    symlink(&root, "link", "README.md");
    s.commit_all(&root, "base");

    // Staged, unstaged, renamed, deleted, binary, modes, links, type changes.
    write(&root, b"README.md", b"hello, world\n");
    write(&root, b"staged_only.txt", b"v2, staged\n");
    s.git(&root, &["add", "staged_only.txt"]);
    write(&root, b"staged_then_reverted.txt", b"different\n");
    s.git(&root, &["add", "staged_then_reverted.txt"]);
    write(&root, b"staged_then_reverted.txt", b"same\n");
    write(&root, b"data/blob.bin", &binary(0x5a, 4096));
    set_exec(&root, "script.py", true);
    set_exec(&root, "run.sh", false);
    s.git(&root, &["mv", "old_name.txt", "new_name.txt"]);
    fs::rename(root.join("plain_mv.txt"), root.join("plain_moved.txt")).unwrap();
    s.git(&root, &["rm", "-q", "gone.txt"]);
    fs::remove_file(root.join("gone2.txt")).unwrap();
    symlink(&root, "link", "src/main.py");
    symlink(&root, "newlink", "src");
    fs::remove_dir_all(root.join("dir_to_file")).unwrap();
    write(&root, b"dir_to_file", b"now a file\n");
    fs::remove_file(root.join("file_to_dir")).unwrap();
    write(&root, b"file_to_dir/x.txt", b"now a folder\n");
    write(&root, b"caf\xe9.txt", b"latin-1 name, edited\n");
    // Untracked, with odd names; an executable one; an empty folder (Git has no folders).
    write(&root, b"notes.txt", b"untracked\n");
    write(&root, b"newdir/a.txt", b"untracked in a new folder\n");
    write(&root, b"newdir/sub/b.bin", &binary(7, 1000));
    write(&root, b"\xff\xfe-untracked", b"not UTF-8\n");
    write(&root, b"d\xe9r/f.txt", b"in a folder with a latin-1 name\n");
    write(&root, b"new\nline.txt", b"a newline in the name\n");
    write(&root, b"tool.sh", b"#!/bin/sh\n");
    set_exec(&root, "tool.sh", true);
    fs::create_dir_all(root.join("emptydir")).unwrap();
    // Ignored, and the state folder: never captured.
    write(&root, b"debug.log", b"ignored\n");
    write(&root, b"build/out.o", b"ignored folder\n");
    write(&root, b"newdir/x.log", b"ignored in an untracked folder\n");
    write(&root, b".dstack/state/dstack.db", b"state\n");
    write(
        &root,
        b".dstack/state/runs/r1/tree/file.txt",
        b"a job's tree\n",
    );

    let before = repo_state(&s, &root);
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    assert!(snapshot.dirty);
    assert_eq!(snapshot.commit.as_deref(), Some(s.head(&root).as_str()));
    assert_eq!(
        snapshot.head,
        Head::Branch {
            name: "main".to_owned()
        }
    );
    assert!(snapshot.subdir.is_empty());
    assert_eq!(snapshot.remote, None);

    let expected: BTreeMap<Vec<u8>, ChangeStatus> = [
        (&b"README.md"[..], ChangeStatus::Modified),
        (b"staged_only.txt", ChangeStatus::Modified),
        (b"data/blob.bin", ChangeStatus::Modified),
        (b"script.py", ChangeStatus::Modified),
        (b"run.sh", ChangeStatus::Modified),
        (b"link", ChangeStatus::Modified),
        (b"caf\xe9.txt", ChangeStatus::Modified),
        (b"new_name.txt", ChangeStatus::Added),
        (b"plain_moved.txt", ChangeStatus::Added),
        (b"newlink", ChangeStatus::Added),
        (b"dir_to_file", ChangeStatus::Added),
        (b"file_to_dir/x.txt", ChangeStatus::Added),
        (b"notes.txt", ChangeStatus::Added),
        (b"newdir/a.txt", ChangeStatus::Added),
        (b"newdir/sub/b.bin", ChangeStatus::Added),
        (b"\xff\xfe-untracked", ChangeStatus::Added),
        (b"d\xe9r/f.txt", ChangeStatus::Added),
        (b"new\nline.txt", ChangeStatus::Added),
        (b"tool.sh", ChangeStatus::Added),
        (b"old_name.txt", ChangeStatus::Deleted),
        (b"plain_mv.txt", ChangeStatus::Deleted),
        (b"gone.txt", ChangeStatus::Deleted),
        (b"gone2.txt", ChangeStatus::Deleted),
        (b"dir_to_file/a.txt", ChangeStatus::Deleted),
        (b"file_to_dir", ChangeStatus::Deleted),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_vec(), v))
    .collect();
    assert_eq!(statuses(&snapshot), expected);
    assert_eq!(snapshot.counts.modified, 7);
    assert_eq!(snapshot.counts.added, 12);
    assert_eq!(snapshot.counts.deleted, 6);
    let kind = |path: &[u8]| {
        snapshot
            .changes
            .iter()
            .find(|c| c.path.as_bytes() == path)
            .and_then(|c| c.content.as_ref())
            .map(|c| c.kind)
    };
    assert_eq!(kind(b"script.py"), Some(FileKind::Executable));
    assert_eq!(kind(b"run.sh"), Some(FileKind::File));
    assert_eq!(kind(b"link"), Some(FileKind::Symlink));
    let total: u64 = snapshot
        .changes
        .iter()
        .filter_map(|c| c.content.as_ref().map(|c| c.size))
        .sum();
    assert_eq!(snapshot.total_bytes, total);

    let scratch = s.path().join("out");
    let (loaded, tree) = round_trip(&root, &snapshot, &scratch);
    assert_same(&user_tree(&s, &root, &[b".dstack/state"]), &tree);
    for absent in [
        &b"debug.log"[..],
        b"build/out.o",
        b"newdir/x.log",
        b".dstack/state/dstack.db",
        b"staged_then_reverted.txt.orig",
    ] {
        assert!(!tree.contains_key(absent), "{}", RawPath::new(absent));
    }
    assert_eq!(statuses(&loaded), expected);
    assert_eq!(loaded.describe(), snapshot.describe());
    assert!(
        snapshot.describe().starts_with(&format!(
            "main @ {}, local changes: 7 modified, 12 added, 6 deleted (",
            &s.head(&root)[..12]
        )),
        "{}",
        snapshot.describe()
    );

    // The manifest is JSON; names that are not UTF-8 are kept as hex.
    let json = fs::read_to_string(scratch.join("saved/snapshot.json")).unwrap();
    assert!(json.contains("\"hex\": \"636166e92e747874\""), "{json}");
    // Contents are stored once per blob id.
    let blobs = fs::read_dir(scratch.join("saved/changes")).unwrap().count();
    assert_eq!(blobs, 19);

    // The user's repository, index and working tree are as they were.
    assert_eq!(repo_state(&s, &root), before);
}

#[test]
fn a_tracked_file_that_gitignore_matches_is_still_captured() {
    let s = Scratch::new();
    let root = s.repo("tracked-ignored");
    write(&root, b"model.ckpt", b"v1\n");
    s.commit_all(&root, "one");
    write(&root, b".gitignore", b"*.ckpt\n");
    write(&root, b"model.ckpt", b"v2, still tracked\n");
    write(&root, b"other.ckpt", b"untracked and ignored\n");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    assert_eq!(
        statuses(&snapshot),
        [
            (b".gitignore".to_vec(), ChangeStatus::Added),
            (b"model.ckpt".to_vec(), ChangeStatus::Modified),
        ]
        .into_iter()
        .collect()
    );
    let (_, tree) = round_trip(&root, &snapshot, &s.path().join("out"));
    assert_same(&user_tree(&s, &root, &[]), &tree);
    assert!(!tree.contains_key(&b"other.ckpt"[..]));
}

#[test]
fn a_clean_repository_has_no_local_changes() {
    let s = Scratch::new();
    let root = s.repo("clean");
    write(&root, b"a.txt", b"a\n");
    write(&root, b"b/c.bin", &binary(1, 300));
    symlink(&root, "l", "a.txt");
    s.commit_all(&root, "one");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    assert!(!snapshot.dirty);
    assert!(snapshot.changes.is_empty());
    assert_eq!(snapshot.total_bytes, 0);
    assert_eq!(
        snapshot.describe(),
        format!("main @ {}, no local changes", &s.head(&root)[..12])
    );
    let (_, tree) = round_trip(&root, &snapshot, &s.path().join("out"));
    assert_same(&user_tree(&s, &root, &[]), &tree);
}

#[test]
fn a_subfolder_is_the_project_root() {
    let s = Scratch::new();
    let root = s.repo("mono");
    write(&root, b"other/x.txt", b"outside the project\n");
    write(&root, b"proj/train.py", b"train\n");
    write(&root, b"proj/data/d.csv", b"1,2\n");
    write(&root, b"proj/.gitignore", b"*.tmp\n");
    write(
        &root,
        b"projector/y.txt",
        b"a sibling with the same prefix\n",
    );
    s.commit_all(&root, "base");
    write(&root, b"other/x.txt", b"outside, changed\n");
    write(&root, b"other/new.txt", b"outside, new\n");
    write(&root, b"projector/y.txt", b"sibling, changed\n");
    write(&root, b"proj/train.py", b"train, changed\n");
    write(&root, b"proj/new/n.txt", b"new in the project\n");
    write(&root, b"proj/scratch.tmp", b"ignored\n");
    write(&root, b"proj/.dstack/state/dstack.db", b"state\n");
    fs::remove_file(root.join("proj/data/d.csv")).unwrap();

    let project = root.join("proj");
    let snapshot = git::capture(&project, &project.join(".dstack/state")).unwrap();
    assert_eq!(snapshot.subdir.as_bytes(), b"proj");
    let expected: BTreeMap<Vec<u8>, ChangeStatus> = [
        (&b"proj/train.py"[..], ChangeStatus::Modified),
        (b"proj/new/n.txt", ChangeStatus::Added),
        (b"proj/data/d.csv", ChangeStatus::Deleted),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_vec(), v))
    .collect();
    assert_eq!(statuses(&snapshot), expected);
    assert!(snapshot.describe().contains(" in proj/, local changes"));
    let (_, tree) = round_trip(&project, &snapshot, &s.path().join("out"));
    assert_same(&user_tree(&s, &project, &[b".dstack/state"]), &tree);
    assert!(tree.contains_key(&b"train.py"[..]));
}

#[test]
fn a_project_folder_that_git_does_not_track_yet() {
    let s = Scratch::new();
    let root = s.repo("repo");
    write(&root, b"tracked.txt", b"t\n");
    s.commit_all(&root, "base");
    write(&root, b"a/b/proj/main.py", b"main\n");
    write(&root, b"a/b/proj/lib/l.py", b"lib\n");
    write(&root, b"a/b/elsewhere.txt", b"not in the project\n");
    let project = root.join("a/b/proj");
    let snapshot = git::capture(&project, &project.join(".dstack/state")).unwrap();
    assert_eq!(snapshot.subdir.as_bytes(), b"a/b/proj");
    assert_eq!(snapshot.counts.added, 2);
    let (_, tree) = round_trip(&project, &snapshot, &s.path().join("out"));
    assert_same(&user_tree(&s, &project, &[]), &tree);
    assert_eq!(tree.len(), 2);
}

#[test]
fn a_repository_with_no_commit_yet() {
    let s = Scratch::new();
    let root = s.repo("fresh");
    write(&root, b"staged.txt", b"staged\n");
    s.git(&root, &["add", "staged.txt"]);
    write(&root, b"untracked.py", b"print()\n");
    write(&root, b"x/\xe9.bin", &binary(3, 77));
    write(&root, b".gitignore", b"*.pyc\n");
    write(&root, b"m.pyc", b"ignored\n");
    symlink(&root, "l", "staged.txt");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    assert_eq!(snapshot.commit, None);
    assert_eq!(
        snapshot.head,
        Head::Unborn {
            branch: "main".to_owned()
        }
    );
    assert!(snapshot.dirty);
    assert_eq!(snapshot.counts.added, 5);
    assert_eq!(
        snapshot.describe(),
        format!(
            "main (no commit yet), local changes: 5 added ({} B)",
            snapshot.total_bytes
        )
    );
    let (_, tree) = round_trip(&root, &snapshot, &s.path().join("out"));
    assert_same(&user_tree(&s, &root, &[]), &tree);
}

#[test]
fn a_detached_head_records_its_commit() {
    let s = Scratch::new();
    let root = s.repo("detached");
    write(&root, b"v.txt", b"1\n");
    s.commit_all(&root, "one");
    let first = s.head(&root);
    write(&root, b"v.txt", b"2\n");
    write(&root, b"only-in-two.txt", b"2\n");
    s.commit_all(&root, "two");
    s.git(&root, &["checkout", "-q", "--detach", &first]);
    write(&root, b"v.txt", b"1, edited while detached\n");

    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    assert_eq!(snapshot.head, Head::Detached);
    assert_eq!(snapshot.commit.as_deref(), Some(first.as_str()));
    assert!(snapshot.describe().starts_with("detached HEAD @ "));
    let (_, tree) = round_trip(&root, &snapshot, &s.path().join("out"));
    assert_same(&user_tree(&s, &root, &[]), &tree);
    assert!(!tree.contains_key(&b"only-in-two.txt"[..]));
}

#[test]
fn edits_after_capture_do_not_change_the_reproduced_tree() {
    let s = Scratch::new();
    let root = s.repo("editing");
    write(&root, b"a.txt", b"a1\n");
    write(&root, b"b.txt", b"b1\n");
    s.commit_all(&root, "one");
    write(&root, b"a.txt", b"a2, local\n");
    write(&root, b"u.txt", b"untracked\n");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    let saved = s.path().join("saved");
    snapshot.save(&saved).unwrap();
    let expected = user_tree(&s, &root, &[]);

    // The user goes on: edits, deletes, adds, and even commits and amends.
    write(&root, b"a.txt", b"a3, edited after the run started\n");
    fs::remove_file(root.join("u.txt")).unwrap();
    write(&root, b"c.txt", b"new\n");
    s.commit_all(&root, "two");
    write(&root, b"b.txt", b"b2\n");
    s.git(
        &root,
        &["commit", "-q", "-a", "--amend", "-m", "two, amended"],
    );

    let loaded = Snapshot::load(&saved).unwrap();
    let dest = s.path().join("out");
    git::materialise(&root, &loaded, &dest).unwrap();
    assert_same(&expected, &written_tree(&dest));
}

#[test]
fn outside_a_repository_the_error_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("plain");
    fs::create_dir(&folder).unwrap();
    let err = git::capture(&folder, &folder.join(".dstack/state")).unwrap_err();
    let real = fs::canonicalize(&folder).unwrap();
    assert!(matches!(&err, GitError::NotARepository { path } if path == &real));
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` is not in a Git repository\n  help: dstack records the commit and the local changes of every run so that it can be reproduced; run `git init` (and commit your files) to make this folder a repository, or run the folder as it is, without recording a version (`--no-git`; `no_git=True` in Python)",
            real.display()
        )
    );
}

#[test]
fn changes_over_the_limit_are_refused_with_the_biggest_files() {
    let s = Scratch::new();
    let root = s.repo("big");
    write(&root, b"small.txt", b"s\n");
    s.commit_all(&root, "one");
    write(&root, b"big.bin", &binary(1, 5000));
    write(&root, b"mid.bin", &binary(2, 3000));
    write(&root, b"small.txt", b"small, changed\n");
    let options = CaptureOptions { max_bytes: 4000 };
    let err = git::capture_with(&root, &root.join(".dstack/state"), &options).unwrap_err();
    let GitError::TooLarge {
        total,
        limit,
        biggest,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((*total, *limit), (8015, 4000));
    assert_eq!(
        biggest,
        &[
            (PathBuf::from("big.bin"), 5000),
            (PathBuf::from("mid.bin"), 3000),
            (PathBuf::from("small.txt"), 15),
        ]
    );
    assert_eq!(
        err.to_string(),
        "the local changes to record add up to 7.8 KiB, over the limit of 3.9 KiB; the biggest changed files:\n    big.bin (4.9 KiB)\n    mid.bin (2.9 KiB)\n    small.txt (15 B)\n  help: commit them, list them in `.gitignore` if jobs do not need them, or raise the limit"
    );
    // Under the limit, the same changes are captured.
    let options = CaptureOptions { max_bytes: 8015 };
    let snapshot = git::capture_with(&root, &root.join(".dstack/state"), &options).unwrap();
    assert_eq!(snapshot.total_bytes, 8015);
}

#[test]
fn the_remote_is_recorded_without_credentials() {
    let s = Scratch::new();
    let root = s.repo("remotes");
    s.commit_all(&root, "empty");
    let state = root.join(".dstack/state");
    assert_eq!(git::capture(&root, &state).unwrap().remote, None);
    s.git(
        &root,
        &[
            "remote",
            "add",
            "upstream",
            "git@example.invalid:team/upstream.git",
        ],
    );
    assert_eq!(
        git::capture(&root, &state).unwrap().remote.as_deref(),
        Some("git@example.invalid:team/upstream.git")
    );
    s.git(
        &root,
        &[
            "remote",
            "add",
            "origin",
            "https://user:secret-token@example.invalid/team/project.git",
        ],
    );
    assert_eq!(
        git::capture(&root, &state).unwrap().remote.as_deref(),
        Some("https://example.invalid/team/project.git")
    );
}

#[test]
fn submodules_are_captured_and_reproduced_from_their_local_repositories() {
    let s = Scratch::new();
    let lib = s.repo("lib");
    write(&lib, b"lib.py", b"v = 1\n");
    write(&lib, b"tool.sh", b"#!/bin/sh\n");
    set_exec(&lib, "tool.sh", true);
    s.commit_all(&lib, "lib");

    let root = s.repo("super");
    write(&root, b"main.py", b"import lib\n");
    s.git(
        &root,
        &[
            "submodule",
            "add",
            "-q",
            lib.to_str().unwrap(),
            "vendor/lib",
        ],
    );
    s.commit_all(&root, "with a submodule");
    let recorded = s.head(&lib);

    // Clean first.
    let clean = git::capture(&root, &root.join(".dstack/state")).unwrap();
    assert!(!clean.dirty, "{clean:?}");
    assert_eq!(clean.submodules.len(), 1);

    // Local changes inside the submodule.
    let sub = root.join("vendor/lib");
    write(&sub, b"lib.py", b"v = 2  # edited in the submodule\n");
    write(&sub, b"new.py", b"untracked in the submodule\n");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    assert!(snapshot.dirty);
    assert!(snapshot.changes.is_empty());
    let m = &snapshot.submodules[0];
    assert_eq!(m.path.as_bytes(), b"vendor/lib");
    assert_eq!(m.name, "vendor/lib");
    assert_eq!(m.recorded.as_deref(), Some(recorded.as_str()));
    let inner = m.snapshot.as_ref().unwrap();
    assert_eq!(inner.commit.as_deref(), Some(recorded.as_str()));
    assert_eq!((inner.counts.modified, inner.counts.added), (1, 1));
    assert!(m.changed());
    assert!(
        snapshot.describe().ends_with(&format!(
            "local changes: 1 submodule changed ({} B)",
            snapshot.total_bytes
        )),
        "{}",
        snapshot.describe()
    );
    let (_, tree) = round_trip(&root, &snapshot, &s.path().join("out"));
    assert_same(&user_tree(&s, &root, &[]), &tree);
    assert!(tree.contains_key(&b"vendor/lib/new.py"[..]));

    // A clone whose submodule is not initialised: an empty folder, and a note.
    let clone = s.path().join("clone");
    s.git(
        s.path(),
        &[
            "clone",
            "-q",
            root.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let snapshot = git::capture(&clone, &clone.join(".dstack/state")).unwrap();
    assert!(!snapshot.dirty);
    assert!(snapshot.submodules[0].snapshot.is_none());
    assert_eq!(
        snapshot.notes,
        [
            "submodule `vendor/lib` is not initialised: jobs get an empty folder (run `git submodule update --init` to include it)"
        ]
    );
    let dest = s.path().join("out-clone");
    git::materialise(&clone, &snapshot, &dest).unwrap();
    assert_same(&user_tree(&s, &clone, &[]), &written_tree(&dest));
    assert_eq!(fs::read_dir(dest.join("vendor/lib")).unwrap().count(), 0);
}

#[test]
fn a_nested_repository_that_is_not_a_submodule_is_left_out_with_a_note() {
    let s = Scratch::new();
    let root = s.repo("outer");
    write(&root, b"a.txt", b"a\n");
    s.commit_all(&root, "one");
    let inner = s.repo("outer/inner");
    write(&inner, b"i.txt", b"inner\n");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    assert!(snapshot.changes.is_empty());
    assert_eq!(
        snapshot.notes,
        ["`inner` is a Git repository inside the repository but not a submodule: left out"]
    );
}

#[test]
fn materialise_needs_an_empty_destination() {
    let s = Scratch::new();
    let root = s.repo("r");
    write(&root, b"a.txt", b"a\n");
    s.commit_all(&root, "one");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    let dest = s.path().join("busy");
    write(&dest, b"keep.txt", b"the user's\n");
    let err = git::materialise(&root, &snapshot, &dest).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{}`: the folder to write the project into is not empty",
            dest.display()
        )
    );
    assert_eq!(fs::read(dest.join("keep.txt")).unwrap(), b"the user's\n");
}

#[test]
fn a_commit_missing_from_the_repository_is_reported() {
    let s = Scratch::new();
    let root = s.repo("one");
    write(&root, b"a.txt", b"a\n");
    s.commit_all(&root, "one");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    let other = s.repo("other");
    write(&other, b"b.txt", b"b\n");
    s.commit_all(&other, "unrelated");
    let err = git::materialise(&other, &snapshot, &s.path().join("out")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "commit {} of this run is not in the Git repository at `{}`\n  help: a rebase or an amend followed by a garbage collection (`git gc`) removes commits; fetch or restore it to reproduce this run",
            s.head(&root),
            other.display()
        )
    );
}

#[test]
fn a_damaged_saved_snapshot_is_refused() {
    let s = Scratch::new();
    let root = s.repo("damaged");
    write(&root, b"a.txt", b"a\n");
    s.commit_all(&root, "one");
    write(&root, b"a.txt", b"changed\n");
    let snapshot = git::capture(&root, &root.join(".dstack/state")).unwrap();
    let saved = s.path().join("saved");
    snapshot.save(&saved).unwrap();
    let blob = &snapshot.changes[0].content.as_ref().unwrap().blob;
    let stored = saved.join("changes").join(blob);

    // Same size, other bytes: found when materialising.
    fs::write(&stored, b"CHANGED\n").unwrap();
    let loaded = Snapshot::load(&saved).unwrap();
    let err = git::materialise(&root, &loaded, &s.path().join("out")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the saved Git snapshot in `{}` cannot be used: the content of blob {blob} has changed",
            stored.display()
        )
    );
    // Missing: found when loading.
    fs::remove_file(&stored).unwrap();
    let err = Snapshot::load(&saved).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the saved Git snapshot in `{}` cannot be used: a saved content is missing",
            stored.display()
        )
    );
}
