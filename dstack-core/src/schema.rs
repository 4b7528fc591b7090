//! The JSON Schema of `.dstack/workflows.yaml`, derived with `schemars` from the types below,
//! so editors can validate the file as the user types.
//!
//! These types describe the file as written, before substitution: wherever a value is typed,
//! a `${{ name }}` expression is accepted too. A test checks that every key the loader accepts
//! appears here and that the documentation's examples validate.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// A value of type `T`, or a `${{ variable }}` expression that becomes one.
#[derive(Debug)]
pub struct Templated<T>(pub T);

/// The pattern of a string holding a `${{ }}` expression.
pub const EXPRESSION_PATTERN: &str = r"\$\{\{[^}]*\}\}";

impl<T: JsonSchema> JsonSchema for Templated<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("Templated_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let inner = generator.subschema_for::<T>();
        json_schema!({
            "anyOf": [inner, {"type": "string", "pattern": EXPRESSION_PATTERN}]
        })
    }
}

/// A memory size with a unit: `32GB` (10^9), `512MiB` (2^30)...
#[derive(Debug)]
pub struct Memory;

impl JsonSchema for Memory {
    fn schema_name() -> Cow<'static, str> {
        "Memory".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A size with a unit: B, KB, MB, GB, TB (powers of 10) or KiB, MiB, GiB, TiB, Ki, Mi, Gi, Ti (powers of 2).",
            "pattern": r"^\s*[0-9]+(\.[0-9]*)?\s*([kKmMgGtT]([iI]?[bB]?)?|[bB])\s*$|\$\{\{",
        })
    }
}

/// An integer of at least 1 (a CPU count).
#[derive(Debug)]
pub struct Positive;

impl JsonSchema for Positive {
    fn schema_name() -> Cow<'static, str> {
        "Positive".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 1})
    }
}

/// How many times to retry: 0 to 100.
#[derive(Debug)]
pub struct Retries;

impl JsonSchema for Retries {
    fn schema_name() -> Cow<'static, str> {
        "Retries".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 0, "maximum": 100})
    }
}

/// A path relative to the working directory.
type RelPath = String;

/// `.dstack/workflows.yaml`
#[derive(Debug, JsonSchema)]
#[schemars(
    title = "dstack workflows",
    description = "The workflows of a dstack project: `.dstack/workflows.yaml`."
)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsFile {
    /// The workflows.
    pub workflows: Vec<Workflow>,
}

/// One workflow: `name`, `provider`, and the provider's parameters.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Workflow {
    /// `provider: docker`
    Docker(DockerWorkflow),
    /// `provider: python`
    Python(PythonWorkflow),
    /// `provider: curl`
    Curl(CurlWorkflow),
    /// A provider from `.dstack/providers.yaml` or another repository.
    Custom(CustomWorkflow),
}

/// The keys every workflow has.
#[derive(Debug, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Common {
    /// The workflow's name: letters, digits, `-`, `_`, `.`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub name: String,
    /// Workflows to run first (`prepare`), or tagged runs to reuse (`prepare:latest`).
    pub depends_on: Option<Vec<String>>,
    /// A one-line description.
    pub help: Option<String>,
    /// Stop the job after this long: seconds, or a duration such as `30m` or `1h 30m`.
    pub timeout: Option<Templated<Duration>>,
    /// How many times to retry a failed job.
    pub retries: Option<Templated<Retries>>,
}

/// Seconds, or a duration such as `90s`, `30m`, `1h 30m`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Duration {
    /// Seconds.
    Seconds(u64),
    /// Text such as `30m`.
    Text(String),
}

/// `provider: docker`: runs commands in an image.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerWorkflow {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// `docker`
    #[schemars(extend("const" = "docker"))]
    pub provider: String,
    /// The Docker image.
    pub image: String,
    /// Commands, run in order in one shell.
    pub commands: Option<Vec<String>>,
    /// The working directory, relative to the project.
    pub working_dir: Option<RelPath>,
    /// Ports to open.
    pub ports: Option<Vec<Templated<u16>>>,
    /// Environment variables.
    pub environment: Option<Environment>,
    /// Folders saved after the job.
    pub artifacts: Option<Vec<Artifact>>,
    /// What the job needs.
    pub resources: Option<Templated<Resources>>,
}

/// `provider: python`: runs a Python script.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonWorkflow {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// `python`
    #[schemars(extend("const" = "python"))]
    pub provider: String,
    /// The script with its arguments: `train.py --epochs 3`.
    pub script: Option<String>,
    /// Deprecated spelling of `script`.
    #[schemars(extend("deprecated" = true))]
    pub python_script: Option<String>,
    /// A requirements file, or a list of packages.
    pub requirements: Option<Requirements>,
    /// The Python version (default `3.10`); write it quoted or unquoted, `3.10` means 3.10.
    pub python: Option<PythonVersion>,
    /// Deprecated spelling of `python`.
    #[schemars(extend("deprecated" = true))]
    pub version: Option<PythonVersion>,
    /// Environment variables.
    pub environment: Option<Environment>,
    /// The working directory, relative to the project.
    pub working_dir: Option<RelPath>,
    /// Folders saved after the job.
    pub artifacts: Option<Vec<Artifact>>,
    /// What the job needs.
    pub resources: Option<Templated<Resources>>,
}

/// `provider: curl`: downloads a file.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CurlWorkflow {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// `curl`
    #[schemars(extend("const" = "curl"))]
    pub provider: String,
    /// The URL of the file.
    pub url: String,
    /// Where to store it, relative to the working directory.
    pub output: RelPath,
    /// Folders saved after the job.
    pub artifacts: Option<Vec<Artifact>>,
}

/// A workflow whose provider is not built in: its parameters belong to that provider.
#[derive(Debug, JsonSchema)]
pub struct CustomWorkflow {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// The provider: a name from `.dstack/providers.yaml`, or `{repo, name}`.
    pub provider: CustomProviderRef,
}

/// A provider that is not built in.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum CustomProviderRef {
    /// A name from `.dstack/providers.yaml`.
    Named(
        #[schemars(regex(pattern = r"^(?!(docker|python|curl)$)[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
        String,
    ),
    /// A provider from another Git repository.
    Repo(RepoProvider),
}

/// `{repo: URL, name: NAME}`
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoProvider {
    /// The repository; `URL@REF` pins a branch, tag or commit.
    pub repo: String,
    /// The provider's name in that repository's `.dstack/providers.yaml`.
    pub name: String,
}

/// A requirements file, or a list of packages.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Requirements {
    /// `requirements.txt`
    File(String),
    /// `[numpy, torch>=2]`
    Packages(Vec<String>),
}

/// A Python 3 version: `3.10`, `"3.11"`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum PythonVersion {
    /// Written as text.
    Text(String),
    /// Written as a number.
    Number(f64),
}

/// Environment variables: a mapping, or a list of `NAME=VALUE`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Environment {
    /// `{NAME: VALUE}`
    Map(BTreeMap<String, Option<Scalar>>),
    /// `[NAME=VALUE]`
    List(Vec<String>),
}

/// A scalar value.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// An artifact folder: `data`, or `{path: data}`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Artifact {
    /// `data`
    Path(RelPath),
    /// `{path: data}`
    Object {
        /// The folder.
        path: RelPath,
    },
}

/// What a job needs.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^.+/gpu$": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": EXPRESSION_PATTERN}]}}))]
pub struct Resources {
    /// CPUs.
    pub cpu: Option<Templated<Positive>>,
    /// Memory.
    pub memory: Option<Templated<Memory>>,
    /// GPUs: a count, or `{count, name, memory}`.
    pub gpu: Option<Templated<Gpu>>,
    /// Shared memory (`/dev/shm`).
    pub shm_size: Option<Templated<Memory>>,
    /// Accepted for compatibility; has no effect.
    pub interruptible: Option<bool>,
    /// Accepted for compatibility; has no effect.
    pub local: Option<bool>,
}

/// GPUs: a count, or `{count, name, memory}`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Gpu {
    /// How many.
    Count(u32),
    /// Which.
    Spec(GpuSpec),
}

/// `{count, name, memory}`
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// How many (default 1).
    pub count: Option<Templated<u32>>,
    /// The model: `v100`, `A100`...
    pub name: Option<String>,
    /// The least memory per GPU.
    pub memory: Option<Templated<Memory>>,
}

/// The JSON Schema of `.dstack/workflows.yaml`.
#[must_use]
pub fn workflows_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(WorkflowsFile);
    schema.to_value()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::workflows_schema;
    use crate::params::Params;
    use crate::provider::ProviderRegistry;
    use crate::yaml::Pos;

    /// Every key a built-in provider reads is in the schema of its workflows, and nothing else.
    #[test]
    fn schema_lists_exactly_the_keys_providers_read() {
        let schema = workflows_schema();
        let registry = ProviderRegistry::default();
        for (provider, def) in [
            ("docker", "DockerWorkflow"),
            ("python", "PythonWorkflow"),
            ("curl", "CurlWorkflow"),
        ] {
            let path: Arc<Path> = Path::new("w.yaml").into();
            let mut params = Params::from_params("w", provider, path, Pos::NONE, Vec::new());
            let _ = params.duration("timeout");
            let _ = params.integer("retries", 0, 100);
            registry.get(provider).expect("built-in").jobs(&mut params);
            let mut read: Vec<&str> = params.asked.iter().map(|k| &**k).collect();
            read.extend(["name", "provider", "depends-on", "help"]);
            // Deprecated spellings are read through `raw_or_deprecated`, which asks for the new key.
            if provider == "python" {
                read.extend(["python_script", "version"]);
            }
            read.sort_unstable();
            read.dedup();
            let props = &schema["$defs"][def]["properties"];
            let mut listed: Vec<&str> = props
                .as_object()
                .expect("properties")
                .keys()
                .map(String::as_str)
                .collect();
            listed.sort_unstable();
            assert_eq!(read, listed, "provider `{provider}`");
        }
    }
}
