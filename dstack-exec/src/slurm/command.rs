//! Slurm's own commands (`sbatch`, `squeue`, `scancel`, `scontrol`), found once and run with
//! errors that name the command that failed and say how to configure it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use dstack_core::run::ExecutorError;
use tokio::io::AsyncWriteExt as _;

/// The commands the executor runs.
pub const TOOLS: [&str; 4] = ["sbatch", "squeue", "scancel", "scontrol"];

/// Where Slurm's commands are, and the configuration they read.
#[derive(Clone, Debug)]
pub struct Tools {
    sbatch: PathBuf,
    squeue: PathBuf,
    scancel: PathBuf,
    scontrol: PathBuf,
    slurm_conf: Option<PathBuf>,
}

/// What a command printed.
#[derive(Debug)]
pub struct Output {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Tools {
    /// Finds every command in `bin_dir`, else in `path` (the `PATH` variable's value).
    ///
    /// # Errors
    /// The first command that cannot be found, with how to make it found.
    pub fn find(
        bin_dir: Option<&Path>,
        path: Option<&OsStr>,
        slurm_conf: Option<&Path>,
    ) -> Result<Tools, ExecutorError> {
        let locate = |name: &str| -> Result<PathBuf, ExecutorError> {
            if let Some(dir) = bin_dir {
                let candidate = dir.join(name);
                return if is_executable(&candidate) {
                    Ok(candidate)
                } else {
                    Err(ExecutorError::new(format!(
                        "the Slurm command `{name}` is not in `{}` (`slurm.bin-dir` of the executor configuration)",
                        dir.display()
                    ))
                    .with_help(
                        "point `slurm.bin-dir` at the folder that holds sbatch, squeue, scancel and scontrol",
                    ))
                };
            }
            path.into_iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join(name))
                .find(|candidate| is_executable(candidate))
                .ok_or_else(|| {
                    ExecutorError::new(format!(
                        "the Slurm command `{name}` is not on PATH, so the `slurm` executor cannot submit jobs from this machine"
                    ))
                    .with_help(
                        "install Slurm's client commands (Debian: `apt-get install slurm-client`; a test cluster: `bash scripts/setup-slurm.sh`), or set `slurm.bin-dir` in the executor configuration (.dstack/config.yaml)",
                    )
                })
        };
        Ok(Tools {
            sbatch: locate("sbatch")?,
            squeue: locate("squeue")?,
            scancel: locate("scancel")?,
            scontrol: locate("scontrol")?,
            slurm_conf: slurm_conf.map(Path::to_path_buf),
        })
    }

    fn program(&self, name: &str) -> &Path {
        match name {
            "sbatch" => &self.sbatch,
            "squeue" => &self.squeue,
            "scancel" => &self.scancel,
            _ => &self.scontrol,
        }
    }

    /// Runs `name ARGS`, feeding `stdin` when given.
    ///
    /// # Errors
    /// A command that cannot start or exits non-zero: the error names it, says what it
    /// printed, and how to reach the controller.
    pub async fn run(
        &self,
        name: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<Output, ExecutorError> {
        let program = self.program(name);
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(conf) = &self.slurm_conf {
            command.env("SLURM_CONF", conf);
        }
        let shown = shown(name, args);
        let mut child = command.spawn().map_err(|e| {
            ExecutorError::new(format!("cannot run `{}`: {e}", program.display())).with_help(
                "install Slurm's client commands, or set `slurm.bin-dir` in the executor configuration",
            )
        })?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // The command may refuse its input early; its exit status says why.
            let _ = pipe.write_all(bytes).await;
            drop(pipe);
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| ExecutorError::new(format!("`{shown}` failed: {e}")))?;
        let out = Output {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        if output.status.success() {
            return Ok(out);
        }
        let said = out.stderr.trim();
        let said = if said.is_empty() {
            out.stdout.trim()
        } else {
            said
        };
        let status = output
            .status
            .code()
            .map_or_else(|| "was killed".to_owned(), |c| format!("exited with {c}"));
        let error = ExecutorError::new(format!("`{shown}` {status}: {}", last_lines(said, 5)));
        Err(if unreachable(said) {
            error.with_help(self.reach_help())
        } else {
            error
        })
    }

    /// How to make the controller reachable.
    #[must_use]
    pub fn reach_help(&self) -> String {
        let conf = self
            .slurm_conf
            .clone()
            .or_else(|| std::env::var_os("SLURM_CONF").map(PathBuf::from))
            .map_or_else(
                || "Slurm's default configuration (no SLURM_CONF)".to_owned(),
                |p| format!("SLURM_CONF={}", p.display()),
            );
        format!(
            "the Slurm controller does not answer ({conf}): check that slurmctld runs and that this machine reaches it (`scontrol ping`), or set `slurm.slurm-conf` in the executor configuration; a one-node test cluster: `eval \"$(bash scripts/setup-slurm.sh)\"`"
        )
    }
}

/// Whether a command's complaint is about reaching the controller.
fn unreachable(said: &str) -> bool {
    let said = said.to_ascii_lowercase();
    [
        "unable to contact slurm controller",
        "connection refused",
        "could not establish a configuration source",
        "unable to establish",
        "socket timed out",
        "munge",
        "slurm_load_ctl_conf",
        "no such file or directory",
    ]
    .iter()
    .any(|s| said.contains(s))
}

/// `name ARGS` shortened for messages (a thousand job ids are not worth printing).
fn shown(name: &str, args: &[String]) -> String {
    let mut text = name.to_owned();
    for arg in args.iter().take(8) {
        text.push(' ');
        if arg.len() > 80 {
            let cut = arg
                .char_indices()
                .map(|(i, _)| i)
                .take_while(|&i| i <= 60)
                .last()
                .unwrap_or(0);
            text.push_str(&arg[..cut]);
            text.push('…');
        } else {
            text.push_str(arg);
        }
    }
    if args.len() > 8 {
        text.push_str(" …");
    }
    text
}

/// The last `n` lines of `text`, on one line.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_commands_are_named_with_a_way_out() {
        let empty = tempfile::tempdir().expect("tempdir");
        let e = Tools::find(None, Some(empty.path().as_os_str()), None).expect_err("missing");
        assert_eq!(
            e.message,
            "the Slurm command `sbatch` is not on PATH, so the `slurm` executor cannot submit jobs from this machine"
        );
        assert!(
            e.help
                .as_deref()
                .is_some_and(|h| h.contains("slurm.bin-dir")),
            "{e:?}"
        );
        let e = Tools::find(Some(empty.path()), None, None).expect_err("missing");
        assert!(e.message.contains("`slurm.bin-dir`"), "{e:?}");
    }

    #[test]
    fn long_commands_are_shortened_in_messages() {
        let ids: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
        let text = shown("scancel", &ids);
        assert!(text.starts_with("scancel 0 1 2"), "{text}");
        assert!(text.ends_with(" …"), "{text}");
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b / c");
    }
}
