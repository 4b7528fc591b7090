//! The JSON Schema of `dstack schema` accepts what the loader accepts (`dstack validate`) and
//! refuses what it refuses, but where JSON Schema cannot tell (`known_gap`): the examples of
//! the documentation, scalars read as text, one scalar for a list, quoted numbers, keys written
//! without a value, `${{ }}` expressions, and, key by key, a table of values.

use std::path::Path;
use std::sync::LazyLock;

use dstack_core::schema::workflows_schema;
use dstack_core::yaml::{ScalarValue, parse_str};
use dstack_core::{Overrides, Project, ProviderRegistry, Sources};

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    jsonschema::validator_for(&workflows_schema()).expect("the schema is a valid JSON Schema")
});

/// Whether the schema accepts `yaml`, with its complaints.
fn check(yaml: &str) -> Result<(), String> {
    let node = parse_str(yaml, Path::new("w.yaml"))
        .map_err(|d| d.to_string())?
        .ok_or("empty")?;
    let instance = node.to_json();
    let errors: Vec<String> = VALIDATOR
        .iter_errors(&instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The variables the documents below use.
const VARIABLES: &str = "variables:
  global:
    pgpu: 0
    tgpu: 1
    mem: 8GB
    ports: [8080, 9000]
    env: {A: 1}
    arts: [out]
    py: '3.11'
    entry: A=1
    digits: 80
    base: https://example.com
";

/// The providers of `.dstack/providers.yaml` the documents below use.
const PROVIDERS: &str = "providers:
  - name: my-provider
    image: ubuntu
    commands: [run]
  - name: 7
    image: ubuntu
    commands: [run]
";

/// Whether the loader accepts `yaml` as `dstack validate` does: the project loads, and every
/// workflow is checked as it would be planned. Warnings are fine.
fn load(yaml: &str) -> Result<(), String> {
    let sources = Sources {
        workflows: Some(yaml.to_owned()),
        variables: Some(VARIABLES.to_owned()),
        providers: Some(PROVIDERS.to_owned()),
    };
    let project = Project::from_sources("", &sources, ProviderRegistry::default())
        .map_err(|e| e.to_string())?;
    project
        .validate(&Overrides::new())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Both the schema and the loader accept `yaml`.
fn assert_accepted(what: &str, yaml: &str) {
    assert_eq!(check(yaml), Ok(()), "the schema refuses {what}:\n{yaml}");
    assert_eq!(load(yaml), Ok(()), "the loader refuses {what}:\n{yaml}");
}

/// Both the schema and the loader refuse `yaml`.
fn assert_refused(what: &str, yaml: &str) {
    assert!(check(yaml).is_err(), "the schema accepts {what}:\n{yaml}");
    assert!(load(yaml).is_err(), "the loader accepts {what}:\n{yaml}");
}

/// A workflows file with one workflow, whose keys are the lines of `body`.
fn one(body: &str) -> String {
    let mut out = String::from("workflows:\n");
    for (i, line) in body.lines().enumerate() {
        out.push_str(if i == 0 { "  - " } else { "    " });
        out.push_str(line);
        out.push('\n');
    }
    out
}

const DOCS_EXAMPLE: &str = "workflows:
  # This workflow loads and prepares data 
  - name: prepare
    # This workflow uses `python` provider
    provider: python
    script: prepare.py
    # The `data` folder will be tracked as an output artifact
    artifacts:
      - data
    # Here we use a variable to say whether we need GPU or not to run this workflow
    resources:
      gpu: ${{ pgpu }}

  # This workflow uses the data produced by the `prepare` workflow
  - name: train
    # This workflow uses `python` provider
    provider: python
    script: train.py
    # The `checkpoint` folder will be tracked as an output artifact
    artifacts:
      - checkpoint
    depends-on:
      - prepare
    resources:
      gpu: ${{ tgpu }}     
";

const DOCS_DOCKER: &str = "workflows:
  - name: hello
    provider: docker
    image: ubuntu
    commands:
      - mkdir -p output
      - echo 'Hello, world!' > output/hello.txt
    artifacts:
      - output
    resources:
      cpu: 1
      memory: 1GB
";

const DOCS_PYTHON: &str = "workflows:
  - name: download-model  
    provider: python
    requirements: requirements.txt
    script: download_model.py
    environment:
      PYTHONPATH: src
    artifacts:
      - models
    resources:
      cpu: 2
      memory: 32GB
      gpu: 1
";

const DOCS_CURL: &str = "workflows:
  - name: download-dataset
    provider: curl
    url: https://github.com/karpathy/char-rnn/blob/master/data/tinyshakespeare/input.txt
    output: raw_dataset/input.txt
    artifacts:
      - raw_dataset
";

const DOCS_TAG_AND_REPO: &str = "workflows:
  - name: train
    provider:
      repo: https://github.com/dstackai/dstack
      name: python
    script: train.py
    depends-on:
     - prepare:latest
";

#[test]
fn documentation_examples_validate() {
    for (name, yaml) in [
        ("workflows", DOCS_EXAMPLE),
        ("docker", DOCS_DOCKER),
        ("python", DOCS_PYTHON),
        ("curl", DOCS_CURL),
        ("tag and repo provider", DOCS_TAG_AND_REPO),
    ] {
        assert_eq!(check(yaml), Ok(()), "documentation example `{name}`");
    }
    // The loader also wants the workflows that others depend on.
    let prepare = "  - name: prepare\n    provider: docker\n    image: ubuntu\n";
    for (name, yaml) in [
        ("workflows", DOCS_EXAMPLE.to_owned()),
        ("docker", DOCS_DOCKER.to_owned()),
        ("python", DOCS_PYTHON.to_owned()),
        ("curl", DOCS_CURL.to_owned()),
        (
            "tag and repo provider",
            format!("{DOCS_TAG_AND_REPO}{prepare}"),
        ),
    ] {
        assert_accepted(&format!("documentation example `{name}`"), &yaml);
    }
}

#[test]
fn extended_keys_validate() {
    let yaml = "workflows:
  - name: a
    provider: python
    python: 3.10
    requirements: [numpy, 'torch>=2']
    script: train.py --epochs 3
    timeout: 30m
    retries: 2
    help: Train it
    environment: [A=1]
    resources:
      v100/gpu: 2
      shm_size: 8GiB
  - name: b
    provider: docker
    image: ubuntu
    ports: [8080]
    resources:
      gpu: {count: 2, name: A100, memory: 40GB}
      memory: ${{ mem }}
    depends-on: [a]
  - name: c
    provider: my-provider
    anything: goes
";
    assert_accepted("extended keys", yaml);
}

/// What the reviewer found the schema refused though `dstack validate` accepts it, and the
/// like found in the loader: scalars read as text, one scalar for a list, quoted numbers, keys
/// that take null, expressions that become a value of any type.
#[test]
fn what_the_loader_accepts_validates() {
    for (what, body) in [
        // Reviewer's cases.
        (
            "commands as one string",
            "name: a\nprovider: docker\nimage: ubuntu\ncommands: echo hi",
        ),
        (
            "a port as a string",
            "name: a\nprovider: docker\nimage: ubuntu\nports: \"8080\"",
        ),
        (
            "ports as numbers and strings",
            "name: a\nprovider: docker\nimage: ubuntu\nports: [8080, \"9000\"]",
        ),
        (
            "a quoted GPU count",
            "name: a\nprovider: docker\nimage: ubuntu\nresources: {gpu: '2'}",
        ),
        (
            "an image that is a number",
            "name: a\nprovider: docker\nimage: 3",
        ),
        // Text: any scalar but null, as written.
        (
            "an image that is a boolean",
            "name: a\nprovider: docker\nimage: true",
        ),
        (
            "commands that are numbers",
            "name: a\nprovider: docker\nimage: ubuntu\ncommands: [true, 3, 1.5]",
        ),
        (
            "help that is a number",
            "name: a\nprovider: docker\nimage: ubuntu\nhelp: 42",
        ),
        (
            "a name that is a number",
            "name: 2024\nprovider: docker\nimage: ubuntu",
        ),
        (
            "a name that is a float",
            "name: 1.5\nprovider: docker\nimage: ubuntu",
        ),
        (
            "a name that is a boolean",
            "name: true\nprovider: docker\nimage: ubuntu",
        ),
        (
            "a working directory that is a number",
            "name: a\nprovider: docker\nimage: ubuntu\nworking_dir: 2024",
        ),
        (
            "artifacts that are numbers",
            "name: a\nprovider: docker\nimage: ubuntu\nartifacts: [2024, {path: 7}]",
        ),
        (
            "a script that is a number",
            "name: a\nprovider: python\nscript: 3",
        ),
        (
            "requirements that are numbers",
            "name: a\nprovider: python\nscript: train.py\nrequirements: [numpy, 2]",
        ),
        (
            "a requirements file that is a number",
            "name: a\nprovider: python\nscript: train.py\nrequirements: 3",
        ),
        (
            "an output that is a number",
            "name: a\nprovider: curl\nurl: https://example.com/x\noutput: 3",
        ),
        (
            "a GPU model that is a number",
            "name: a\nprovider: docker\nimage: ubuntu\nresources: {gpu: {name: 100}}",
        ),
        (
            "a repository provider named by a number",
            "name: a\nprovider: {repo: 'https://example.com/p.git', name: 7}",
        ),
        ("a provider named by a number", "name: a\nprovider: 7"),
        (
            "the old spelling of script, alone",
            "name: a\nprovider: python\npython_script: train.py",
        ),
        (
            "the old spelling of python, alone",
            "name: a\nprovider: python\nscript: train.py\nversion: 3.9",
        ),
        // Whole numbers as strings, trimmed, with a sign or leading zeros.
        (
            "quoted retries",
            "name: a\nprovider: docker\nimage: ubuntu\nretries: '3'",
        ),
        (
            "a port with spaces and leading zeros",
            "name: a\nprovider: docker\nimage: ubuntu\nports: ' +08080 '",
        ),
        (
            "one port as a number",
            "name: a\nprovider: docker\nimage: ubuntu\nports: 8080",
        ),
        (
            "quoted counts",
            "name: a\nprovider: docker\nimage: ubuntu\nresources: {cpu: '4', gpu: {count: '2'}}",
        ),
        (
            "a quoted count by model",
            "name: a\nprovider: docker\nimage: ubuntu\nresources: {v100/gpu: '2'}",
        ),
        (
            "no GPU",
            "name: a\nprovider: docker\nimage: ubuntu\nresources: {gpu: '0'}",
        ),
        (
            "a hexadecimal CPU count",
            "name: a\nprovider: docker\nimage: ubuntu\nresources: {cpu: 0x10}",
        ),
        // Other values the loader reads.
        (
            "memory sizes with a fraction",
            "name: a\nprovider: docker\nimage: ubuntu\nresources: {memory: '.5GB', shm_size: 1. GiB}",
        ),
        (
            "interruptible with any value",
            "name: a\nprovider: docker\nimage: ubuntu\nresources: {interruptible: 1, local: [x]}",
        ),
        (
            "a timeout in seconds",
            "name: a\nprovider: docker\nimage: ubuntu\ntimeout: 90",
        ),
        (
            "a Python version with a major only",
            "name: a\nprovider: python\nscript: train.py\npython: 3",
        ),
        (
            "a Python version with a patch number",
            "name: a\nprovider: python\nscript: train.py\npython: 3.11.4",
        ),
        (
            "environment values of any scalar type, and none",
            "name: a\nprovider: docker\nimage: ubuntu\nenvironment: {A: 1, B: true, C: ~, _D: x}",
        ),
        // Keys that take null.
        (
            "resources written without a value",
            "name: a\nprovider: docker\nimage: ubuntu\nresources:",
        ),
        (
            "depends-on written without a value",
            "name: a\nprovider: docker\nimage: ubuntu\ndepends-on:",
        ),
        // Expressions, which become the variable's value, of any type.
        (
            "ports from a list variable",
            "name: a\nprovider: docker\nimage: ubuntu\nports: ${{ ports }}",
        ),
        (
            "environment from a mapping variable",
            "name: a\nprovider: docker\nimage: ubuntu\nenvironment: ${{ env }}",
        ),
        (
            "an environment entry from a variable",
            "name: a\nprovider: docker\nimage: ubuntu\nenvironment: ['${{ entry }}', B=2]",
        ),
        (
            "artifacts from a list variable",
            "name: a\nprovider: docker\nimage: ubuntu\nartifacts: ${{ arts }}",
        ),
        (
            "a Python version from a variable",
            "name: a\nprovider: python\nscript: train.py\npython: ${{ py }}",
        ),
        (
            "a URL put together from a variable",
            "name: a\nprovider: curl\nurl: ${{ base }}/data.csv\noutput: data.csv",
        ),
        (
            "a port put together from a variable",
            "name: a\nprovider: docker\nimage: ubuntu\nports: ['${{ digits }}80']",
        ),
    ] {
        assert_accepted(what, &one(body));
    }
    for (what, yaml) in [
        ("no workflows", "workflows:\n"),
        (
            "`x-` keys for YAML anchors",
            "x-image: &image ubuntu\nworkflows:\n  - name: a\n    provider: docker\n    image: *image\n",
        ),
        (
            "one dependency as a scalar",
            "workflows:\n  - name: prepare\n    provider: docker\n    image: ubuntu\n  - name: a\n    provider: docker\n    image: ubuntu\n    depends-on: prepare\n",
        ),
        (
            "dependencies that are numbers and booleans, and a tag",
            "workflows:\n  - name: 2024\n    provider: docker\n    image: ubuntu\n  - name: true\n    provider: docker\n    image: ubuntu\n  - name: 1.5\n    provider: docker\n    image: ubuntu\n  - name: b\n    provider: docker\n    image: ubuntu\n  - name: a\n    provider: docker\n    image: ubuntu\n    depends-on: [2024, true, 1.5, 'b:latest']\n",
        ),
    ] {
        assert_accepted(what, yaml);
    }
}

#[test]
fn structural_mistakes_are_rejected() {
    for (what, yaml) in [
        (
            "unknown key",
            "workflows:\n  - name: a\n    provider: docker\n    image: x\n    scirpt: y\n",
        ),
        (
            "missing image",
            "workflows:\n  - name: a\n    provider: docker\n",
        ),
        ("workflows not a list", "workflows:\n  a: 1\n"),
        (
            "bad memory",
            "workflows:\n  - name: a\n    provider: docker\n    image: x\n    resources: {memory: lots}\n",
        ),
        (
            "negative cpu",
            "workflows:\n  - name: a\n    provider: docker\n    image: x\n    resources: {cpu: 0}\n",
        ),
        (
            "bad name",
            "workflows:\n  - name: 'a b'\n    provider: docker\n    image: x\n",
        ),
    ] {
        assert_refused(what, yaml);
    }
    for (what, body) in [
        // Null where a value is needed.
        (
            "an image without a value",
            "name: a\nprovider: docker\nimage:",
        ),
        (
            "commands without a value",
            "name: a\nprovider: docker\nimage: x\ncommands:",
        ),
        (
            "help without a value",
            "name: a\nprovider: docker\nimage: x\nhelp:",
        ),
        (
            "a timeout without a value",
            "name: a\nprovider: docker\nimage: x\ntimeout:",
        ),
        (
            "environment without a value",
            "name: a\nprovider: docker\nimage: x\nenvironment:",
        ),
        (
            "a command without a value",
            "name: a\nprovider: docker\nimage: x\ncommands: [a, ~]",
        ),
        (
            "a port without a value",
            "name: a\nprovider: docker\nimage: x\nports: [~]",
        ),
        (
            "a CPU count without a value",
            "name: a\nprovider: docker\nimage: x\nresources: {cpu: ~}",
        ),
        // Numbers out of range, written as numbers or as strings.
        (
            "a quoted zero CPU count",
            "name: a\nprovider: docker\nimage: x\nresources: {cpu: '0'}",
        ),
        (
            "a quoted port out of range",
            "name: a\nprovider: docker\nimage: x\nports: '70000'",
        ),
        (
            "quoted retries out of range",
            "name: a\nprovider: docker\nimage: x\nretries: '101'",
        ),
        (
            "a negative quoted GPU count",
            "name: a\nprovider: docker\nimage: x\nresources: {gpu: '-1'}",
        ),
        (
            "a fractional GPU count",
            "name: a\nprovider: docker\nimage: x\nresources: {gpu: 1.5}",
        ),
        (
            "a zero timeout",
            "name: a\nprovider: docker\nimage: x\ntimeout: 0",
        ),
        // Values the loader does not take as text, or whose text it refuses.
        ("a negative name", "name: -1\nprovider: docker\nimage: x"),
        (
            "artifacts as one folder",
            "name: a\nprovider: docker\nimage: x\nartifacts: out",
        ),
        (
            "an artifact with an unknown key",
            "name: a\nprovider: docker\nimage: x\nartifacts: [{path: out, keep: 1}]",
        ),
        (
            "an absolute working directory",
            "name: a\nprovider: docker\nimage: x\nworking_dir: /data",
        ),
        (
            "an empty working directory",
            "name: a\nprovider: docker\nimage: x\nworking_dir: ''",
        ),
        (
            "a bad environment variable name",
            "name: a\nprovider: docker\nimage: x\nenvironment: {1A: x}",
        ),
        (
            "an environment entry without `=`",
            "name: a\nprovider: docker\nimage: x\nenvironment: [A]",
        ),
        (
            "an environment as one string",
            "name: a\nprovider: docker\nimage: x\nenvironment: A=1",
        ),
        (
            "a memory size without a unit",
            "name: a\nprovider: docker\nimage: x\nresources: {memory: 512}",
        ),
        (
            "GPUs asked for twice",
            "name: a\nprovider: docker\nimage: x\nresources: {gpu: 1, v100/gpu: 1}",
        ),
        (
            "an unknown GPU key",
            "name: a\nprovider: docker\nimage: x\nresources: {gpu: {cnt: 1}}",
        ),
        ("a blank script", "name: a\nprovider: python\nscript: ' '"),
        ("no script", "name: a\nprovider: python"),
        (
            "script and its old spelling",
            "name: a\nprovider: python\nscript: a.py\npython_script: a.py",
        ),
        (
            "python and its old spelling",
            "name: a\nprovider: python\nscript: a.py\npython: 3.10\nversion: 3.10",
        ),
        (
            "a Python version with an empty part",
            "name: a\nprovider: python\nscript: a.py\npython: 3..1",
        ),
        (
            "a memory size of zero",
            "name: a\nprovider: docker\nimage: x\nresources: {memory: 0.0GB}",
        ),
        (
            "a Python 2 version",
            "name: a\nprovider: python\nscript: a.py\npython: '2.7'",
        ),
        (
            "requirements as a mapping",
            "name: a\nprovider: python\nscript: a.py\nrequirements: {numpy: 1}",
        ),
        (
            "a URL that is not http",
            "name: a\nprovider: curl\nurl: ftp://example.com/x\noutput: x",
        ),
        (
            "a URL with a space",
            "name: a\nprovider: curl\nurl: 'https://example.com/a b'\noutput: x",
        ),
        (
            "a curl workflow without output",
            "name: a\nprovider: curl\nurl: https://example.com/x",
        ),
        (
            "depends_on, misspelt, with a custom provider",
            "name: a\nprovider: my-provider\ndepends_on: [b]",
        ),
        (
            "a repository that is a number",
            "name: a\nprovider: {repo: 3, name: p}",
        ),
        (
            "a repository with a space",
            "name: a\nprovider: {repo: 'https://example.com/a b', name: p}",
        ),
    ] {
        assert_refused(what, &one(body));
    }
}

/// A value that the schema accepts and the loader refuses, because JSON Schema cannot tell
/// (see the module documentation of `dstack_core::schema`).
fn known_gap(slot: &str, value: &str) -> bool {
    let whole_number = [
        "retries",
        "ports",
        "port",
        "cpu",
        "gpu",
        "v100/gpu",
        "gpu count",
    ];
    let timeout = ["timeout", "custom timeout"];
    let python = ["python", "version"];
    let path = ["working_dir", "artifact", "artifact path", "output"];
    let node = parse_str(value, Path::new("v.yaml")).ok().flatten();
    let scalar = node.as_ref().and_then(|n| n.as_scalar());
    // What JSON Schema sees: `.inf` is a string to JSON.
    let is_string = node.as_ref().is_some_and(|n| n.to_json().is_string());
    let is_float = scalar.is_some_and(|s| matches!(s.value, ScalarValue::Float(_)));
    let integral =
        scalar.is_some_and(|s| matches!(s.value, ScalarValue::Float(f) if f.fract() == 0.0));
    // `2.0` is the integer 2 to JSON Schema; the loader refuses a float.
    (integral && (whole_number.contains(&slot) || timeout.contains(&slot)))
        // JSON keeps the value of a number, not its text (`3.` is 3.0).
        || (is_float && python.contains(&slot))
        // The words of a duration are humantime's.
        || (is_string && timeout.contains(&slot))
        // Paths that leave the working directory, or are it where a folder inside is needed.
        || (path.contains(&slot) && matches!(value, "../up" | "."))
}

/// For each key and many values, the schema and the loader agree, but where JSON Schema
/// cannot tell (`known_gap`), and there the schema accepts what the loader refuses, never the
/// reverse.
#[test]
fn schema_and_loader_agree_on_values() {
    const DOCKER: &str = "name: a\nprovider: docker\nimage: ubuntu\n";
    const PYTHON: &str = "name: a\nprovider: python\nscript: train.py\n";
    // Each key, in a workflow of its provider; `VALUE` is replaced by each value.
    let slots: [(&str, &str, &str); 37] = [
        ("name", "", "name: VALUE\nprovider: docker\nimage: ubuntu"),
        ("help", DOCKER, "help: VALUE"),
        ("timeout", DOCKER, "timeout: VALUE"),
        ("retries", DOCKER, "retries: VALUE"),
        ("image", "", "name: a\nprovider: docker\nimage: VALUE"),
        ("commands", DOCKER, "commands: VALUE"),
        ("command", DOCKER, "commands: [VALUE]"),
        ("working_dir", DOCKER, "working_dir: VALUE"),
        ("ports", DOCKER, "ports: VALUE"),
        ("port", DOCKER, "ports: [VALUE]"),
        ("environment", DOCKER, "environment: VALUE"),
        ("environment value", DOCKER, "environment: {A: VALUE}"),
        ("environment entry", DOCKER, "environment: [VALUE]"),
        ("artifacts", DOCKER, "artifacts: VALUE"),
        ("artifact", DOCKER, "artifacts: [VALUE]"),
        ("artifact path", DOCKER, "artifacts: [{path: VALUE}]"),
        ("resources", DOCKER, "resources: VALUE"),
        ("cpu", DOCKER, "resources: {cpu: VALUE}"),
        ("memory", DOCKER, "resources: {memory: VALUE}"),
        ("shm_size", DOCKER, "resources: {shm_size: VALUE}"),
        ("gpu", DOCKER, "resources: {gpu: VALUE}"),
        ("v100/gpu", DOCKER, "resources: {v100/gpu: VALUE}"),
        ("interruptible", DOCKER, "resources: {interruptible: VALUE}"),
        ("gpu count", DOCKER, "resources: {gpu: {count: VALUE}}"),
        ("gpu name", DOCKER, "resources: {gpu: {name: VALUE}}"),
        ("gpu memory", DOCKER, "resources: {gpu: {memory: VALUE}}"),
        ("script", "", "name: a\nprovider: python\nscript: VALUE"),
        (
            "python_script",
            "",
            "name: a\nprovider: python\npython_script: VALUE",
        ),
        ("requirements", PYTHON, "requirements: VALUE"),
        ("requirement", PYTHON, "requirements: [VALUE]"),
        ("python", PYTHON, "python: VALUE"),
        ("version", PYTHON, "version: VALUE"),
        ("python environment", PYTHON, "environment: VALUE"),
        ("python resources", PYTHON, "resources: VALUE"),
        (
            "url",
            "",
            "name: a\nprovider: curl\nurl: VALUE\noutput: out",
        ),
        (
            "output",
            "",
            "name: a\nprovider: curl\nurl: https://example.com/x\noutput: VALUE",
        ),
        (
            "custom timeout",
            "",
            "name: a\nprovider: my-provider\ntimeout: VALUE",
        ),
    ];
    let values = [
        "x",
        "'x'",
        "3",
        "'3'",
        "-3",
        "0",
        "'0'",
        "1",
        "2.0",
        "1.5",
        "3.10",
        "3.11.4",
        "'3.11'",
        "true",
        "~",
        "''",
        "' '",
        "[a]",
        "[]",
        "[a, ~]",
        "[a, [b]]",
        "{a: 1}",
        "{}",
        "8080",
        "'8080'",
        "' +08080 '",
        "70000",
        "'70000'",
        "4294967295",
        "4294967296",
        "'4294967295'",
        "-1",
        "'-0'",
        "0x10",
        ".inf",
        "30m",
        "'1h 30m'",
        "'90'",
        "32GB",
        "'.5GB'",
        "5. GiB",
        "0GB",
        "'0.0 KiB'",
        "512",
        "3.",
        "3..1",
        "'3.x'",
        "/abs",
        "'C:/x'",
        "../up",
        ".",
        "data/out",
        "http://example.com/x",
        "'https://example.com/a b'",
        "ftp://x",
        "A=1",
        "[A=1]",
        "{A: 1}",
        "{'1A': x}",
        "[8080, '9000']",
        "{path: out}",
        "{path: out, x: 1}",
        "{count: 2, name: A100, memory: 40GB}",
        "{count: '2'}",
        "{cnt: 2}",
    ];
    let mut disagreements = Vec::new();
    for (slot, prefix, template) in slots {
        for value in values {
            let yaml = one(&format!("{prefix}{}", template.replace("VALUE", value)));
            let schema = check(&yaml);
            let loader = load(&yaml);
            if schema.is_ok() == loader.is_ok() {
                continue;
            }
            if schema.is_ok() && known_gap(slot, value) {
                continue;
            }
            disagreements.push(format!(
                "{slot}: {value}: schema {schema:?}, loader {loader:?}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
