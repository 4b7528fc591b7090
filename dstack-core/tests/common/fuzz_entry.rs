//! The one fuzzing entry point of dstack-core, shared by the `cargo fuzz` target
//! (`fuzz/fuzz_targets/parse_plan.rs`) and the corpus replay test (`tests/fuzz_corpus.rs`);
//! both include this file with `#[path]`, so a crash found by the fuzzer replays exactly.
//!
//! # Input format
//!
//! The bytes are read as UTF-8 (invalid sequences become U+FFFD) and cut into up to four parts
//! at lines that are exactly `%%%%` (a trailing `\r` is allowed):
//!
//! ```text
//! workflows.yaml
//! %%%%
//! variables.yaml          (absent when there is no separator)
//! %%%%
//! override words          (`--name value` / `--name=value`, split on whitespace;
//!                          a leading `!` also sets `allow_unknown(true)`)
//! %%%%
//! providers.yaml          (absent when there is no third separator)
//! ```
//!
//! Further `%%%%` lines belong to the providers text.
//!
//! # What is checked
//!
//! Loading, `validate` and `plan` of every workflow, and every renderer of every plan, must not
//! panic. Every failure must be an [`Error::Invalid`] holding at least one error, and every
//! diagnostic must have a non-empty message. Every plan must be a consistent DAG: unique job
//! ids, stages covering each job exactly once, each dependency either a job of an earlier stage
//! or a `workflow:tag` reference, and JSON that parses back with the contract's fields. When
//! `validate` accepts the project, planning may only fail because a provider program cannot
//! run here ([`Code::Provider`]).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use dstack_core::{Code, Diagnostics, Error, Overrides, Plan, Project, ProviderRegistry, Sources};

/// The line that separates the parts of an input.
pub const SEPARATOR: &str = "%%%%";

/// An input cut into its parts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// The text of `workflows.yaml`.
    pub workflows: String,
    /// The text of `variables.yaml`, when the input has a first separator.
    pub variables: Option<String>,
    /// The override words, when the input has a second separator.
    pub overrides: Option<String>,
    /// The text of `providers.yaml`, when the input has a third separator.
    pub providers: Option<String>,
}

/// Cuts `data` into its parts at `%%%%` lines.
#[must_use]
pub fn split(data: &[u8]) -> Parts {
    let text = String::from_utf8_lossy(data);
    let mut parts: Vec<String> = vec![String::new()];
    for line in text.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        let bare = bare.strip_suffix('\r').unwrap_or(bare);
        if bare == SEPARATOR && parts.len() < 4 {
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push_str(line);
        }
    }
    let mut parts = parts.into_iter();
    Parts {
        workflows: parts.next().unwrap_or_default(),
        variables: parts.next(),
        overrides: parts.next(),
        providers: parts.next(),
    }
}

/// What one input did, for statistics and for tests that want to know more than "no panic".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the project loaded.
    pub loaded: bool,
    /// Whether the override words parsed.
    pub overrides_parsed: bool,
    /// Whether `validate` accepted the project.
    pub validated: bool,
    /// How many workflows were planned successfully.
    pub plans: usize,
    /// How many plans failed.
    pub failed_plans: usize,
}

/// Runs one input through load, validate, plan and every renderer, checking the invariants
/// listed in the module documentation; a broken invariant panics.
pub fn run(data: &[u8]) -> Outcome {
    let parts = split(data);
    let mut outcome = Outcome::default();

    let (overrides_text, allow_unknown) = match parts.overrides.as_deref() {
        Some(t) => match t.trim_start().strip_prefix('!') {
            Some(rest) => (rest, true),
            None => (t, false),
        },
        None => ("", false),
    };
    let words: Vec<&str> = overrides_text.split_whitespace().collect();
    let overrides = match Overrides::from_args(&words) {
        Ok(o) => {
            outcome.overrides_parsed = true;
            o
        }
        Err(d) => {
            assert!(d.is_error(), "a refused override is a warning: {d:?}");
            check_diagnostics(&Diagnostics(vec![d]), "Overrides::from_args");
            Overrides::new()
        }
    }
    .allow_unknown(allow_unknown);

    // The fast YAML front end, whenever it takes a document, reads it as saphyr-parser does.
    for text in [
        Some(&parts.workflows),
        parts.variables.as_ref(),
        parts.providers.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let Err(e) = dstack_core::yaml::compare_front_ends(text) {
            panic!("the YAML front ends disagree: {e}");
        }
    }

    let sources = Sources {
        workflows: Some(parts.workflows),
        variables: parts.variables,
        providers: parts.providers,
    };
    let project = match Project::from_sources(".", &sources, ProviderRegistry::default()) {
        Ok(p) => p,
        Err(e) => {
            check_error(&e, "Project::from_sources");
            return outcome;
        }
    };
    outcome.loaded = true;
    check_diagnostics(project.warnings(), "Project::warnings");
    assert!(
        !project.warnings().has_errors(),
        "a loaded project has errors among its warnings"
    );

    match project.validate(&overrides) {
        Ok(warnings) => {
            outcome.validated = true;
            check_diagnostics(&warnings, "Project::validate");
            assert!(
                !warnings.has_errors(),
                "validate returned errors as warnings"
            );
        }
        Err(e) => check_error(&e, "Project::validate"),
    }

    let names: Vec<String> = project.workflows().iter().map(|w| w.name.clone()).collect();
    for name in &names {
        match project.plan(name, &overrides) {
            Ok(plan) => {
                outcome.plans += 1;
                check_plan(&plan, name);
            }
            Err(e) => {
                outcome.failed_plans += 1;
                check_error(&e, "Project::plan");
                if outcome.validated {
                    let d = e
                        .diagnostics()
                        .map(Diagnostics::as_slice)
                        .unwrap_or_default();
                    assert!(
                        d.iter()
                            .filter(|d| d.is_error())
                            .all(|d| d.code == Code::Provider),
                        "validate accepted the project but planning `{name}` failed: {e}"
                    );
                }
            }
        }
    }
    // A workflow that does not exist is an error, never a panic.
    match project.plan("no-such-workflow-\u{1F980}", &overrides) {
        Ok(plan) => panic!("planned a workflow that does not exist: {plan:?}"),
        Err(e) => check_error(&e, "Project::plan (unknown workflow)"),
    }
    outcome
}

/// Checks that `e` is an [`Error::Invalid`] with at least one error, every message non-empty.
pub fn check_error(e: &Error, during: &str) {
    let Error::Invalid(diags) = e else {
        panic!("{during} failed with something other than Error::Invalid: {e:?}");
    };
    assert!(
        diags.has_errors(),
        "{during} failed without an error diagnostic: {diags:?}"
    );
    check_diagnostics(diags, during);
}

/// Checks that every diagnostic has a non-empty message and renders.
pub fn check_diagnostics(diags: &Diagnostics, during: &str) {
    for d in diags.as_slice() {
        assert!(
            !d.message.trim().is_empty(),
            "{during}: a diagnostic has an empty message: {d:?}"
        );
        assert!(!d.to_string().is_empty());
    }
    let _ = diags.to_string();
}

/// Checks the structure of a plan and renders it in every format.
pub fn check_plan(plan: &Plan, name: &str) {
    assert_eq!(plan.workflow, name, "the plan is for another workflow");
    check_diagnostics(&plan.warnings, "Plan::warnings");

    let mut stage_of: HashMap<&str, usize> = HashMap::new();
    for (n, stage) in plan.stages.iter().enumerate() {
        assert!(!stage.is_empty(), "stage {n} of `{name}` is empty");
        for id in stage {
            let previous = stage_of.insert(id.as_str(), n);
            assert!(
                previous.is_none(),
                "job `{id}` is in two stages of `{name}`"
            );
        }
    }
    let mut ids = HashSet::new();
    for job in &plan.jobs {
        assert!(
            ids.insert(job.id.as_str()),
            "two jobs are called `{}`",
            job.id
        );
        assert!(!job.id.is_empty(), "a job of `{name}` has an empty id");
        let Some(&stage) = stage_of.get(job.id.as_str()) else {
            panic!("job `{}` of `{name}` is in no stage", job.id);
        };
        for dep in &job.depends_on {
            match stage_of.get(dep.as_str()) {
                Some(&s) => assert!(
                    s < stage,
                    "job `{}` (stage {stage}) depends on `{dep}` (stage {s})",
                    job.id
                ),
                None => assert!(
                    dep.contains(':'),
                    "job `{}` depends on `{dep}`, which is neither a job of the plan nor a tagged run",
                    job.id
                ),
            }
        }
    }
    assert_eq!(
        stage_of.len(),
        plan.jobs.len(),
        "the stages of `{name}` name jobs that the plan does not hold"
    );
    // Jobs come in a topological order too.
    let mut seen = HashSet::new();
    for job in &plan.jobs {
        for dep in &job.depends_on {
            assert!(
                !stage_of.contains_key(dep.as_str()) || seen.contains(dep.as_str()),
                "job `{}` comes before its dependency `{dep}`",
                job.id
            );
        }
        seen.insert(job.id.as_str());
    }

    let json = plan.to_json();
    let mut written = Vec::new();
    plan.write_json(&mut written)
        .expect("a Vec takes everything");
    assert_eq!(
        written,
        format!("{json}\n").into_bytes(),
        "`write_json` and `to_json` differ for `{name}`"
    );
    let value: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => panic!("the JSON of `{name}` does not parse ({e}): {json}"),
    };
    check_json_contract(&value);
    assert!(!plan.to_dot().is_empty());
    assert!(!plan.to_mermaid().is_empty());
    assert!(!plan.to_string().is_empty());
}

/// Checks that a plan's JSON has the fields of the CLI contract, with their types.
pub fn check_json_contract(value: &serde_json::Value) {
    assert!(value["workflow"].is_string(), "no `workflow`: {value}");
    assert!(value["stages"].is_array(), "no `stages`: {value}");
    for stage in value["stages"].as_array().into_iter().flatten() {
        assert!(
            stage
                .as_array()
                .is_some_and(|s| s.iter().all(serde_json::Value::is_string)),
            "a stage is not a list of ids: {stage}"
        );
    }
    let Some(jobs) = value["jobs"].as_array() else {
        panic!("no `jobs`: {value}");
    };
    for job in jobs {
        for key in ["id", "workflow", "provider", "working_dir"] {
            assert!(job[key].is_string(), "job without a string `{key}`: {job}");
        }
        assert!(
            job["image"].is_string() || job["image"].is_null(),
            "job `image` is neither a string nor null: {job}"
        );
        assert!(job.get("image").is_some(), "job without `image`: {job}");
        for key in ["commands", "artifacts", "depends_on"] {
            assert!(
                job[key]
                    .as_array()
                    .is_some_and(|a| a.iter().all(serde_json::Value::is_string)),
                "job `{key}` is not a list of strings: {job}"
            );
        }
        assert!(
            job["ports"]
                .as_array()
                .is_some_and(|a| a.iter().all(serde_json::Value::is_u64)),
            "job `ports` is not a list of numbers: {job}"
        );
        assert!(
            job["env"]
                .as_object()
                .is_some_and(|m| m.values().all(serde_json::Value::is_string)),
            "job `env` is not a mapping of strings: {job}"
        );
        let Some(resources) = job["resources"].as_object() else {
            panic!("job without `resources`: {job}");
        };
        for key in ["cpu", "memory_bytes", "gpu"] {
            assert!(
                resources.contains_key(key),
                "job resources without `{key}`: {job}"
            );
        }
        assert!(resources["cpu"].is_u64() || resources["cpu"].is_null());
        assert!(resources["memory_bytes"].is_u64() || resources["memory_bytes"].is_null());
        assert!(resources["gpu"].is_object() || resources["gpu"].is_null());
    }
}
