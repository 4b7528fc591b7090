//! What a job becomes on the cluster: a batch script and a folder of files.
//!
//! The batch script is the same text for every job of one shape (its `#SBATCH` resource lines
//! come from typed values only); nothing the user wrote is ever part of it. Its argument is
//! the array's *manifest*: one `case` over the array's task ids whose branches are shell
//! assignments, every value quoted by [`quote`] (one file per array, not a folder per job: on
//! a busy file system a thousand folders cost seconds). The task's branch gives its folder,
//! paths and limits, and the contents of the files the script writes in that folder:
//!
//! - `job.sh`: the job's script (its environment as quoted `export`s, `cd` to its working
//!   directory, `set -e`, its commands), which is what the user wrote, run as it is;
//! - `launch`: how `job.sh` runs: `sh ./job.sh`, or a container command whose arguments are
//!   quoted;
//! - `inputs` (the producing job, the stored folder and the relative path of each
//!   dependency's artifact, one per line) and `artifacts` (one path per line): paths with line
//!   breaks are refused before anything is submitted.
//!
//! The script makes the job's tree from the run's copy of the project, links the inputs in,
//! runs the commands (with the job's timeout, through `timeout`), moves the artifact folders
//! into the artifact store, and retries on failure as the job says; it records how the job
//! ended in `status` (`SLURM_ID ATTEMPTS RESULT [DETAIL]`) and each failed attempt in
//! `retries`. The job's output goes to `stdout` and `stderr` in its folder, which the executor
//! streams.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use dstack_core::JobSpec;

use super::config::Container;

/// How long a timed-out job gets between SIGTERM and SIGKILL.
pub const GRACE_SECS: u64 = 5;

/// The body of every batch script (after the `#SBATCH` lines).
pub const BODY: &str = r#"# dstack-rs: the batch script of a job of a run, written by the `slurm` executor. Nothing
# of the job is written in this text: $1 (relative to the run's Slurm folder, the working
# directory) assigns, for array task $task, the job's folder, paths, limits and files, every
# value quoted.
task=${SLURM_ARRAY_TASK_ID:-0}
me=${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_$task
attempt=1
DIR=
if ! . "./$1" || [ -z "$DIR" ]; then
    echo "dstack: no job for array task $task in $PWD/$1" >&2
    exit 97
fi
if ! mkdir -p "$DIR" || ! cd "$DIR"; then
    echo "dstack: cannot use the job's folder $PWD/$DIR" >&2
    exit 97
fi
if ! { printf '%s' "$JOB_SCRIPT" >job.sh && printf '%s' "$LAUNCH" >launch &&
    printf '%s' "$INPUTS" >inputs && printf '%s' "$ARTIFACTS" >artifacts; }; then
    echo "dstack: cannot write the job's files in $PWD" >&2
    exit 97
fi

# Records how the job ended (atomically), then exits: finish CODE RESULT [DETAIL].
finish() {
    code=$1
    shift
    printf '%s %s %s\n' "$me" "$attempt" "$*" >status.tmp && mv -f status.tmp status
    exit "$code"
}

# Removes a tree, read-only files and all.
remove() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    rm -rf "$1" 2>/dev/null || { chmod -R u+w "$1" && rm -rf "$1"; }
}

# One attempt: a fresh tree, the inputs, the commands, the artifacts. Sets result, detail, rc.
attempt_once() {
    result=error
    detail=
    rc=1
    if ! remove "$TREE" || ! mkdir -p "$TREE" || ! cp -a "$SOURCE/." "$TREE/"; then
        detail="cannot copy the project into $TREE"
        return
    fi
    if ! mkdir -p "$WD"; then
        detail="cannot create the working directory $WD"
        return
    fi
    while IFS= read -r from && IFS= read -r src && IFS= read -r dest; do
        to=$WD/$dest
        if [ ! -e "$src" ] && [ ! -L "$src" ]; then
            detail="artifact \`$dest\` of \`$from\` is missing from $src"
            return
        fi
        if ! remove "$to" || ! mkdir -p "$(dirname "$to")"; then
            detail="cannot replace \`$dest\` with the artifact of \`$from\`"
            return
        fi
        if ! cp -R -P -l "$src" "$to" 2>/dev/null; then
            remove "$to"
            if ! cp -R -P "$src" "$to"; then
                detail="cannot hand over artifact \`$dest\` of \`$from\`"
                return
            fi
        fi
    done <inputs

    rm -f exitcode
    if [ -n "$TIMEOUT" ]; then
        timeout -s TERM -k "$GRACE" "$TIMEOUT" sh -c 'sh ./launch; echo $? >exitcode' \
            </dev/null >>stdout 2>>stderr
        if [ ! -s exitcode ]; then
            result=timeout
            detail=$TIMEOUT
            rc=124
            return
        fi
        rc=$(cat exitcode)
    else
        sh ./launch </dev/null >>stdout 2>>stderr
        rc=$?
    fi
    if [ "$rc" -ne 0 ]; then
        result=exit
        detail=$rc
        return
    fi
    rc=1

    tree_real=$(cd "$TREE" && pwd -P)
    while IFS= read -r path; do
        full=$WD/$path
        if [ ! -e "$full" ] && [ ! -L "$full" ]; then
            result=missing-artifact
            detail=$path
            return
        fi
        if ! real=$(realpath -e -- "$full" 2>/dev/null); then
            detail="artifact \`$path\` is a symlink that points nowhere"
            return
        fi
        case $real/ in
        "$tree_real"/*) ;;
        *)
            detail="artifact \`$path\` leads out of the working directory through a symlink (to \`$real\`)"
            return
            ;;
        esac
        if [ -d "$real" ]; then
            bad=$(find "$full/" -type l -exec sh -c '
                for l; do
                    t=$(realpath -m -- "$l")
                    case $t/ in "$0"/*) ;; *) printf "%s\n" "$l" ;; esac
                done' "$tree_real" {} + | head -n 1)
            if [ -n "$bad" ]; then
                detail="artifact \`$path\` holds a symlink that leads out of the working directory: \`${bad#"$full"/}\`"
                return
            fi
        fi
    done <artifacts
    if ! remove "$ART"; then
        detail="cannot clear $ART"
        return
    fi
    while IFS= read -r path; do
        to=$ART/$path
        if ! mkdir -p "$(dirname "$to")"; then
            detail="cannot create the artifact store $(dirname "$to")"
            return
        fi
        if ! mv -f "$WD/$path" "$to" 2>/dev/null && ! cp -R -P "$WD/$path" "$to"; then
            detail="cannot save artifact \`$path\`"
            return
        fi
        find "$to" -type f -exec chmod a-w {} + 2>/dev/null
    done <artifacts
    result=ok
    rc=0
}

delay=$RETRY_DELAY_MS
while :; do
    attempt_once
    [ "$result" = ok ] && break
    [ "$attempt" -ge "$ATTEMPTS" ] && break
    [ "$delay" -gt 300000 ] && delay=300000
    printf '%s %s %s %s\n' "$attempt" "$delay" "$result" "$detail" >>retries
    sleep $(((delay + 999) / 1000))
    delay=$((delay * 2))
    attempt=$((attempt + 1))
done
if [ "$result" = ok ]; then
    remove "$TREE"
    finish 0 ok
fi
[ "$KEEP_FAILED" = 1 ] || remove "$TREE"
[ "$rc" -gt 0 ] 2>/dev/null || rc=1
finish "$rc" "$result" "$detail"
"#;

/// `text` as one POSIX shell word: as it is when it holds only characters that are never
/// special, else in single quotes (a `'` inside becomes `'\''`). Works for any bytes but NUL,
/// which no shell word can hold (refused before this is called).
#[must_use]
pub fn quote(text: &[u8]) -> Vec<u8> {
    let plain = !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(b));
    if plain {
        return text.to_vec();
    }
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'\'');
    for &b in text {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// [`quote`] of a string, as a string.
#[must_use]
pub fn quote_str(text: &str) -> String {
    String::from_utf8(quote(text.as_bytes())).unwrap_or_default()
}

/// The resources of a job as `sbatch` options: `--cpus-per-task`, `--mem` (MiB, rounded up),
/// `--gres=gpu[:NAME]:N`, `--time` (minutes, rounded up, covering every attempt with its
/// grace period and the delays between attempts).
#[must_use]
pub fn resource_options(job: &JobSpec, retry_delay_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cpu) = job.resources.cpu {
        out.push(format!("--cpus-per-task={cpu}"));
    }
    if let Some(bytes) = job.resources.memory_bytes {
        out.push(format!("--mem={}M", bytes.div_ceil(1 << 20).max(1)));
    }
    if let Some(gpu) = &job.resources.gpu {
        match &gpu.name {
            Some(name) => out.push(format!("--gres=gpu:{name}:{}", gpu.count)),
            None => out.push(format!("--gres=gpu:{}", gpu.count)),
        }
    }
    if let Some(secs) = job.timeout_secs {
        let attempts = u64::from(job.retries) + 1;
        let delays: u64 = (0..u64::from(job.retries))
            .map(|k| {
                retry_delay_ms
                    .saturating_mul(1 << k.min(16))
                    .min(300_000)
                    .div_ceil(1000)
            })
            .sum();
        // A minute for making the tree and saving artifacts, as a margin.
        let total = attempts
            .saturating_mul(secs.saturating_add(GRACE_SECS))
            .saturating_add(delays)
            .saturating_add(60);
        out.push(format!("--time={}", total.div_ceil(60)));
    }
    out
}

/// The batch script of jobs with these resource options.
#[must_use]
pub fn batch_script(resources: &[String]) -> String {
    let mut text = String::from("#!/bin/sh\n");
    for option in [
        "--kill-on-invalid-dep=yes",
        "--no-requeue",
        "--output=output/%A_%a.out",
    ]
    .iter()
    .copied()
    .chain(resources.iter().map(String::as_str))
    {
        let _ = writeln!(text, "#SBATCH {option}");
    }
    text.push_str(BODY);
    text
}

/// Where things are for one job, as the batch script sees them.
#[derive(Debug)]
pub struct JobPaths<'a> {
    /// The job's tree.
    pub tree: &'a Path,
    /// Its working directory.
    pub working_dir: &'a Path,
    /// Where its artifacts go.
    pub artifacts: &'a Path,
    /// The run's copy of the project.
    pub source: &'a Path,
}

/// The files the batch script writes in a job's folder.
#[derive(Debug)]
pub struct JobFiles {
    /// `job.sh`.
    pub job_script: Vec<u8>,
    /// `launch`.
    pub launch: Vec<u8>,
    /// `inputs`.
    pub inputs: Vec<u8>,
    /// `artifacts`.
    pub artifacts: Vec<u8>,
}

/// One branch of an array's manifest: task `task`'s folder (relative to the run's Slurm
/// folder), paths, limits and files, as quoted shell assignments.
#[must_use]
pub fn manifest_entry(
    task: usize,
    dir: &Path,
    paths: &JobPaths<'_>,
    job: &JobSpec,
    retry_delay_ms: u64,
    keep_failed_trees: bool,
    files: &JobFiles,
) -> Vec<u8> {
    let mut out = format!("{task})\n").into_bytes();
    let mut assign = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend(quote(value));
        out.push(b'\n');
    };
    assign("DIR", dir.as_os_str().as_bytes());
    assign("TREE", paths.tree.as_os_str().as_bytes());
    assign("WD", paths.working_dir.as_os_str().as_bytes());
    assign("ART", paths.artifacts.as_os_str().as_bytes());
    assign("SOURCE", paths.source.as_os_str().as_bytes());
    assign(
        "ATTEMPTS",
        (u64::from(job.retries) + 1).to_string().as_bytes(),
    );
    assign(
        "TIMEOUT",
        job.timeout_secs
            .map(|s| s.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    assign("GRACE", GRACE_SECS.to_string().as_bytes());
    assign("RETRY_DELAY_MS", retry_delay_ms.to_string().as_bytes());
    assign("KEEP_FAILED", if keep_failed_trees { b"1" } else { b"0" });
    assign("JOB_SCRIPT", &files.job_script);
    assign("LAUNCH", &files.launch);
    assign("INPUTS", &files.inputs);
    assign("ARTIFACTS", &files.artifacts);
    out.extend_from_slice(b";;\n");
    out
}

/// An array's manifest from its branches.
#[must_use]
pub fn manifest(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"# Written by dstack-rs: the jobs of one Slurm job array, by array task id.\ncase $task in\n".to_vec();
    for entry in entries {
        out.extend_from_slice(entry);
    }
    out.extend_from_slice(b"esac\n");
    out
}

/// The job's script: its environment, its working directory (`cd_to`: on the node, or in the
/// container), `set -e`, its commands (or the download of a `curl` job).
#[must_use]
pub fn job_script(job: &JobSpec, run: &str, cd_to: &OsStr) -> Vec<u8> {
    let mut out = b"# The job's script, written by dstack-rs.\n".to_vec();
    let dstack = [
        ("DSTACK_RUN", run),
        ("DSTACK_JOB", job.id.as_str()),
        ("DSTACK_WORKFLOW", job.workflow.as_str()),
    ];
    for (name, value) in job
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(dstack)
    {
        out.extend_from_slice(b"export ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend(quote(value.as_bytes()));
        out.push(b'\n');
    }
    out.extend_from_slice(b"cd ");
    out.extend(quote(cd_to.as_bytes()));
    out.extend_from_slice(b" || exit 1\n");
    match &job.download {
        Some(download) => {
            let output = quote_str(&download.output);
            let part = quote_str(&format!("{}.part", download.output));
            let url = quote_str(&download.url);
            let _ = write!(
                Text(&mut out),
                "set -e\ncommand -v curl >/dev/null || {{ echo \"curl is not installed on $(hostname)\" >&2; exit 127; }}\nmkdir -p \"$(dirname {output})\"\ncurl --fail --location --silent --show-error --output {part} {url}\nmv -f {part} {output}\n"
            );
        }
        None => out.extend_from_slice(crate::local::script(job).as_bytes()),
    }
    out
}

/// The `launch` file: how `job.sh` runs. `container` is the command (already resolved for
/// this job) that runs the job's image, if any.
#[must_use]
pub fn launch(container: Option<&[String]>) -> Vec<u8> {
    match container {
        None => b"exec sh ./job.sh\n".to_vec(),
        Some(args) => {
            let mut out = b"exec".to_vec();
            for arg in args.iter().map(String::as_str).chain(["sh", "-c"]) {
                out.push(b' ');
                out.extend(quote(arg.as_bytes()));
            }
            out.extend_from_slice(b" \"$(cat ./job.sh)\"\n");
            out
        }
    }
}

/// The container command for a job in `image`, its tree mounted at `/workflow` and
/// `workdir` its working directory there.
#[must_use]
pub fn container_command(
    container: &Container,
    image: &str,
    tree: &Path,
    workdir: &str,
) -> Option<Vec<String>> {
    let tree = tree.to_string_lossy();
    match container {
        Container::None => None,
        Container::Pyxis => Some(vec![
            "srun".to_owned(),
            "--ntasks=1".to_owned(),
            format!("--container-image={image}"),
            format!("--container-mounts={tree}:/workflow"),
            format!("--container-workdir={workdir}"),
        ]),
        Container::Command(template) => Some(
            template
                .iter()
                .map(|a| {
                    a.replace("{image}", image)
                        .replace("{tree}", &tree)
                        .replace("{workdir}", workdir)
                })
                .collect(),
        ),
    }
}

/// The `inputs` file: the producing job, the stored folder, the relative path; one per line.
#[must_use]
pub fn inputs_file(inputs: &[(String, std::path::PathBuf, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (from, source, path) in inputs {
        out.extend_from_slice(from.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(source.as_os_str().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(path.as_bytes());
        out.push(b'\n');
    }
    out
}

/// The `artifacts` file: one path per line.
#[must_use]
pub fn artifacts_file(paths: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for path in paths {
        out.extend_from_slice(path.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Everything that cannot be written safely for this job: names that are not shell
/// identifiers, line breaks in paths read line by line, NUL bytes, GPU names that are not
/// Slurm GRES types.
#[must_use]
pub fn problems(job: &JobSpec) -> Vec<String> {
    let mut out = Vec::new();
    let id = &job.id;
    for (name, value) in &job.env {
        let identifier = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !identifier {
            out.push(format!(
                "job `{id}`: environment variable `{name}` is not a valid name on Slurm (letters, digits and `_`, not starting with a digit)"
            ));
        }
        if value.contains('\0') {
            out.push(format!(
                "job `{id}`: environment variable `{name}` holds a NUL byte"
            ));
        }
    }
    for path in &job.artifacts {
        if path.contains(['\n', '\r', '\0']) {
            out.push(format!(
                "job `{id}`: artifact {path:?} holds a line break or NUL byte"
            ));
        }
    }
    if job.working_dir.contains(['\n', '\r', '\0']) {
        out.push(format!(
            "job `{id}`: working directory {:?} holds a line break or NUL byte",
            job.working_dir
        ));
    }
    for command in &job.commands {
        if command.contains('\0') {
            out.push(format!("job `{id}`: a command holds a NUL byte"));
        }
    }
    if let Some(image) = &job.image
        && image.contains(['\0', '\n'])
    {
        out.push(format!(
            "job `{id}`: image {image:?} holds a line break or NUL byte"
        ));
    }
    if let Some(download) = &job.download
        && (download.url.contains('\0') || download.output.contains('\0'))
    {
        out.push(format!("job `{id}`: the download holds a NUL byte"));
    }
    if let Some(name) = job.resources.gpu.as_ref().and_then(|g| g.name.as_ref())
        && (name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
    {
        out.push(format!(
            "job `{id}`: GPU name `{name}` cannot be a Slurm GRES type (letters, digits, `_`, `.`, `-`)"
        ));
    }
    out
}

/// A name Slurm shows for the job: `RUN/JOB`, with characters outside `[A-Za-z0-9._/-]`
/// replaced by `_` (it is one word of an `scontrol` command).
#[must_use]
pub fn job_name(run: &str, job: &str) -> String {
    format!("{run}/{job}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._/-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `write!` into a byte buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dstack_core::resources::GpuRequest;

    /// Runs `sh -c 'printf %s WORD'` and returns what the shell made of the quoted word.
    fn through_sh(text: &str) -> String {
        let quoted = quote_str(text);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "sh failed on {quoted}");
        String::from_utf8(out.stdout).expect("utf-8")
    }

    #[test]
    fn quoted_words_survive_the_shell_whatever_they_hold() {
        for hostile in [
            "",
            "plain",
            "it's",
            "'",
            "''",
            "a b\tc",
            "$(touch /tmp/pwned)",
            "`id`",
            "${HOME}",
            "\\n \\' \"",
            "line\nbreak",
            "; rm -rf / #",
            "*?[a]",
            "~root",
            "-n",
            "é ünïcode ✓",
        ] {
            assert_eq!(through_sh(hostile), hostile, "{hostile:?}");
        }
        assert_eq!(quote_str("a/b-c_d.e=f:g,h+i@j%k"), "a/b-c_d.e=f:g,h+i@j%k");
        assert_eq!(quote_str("it's"), "'it'\\''s'");
    }

    #[test]
    fn resources_become_sbatch_options() {
        let mut job = JobSpec {
            id: "train".into(),
            ..JobSpec::default()
        };
        assert!(resource_options(&job, 1000).is_empty());
        job.resources.cpu = Some(4);
        job.resources.memory_bytes = Some(512 * (1 << 20) + 1);
        job.resources.gpu = Some(GpuRequest {
            count: 2,
            name: Some("v100".into()),
            memory_bytes: None,
        });
        job.timeout_secs = Some(90);
        assert_eq!(
            resource_options(&job, 1000),
            [
                "--cpus-per-task=4",
                "--mem=513M",
                "--gres=gpu:v100:2",
                // (90 + 5) + 60 s margin = 155 s: 3 minutes.
                "--time=3",
            ]
        );
        job.resources.gpu = Some(GpuRequest {
            count: 1,
            name: None,
            memory_bytes: None,
        });
        job.retries = 2;
        let options = resource_options(&job, 1000);
        assert_eq!(options[2], "--gres=gpu:1");
        // 3 × 95 s + 1 s + 2 s of delays + 60 s = 348 s: 6 minutes.
        assert_eq!(options[3], "--time=6");
        let script = batch_script(&options);
        assert!(script.starts_with("#!/bin/sh\n#SBATCH --kill-on-invalid-dep=yes\n"));
        assert!(script.contains("\n#SBATCH --gres=gpu:1\n#SBATCH --time=6\n# dstack-rs"));
    }

    #[test]
    fn unsafe_jobs_are_refused_with_every_reason() {
        let mut job = JobSpec {
            id: "j".into(),
            ..JobSpec::default()
        };
        job.env
            .insert("GOOD_1".into(), "any $(thing) 'at' all\n".into());
        assert!(problems(&job).is_empty());
        job.env.insert("1BAD".into(), "x".into());
        job.env.insert("A-B".into(), "x".into());
        job.artifacts.push("out\nput".into());
        job.resources.gpu = Some(GpuRequest {
            count: 1,
            name: Some("a100 80gb".into()),
            memory_bytes: None,
        });
        let found = problems(&job);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].contains("`1BAD`"), "{found:#?}");
        assert!(found[3].contains("GPU name `a100 80gb`"), "{found:#?}");
        assert_eq!(job_name("run-1", "train/a b'c"), "run-1/train/a_b_c");
    }

    #[test]
    fn the_launch_line_quotes_every_container_argument() {
        assert_eq!(launch(None), b"exec sh ./job.sh\n");
        let command = container_command(
            &Container::Command(vec![
                "docker".into(),
                "run".into(),
                "-v".into(),
                "{tree}:/workflow".into(),
                "{image}".into(),
            ]),
            "img:it's",
            Path::new("/t r"),
            "/workflow",
        )
        .expect("a command");
        assert_eq!(
            String::from_utf8(launch(Some(&command))).expect("utf-8"),
            "exec docker run -v '/t r:/workflow' 'img:it'\\''s' sh -c \"$(cat ./job.sh)\"\n"
        );
        let pyxis = container_command(
            &Container::Pyxis,
            "nvcr.io/x:1",
            Path::new("/t"),
            "/workflow/src",
        )
        .expect("pyxis");
        assert_eq!(
            pyxis,
            [
                "srun",
                "--ntasks=1",
                "--container-image=nvcr.io/x:1",
                "--container-mounts=/t:/workflow",
                "--container-workdir=/workflow/src"
            ]
        );
    }
}
