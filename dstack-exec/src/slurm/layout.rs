//! Where a run's files are on the shared file system.
//!
//! The scheduler names every path in the run store's layout (`STATE/runs/RUN/jobs/JOB` for a
//! tree, `STATE/runs/RUN/artifacts/JOB` for artifacts). With the default shared folder (the
//! store's own) they are used as they are; with `slurm.shared-dir` they are moved under it,
//! same relative paths. The executor's own files go to `runs/RUN/slurm/`:
//!
//! ```text
//! runs/<run>/slurm/source/          the project's files, once per run: each job's tree is a copy
//! runs/<run>/slurm/scripts/<h>.sh   batch scripts, one per resource shape
//! runs/<run>/slurm/tasks/<n>-<k>.sh the manifest of one job array: each task's job, quoted
//! runs/<run>/slurm/output/          Slurm's own output of each task (the batch script's errors)
//! runs/<run>/slurm/jobs/<job>/      made by the batch script when the job starts: job.sh,
//!                                   launch, inputs, artifacts, stdout, stderr, retries, status;
//!                                   offsets (how much output dstack has read)
//! ```

use std::path::{Path, PathBuf};

use dstack_core::run::DagRun;

/// Paths of one run on the shared file system.
#[derive(Clone, Debug)]
pub struct Layout {
    state_dir: PathBuf,
    shared: Option<PathBuf>,
    run: String,
}

impl Layout {
    /// The layout of `run`, under `shared` (or the store's folder).
    /// Paths are made absolute (against the current directory): the batch scripts run in
    /// another one, on another machine.
    #[must_use]
    pub fn new(run: &DagRun, shared: Option<&Path>) -> Layout {
        let state_dir = absolute(&run.state_dir);
        Layout {
            shared: shared.map(absolute).filter(|s| *s != state_dir),
            state_dir,
            run: run.name.clone(),
        }
    }

    /// Whether the shared folder is not the store's: artifacts are then copied into the store
    /// when a job succeeds.
    #[must_use]
    pub fn separate(&self) -> bool {
        self.shared.is_some()
    }

    /// `path` (in the store's layout) on the shared file system.
    #[must_use]
    pub fn shared(&self, path: &Path) -> PathBuf {
        let path = absolute(path);
        match (&self.shared, path.strip_prefix(&self.state_dir)) {
            (Some(shared), Ok(rel)) => shared.join(rel),
            _ => path,
        }
    }

    /// The run's folder on the shared file system.
    #[must_use]
    pub fn run_dir(&self) -> PathBuf {
        self.shared(&self.state_dir.join("runs").join(&self.run))
    }

    /// The executor's folder for the run (the batch scripts' working directory).
    #[must_use]
    pub fn slurm_dir(&self) -> PathBuf {
        self.run_dir().join("slurm")
    }

    /// The folder of the job whose tree is `tree` (in the store's layout).
    #[must_use]
    pub fn job_dir(&self, tree: &Path) -> PathBuf {
        self.slurm_dir().join("jobs").join(
            tree.file_name()
                .unwrap_or_else(|| std::ffi::OsStr::new("job")),
        )
    }

    /// The same folder relative to [`Layout::slurm_dir`], as task files name it.
    #[must_use]
    pub fn job_dir_relative(tree: &Path) -> PathBuf {
        Path::new("jobs").join(
            tree.file_name()
                .unwrap_or_else(|| std::ffi::OsStr::new("job")),
        )
    }
}

/// `path` made absolute against the current directory, `.` and `..` resolved lexically (as
/// the shell would; symbolic links are kept).
fn absolute(path: &Path) -> PathBuf {
    let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in full.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_move_under_a_separate_shared_folder() {
        let run = DagRun::new("run-1", "/home/u/p/.dstack/state");
        let tree = Path::new("/home/u/p/.dstack/state/runs/run-1/jobs/train");
        let same = Layout::new(&run, None);
        assert!(!same.separate());
        assert_eq!(same.shared(tree), tree);
        assert_eq!(
            same.job_dir(tree),
            Path::new("/home/u/p/.dstack/state/runs/run-1/slurm/jobs/train")
        );
        let also_same = Layout::new(&run, Some(Path::new("/home/u/p/.dstack/state")));
        assert!(!also_same.separate());
        let moved = Layout::new(&run, Some(Path::new("/shared/dstack")));
        assert!(moved.separate());
        assert_eq!(
            moved.shared(tree),
            Path::new("/shared/dstack/runs/run-1/jobs/train")
        );
        assert_eq!(
            moved.slurm_dir(),
            Path::new("/shared/dstack/runs/run-1/slurm")
        );
        assert_eq!(Layout::job_dir_relative(tree), Path::new("jobs/train"));

        // Relative paths (a store found from the current directory) become absolute.
        let here = std::env::current_dir().expect("cwd");
        let relative = Layout::new(&DagRun::new("run-1", "./.dstack/state"), None);
        assert_eq!(
            relative.shared(Path::new("./.dstack/state/runs/run-1/jobs/train")),
            here.join(".dstack/state/runs/run-1/jobs/train")
        );
        assert_eq!(
            relative.slurm_dir(),
            here.join(".dstack/state/runs/run-1/slurm")
        );
    }
}
