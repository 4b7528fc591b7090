//! Executor configuration: how this machine reaches Docker and Slurm. Not part of the
//! workflows (which say *what* runs), so it lives in files of its own:
//!
//! - `~/.dstack/config.yaml`: the user's settings for every project;
//! - `<project>/.dstack/config.yaml`: the project's, merged over the user's key by key (a
//!   project that sets `slurm.partition` keeps the user's `docker.host`);
//! - or only the file named by `DSTACK_CONFIG`, when that variable is set: an explicit choice
//!   replaces both.
//!
//! Mappings merge; any other value (a string, a number, a list) replaces the one below it.
//! Each file is checked on its own first, so an error names the file it is in. No file at all
//! means defaults.
//!
//! ```yaml
//! docker:
//!   user: "1000:1000"
//! slurm:
//!   partition: gpu
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{docker, slurm};

/// The configuration of every executor.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// The `docker:` section.
    pub docker: docker::DockerConfig,
    /// The `slurm:` section.
    pub slurm: slurm::SlurmConfig,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it, naming the file (and the line where known).
    pub message: String,
}

impl ExecConfig {
    /// The files that configure the project at `root`, the lowest priority first (see the
    /// module docs): only the one `DSTACK_CONFIG` names when it is set (whether or not it
    /// exists, so that a wrong name is an error), else those of `~/.dstack/config.yaml` and
    /// `<project>/.dstack/config.yaml` that exist.
    #[must_use]
    pub fn locate_all(root: &Path) -> Vec<PathBuf> {
        let named = std::env::var_os("DSTACK_CONFIG").filter(|p| !p.is_empty());
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
        layers(root, named.map(PathBuf::from), home.map(PathBuf::from))
    }

    /// The file with the last word on the configuration of the project at `root`, if any.
    #[must_use]
    pub fn locate(root: &Path) -> Option<PathBuf> {
        ExecConfig::locate_all(root).pop()
    }

    /// Loads the configuration of the project at `root` (see the module docs); defaults when
    /// there is no file.
    ///
    /// # Errors
    /// A file that cannot be read (including one `DSTACK_CONFIG` names that does not exist)
    /// or that does not describe a configuration.
    pub fn load(root: &Path) -> Result<ExecConfig, ConfigFileError> {
        ExecConfig::from_files(&ExecConfig::locate_all(root))
    }

    /// Loads the files at `paths`, each merged over the ones before it; defaults for none.
    ///
    /// # Errors
    /// The first file that cannot be read or that does not describe a configuration.
    pub fn from_files(paths: &[PathBuf]) -> Result<ExecConfig, ConfigFileError> {
        let mut merged: Option<serde_json::Value> = None;
        for path in paths {
            let Some(value) = value_of_file(path)? else {
                continue;
            };
            merged = Some(match merged {
                Some(mut below) => {
                    merge(&mut below, value);
                    below
                }
                None => value,
            });
        }
        match merged {
            // Each layer is a valid configuration and merging keeps keys and types: this
            // cannot fail, but if it did, the error names the last file.
            Some(value) => parse_value(value, paths.last().map_or(Path::new(""), |p| p)),
            None => Ok(ExecConfig::default()),
        }
    }

    /// Loads the configuration file at `path`.
    ///
    /// # Errors
    /// A file that cannot be read or that does not describe a configuration.
    pub fn from_file(path: &Path) -> Result<ExecConfig, ConfigFileError> {
        ExecConfig::from_files(&[path.to_path_buf()])
    }

    /// Parses a configuration; `path` names it in errors.
    ///
    /// # Errors
    /// Text that is not YAML or does not describe a configuration (unknown keys included).
    pub fn from_yaml(text: &str, path: &Path) -> Result<ExecConfig, ConfigFileError> {
        match value_of(text, path)? {
            Some(value) => parse_value(value, path),
            None => Ok(ExecConfig::default()),
        }
    }
}

/// The configuration files for `root`, lowest priority first: only `named` when given, else
/// those of `HOME/.dstack/config.yaml` and `root/.dstack/config.yaml` that are files.
fn layers(root: &Path, named: Option<PathBuf>, home: Option<PathBuf>) -> Vec<PathBuf> {
    if let Some(named) = named {
        return vec![named];
    }
    let user = home.map(|h| h.join(".dstack").join("config.yaml"));
    let project = root.join(".dstack").join("config.yaml");
    user.into_iter()
        .chain(std::iter::once(project))
        .filter(|p| p.is_file())
        .collect()
}

/// Reads the file at `path` as a configuration's JSON value, checked on its own; `None` when
/// it holds nothing.
fn value_of_file(path: &Path) -> Result<Option<serde_json::Value>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        path: path.to_path_buf(),
        message: format!(
            "{}: cannot read the executor configuration: {e}",
            path.display()
        ),
    })?;
    let value = value_of(&text, path)?;
    if let Some(value) = &value {
        parse_value(value.clone(), path)?;
    }
    Ok(value)
}

/// The JSON value of a configuration's YAML text; `None` for an empty file or `null`.
fn value_of(text: &str, path: &Path) -> Result<Option<serde_json::Value>, ConfigFileError> {
    let node = dstack_core::yaml::parse_str(text, path).map_err(|d| ConfigFileError {
        path: path.to_path_buf(),
        message: d
            .errors()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    })?;
    Ok(node.map(|n| n.to_json()).filter(|v| !v.is_null()))
}

fn parse_value(value: serde_json::Value, path: &Path) -> Result<ExecConfig, ConfigFileError> {
    serde_json::from_value(value).map_err(|e| ConfigFileError {
        path: path.to_path_buf(),
        message: format!("{}: invalid executor configuration: {e}", path.display()),
    })
}

/// Merges `over` into `below`: mappings key by key, recursively; any other value replaces.
fn merge(below: &mut serde_json::Value, over: serde_json::Value) {
    match (below, over) {
        (serde_json::Value::Object(below), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                match below.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        below.insert(key, value);
                    }
                }
            }
        }
        (below, over) => *below = over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_means_defaults() {
        let path = Path::new("config.yaml");
        assert_eq!(
            ExecConfig::from_yaml("", path).expect("empty"),
            ExecConfig::default()
        );
        assert_eq!(
            ExecConfig::from_yaml("# nothing\n", path).expect("comment"),
            ExecConfig::default()
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn the_project_file_merges_over_the_users() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let root = dir.path().join("project");
        write(
            &home,
            ".dstack/config.yaml",
            "docker:\n  host: tcp://127.0.0.1:2375\n  network: lab\nslurm:\n  partition: cpu\n  sbatch-args: [--exclusive]\n",
        );
        write(
            &root,
            ".dstack/config.yaml",
            "docker:\n  network: bridge\nslurm:\n  sbatch-args: [--nice=10]\n",
        );
        let paths = layers(&root, None, Some(home.clone()));
        assert_eq!(
            paths,
            [
                home.join(".dstack/config.yaml"),
                root.join(".dstack/config.yaml")
            ]
        );
        let config = ExecConfig::from_files(&paths).expect("merged");
        // Kept from the user's file.
        assert_eq!(config.docker.host.as_deref(), Some("tcp://127.0.0.1:2375"));
        assert_eq!(config.slurm.partition.as_deref(), Some("cpu"));
        // The project's win; lists are replaced, not appended to.
        assert_eq!(config.docker.network.as_deref(), Some("bridge"));
        assert_eq!(config.slurm.sbatch_args, ["--nice=10"]);

        // Only one of them, or none.
        let alone = layers(&root, None, Some(dir.path().join("nobody")));
        assert_eq!(alone, [root.join(".dstack/config.yaml")]);
        let config = ExecConfig::from_files(&alone).expect("project only");
        assert_eq!(config.docker.host, None);
        assert!(layers(&dir.path().join("nothing"), None, None).is_empty());
        assert_eq!(
            ExecConfig::from_files(&[]).expect("defaults"),
            ExecConfig::default()
        );

        // `DSTACK_CONFIG` replaces both, even when it names no file (an error then).
        let named = dir.path().join("elsewhere.yaml");
        let only = layers(&root, Some(named.clone()), Some(home.clone()));
        assert_eq!(only, std::slice::from_ref(&named));
        let e = ExecConfig::from_files(&[named]).expect_err("missing");
        assert!(e.to_string().contains("elsewhere.yaml"), "{e}");

        // An empty file is no layer.
        write(&root, ".dstack/config.yaml", "# nothing here\n");
        let config = ExecConfig::from_files(&paths).expect("user only");
        assert_eq!(config.docker.network.as_deref(), Some("lab"));
    }

    #[test]
    fn a_mistake_is_reported_in_its_own_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = write(dir.path(), "user.yaml", "docker:\n  hots: x\n");
        let project = write(dir.path(), "project.yaml", "slurm:\n  partition: gpu\n");
        let e = ExecConfig::from_files(&[user.clone(), project.clone()]).expect_err("a typo");
        assert_eq!(e.path, user);
        assert!(e.to_string().contains("hots"), "{e}");
        // A wrong type is found in its file too, not after merging.
        write(dir.path(), "user.yaml", "slurm:\n  partition: cpu\n");
        write(dir.path(), "project.yaml", "slurm: gpu\n");
        let e = ExecConfig::from_files(&[user, project.clone()]).expect_err("not a mapping");
        assert_eq!(e.path, project);
    }

    #[test]
    fn unknown_sections_and_bad_yaml_are_errors_naming_the_file() {
        let path = Path::new("/p/.dstack/config.yaml");
        let e = ExecConfig::from_yaml("kubernetes: {}\n", path).expect_err("unknown");
        assert!(e.to_string().starts_with("/p/.dstack/config.yaml: "), "{e}");
        assert!(e.to_string().contains("kubernetes"), "{e}");
        let e = ExecConfig::from_yaml("docker: [\n", path).expect_err("bad yaml");
        assert!(e.to_string().contains("config.yaml"), "{e}");
        let e = ExecConfig::from_yaml("- 1\n", path).expect_err("not a mapping");
        assert!(
            e.to_string().contains("invalid executor configuration"),
            "{e}"
        );
    }
}
