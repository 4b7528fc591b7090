//! Provider programs: the providers of `.dstack/providers.yaml` (and of other repositories'),
//! which are programs that make a workflow's jobs.
//!
//! # The protocol
//!
//! A provider is `name`, `image` and `commands`. To plan a workflow that uses it, its commands
//! run in one shell (`set -e`), in the folder that defines the provider (the project, or the
//! provider repository's checkout), with:
//!
//! - `DSTACK_WORKFLOW_FILE`: the path of a JSON file holding [`ProgramInput`]:
//!   `{"workflow": NAME, "provider": NAME, "params": {...}, "variables": {...}}`: the
//!   workflow's parameters (every key but `name`, `provider`, `depends-on`, `help`, `timeout`,
//!   `retries`, which dstack handles) after `${{ }}` substitution, and the workflow's
//!   variables;
//! - `DSTACK_WORKFLOW` and `DSTACK_PROVIDER`: the workflow's and the provider's names;
//! - `DSTACK_PROVIDER_IMAGE`: the provider's `image`.
//!
//! It prints the jobs it wants as one JSON object on standard output (what it writes to
//! standard error is shown when it fails):
//!
//! ```json
//! {"jobs": [
//!   {"id": "prepare", "image": "python:3.11", "commands": ["python prepare.py"],
//!    "artifacts": ["data"]},
//!   {"id": "train", "image": "python:3.11", "commands": ["python train.py"],
//!    "working_dir": "src", "env": {"EPOCHS": "10"}, "ports": [6006],
//!    "resources": {"cpu": 4, "memory": "16GB", "gpu": {"count": 1, "name": "v100"},
//!                  "shm_size": "1GB"},
//!    "depends_on": ["prepare"]}
//! ]}
//! ```
//!
//! Every key but `commands` is optional (a job without `image` gets the provider's); unknown
//! keys are errors. `id`s are unique (a single
//! job may leave it out); `depends_on` names other jobs of the same output; paths are relative
//! and stay inside the job's tree; `memory`/`shm_size` are sizes as in `workflows.yaml` (or
//! a number of bytes); `gpu` is a count or `{count, name, memory}`. The workflow's own
//! `depends-on` apply to the jobs without `depends_on`, its variables reach every job's
//! environment, as for the built-in providers.
//!
//! dstack-core defines the protocol and checks the output; running the program and fetching
//! other repositories is a [`ProgramRunner`]'s work (dstack-exec has one).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::CustomProvider;
use crate::params::normalise_relative;
use crate::plan::JobSpec;
use crate::resources::{GpuRequest, Resources, parse_memory};

/// What a provider program receives, as JSON in the file `DSTACK_WORKFLOW_FILE` names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramInput {
    /// The workflow's name.
    pub workflow: String,
    /// The provider's name.
    pub provider: String,
    /// The workflow's parameters after substitution.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The workflow's variables (its section of `variables.yaml`, with overrides).
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// A provider program to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Its definition.
    pub provider: CustomProvider,
    /// The folder that defines it, where its commands run: the project's root, or the
    /// checkout of the repository it comes from.
    pub dir: PathBuf,
    /// Where it comes from, for messages: `.dstack/providers.yaml`, or `repository URL`.
    pub origin: String,
}

/// The providers of another repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoProviders {
    /// The commit they were read from.
    pub commit: String,
    /// The checkout of that commit, where their commands run.
    pub dir: PathBuf,
    /// The definitions of its `.dstack/providers.yaml`.
    pub providers: Vec<CustomProvider>,
}

/// Why a provider program could not make jobs, in one message (several lines at most).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramError {
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl ProgramError {
    /// An error with a message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        ProgramError {
            message: message.into(),
            help: None,
        }
    }

    /// Adds how to fix it.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs provider programs and fetches the providers of other repositories. Planning calls it
/// for workflows whose provider is not built in or registered in code.
pub trait ProgramRunner: Send + Sync + fmt::Debug {
    /// Runs `program` with `input` and returns what it printed on standard output.
    ///
    /// # Errors
    /// When it cannot start, fails, or runs too long (the message names the provider and
    /// shows the end of its standard error).
    fn run(&self, program: &Program, input: &ProgramInput) -> Result<Vec<u8>, ProgramError>;

    /// The providers of the repository `repo` (a URL or a path) at `git_ref` (a branch, a tag
    /// or a commit; the default branch when `None`).
    ///
    /// # Errors
    /// When the repository cannot be fetched or has no valid `.dstack/providers.yaml`.
    fn fetch(&self, repo: &str, git_ref: Option<&str>) -> Result<RepoProviders, ProgramError>;
}

/// One job as a provider program prints it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJob {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    image: Option<String>,
    commands: Vec<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    artifacts: Vec<String>,
    #[serde(default)]
    resources: Option<OutputResources>,
    #[serde(default)]
    depends_on: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputResources {
    #[serde(default)]
    cpu: Option<u32>,
    #[serde(default)]
    memory: Option<Size>,
    #[serde(default)]
    gpu: Option<OutputGpu>,
    #[serde(default)]
    shm_size: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OutputGpu {
    Count(u32),
    Spec(GpuSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuSpec {
    count: Option<u32>,
    name: Option<String>,
    memory: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    jobs: Vec<OutputJob>,
}

/// The most jobs one provider program may make.
pub const MAX_JOBS: usize = 10_000;

/// Checks what a provider program printed and turns it into jobs (ids local to the
/// workflow, as built-in providers make them).
///
/// # Errors
/// Output that is not the documented JSON, or jobs that are not valid; every problem found
/// is listed.
pub fn parse_output(stdout: &[u8]) -> Result<Vec<JobSpec>, Vec<String>> {
    let text = std::str::from_utf8(stdout)
        .map_err(|e| vec![format!("its output is not UTF-8 text: {e}")])?;
    if text.trim().is_empty() {
        return Err(vec![
            "it printed nothing; it must print `{\"jobs\": [...]}` on standard output".to_owned(),
        ]);
    }
    let output: Output = serde_json::from_str(text).map_err(|e| {
        let shown: String = text.trim().chars().take(200).collect();
        vec![format!(
            "its output is not the expected JSON ({e}); it printed: {shown}{}",
            if text.trim().chars().count() > 200 {
                "…"
            } else {
                ""
            }
        )]
    })?;
    let mut problems = Vec::new();
    if output.jobs.is_empty() {
        problems.push("it made no jobs (`jobs` is empty)".to_owned());
    }
    if output.jobs.len() > MAX_JOBS {
        return Err(vec![format!(
            "it made {} jobs, more than the limit of {MAX_JOBS}",
            output.jobs.len()
        )]);
    }
    let single = output.jobs.len() == 1;
    let mut ids = HashSet::new();
    for (n, job) in output.jobs.iter().enumerate() {
        match &job.id {
            Some(id) if !valid_id(id) => problems.push(format!(
                "job {}: id `{id}` must be letters, digits, `-`, `_` or `.`",
                n + 1
            )),
            Some(id) if !ids.insert(id.clone()) => {
                problems.push(format!("job {}: id `{id}` is used twice", n + 1));
            }
            Some(_) => {}
            None if !single => problems.push(format!(
                "job {}: has no `id` (every job needs one when there are several)",
                n + 1
            )),
            None => {}
        }
    }
    let mut jobs = Vec::with_capacity(output.jobs.len());
    for (n, job) in output.jobs.into_iter().enumerate() {
        let name = job.id.clone().unwrap_or_else(|| (n + 1).to_string());
        let at = |what: String| format!("job `{name}`: {what}");
        if job.commands.is_empty() {
            problems.push(at("`commands` is empty".to_owned()));
        }
        for dep in &job.depends_on {
            if !ids.contains(dep) {
                problems.push(at(format!("depends on `{dep}`, which it did not make")));
            } else if Some(dep) == job.id.as_ref() {
                problems.push(at("depends on itself".to_owned()));
            }
        }
        let working_dir = match job.working_dir.as_deref() {
            None => ".".to_owned(),
            Some(w) => match normalise_relative(w) {
                Ok(p) if p.is_empty() => ".".to_owned(),
                Ok(p) => p,
                Err(why) => {
                    problems.push(at(format!("`working_dir` `{w}`: {why}")));
                    ".".to_owned()
                }
            },
        };
        let mut artifacts: Vec<String> = Vec::new();
        for a in &job.artifacts {
            match normalise_relative(a) {
                Ok(p) if p.is_empty() => problems.push(at(format!(
                    "artifact `{a}` is the whole working directory; name a folder inside it"
                ))),
                Ok(p) => match artifacts.iter().find(|o| crate::params::nested_paths(o, &p)) {
                    Some(other) => problems.push(at(format!(
                        "artifacts `{other}` and `{p}` are one inside the other; list only the outer one"
                    ))),
                    None => artifacts.push(p),
                },
                Err(why) => problems.push(at(format!("artifact `{a}`: {why}"))),
            }
        }
        if job.ports.contains(&0) {
            problems.push(at("port 0 is not a port".to_owned()));
        }
        for key in job.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                problems.push(at(format!("`{key}` is not an environment variable name")));
            }
        }
        let resources = match job.resources {
            None => Resources::default(),
            Some(r) => resources(r, &mut |what| problems.push(at(what))),
        };
        jobs.push(JobSpec {
            id: job.id.unwrap_or_default(),
            image: job.image.filter(|i| !i.trim().is_empty()),
            commands: job.commands,
            working_dir,
            env: job.env,
            artifacts,
            ports: job.ports,
            depends_on: job.depends_on,
            resources,
            ..JobSpec::default()
        });
    }
    if problems.is_empty() {
        Ok(jobs)
    } else {
        Err(problems)
    }
}

/// The first 12 characters of a commit id (all of it when shorter).
fn short(commit: &str) -> &str {
    commit
        .char_indices()
        .nth(12)
        .map_or(commit, |(i, _)| &commit[..i])
}

/// Checks the jobs a provider registered in code made for one workflow: ids (when there are
/// several) valid and distinct, dependencies on other jobs of the same workflow only, no
/// artifact inside another.
pub(crate) fn check_jobs(jobs: &[JobSpec]) -> Result<(), Vec<String>> {
    if let [job] = jobs {
        // The usual case: one job, named after its workflow.
        let mut problems = Vec::new();
        if let Some(dep) = job.depends_on.first() {
            problems.push(format!(
                "its only job depends on `{dep}`, which it did not make"
            ));
        }
        nested_artifacts(job, &job.id, &mut problems);
        return if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        };
    }
    let mut problems = Vec::new();
    let ids = local_ids(jobs);
    let mut seen = HashSet::new();
    for id in &ids {
        if !valid_id(id) {
            problems.push(format!(
                "job id `{id}` must be letters, digits, `-`, `_` or `.`"
            ));
        } else if !seen.insert(id.as_str()) {
            problems.push(format!("job id `{id}` is used twice"));
        }
    }
    for (job, id) in jobs.iter().zip(&ids) {
        nested_artifacts(job, id, &mut problems);
        for dep in &job.depends_on {
            if dep == id {
                problems.push(format!("job `{id}` depends on itself"));
            } else if !seen.contains(dep.as_str()) {
                problems.push(format!(
                    "job `{id}` depends on `{dep}`, which it did not make"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The ids of a workflow's jobs within it: their own, or their place (from 1) when they have
/// none.
pub(crate) fn local_ids(jobs: &[JobSpec]) -> Vec<String> {
    jobs.iter()
        .enumerate()
        .map(|(n, j)| {
            if j.id.is_empty() {
                (n + 1).to_string()
            } else {
                j.id.clone()
            }
        })
        .collect()
}

/// Artifacts of `job` of which one holds another (they could not both be saved).
fn nested_artifacts(job: &JobSpec, id: &str, problems: &mut Vec<String>) {
    for (i, a) in job.artifacts.iter().enumerate() {
        if let Some(b) = job.artifacts[..i]
            .iter()
            .find(|b| crate::params::nested_paths(a, b))
        {
            let job = if id.is_empty() {
                String::new()
            } else {
                format!("job `{id}`: ")
            };
            problems.push(format!(
                "{job}artifacts `{b}` and `{a}` are one inside the other; list only the outer one"
            ));
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id != "."
        && id != ".."
}

fn size(what: &str, s: Size, problem: &mut dyn FnMut(String)) -> Option<u64> {
    match s {
        Size::Bytes(b) => Some(b),
        Size::Text(t) => parse_memory(&t)
            .map_err(|e| problem(format!("`{what}`: {e}")))
            .ok(),
    }
}

fn resources(r: OutputResources, problem: &mut dyn FnMut(String)) -> Resources {
    if r.cpu == Some(0) {
        problem("`cpu` must be at least 1".to_owned());
    }
    let gpu = match r.gpu {
        None | Some(OutputGpu::Count(0)) => None,
        Some(OutputGpu::Count(count)) => Some(GpuRequest {
            count,
            ..GpuRequest::default()
        }),
        Some(OutputGpu::Spec(g)) => {
            let count = g.count.unwrap_or(1);
            let memory_bytes = g.memory.and_then(|m| size("gpu.memory", m, problem));
            (count > 0).then_some(GpuRequest {
                count,
                name: g.name,
                memory_bytes,
            })
        }
    };
    Resources {
        cpu: r.cpu.filter(|&c| c > 0),
        memory_bytes: r.memory.and_then(|m| size("memory", m, problem)),
        gpu,
        shm_size_bytes: r.shm_size.and_then(|m| size("shm_size", m, problem)),
    }
}

/// Makes the jobs of workflow `wf` by running its provider program through `runner`;
/// problems are reported on `reader` at the workflow's `provider`.
pub(crate) fn jobs_of_program(
    project: &crate::Project,
    wf: &crate::Workflow,
    input: ProgramInput,
    runner: &dyn ProgramRunner,
    reader: &mut crate::Params<'_>,
) -> Vec<JobSpec> {
    use crate::ProviderRef;
    use crate::diag::{Code, did_you_mean};
    let name = wf.provider.name();
    let program = match &wf.provider {
        ProviderRef::Named(n) => project
            .custom
            .iter()
            .find(|c| &c.name == n)
            .map(|c| Program {
                provider: c.clone(),
                dir: project.root.clone(),
                origin: "`.dstack/providers.yaml`".to_owned(),
            }),
        ProviderRef::Repo { repo, git_ref, .. } => match runner.fetch(repo, git_ref.as_deref()) {
            Ok(fetched) => {
                let found = fetched.providers.iter().find(|c| c.name == name).cloned();
                if found.is_none() {
                    let names: Vec<&str> =
                        fetched.providers.iter().map(|c| c.name.as_str()).collect();
                    let d = reader.error(
                        wf.provider_pos,
                        Code::Provider,
                        format!(
                            "repository `{repo}` (commit {}) has no provider `{name}`",
                            short(&fetched.commit)
                        ),
                    );
                    match did_you_mean(name, names.iter().copied()) {
                        Some(s) => {
                            d.suggest(Some(s));
                        }
                        None if names.is_empty() => {
                            d.help("its `.dstack/providers.yaml` defines no provider");
                        }
                        None => {
                            d.help(format!("it defines `{}`", names.join("`, `")));
                        }
                    }
                }
                found.map(|provider| Program {
                    provider,
                    dir: fetched.dir,
                    origin: format!("repository `{repo}` at {}", short(&fetched.commit)),
                })
            }
            Err(e) => {
                let d = reader.error(
                    wf.provider_pos,
                    Code::Provider,
                    format!(
                        "cannot get provider `{name}` of workflow `{}` from repository `{repo}`: {}",
                        wf.name, e.message
                    ),
                );
                if let Some(h) = e.help {
                    d.help(h);
                }
                if project.registry.get(name).is_some() {
                    d.help(format!(
                        "the built-in provider `{name}` needs no repository: write `provider: {name}`"
                    ));
                }
                None
            }
        },
    };
    let Some(program) = program else {
        return Vec::new();
    };
    let stdout = match runner.run(&program, &input) {
        Ok(out) => out,
        Err(e) => {
            let d = reader.error(
                wf.provider_pos,
                Code::Provider,
                format!(
                    "provider `{name}` (from {}) failed for workflow `{}`: {}",
                    program.origin, wf.name, e.message
                ),
            );
            if let Some(h) = e.help {
                d.help(h);
            }
            return Vec::new();
        }
    };
    match parse_output(&stdout) {
        Ok(jobs) => jobs
            .into_iter()
            .map(|mut j| {
                if j.image.is_none() {
                    j.image = Some(program.provider.image.clone());
                }
                j
            })
            .collect(),
        Err(problems) => {
            let d = reader.error(
                wf.provider_pos,
                Code::Provider,
                format!(
                    "provider `{name}` (from {}) made invalid jobs for workflow `{}`: {}",
                    program.origin,
                    wf.name,
                    problems.join("; ")
                ),
            );
            d.help("a provider program prints `{\"jobs\": [{\"id\": ..., \"commands\": [...], ...}]}` on standard output: see the README's custom providers section");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_output_becomes_jobs() {
        let jobs = parse_output(
            br#"{"jobs": [
                {"id": "prepare", "image": "python:3.11", "commands": ["python prepare.py"], "artifacts": ["data/"]},
                {"id": "train", "commands": ["python train.py"], "working_dir": "./src",
                 "env": {"EPOCHS": "10"}, "ports": [6006],
                 "resources": {"cpu": 4, "memory": "16GB", "gpu": {"count": 2, "name": "v100", "memory": "16GiB"}, "shm_size": 1024},
                 "depends_on": ["prepare"]}
            ]}"#,
        )
        .expect("valid");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].id, "prepare");
        assert_eq!(jobs[0].artifacts, ["data"]);
        assert_eq!(jobs[0].image.as_deref(), Some("python:3.11"));
        assert_eq!(jobs[1].working_dir, "src");
        assert_eq!(jobs[1].depends_on, ["prepare"]);
        assert_eq!(jobs[1].resources.cpu, Some(4));
        assert_eq!(jobs[1].resources.memory_bytes, Some(16_000_000_000));
        let gpu = jobs[1].resources.gpu.as_ref().expect("gpu");
        assert_eq!((gpu.count, gpu.name.as_deref()), (2, Some("v100")));
        assert_eq!(gpu.memory_bytes, Some(16 << 30));
        assert_eq!(jobs[1].resources.shm_size_bytes, Some(1024));
    }

    #[test]
    fn a_single_job_needs_no_id() {
        let jobs = parse_output(br#"{"jobs": [{"commands": ["echo hi"]}]}"#).expect("valid");
        assert_eq!(jobs[0].id, "");
        assert_eq!(jobs[0].working_dir, ".");
    }

    #[test]
    fn garbage_and_invalid_jobs_name_every_problem() {
        let e = parse_output(b"Traceback (most recent call last):").expect_err("garbage");
        assert!(e[0].contains("not the expected JSON"), "{e:?}");
        assert!(e[0].contains("Traceback"), "{e:?}");
        let e = parse_output(b"  \n").expect_err("empty");
        assert!(e[0].contains("printed nothing"), "{e:?}");
        let e = parse_output(br#"{"jobs": [{"commands": ["x"], "imgae": "y"}]}"#)
            .expect_err("unknown key");
        assert!(e[0].contains("imgae"), "{e:?}");
        let e = parse_output(&[0xff, 0xfe]).expect_err("binary");
        assert!(e[0].contains("UTF-8"), "{e:?}");
        let e = parse_output(
            br#"{"jobs": [
                {"id": "a", "commands": [], "depends_on": ["zzz", "a"], "working_dir": "../up"},
                {"id": "a", "commands": ["x"], "artifacts": ["/abs", "."], "ports": [0]},
                {"commands": ["x"], "resources": {"memory": "12 parsecs", "cpu": 0}},
                {"id": "bad id!", "commands": ["x"], "env": {"A=B": "1"}},
                {"id": "n", "commands": ["x"], "artifacts": ["out/m", "./out"]}
            ]}"#,
        )
        .expect_err("invalid");
        let all = e.join("\n");
        for needle in [
            "`commands` is empty",
            "depends on `zzz`",
            "depends on itself",
            "`working_dir` `../up`",
            "id `a` is used twice",
            "artifact `/abs`",
            "whole working directory",
            "port 0",
            "has no `id`",
            "`memory`",
            "`cpu` must be at least 1",
            "id `bad id!`",
            "`A=B` is not an environment variable name",
            "job `n`: artifacts `out/m` and `out` are one inside the other",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        let e = parse_output(br#"{"jobs": []}"#).expect_err("none");
        assert!(e[0].contains("no jobs"), "{e:?}");
    }
}
