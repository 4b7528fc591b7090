//! The JSON Schema of `dstack schema` accepts every example of the documentation, and rejects
//! what the loader rejects structurally.

use std::path::Path;

use dstack_core::schema::workflows_schema;
use dstack_core::yaml::parse_str;

fn check(yaml: &str) -> Result<(), String> {
    let schema = workflows_schema();
    let validator = jsonschema::validator_for(&schema).map_err(|e| format!("bad schema: {e}"))?;
    let node = parse_str(yaml, Path::new("w.yaml"))
        .map_err(|d| d.to_string())?
        .ok_or("empty")?;
    let instance = node.to_json();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
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
    assert_eq!(check(yaml), Ok(()));
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
        assert!(check(yaml).is_err(), "{what} should not validate");
    }
}
