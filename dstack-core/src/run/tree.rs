//! The project files a job gets: a private copy of the project, so jobs do not trample each
//! other or the user's files.
//!
//! What is copied: every file under the project root except `.git/`, the state folder, and
//! what `.gitignore` files ignore (as Git would not have them either). The list is made once
//! per run ([`ProjectFiles::scan`]) and copied into each job's tree
//! ([`ProjectFiles::materialise`]); copies use reflinks where the file system has them.

use std::io;
use std::path::{Path, PathBuf};

/// One entry of the project.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
}

/// The files of a project, relative to its root.
#[derive(Clone, Debug)]
pub struct ProjectFiles {
    root: PathBuf,
    entries: Vec<(PathBuf, Kind)>,
}

impl ProjectFiles {
    /// Lists the project at `root`, leaving out `.git/`, `exclude` (the state folder) and
    /// ignored files.
    ///
    /// # Errors
    /// When the project cannot be read.
    pub fn scan(root: &Path, exclude: &Path) -> io::Result<ProjectFiles> {
        let root = std::path::absolute(root)?;
        let exclude = std::path::absolute(exclude)?;
        let walker = ignore::WalkBuilder::new(&root)
            .hidden(false)
            .parents(false)
            .git_global(false)
            .require_git(false)
            .follow_links(false)
            .sort_by_file_name(std::ffi::OsStr::cmp)
            .filter_entry(move |e| e.file_name() != ".git" && !e.path().starts_with(&exclude))
            .build();
        ProjectFiles::collect(root, walker)
    }

    /// Lists every file under `root` as it is, ignore files and all: for a tree that was
    /// already filtered (a materialised Git snapshot, where a tracked file matching
    /// `.gitignore` must still be there).
    ///
    /// # Errors
    /// When the folder cannot be read.
    pub fn scan_all(root: &Path) -> io::Result<ProjectFiles> {
        let root = std::path::absolute(root)?;
        let walker = ignore::WalkBuilder::new(&root)
            .standard_filters(false)
            .follow_links(false)
            .sort_by_file_name(std::ffi::OsStr::cmp)
            .build();
        ProjectFiles::collect(root, walker)
    }

    fn collect(root: PathBuf, walker: ignore::Walk) -> io::Result<ProjectFiles> {
        let mut entries = Vec::new();
        for entry in walker {
            let entry = entry.map_err(io::Error::other)?;
            let Ok(rel) = entry.path().strip_prefix(&root) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            let Some(ft) = entry.file_type() else {
                continue;
            };
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink(std::fs::read_link(entry.path())?)
            } else if ft.is_file() {
                Kind::File
            } else {
                continue; // sockets, fifos, devices
            };
            entries.push((rel.to_path_buf(), kind));
        }
        Ok(ProjectFiles { root, entries })
    }

    /// How many entries (files, folders, links) the project has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the project has no files.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Copies the project into `dest` (created; it must not hold anything yet).
    ///
    /// # Errors
    /// When a file cannot be copied.
    pub fn materialise(&self, dest: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dest)?;
        for (rel, kind) in &self.entries {
            let to = dest.join(rel);
            match kind {
                Kind::Dir => std::fs::create_dir_all(&to)?,
                Kind::File => {
                    reflink_copy::reflink_or_copy(self.root.join(rel), &to)?;
                }
                Kind::Symlink(target) => std::os::unix::fs::symlink(target, &to)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_all_keeps_ignored_and_hidden_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("snapshot");
        std::fs::create_dir_all(root.join(".hidden")).expect("mkdir");
        std::fs::write(root.join(".gitignore"), "*.bin\n").expect("write");
        std::fs::write(root.join("tracked.bin"), [0u8, 1, 2]).expect("write");
        std::fs::write(root.join(".hidden/x"), "x").expect("write");
        let files = ProjectFiles::scan_all(&root).expect("scan");
        let dest = dir.path().join("job");
        files.materialise(&dest).expect("copy");
        assert_eq!(
            std::fs::read(dest.join("tracked.bin")).expect("read"),
            [0, 1, 2]
        );
        assert!(dest.join(".hidden/x").is_file());
        assert!(dest.join(".gitignore").is_file());
    }

    #[test]
    fn copies_the_project_without_git_state_or_ignored_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("p");
        for d in [".git/objects", ".dstack/state/runs", "src", "data"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(root.join(".git/HEAD"), "ref").expect("write");
        std::fs::write(root.join(".dstack/workflows.yaml"), "workflows: []").expect("write");
        std::fs::write(root.join(".dstack/state/dstack.db"), "db").expect("write");
        std::fs::write(root.join(".gitignore"), "data/\n*.tmp\n").expect("write");
        std::fs::write(root.join("src/train.py"), "print(1)").expect("write");
        std::fs::write(root.join("x.tmp"), "tmp").expect("write");
        std::fs::write(root.join("data/big.bin"), "big").expect("write");
        std::os::unix::fs::symlink("src/train.py", root.join("link.py")).expect("symlink");

        let files = ProjectFiles::scan(&root, &root.join(".dstack/state")).expect("scan");
        let dest = dir.path().join("job");
        files.materialise(&dest).expect("copy");
        assert_eq!(
            std::fs::read_to_string(dest.join("src/train.py")).expect("read"),
            "print(1)"
        );
        assert!(dest.join(".dstack/workflows.yaml").exists());
        assert!(dest.join(".gitignore").exists());
        assert_eq!(
            std::fs::read_link(dest.join("link.py")).expect("link"),
            Path::new("src/train.py")
        );
        for absent in [".git", ".dstack/state", "x.tmp", "data"] {
            assert!(!dest.join(absent).exists(), "{absent} should not be copied");
        }
        // The copy is private: writing to it leaves the project alone.
        std::fs::write(dest.join("src/train.py"), "changed").expect("write");
        assert_eq!(
            std::fs::read_to_string(root.join("src/train.py")).expect("read"),
            "print(1)"
        );
    }
}
