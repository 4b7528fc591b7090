//! Providers turn a workflow's parameters into jobs.
//!
//! The built-in providers are `docker`, `python` and `curl`, as the documentation describes.
//! An embedding program registers its own with [`ProviderRegistry::register`]; they get the same
//! [`Params`] reader, so their parameters are validated and located the same way.

use std::fmt;
use std::sync::Arc;

use crate::diag::Code;
use crate::params::Params;
use crate::plan::{Download, JobSpec};
use crate::yaml::ScalarValue;

/// The names of the built-in providers.
pub const BUILTIN_PROVIDERS: [&str; 3] = ["docker", "python", "curl"];

/// The Python version the `python` provider uses when the workflow names none.
pub const DEFAULT_PYTHON: &str = "3.10";

/// Something that makes jobs out of a workflow's parameters.
///
/// `jobs` reads the parameters it understands through [`Params`] (every key it does not ask
/// for is reported as unknown) and returns the jobs to run, usually one. The planner fills in
/// each job's `id`, `workflow`, `provider`, dependencies on other workflows, the workflow's
/// variables as environment variables, `timeout` and `retries`. When a provider returns several
/// jobs, it names each with `id` (unique within the workflow) and may order them with
/// `depends_on` among those names.
///
/// A large plan (512 workflows and more) calls `jobs` for several workflows at once, on
/// several threads, unless one of its providers says otherwise through
/// [`Provider::concurrent`]; `jobs` may also be called again for the same workflow (a plan
/// with errors is made again on one thread, so that its messages are those of one thread).
pub trait Provider: Send + Sync + fmt::Debug {
    /// The name workflows use in `provider:`.
    fn name(&self) -> &str;
    /// Makes the jobs of one workflow.
    fn jobs(&self, params: &mut Params<'_>) -> Vec<JobSpec>;
    /// Whether `jobs` may run for several workflows at once on several threads. True unless
    /// overridden: a provider that would only wait on a lock the others hold (one written in
    /// Python needs the interpreter's lock), or whose calls must come one at a time, says
    /// false, and plans that use it are made on one thread.
    fn concurrent(&self) -> bool {
        true
    }
}

/// The providers a project can use: the built-in ones and any registered in code.
#[derive(Clone, Debug)]
pub struct ProviderRegistry {
    providers: Vec<Arc<dyn Provider>>,
    runner: Option<Arc<dyn crate::program::ProgramRunner>>,
}

impl Default for ProviderRegistry {
    /// The built-in providers.
    fn default() -> Self {
        ProviderRegistry {
            providers: vec![Arc::new(Docker), Arc::new(Python), Arc::new(Curl)],
            runner: None,
        }
    }
}

impl ProviderRegistry {
    /// Adds a provider; one with the same name as an existing provider replaces it.
    pub fn register(&mut self, provider: Arc<dyn Provider>) {
        self.providers.retain(|p| p.name() != provider.name());
        self.providers.push(provider);
    }

    /// Runs the programs of `.dstack/providers.yaml` providers (and fetches other
    /// repositories' providers) through `runner`; without one, planning a workflow that uses
    /// such a provider is an error that says so.
    pub fn set_program_runner(&mut self, runner: Arc<dyn crate::program::ProgramRunner>) {
        self.runner = Some(runner);
    }

    /// The provider program runner, if any.
    #[must_use]
    pub fn program_runner(&self) -> Option<&Arc<dyn crate::program::ProgramRunner>> {
        self.runner.as_ref()
    }

    /// The provider called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// The names of the registered providers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|p| p.name())
    }
}

/// Quotes a word for `sh` when it needs it.
#[must_use]
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn single_job(params: &mut Params<'_>, image: Option<String>, commands: Vec<String>) -> JobSpec {
    JobSpec {
        image,
        commands,
        ..JobSpec::default()
    }
    .with_common(params)
}

impl JobSpec {
    /// Reads `working_dir`, `environment`, `artifacts` and `resources` into this job.
    fn with_common(mut self, params: &mut Params<'_>) -> JobSpec {
        self.working_dir = params
            .relative_path("working_dir", true)
            .unwrap_or_else(|| ".".to_owned());
        self.env = params.environment_sorted();
        self.artifacts = params.artifacts();
        self.resources = params.resources();
        self
    }
}

/// `provider: docker`: runs `commands` in `image`, in one shell, in order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Docker;

impl Provider for Docker {
    fn name(&self) -> &str {
        "docker"
    }

    fn jobs(&self, params: &mut Params<'_>) -> Vec<JobSpec> {
        let image = params.required_string("image", "ubuntu");
        let commands = params.string_list("commands").unwrap_or_default();
        let ports = params.ports();
        let mut job = single_job(params, image, commands);
        job.ports = ports;
        vec![job]
    }
}

/// `provider: python`: installs `requirements` and runs `script` in `python:VERSION`.
///
/// With GPUs, the image is `dstackai/python:VERSION-cuda-11.1` (the original dstack's CUDA
/// image for the same Python).
#[derive(Clone, Copy, Debug, Default)]
pub struct Python;

impl Provider for Python {
    fn name(&self) -> &str {
        "python"
    }

    fn jobs(&self, params: &mut Params<'_>) -> Vec<JobSpec> {
        let script = match params.raw_or_deprecated("script", "python_script") {
            Some(node) => match node.as_scalar() {
                Some(s) if s.value != ScalarValue::Null && !s.text.trim().is_empty() => {
                    Some(s.text.trim().to_owned())
                }
                Some(s) if s.value != ScalarValue::Null => {
                    let message = format!("`script` in workflow `{}` is empty", params.workflow());
                    params
                        .error(node.pos, Code::InvalidValue, message)
                        .help("name the script to run, with its arguments: `script: train.py --epochs 10`");
                    None
                }
                _ => {
                    let message = format!(
                        "`script` in workflow `{}` must be a script with its arguments, found {}",
                        params.workflow(),
                        node.type_name()
                    );
                    params.error(node.pos, Code::Type, message);
                    None
                }
            },
            None => {
                params.report_missing("script", "train.py");
                None
            }
        };
        let version = python_version(params);
        let mut commands = Vec::new();
        if let Some(node) = params.raw("requirements") {
            match &node.kind {
                crate::yaml::NodeKind::Scalar(s) if s.value != ScalarValue::Null => {
                    commands.push(format!("pip install -r {}", shell_quote(&s.text)));
                }
                crate::yaml::NodeKind::Seq(_) => {
                    if let Some(pkgs) = params.string_list("requirements") {
                        let pkgs: Vec<String> = pkgs.iter().map(|p| shell_quote(p)).collect();
                        if !pkgs.is_empty() {
                            commands.push(format!("pip install {}", pkgs.join(" ")));
                        }
                    }
                }
                _ => {
                    let message = format!(
                        "`requirements` in workflow `{}` must be a requirements file or a list of packages, found {}",
                        params.workflow(),
                        node.type_name()
                    );
                    params.error(node.pos, Code::Type, message);
                }
            }
        }
        if let Some(script) = script {
            commands.push(format!("python {script}"));
        }
        let mut job = single_job(params, None, commands);
        job.image = Some(if job.resources.gpu_count() > 0 {
            format!("dstackai/python:{version}-cuda-11.1")
        } else {
            format!("python:{version}")
        });
        vec![job]
    }
}

fn python_version(params: &mut Params<'_>) -> String {
    let Some(node) = params
        .raw_or_deprecated("python", "version")
        .filter(|n| !n.is_invalid())
    else {
        return DEFAULT_PYTHON.to_owned();
    };
    // The text as written: `python: 3.10` is the float 3.1 to YAML, but "3.10" to the user.
    let text = node
        .as_scalar()
        .filter(|s| s.value != ScalarValue::Null)
        .map(|s| s.text.trim().to_owned());
    let valid = text.as_deref().is_some_and(|t| {
        let parts: Vec<&str> = t.split('.').collect();
        // `3` (the latest Python 3, the image `python:3`), `3.10`, `3.10.4`.
        parts[0] == "3"
            && (1..=3).contains(&parts.len())
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    match text {
        Some(t) if valid => t,
        _ => {
            let found = node
                .as_scalar()
                .map_or_else(|| node.type_name().to_owned(), |s| format!("`{}`", s.text));
            let message = format!(
                "`python` in workflow `{}` must be a Python 3 version such as `3.10`, found {found}",
                params.workflow()
            );
            params.error(node.pos, Code::InvalidValue, message);
            DEFAULT_PYTHON.to_owned()
        }
    }
}

/// `provider: curl`: downloads `url` to `output`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Curl;

impl Provider for Curl {
    fn name(&self) -> &str {
        "curl"
    }

    fn jobs(&self, params: &mut Params<'_>) -> Vec<JobSpec> {
        let url_node = params.raw("url");
        let url = params.required_string("url", "https://example.com/data.csv");
        if let (Some(u), Some(node)) = (&url, url_node.filter(|n| !n.is_invalid())) {
            let scheme_ok = u.starts_with("http://") || u.starts_with("https://");
            let host_ok = u
                .split_once("://")
                .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
            if !scheme_ok || !host_ok || u.chars().any(char::is_whitespace) {
                let message = format!(
                    "`url` in workflow `{}` is not an http(s) URL: `{u}`",
                    params.workflow()
                );
                params
                    .error(node.pos, Code::InvalidValue, message)
                    .help("write a full URL such as `https://example.com/data/input.txt`");
            }
        }
        let output = if params.has("output") {
            params.relative_path("output", false)
        } else {
            params.required_string("output", "raw_dataset/input.txt")
        };
        let artifacts = params.artifacts();
        let job = JobSpec {
            download: match (url, output) {
                (Some(url), Some(output)) => Some(Download { url, output }),
                _ => None,
            },
            working_dir: ".".to_owned(),
            artifacts,
            ..JobSpec::default()
        };
        vec![job]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("requirements.txt"), "requirements.txt");
        assert_eq!(shell_quote("torch>=2"), "'torch>=2'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
