//! The `slurm:` section of the executor configuration, and what it resolves to.
//!
//! ```yaml
//! slurm:
//!   partition: gpu                 # --partition
//!   account: ml-team               # --account
//!   qos: normal                    # --qos
//!   sbatch-args: [--constraint=a100, --exclusive]   # more sbatch options, one per item
//!   shared-dir: /shared/dstack     # a folder every node sees (default: the run store's folder)
//!   poll-interval: 2s              # how often a run's jobs are read, in one squeue call
//!   container: none                # or `pyxis`, or a command such as
//!                                  # [apptainer, exec, --bind, "{tree}:/workflow", --pwd, "{workdir}", "docker://{image}"]
//!   bin-dir: /opt/slurm/bin        # where sbatch, squeue, scancel, scontrol are (default: PATH)
//!   slurm-conf: /etc/slurm/slurm.conf   # SLURM_CONF for those commands (default: inherited)
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use dstack_core::run::ExecutorError;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// The default time between two reads of a run's job states.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest poll interval accepted (the controller serves every user of the cluster).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The `slurm:` section of the executor configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlurmConfig {
    /// `sbatch --partition`.
    pub partition: Option<String>,
    /// `sbatch --account`.
    pub account: Option<String>,
    /// `sbatch --qos`.
    pub qos: Option<String>,
    /// More `sbatch` options, one argument per item (`--constraint=a100`, `--exclusive`).
    pub sbatch_args: Vec<String>,
    /// Where jobs' trees, scripts, output and artifacts live while a run is on the cluster: a
    /// folder every node sees under the same path. Default: the run store's folder (right on
    /// one machine, or when the project is on a shared file system).
    pub shared_dir: Option<PathBuf>,
    /// How often the states of a run's jobs are read (one `squeue` call for all of them):
    /// `500ms`, `2s`. Default 1 s.
    pub poll_interval: Option<String>,
    /// How commands run on the nodes: directly (`none`, the default: a job's image is not
    /// used), in the job's image through Pyxis (`pyxis`: `srun --container-image`), or through
    /// a container command (a list: `{image}`, `{tree}` and `{workdir}` are replaced).
    pub container: Container,
    /// The folder that holds `sbatch`, `squeue`, `scancel` and `scontrol` (default: `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// `SLURM_CONF` for those commands (default: as inherited, else Slurm's own default).
    pub slurm_conf: Option<PathBuf>,
}

/// How a job's commands run on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Container {
    /// On the node directly; images are not used.
    #[default]
    None,
    /// In the job's image through NVIDIA Pyxis (`srun --container-image=IMAGE`).
    Pyxis,
    /// Through a container command, e.g. `[docker, run, --rm, -v, "{tree}:/workflow", -w,
    /// "{workdir}", "{image}"]`; the job's script follows it as `sh -c SCRIPT`.
    Command(Vec<String>),
}

impl<'de> Deserialize<'de> for Container {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContainerVisitor;

        impl<'de> Visitor<'de> for ContainerVisitor {
            type Value = Container;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`none`, `pyxis`, or a container command (a list of arguments)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Container, E> {
                match v {
                    "none" => Ok(Container::None),
                    "pyxis" => Ok(Container::Pyxis),
                    other => Err(E::custom(format!(
                        "unknown container mode `{other}`: use `none`, `pyxis`, or a container command (a list such as [apptainer, exec, --bind, \"{{tree}}:/workflow\", --pwd, \"{{workdir}}\", \"docker://{{image}}\"])"
                    ))),
                }
            }

            fn visit_unit<E: de::Error>(self) -> Result<Container, E> {
                Ok(Container::None)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Container, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    args.push(arg);
                }
                Ok(Container::Command(args))
            }
        }

        deserializer.deserialize_any(ContainerVisitor)
    }
}

/// The placeholders a container command may use.
pub const PLACEHOLDERS: [&str; 3] = ["{image}", "{tree}", "{workdir}"];

/// The configuration, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Options every `sbatch` call gets (partition, account, QoS, extra arguments).
    pub sbatch_args: Vec<String>,
    /// The shared folder, when not the run store's.
    pub shared_dir: Option<PathBuf>,
    /// Time between two reads of the job states.
    pub poll_interval: Duration,
    /// How commands run.
    pub container: Container,
    /// Where the commands are.
    pub bin_dir: Option<PathBuf>,
    /// `SLURM_CONF` for them.
    pub slurm_conf: Option<PathBuf>,
}

impl SlurmConfig {
    /// Checks the configuration.
    ///
    /// # Errors
    /// A value that cannot be used, named by its key.
    pub fn settings(&self) -> Result<Settings, ExecutorError> {
        let bad = |key: &str, why: String| {
            ExecutorError::new(format!(
                "`slurm.{key}` in the executor configuration: {why}"
            ))
        };
        let mut sbatch_args = Vec::new();
        for (key, flag, value) in [
            ("partition", "--partition", &self.partition),
            ("account", "--account", &self.account),
            ("qos", "--qos", &self.qos),
        ] {
            if let Some(value) = value {
                if value.is_empty() || value.contains(['\n', '\0']) {
                    return Err(bad(key, format!("{value:?} is not a valid name")));
                }
                sbatch_args.push(format!("{flag}={value}"));
            }
        }
        for arg in &self.sbatch_args {
            if arg.contains('\0') {
                return Err(bad("sbatch-args", format!("{arg:?} holds a NUL byte")));
            }
            if !arg.starts_with('-') {
                return Err(bad(
                    "sbatch-args",
                    format!(
                        "`{arg}` is not an option: give each option as one item, such as `--constraint=a100`"
                    ),
                ));
            }
            for owned in [
                "--array",
                "--chdir",
                "--dependency",
                "--hold",
                "--output",
                "--error",
                "--parsable",
                "--wrap",
            ] {
                if arg == owned || arg.starts_with(&format!("{owned}=")) {
                    return Err(bad(
                        "sbatch-args",
                        format!("`{owned}` is set by dstack for every job and cannot be given"),
                    ));
                }
            }
            sbatch_args.push(arg.clone());
        }
        let poll_interval = match &self.poll_interval {
            None => DEFAULT_POLL_INTERVAL,
            Some(text) => {
                let d = humantime::parse_duration(text.trim()).map_err(|e| {
                    bad(
                        "poll-interval",
                        format!("`{text}` is not a duration such as `2s` or `500ms` ({e})"),
                    )
                })?;
                if d < MIN_POLL_INTERVAL {
                    return Err(bad(
                        "poll-interval",
                        format!("`{text}` is shorter than the shortest interval, 50ms"),
                    ));
                }
                d
            }
        };
        if let Container::Command(args) = &self.container {
            let Some(program) = args.first() else {
                return Err(bad(
                    "container",
                    "the container command is empty: give the program and its arguments, such as [docker, run, --rm, -v, \"{tree}:/workflow\", -w, \"{workdir}\", \"{image}\"]".to_owned(),
                ));
            };
            if program.contains('{') {
                return Err(bad(
                    "container",
                    format!("the program `{program}` cannot be a placeholder"),
                ));
            }
            for arg in args {
                if arg.contains('\0') {
                    return Err(bad("container", format!("{arg:?} holds a NUL byte")));
                }
                let mut rest = arg
                    .replace("{image}", "")
                    .replace("{tree}", "")
                    .replace("{workdir}", "");
                if let Some(start) = rest.find('{')
                    && rest[start..].contains('}')
                {
                    rest = rest[start..].to_owned();
                    let end = rest.find('}').map_or(rest.len(), |e| e + 1);
                    return Err(bad(
                        "container",
                        format!(
                            "unknown placeholder `{}` in `{arg}`: use {}",
                            &rest[..end],
                            PLACEHOLDERS.map(|p| format!("`{p}`")).join(", ")
                        ),
                    ));
                }
            }
            if !args.iter().any(|a| a.contains("{image}")) {
                return Err(bad(
                    "container",
                    "the container command never uses `{image}`, so jobs would not run in their image".to_owned(),
                ));
            }
        }
        for (key, path) in [
            ("shared-dir", &self.shared_dir),
            ("bin-dir", &self.bin_dir),
            ("slurm-conf", &self.slurm_conf),
        ] {
            if let Some(path) = path {
                if !path.is_absolute() {
                    return Err(bad(
                        key,
                        format!("`{}` must be an absolute path", path.display()),
                    ));
                }
                if path.as_os_str().to_string_lossy().contains('\n') {
                    return Err(bad(key, format!("{path:?} holds a line break")));
                }
            }
        }
        Ok(Settings {
            sbatch_args,
            shared_dir: self.shared_dir.clone(),
            poll_interval,
            container: self.container.clone(),
            bin_dir: self.bin_dir.clone(),
            slurm_conf: self.slurm_conf.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExecConfig;
    use std::path::Path;

    fn parse(yaml: &str) -> Result<SlurmConfig, String> {
        ExecConfig::from_yaml(yaml, Path::new("config.yaml"))
            .map(|c| c.slurm)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_parses() {
        let config = parse(
            "slurm:\n  partition: gpu\n  account: ml\n  qos: high\n  sbatch-args: [--exclusive, --constraint=a100]\n  shared-dir: /shared/dstack\n  poll-interval: 500ms\n  container: [apptainer, exec, --bind, '{tree}:/workflow', --pwd, '{workdir}', 'docker://{image}']\n  bin-dir: /opt/slurm/bin\n  slurm-conf: /etc/slurm/slurm.conf\n",
        )
        .expect("parses");
        let settings = config.settings().expect("valid");
        assert_eq!(
            settings.sbatch_args,
            [
                "--partition=gpu",
                "--account=ml",
                "--qos=high",
                "--exclusive",
                "--constraint=a100"
            ]
        );
        assert_eq!(settings.poll_interval, Duration::from_millis(500));
        assert!(matches!(settings.container, Container::Command(ref a) if a[0] == "apptainer"));
        assert_eq!(
            parse("slurm:\n  container: pyxis\n")
                .expect("pyxis")
                .container,
            Container::Pyxis
        );
        assert_eq!(
            parse("slurm:\n  container: none\n")
                .expect("none")
                .container,
            Container::None
        );
        assert_eq!(
            parse("slurm: {}\n")
                .expect("defaults")
                .settings()
                .expect("ok")
                .poll_interval,
            DEFAULT_POLL_INTERVAL
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("slurm:\n  container: docker\n").expect_err("mode");
        assert!(e.contains("unknown container mode `docker`"), "{e}");
        let e = parse("slurm:\n  partiton: gpu\n").expect_err("unknown key");
        assert!(e.contains("partiton"), "{e}");
        let settings = |yaml: &str| {
            parse(yaml)
                .expect("parses")
                .settings()
                .expect_err("refused")
                .message
        };
        let e = settings("slurm:\n  poll-interval: soon\n");
        assert!(
            e.starts_with(
                "`slurm.poll-interval` in the executor configuration: `soon` is not a duration"
            ),
            "{e}"
        );
        let e = settings("slurm:\n  poll-interval: 1ms\n");
        assert!(e.contains("shorter than the shortest interval"), "{e}");
        let e = settings("slurm:\n  sbatch-args: [exclusive]\n");
        assert!(e.contains("`exclusive` is not an option"), "{e}");
        let e = settings("slurm:\n  sbatch-args: [--dependency=afterok:1]\n");
        assert!(e.contains("`--dependency` is set by dstack"), "{e}");
        let e = settings("slurm:\n  container: [docker, run, '{img}']\n");
        assert!(e.contains("unknown placeholder `{img}`"), "{e}");
        let e = settings("slurm:\n  container: [docker, run, alpine]\n");
        assert!(e.contains("never uses `{image}`"), "{e}");
        let e = settings("slurm:\n  container: []\n");
        assert!(e.contains("the container command is empty"), "{e}");
        let e = settings("slurm:\n  shared-dir: shared\n");
        assert!(
            e.contains("`slurm.shared-dir`") && e.contains("absolute"),
            "{e}"
        );
        let e = settings("slurm:\n  partition: \"\"\n");
        assert!(e.contains("`slurm.partition`"), "{e}");
    }
}
