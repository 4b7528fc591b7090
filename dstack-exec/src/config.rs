//! Executor configuration: how this machine reaches Docker and Slurm. Not part of the
//! workflows (which say *what* runs), so it lives in its own file, found in this order:
//!
//! 1. the file named by `DSTACK_CONFIG`;
//! 2. `<project>/.dstack/config.yaml`;
//! 3. `~/.dstack/config.yaml`.
//!
//! The first that exists is used whole (files are not merged); none at all means defaults.
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
    /// Where the configuration of the project at `root` comes from, if anywhere.
    #[must_use]
    pub fn locate(root: &Path) -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("DSTACK_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let project = root.join(".dstack").join("config.yaml");
        if project.is_file() {
            return Some(project);
        }
        let home = std::env::var_os("HOME").map(PathBuf::from)?;
        let user = home.join(".dstack").join("config.yaml");
        user.is_file().then_some(user)
    }

    /// Loads the configuration of the project at `root` (see the module docs); defaults when
    /// there is no file.
    ///
    /// # Errors
    /// A file that cannot be read (including one `DSTACK_CONFIG` names that does not exist)
    /// or that does not describe a configuration.
    pub fn load(root: &Path) -> Result<ExecConfig, ConfigFileError> {
        match ExecConfig::locate(root) {
            Some(path) => ExecConfig::from_file(&path),
            None => Ok(ExecConfig::default()),
        }
    }

    /// Loads the configuration file at `path`.
    ///
    /// # Errors
    /// A file that cannot be read or that does not describe a configuration.
    pub fn from_file(path: &Path) -> Result<ExecConfig, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
            path: path.to_path_buf(),
            message: format!(
                "{}: cannot read the executor configuration: {e}",
                path.display()
            ),
        })?;
        ExecConfig::from_yaml(&text, path)
    }

    /// Parses a configuration; `path` names it in errors.
    ///
    /// # Errors
    /// Text that is not YAML or does not describe a configuration (unknown keys included).
    pub fn from_yaml(text: &str, path: &Path) -> Result<ExecConfig, ConfigFileError> {
        let error = |message: String| ConfigFileError {
            path: path.to_path_buf(),
            message,
        };
        let node = dstack_core::yaml::parse_str(text, path).map_err(|d| {
            error(
                d.errors()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let Some(node) = node else {
            return Ok(ExecConfig::default());
        };
        let value = node.to_json();
        if value.is_null() {
            return Ok(ExecConfig::default());
        }
        serde_json::from_value(value).map_err(|e| {
            error(format!(
                "{}: invalid executor configuration: {e}",
                path.display()
            ))
        })
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
