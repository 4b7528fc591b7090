//! The Rust API as an embedding program uses it: loading from disk, providers registered in
//! code, overrides, tags, and the diagnostics' structure.

use std::sync::Arc;

use dstack_core::{
    Code, Error, JobSpec, Overrides, Params, Project, Provider, ProviderRegistry, Scalar, Sources,
};

fn sources(workflows: &str, variables: Option<&str>) -> Sources {
    Sources {
        workflows: Some(workflows.to_owned()),
        variables: variables.map(str::to_owned),
        providers: None,
    }
}

fn codes(e: &Error) -> Vec<Code> {
    e.diagnostics()
        .map(|d| d.as_slice().iter().map(|d| d.code).collect())
        .unwrap_or_default()
}

/// A provider that splits a workflow into `shards` jobs plus a final merge job.
#[derive(Debug)]
struct Sharded;

impl Provider for Sharded {
    fn name(&self) -> &str {
        "sharded"
    }

    fn jobs(&self, params: &mut Params<'_>) -> Vec<JobSpec> {
        let shards = params.integer("shards", 1, 64).unwrap_or(1);
        let image = params.required_string("image", "ubuntu");
        let mut jobs: Vec<JobSpec> = (0..shards)
            .map(|i| JobSpec {
                id: format!("shard-{i}"),
                image: image.clone(),
                commands: vec![format!("process --shard {i}")],
                ..JobSpec::default()
            })
            .collect();
        jobs.push(JobSpec {
            id: "merge".into(),
            image,
            commands: vec!["merge".into()],
            depends_on: (0..shards).map(|i| format!("shard-{i}")).collect(),
            ..JobSpec::default()
        });
        jobs
    }
}

#[test]
fn providers_registered_in_code_make_several_jobs() {
    let mut registry = ProviderRegistry::default();
    registry.register(Arc::new(Sharded));
    let src = sources(
        "workflows:
  - name: fetch
    provider: docker
    image: busybox
    commands: [true]
  - name: crunch
    provider: sharded
    shards: 2
    image: busybox
    depends-on: [fetch]
",
        None,
    );
    let project = Project::from_sources(".", &src, registry).expect("loads");
    let plan = project.plan("crunch", &Overrides::new()).expect("plans");
    let ids: Vec<&str> = plan.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        ["fetch", "crunch/shard-0", "crunch/shard-1", "crunch/merge"]
    );
    assert_eq!(
        plan.stages,
        [
            vec!["fetch"],
            vec!["crunch/shard-0", "crunch/shard-1"],
            vec!["crunch/merge"]
        ]
    );
    assert_eq!(plan.jobs[1].depends_on, ["fetch"]);
    assert_eq!(
        plan.jobs[3].depends_on,
        ["crunch/shard-0", "crunch/shard-1"]
    );
    assert!(
        plan.jobs
            .iter()
            .all(|j| j.provider != "sharded" || j.workflow == "crunch")
    );

    // Its parameters are validated like a built-in provider's.
    let bad = sources(
        "workflows:\n  - name: c\n    provider: sharded\n    shards: 100\n    imgae: x\n",
        None,
    );
    let mut registry = ProviderRegistry::default();
    registry.register(Arc::new(Sharded));
    let project = Project::from_sources(".", &bad, registry).expect("loads");
    let err = project
        .plan("c", &Overrides::new())
        .expect_err("bad parameters");
    let text = err.to_string();
    assert!(text.contains(".dstack/workflows.yaml:4:13: error: `shards` in workflow `c` must be between 1 and 64, found 100"), "{text}");
    assert!(text.contains(".dstack/workflows.yaml:5:5: error: unknown key `imgae` in workflow `c` (provider `sharded`)\n  help: did you mean `image`?"), "{text}");
    // The typo explains the missing `image`: one mistake, one error.
    assert!(!text.contains("is missing `image`"), "{text}");
    assert!(text.ends_with("2 errors found"), "{text}");
}

#[test]
fn overrides_reach_every_section_that_defines_the_variable() {
    let src = sources(
        "workflows:
  - name: prepare
    provider: docker
    image: busybox
    commands: ['echo ${{ seed }}']
  - name: train
    provider: docker
    image: busybox
    commands: ['echo ${{ seed }} ${{ epochs }}']
    depends-on: [prepare]
",
        Some(
            "variables:\n  global:\n    seed: 1\n  prepare:\n    seed: 2\n  train:\n    epochs: 10\n",
        ),
    );
    let project = Project::from_sources(".", &src, ProviderRegistry::default()).expect("loads");
    let plan = project.plan("train", &Overrides::new()).expect("plans");
    assert_eq!(
        plan.jobs[0].commands,
        ["echo 2"],
        "a workflow's own section wins over global"
    );
    assert_eq!(plan.jobs[1].commands, ["echo 1 10"]);

    let overrides = Overrides::new()
        .with("seed", Scalar::string("7"))
        .with("epochs", Scalar::new("3", dstack_core::yaml::Style::Plain));
    let plan = project.plan("train", &overrides).expect("plans");
    assert_eq!(plan.jobs[0].commands, ["echo 7"]);
    assert_eq!(plan.jobs[1].commands, ["echo 7 3"]);
    assert_eq!(plan.jobs[1].env["EPOCHS"], "3");

    let unknown = Overrides::new().with("lr", Scalar::string("0.1"));
    let err = project
        .plan("train", &unknown)
        .expect_err("unknown variable");
    assert_eq!(codes(&err), [Code::UnknownVariable]);
    let plan = project
        .plan("train", &unknown.allow_unknown(true))
        .expect("allowed");
    assert_eq!(plan.jobs[1].env["LR"], "0.1");
}

#[test]
fn whole_value_substitution_keeps_types() {
    let src = sources(
        "workflows:\n  - name: t\n    provider: python\n    script: t.py\n    resources:\n      gpu: ${{ n }}\n      memory: ${{ mem }}\n",
        Some("variables:\n  t:\n    n: 2\n    mem: 16GiB\n"),
    );
    let project = Project::from_sources(".", &src, ProviderRegistry::default()).expect("loads");
    let plan = project.plan("t", &Overrides::new()).expect("plans");
    let job = &plan.jobs[0];
    assert_eq!(job.resources.gpu_count(), 2);
    assert_eq!(job.resources.memory_bytes, Some(16 << 30));
    assert_eq!(job.image.as_deref(), Some("dstackai/python:3.10-cuda-11.1"));

    // From the command line, `--n two` is a string where a count is needed: a located error.
    let mut o = Overrides::new();
    o.set_text("n", "two");
    let err = project.plan("t", &o).expect_err("not a count");
    assert_eq!(
        err.to_string().lines().next(),
        Some(
            ".dstack/workflows.yaml:6:12: error: `resources.gpu` in workflow `t` must be a whole number, found `two`"
        )
    );
}

#[test]
fn tagged_dependencies_stay_references() {
    let src = sources(
        "workflows:\n  - name: prepare\n    provider: docker\n    image: x\n  - name: train\n    provider: docker\n    image: x\n    depends-on: [prepare:latest]\n",
        None,
    );
    let project = Project::from_sources(".", &src, ProviderRegistry::default()).expect("loads");
    let plan = project.plan("train", &Overrides::new()).expect("plans");
    assert_eq!(plan.jobs.len(), 1, "the tagged workflow is not planned");
    assert_eq!(plan.jobs[0].depends_on, ["prepare:latest"]);
    assert_eq!(plan.stages, [vec!["train"]]);
}

#[test]
fn custom_providers_validate_but_cannot_plan_yet() {
    let src = Sources {
        workflows: Some("workflows:\n  - name: t\n    provider: lint\n    anything: goes\n".into()),
        variables: None,
        providers: Some(
            "providers:\n  - name: lint\n    image: python:3.11\n    commands: [python lint.py]\n"
                .into(),
        ),
    };
    let project = Project::from_sources(".", &src, ProviderRegistry::default()).expect("loads");
    assert_eq!(project.custom_providers()[0].name, "lint");
    assert!(project.validate(&Overrides::new()).is_ok());
    let err = project
        .plan("t", &Overrides::new())
        .expect_err("cannot run provider programs");
    assert_eq!(codes(&err), [Code::Provider]);

    let shadow = Sources {
        workflows: Some("workflows: []\n".into()),
        variables: None,
        providers: Some(
            "providers:\n  - name: docker\n    image: x\n    commands: [x]\n  - name: p\n".into(),
        ),
    };
    let err = Project::from_sources(".", &shadow, ProviderRegistry::default())
        .expect_err("invalid providers");
    let text = err.to_string();
    assert!(text.contains(".dstack/providers.yaml:2:5: error: provider `docker` shadows the built-in provider of that name"), "{text}");
    assert!(text.contains("provider needs an `image`"), "{text}");
}

#[test]
fn load_reads_the_project_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Project::load(dir.path()).expect_err("no files");
    assert_eq!(codes(&err), [Code::MissingFile]);
    assert!(
        err.to_string().contains(
            &dir.path()
                .join(".dstack/workflows.yaml")
                .display()
                .to_string()
        )
    );

    std::fs::create_dir(dir.path().join(".dstack")).expect("mkdir");
    std::fs::write(dir.path().join(".dstack/workflows.yaml"), "workflows:\n  - name: a\n    provider: curl\n    url: http://127.0.0.1:1/x\n    output: out/x\n").expect("write");
    let project = Project::load(dir.path()).expect("loads");
    let plan = project.plan("a", &Overrides::new()).expect("plans");
    let download = plan.jobs[0].download.as_ref().expect("a download job");
    assert_eq!(
        (download.url.as_str(), download.output.as_str()),
        ("http://127.0.0.1:1/x", "out/x")
    );

    std::fs::write(
        dir.path().join(".dstack/variables.yaml"),
        [0xff, 0xfe, 0x00],
    )
    .expect("write");
    let err = Project::load(dir.path()).expect_err("not UTF-8");
    // A located problem of the file, at its first bad byte, like any other.
    let Error::Invalid(diags) = &err else {
        panic!("not a diagnostic: {err}");
    };
    let [d] = diags.0.as_slice() else {
        panic!("one problem: {err}");
    };
    assert!(d.message.contains("not valid UTF-8"), "{err}");
    let at = d.location.as_ref().expect("located");
    assert!(at.path.ends_with(".dstack/variables.yaml"), "{err}");
    assert_eq!((at.line, at.column), (1, 1));

    // A folder where the file should be cannot be read at all.
    std::fs::remove_file(dir.path().join(".dstack/variables.yaml")).expect("remove");
    std::fs::create_dir(dir.path().join(".dstack/variables.yaml")).expect("mkdir");
    let err = Project::load(dir.path()).expect_err("a folder");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn every_problem_is_reported_at_once_in_order() {
    let src = sources(
        "workflows:
  - name: a
    provider: dokcer
  - name: b
    provider: docker
    depends-on: [c, zz]
  - name: c
    provider: docker
    image: x
    depends-on: [b]
  - name: a
    provider: docker
",
        Some("variables:\n  bb:\n    x: 1\n"),
    );
    let err = Project::from_sources(".", &src, ProviderRegistry::default()).expect_err("invalid");
    let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            ".dstack/variables.yaml:2:3: warning: variables section `bb` matches no workflow",
            "  help: did you mean `b`?",
            ".dstack/workflows.yaml:3:15: error: unknown provider `dokcer` in workflow `a`",
            "  help: did you mean `docker`?",
            ".dstack/workflows.yaml:4:5: error: workflow `b` is missing `image`, which the `docker` provider requires",
            "  help: add it, e.g. `image: ubuntu`",
            ".dstack/workflows.yaml:6:18: error: dependency cycle: b -> c -> b",
            "  help: remove one of these `depends-on` entries to break the cycle",
            ".dstack/workflows.yaml:6:21: error: workflow `b` depends on `zz`, which is not defined",
            ".dstack/workflows.yaml:11:5: error: workflow `a` is defined twice",
            "  help: the first definition is at line 2; rename or remove one",
            // The duplicate's own problems are reported too.
            ".dstack/workflows.yaml:11:5: error: workflow `a` is missing `image`, which the `docker` provider requires",
            "  help: add it, e.g. `image: ubuntu`",
            "6 errors found",
        ]
    );
}
