//! The JSON Schema of `.dstack/workflows.yaml`, derived with `schemars` from the types below,
//! so editors can validate the file as the user types.
//!
//! These types describe the file as written, before substitution, and accept what the loader
//! accepts (`config.rs` for the keys of every workflow, [`Params`](crate::Params) and the
//! built-in providers for the rest), no more and no less where JSON Schema can say it:
//!
//! - a value read as text takes any scalar but null, numbers and booleans as written
//!   (`image: 3`, `name: 2024`, `help: true`);
//! - `commands`, `requirements`, `ports` and `depends-on` take one scalar as a list of one
//!   (`commands: echo hi`);
//! - a whole number may be written as a string (`ports: ["8080"]`, `gpu: '2'`): the loader
//!   parses the text of a string;
//! - a key written without a value (`image:`, which is null) is refused, but for `workflows`,
//!   `depends-on` and `resources`, which the loader reads as empty;
//! - wherever the parameters of a workflow are substituted, a string holding a `${{ }}`
//!   expression is accepted: it becomes the variable's value, of any type.
//!
//! What JSON cannot hold is left to the loader: the text of a number (`python: 3.10` is the
//! number 3.1, and `cpu: 2.0` passes for the integer 2, which the loader refuses). So is what
//! JSON Schema cannot say: whether a path stays inside the working directory, the words of a
//! duration (`timeout: soon`), a memory size too large for 64 bits or that rounds to 0 bytes
//! (`0.1B`), two `NAME/gpu` requests, artifacts of which one holds another, names that must
//! be unique or defined elsewhere.
//! `tests/schema.rs` compares the schema with the loader, key by key.

use std::borrow::Cow;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// The pattern of a string holding a `${{ }}` expression.
pub const EXPRESSION_PATTERN: &str = r"\$\{\{[^}]*\}\}";

/// Workflow and provider names: letters, digits, `-`, `_`, `.`, starting with a letter or digit.
const NAME: &str = "[A-Za-z0-9][A-Za-z0-9_.-]*";

/// The keys of `resources` that ask for GPUs of one model: `v100/gpu`.
const GPU_BY_MODEL: &str = "^.+/gpu$";

/// JSON types of the scalars that the loader reads as their text (all but null).
const SCALAR: [&str; 3] = ["string", "number", "boolean"];

fn expression() -> Value {
    json!({"type": "string", "pattern": EXPRESSION_PATTERN})
}

/// A whole number in `min..=max`: an integer, or a string whose text is one.
fn whole_number(min: u64, max: u64) -> Value {
    json!({
        "type": ["integer", "string"],
        "minimum": min,
        "maximum": max,
        "pattern": whole_number_text(min, max),
    })
}

/// A regular expression for the strings that the loader reads as a whole number in
/// `min..=max` (`min` is 0 or 1): trimmed, then parsed as an `i64`, so with an optional sign
/// and any number of leading zeros (`' +08080 '`).
fn whole_number_text(min: u64, max: u64) -> String {
    assert!(min <= 1 && min <= max, "whole_number_text({min}, {max})");
    let max_text = max.to_string();
    let digits = max_text.as_bytes();
    let any_digits = |n: usize| match n {
        0 => String::new(),
        1 => "[0-9]".to_owned(),
        n => format!("[0-9]{{{n}}}"),
    };
    // Every number in range, written without sign or leading zero.
    let mut alternatives: Vec<String> = Vec::new();
    if min == 0 {
        alternatives.push("0".to_owned());
    }
    // Fewer digits than `max`.
    match digits.len() {
        0 | 1 => {}
        2 => alternatives.push("[1-9]".to_owned()),
        n => alternatives.push(format!("[1-9][0-9]{{0,{}}}", n - 2)),
    }
    // As many digits: those of `max` up to some position, a smaller digit there, then any.
    for (i, &d) in digits.iter().enumerate() {
        let lowest = if i == 0 { b'1' } else { b'0' };
        if d > lowest {
            let class = if d - 1 == lowest {
                char::from(lowest).to_string()
            } else {
                format!("[{}-{}]", char::from(lowest), char::from(d - 1))
            };
            let rest = any_digits(digits.len() - i - 1);
            alternatives.push(format!("{}{class}{rest}", &max_text[..i]));
        }
    }
    alternatives.push(max_text.clone());
    let negative_zero = if min == 0 { "|-0+" } else { "" };
    format!(
        r"^\s*(\+?0*({}){negative_zero})\s*$",
        alternatives.join("|")
    )
}

/// `Option` makes a key optional, and schemars lets an optional key be null as well; the
/// loader refuses a key written without a value (`image:` is null), but for the keys typed
/// [`Nullable`]. This takes out of each property of a struct the null that `Option` let in.
fn keys_not_null(schema: &mut Schema) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    let null = json!({"type": "null"});
    for property in properties.values_mut() {
        let Value::Object(p) = property else {
            continue;
        };
        // `{"anyOf": [T, {"type": "null"}], "description": ...}`: T, with the description.
        let wrapped =
            matches!(p.get("anyOf"), Some(Value::Array(any)) if any.len() == 2 && any[1] == null);
        if wrapped && let Some(Value::Array(mut any)) = p.remove("anyOf") {
            any.truncate(1);
            match any.pop() {
                Some(Value::Object(inner)) => {
                    for (k, v) in inner {
                        p.entry(k).or_insert(v);
                    }
                }
                Some(other) => {
                    p.insert("anyOf".to_owned(), Value::Array(vec![other]));
                }
                None => {}
            }
        }
        // `{"type": ["string", "null"]}`: the other types.
        if let Some(Value::Array(types)) = p.get_mut("type") {
            types.retain(|t| t != "null");
            if let [only] = types.as_slice() {
                let only = only.clone();
                p.insert("type".to_owned(), only);
            }
        }
    }
}

/// A value of type `T`, or a string holding a `${{ variable }}` expression that becomes one.
#[derive(Debug)]
pub struct Templated<T>(pub T);

impl<T: JsonSchema> JsonSchema for Templated<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("Templated_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let inner = generator.subschema_for::<T>();
        json_schema!({"anyOf": [inner, expression()]})
    }
}

/// A `T`, or null (the key written without a value), which the loader reads as nothing.
#[derive(Debug)]
pub struct Nullable<T>(pub T);

impl<T: JsonSchema> JsonSchema for Nullable<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("OrNull_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let inner = generator.subschema_for::<T>();
        json_schema!({"anyOf": [inner, {"type": "null"}]})
    }
}

/// One `T`, taken as a list of one, or a list of them.
#[derive(Debug)]
pub struct OneOrMany<T>(PhantomData<T>);

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let inner = generator.subschema_for::<T>();
        json_schema!({"anyOf": [inner, {"type": "array", "items": inner}]})
    }
}

/// Implements `JsonSchema` for a type whose schema is the value of an expression.
macro_rules! schema_of {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                Schema::try_from($schema).expect("a schema is a JSON object")
            }
        }
    };
}

schema_of!(
    /// Any scalar but null, read as its text: `ubuntu`, `3` and `true` are texts.
    Text => json!({
        "type": SCALAR,
        "description": "Text; a number or a boolean is taken as written.",
    })
);

schema_of!(
    /// Text with more than spaces in it.
    NonBlank => json!({
        "type": SCALAR,
        "pattern": r"\S",
        "description": "Text that is not blank; a number or a boolean is taken as written.",
    })
);

schema_of!(
    /// A workflow name; a number without a sign is one too (`name: 2024`).
    WorkflowName => json!({
        "type": SCALAR,
        "pattern": format!("^{NAME}$"),
        "minimum": 0,
        "description": "Letters, digits, `-`, `_`, `.`, starting with a letter or digit.",
    })
);

schema_of!(
    /// The name of a provider that is not built in.
    CustomProviderName => json!({
        "type": SCALAR,
        "pattern": format!("^(?!(docker|python|curl)$){NAME}$"),
        "minimum": 0,
        "description": "A provider of `.dstack/providers.yaml`: letters, digits, `-`, `_`, `.`.",
    })
);

schema_of!(
    /// The name of a provider in another repository (a built-in name too).
    ProviderName => json!({
        "type": SCALAR,
        "pattern": format!("^{NAME}$"),
        "minimum": 0,
        "description": "Letters, digits, `-`, `_`, `.`, starting with a letter or digit.",
    })
);

schema_of!(
    /// `prepare`, or `prepare:latest` for a tagged run.
    DependencyRef => json!({
        "type": SCALAR,
        "pattern": format!("^{NAME}(:{NAME})?$"),
        "minimum": 0,
        "description": "A workflow (`prepare`), or a tagged run of one (`prepare:latest`).",
    })
);

schema_of!(
    /// A repository URL, `URL@REF` to pin a branch, tag or commit.
    RepoUrl => json!({
        "type": "string",
        "pattern": r"^\s*\S+\s*$",
        "description": "A Git repository; `URL@REF` pins a branch, tag or commit.",
    })
);

schema_of!(
    /// A path relative to the working directory: not blank, not absolute (`/data`, `\data`,
    /// `C:...`), no NUL. What a pattern cannot tell (`a/../../x` leaves the working
    /// directory) is left to the loader.
    RelPath => json!({
        "type": SCALAR,
        "pattern": r"^\s*([^\s/\\\x00]$|[^\s/\\\x00][^:\x00]|[^\x00-\x7F\s])[^\x00]*$",
        "description": "A path relative to the working directory, inside it.",
    })
);

schema_of!(
    /// How many times to retry: 0 to 100.
    Retries => whole_number(0, 100)
);

schema_of!(
    /// A TCP port: 1 to 65535.
    Port => whole_number(1, 65535)
);

schema_of!(
    /// A CPU count: at least 1.
    CpuCount => whole_number(1, u64::from(u32::MAX))
);

schema_of!(
    /// A GPU count; 0 asks for none.
    GpuCount => whole_number(0, u64::from(u32::MAX))
);

schema_of!(
    /// Seconds, or a duration such as `90s`, `30m`, `1h 30m`.
    Duration => json!({
        "type": ["integer", "string"],
        "minimum": 1,
        "description": "Seconds, or a duration such as `90s`, `30m`, `2h` or `1h 30m`.",
    })
);

schema_of!(
    /// A memory size with a unit: `32GB` (10^9), `512MiB` (2^30)... The number has a digit
    /// other than 0 (`0GB` is refused); `1.5GB` and `.5GB` have a fraction.
    Memory => json!({
        "type": "string",
        "description": "A size with a unit: B, KB, MB, GB, TB (powers of 10) or KiB, MiB, GiB, TiB, Ki, Mi, Gi, Ti (powers of 2).",
        "pattern": r"^\s*(0*[1-9][0-9]*(\.[0-9]*)?|0*\.[0-9]*[1-9][0-9]*)\s*([kKmMgGtT]([iI]?[bB]?)?|[bB])\s*$",
    })
);

schema_of!(
    /// A Python 3 version: `3` (the latest), `3.10`, `"3.11"`, `3.11.4`.
    PythonVersion => json!({
        "anyOf": [
            {"type": "string", "pattern": r"^\s*3(\.[0-9]+){0,2}\s*$"},
            // Unquoted, a version is a number: `3.10` is 3.1 to JSON, but the loader reads the
            // text, which is a version whatever the digits after `3.`.
            {"type": "number", "minimum": 3, "exclusiveMaximum": 4},
        ],
        "description": "A Python 3 version such as `3`, `3.10` or `3.11.4`.",
    })
);

schema_of!(
    /// An http(s) URL.
    Url => json!({
        "type": "string",
        "pattern": r"^https?://[^/\s]\S*$",
        "description": "An http or https URL, without spaces.",
    })
);

schema_of!(
    /// `NAME=VALUE`.
    EnvEntry => json!({
        "type": "string",
        "pattern": "^[A-Za-z_][A-Za-z0-9_]*=",
        "description": "`NAME=VALUE`",
    })
);

schema_of!(
    /// A value the loader takes and ignores.
    Ignored => json!({})
);

/// Environment variables: a mapping, or a list of `NAME=VALUE`.
#[derive(Debug)]
pub struct Environment;

impl JsonSchema for Environment {
    fn schema_name() -> Cow<'static, str> {
        "Environment".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let entry = generator.subschema_for::<Templated<EnvEntry>>();
        json_schema!({
            "anyOf": [
                {
                    "type": "object",
                    "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                    "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                },
                {"type": "array", "items": entry},
            ],
            "description": "`{NAME: VALUE}` (a value written without one is empty), or a list of `NAME=VALUE`.",
        })
    }
}

/// `.dstack/workflows.yaml`
#[derive(Debug, JsonSchema)]
#[schemars(
    title = "dstack workflows",
    description = "The workflows of a dstack project: `.dstack/workflows.yaml`.",
    extend("patternProperties" = {"^x-": {"description": "Ignored: a place for YAML anchors."}})
)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsFile {
    /// The workflows.
    pub workflows: Nullable<Vec<Workflow>>,
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
#[schemars(transform = keys_not_null)]
pub struct Common {
    /// The workflow's name: letters, digits, `-`, `_`, `.`.
    pub name: WorkflowName,
    /// Workflows to run first (`prepare`), or tagged runs to reuse (`prepare:latest`).
    pub depends_on: Option<Nullable<OneOrMany<DependencyRef>>>,
    /// A one-line description.
    pub help: Option<Text>,
    /// Stop the job after this long: seconds, or a duration such as `30m` or `1h 30m`.
    pub timeout: Option<Templated<Duration>>,
    /// How many times to retry a failed job.
    pub retries: Option<Templated<Retries>>,
}

/// `provider: docker`: runs commands in an image.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = keys_not_null)]
pub struct DockerWorkflow {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// `docker`
    #[schemars(extend("const" = "docker"))]
    pub provider: String,
    /// The Docker image.
    pub image: Text,
    /// Commands, run in order in one shell.
    pub commands: Option<OneOrMany<Text>>,
    /// The working directory, relative to the project.
    pub working_dir: Option<RelPath>,
    /// Ports to open.
    pub ports: Option<Templated<OneOrMany<Templated<Port>>>>,
    /// Environment variables.
    pub environment: Option<Templated<Environment>>,
    /// Folders saved after the job.
    pub artifacts: Option<Templated<Vec<Artifact>>>,
    /// What the job needs.
    pub resources: Option<Nullable<Templated<Resources>>>,
}

/// `provider: python`: runs a Python script.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    transform = keys_not_null,
    // `script` or its old spelling, not both; `python` or its old spelling `version`.
    extend(
        "oneOf" = [{"required": ["script"]}, {"required": ["python_script"]}],
        "not" = {"required": ["python", "version"]}
    )
)]
pub struct PythonWorkflow {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// `python`
    #[schemars(extend("const" = "python"))]
    pub provider: String,
    /// The script with its arguments: `train.py --epochs 3`.
    pub script: Option<NonBlank>,
    /// Deprecated spelling of `script`.
    #[schemars(extend("deprecated" = true))]
    pub python_script: Option<NonBlank>,
    /// A requirements file, or a list of packages.
    pub requirements: Option<Requirements>,
    /// The Python version (default `3.10`); write it quoted or unquoted, `3.10` means 3.10.
    pub python: Option<Templated<PythonVersion>>,
    /// Deprecated spelling of `python`.
    #[schemars(extend("deprecated" = true))]
    pub version: Option<Templated<PythonVersion>>,
    /// Environment variables.
    pub environment: Option<Templated<Environment>>,
    /// The working directory, relative to the project.
    pub working_dir: Option<RelPath>,
    /// Folders saved after the job.
    pub artifacts: Option<Templated<Vec<Artifact>>>,
    /// What the job needs.
    pub resources: Option<Nullable<Templated<Resources>>>,
}

/// `provider: curl`: downloads a file.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = keys_not_null)]
pub struct CurlWorkflow {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// `curl`
    #[schemars(extend("const" = "curl"))]
    pub provider: String,
    /// The URL of the file.
    pub url: Templated<Url>,
    /// Where to store it, relative to the working directory.
    pub output: RelPath,
    /// Folders saved after the job.
    pub artifacts: Option<Templated<Vec<Artifact>>>,
}

/// A workflow whose provider is not built in: its parameters belong to that provider.
#[derive(Debug, JsonSchema)]
#[schemars(
    transform = keys_not_null,
    // The loader knows this key as a misspelling of `depends-on`, whatever the provider.
    extend("not" = {"required": ["depends_on"]})
)]
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
    Named(CustomProviderName),
    /// A provider from another Git repository.
    Repo(RepoProvider),
}

/// `{repo: URL, name: NAME}`
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoProvider {
    /// The repository; `URL@REF` pins a branch, tag or commit.
    pub repo: RepoUrl,
    /// The provider's name in that repository's `.dstack/providers.yaml`.
    pub name: ProviderName,
}

/// A requirements file, or a list of packages.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Requirements {
    /// `requirements.txt`
    File(Text),
    /// `[numpy, torch>=2]`
    Packages(Vec<Text>),
}

/// An artifact folder: `data`, or `{path: data}`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Artifact {
    /// `data`
    Path(RelPath),
    /// `{path: data}`
    Object(ArtifactObject),
}

/// `{path: data}`
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactObject {
    /// The folder.
    pub path: RelPath,
}

/// What a job needs.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = keys_not_null, transform = gpus_by_model)]
pub struct Resources {
    /// CPUs.
    pub cpu: Option<Templated<CpuCount>>,
    /// Memory.
    pub memory: Option<Templated<Memory>>,
    /// GPUs: a count, or `{count, name, memory}`.
    pub gpu: Option<Templated<Gpu>>,
    /// Shared memory (`/dev/shm`).
    pub shm_size: Option<Templated<Memory>>,
    /// Accepted for compatibility, with any value; has no effect.
    pub interruptible: Option<Ignored>,
    /// Accepted for compatibility, with any value; has no effect.
    pub local: Option<Ignored>,
}

/// `NAME/gpu: COUNT` (`v100/gpu: 2`) asks for GPUs of one model, instead of `gpu`: the loader
/// refuses a second request.
fn gpus_by_model(schema: &mut Schema) {
    let count = json!({"anyOf": [whole_number(0, u64::from(u32::MAX)), expression()]});
    schema.insert(
        "patternProperties".to_owned(),
        json!({ GPU_BY_MODEL: count }),
    );
    // Not `gpu` and some `NAME/gpu` together. (Two `NAME/gpu` keys are refused too, which
    // JSON Schema cannot say.)
    schema.insert(
        "not".to_owned(),
        json!({"required": ["gpu"], "not": {"patternProperties": {GPU_BY_MODEL: false}}}),
    );
}

/// GPUs: a count, or `{count, name, memory}`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum Gpu {
    /// How many.
    Count(GpuCount),
    /// Which.
    Spec(GpuSpec),
}

/// `{count, name, memory}`
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = keys_not_null)]
pub struct GpuSpec {
    /// How many (default 1).
    pub count: Option<Templated<GpuCount>>,
    /// The model: `v100`, `A100`...
    pub name: Option<Text>,
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

    use super::{whole_number_text, workflows_schema};
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

    /// The pattern of quoted whole numbers takes exactly the strings that `Params::integer`
    /// reads as a number in range: trimmed, parsed as an `i64`.
    #[test]
    fn whole_number_text_matches_what_the_loader_parses() {
        let max32 = u64::from(u32::MAX);
        for (min, max) in [
            (0, 1),
            (1, 1),
            (1, 5),
            (0, 9),
            (1, 10),
            (0, 100),
            (1, 65535),
            (1, max32),
            (0, max32),
        ] {
            let pattern = whole_number_text(min, max);
            let validator = jsonschema::validator_for(&serde_json::json!({"pattern": pattern}))
                .expect("valid pattern");
            let mut texts: Vec<String> = Vec::new();
            let mut numbers: Vec<u64> = (0..=1200).collect();
            for edge in [max, max / 10, max / 10 + 1, u64::from(u32::MAX) * 10] {
                numbers.extend(edge.saturating_sub(1200)..=edge.saturating_add(1200));
            }
            for n in numbers {
                texts.push(n.to_string());
                texts.push(format!("-{n}"));
                texts.push(format!("+{n}"));
                texts.push(format!(" 00{n}\t"));
                texts.push(format!("-0{n}"));
            }
            texts.extend(
                [
                    "", " ", "+", "-", "+-1", "1 0", "0x10", "1.0", "1e2", "٣", "-0", "-000", "00",
                ]
                .map(str::to_owned),
            );
            for text in &texts {
                let loader = text
                    .trim()
                    .parse::<i64>()
                    .is_ok_and(|v| u64::try_from(v).is_ok_and(|v| (min..=max).contains(&v)));
                let schema = validator.is_valid(&serde_json::Value::from(text.as_str()));
                assert_eq!(schema, loader, "{text:?} in {min}..={max}: {pattern}");
            }
        }
    }
}
