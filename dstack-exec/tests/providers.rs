//! Provider programs on real processes and real Git repositories: `.dstack/providers.yaml` of
//! the project, and `provider: {repo: URL, name: NAME}` fetched from local repositories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dstack_core::{Overrides, Project, ProviderRegistry};
use dstack_exec::providers::{ProcessRunner, registry};

/// A provider program (Python, as real ones are) that makes one job per `stages` entry,
/// chained, echoing the `message` parameter and the `epochs` variable.
const PROGRAM: &str = r#"
import json, os
w = json.load(open(os.environ["DSTACK_WORKFLOW_FILE"]))
stages = w["params"].get("stages", ["only"])
jobs = []
for i, s in enumerate(stages):
    job = {"id": s, "commands": ["echo %s %s %s" % (s, w["params"]["message"], w["variables"].get("epochs"))],
           "env": {"PROVIDER": os.environ["DSTACK_PROVIDER"], "WORKFLOW": os.environ["DSTACK_WORKFLOW"]},
           "resources": {"cpu": 2, "memory": "1GB"}}
    if i > 0:
        job["depends_on"] = [stages[i - 1]]
    jobs.append(job)
print(json.dumps({"jobs": jobs}))
"#;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git starts");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A project in `dir/project` whose workflows file is `workflows`.
fn project(dir: &Path, workflows: &str, providers: Option<&str>) -> PathBuf {
    let root = dir.join("project");
    write(&root.join(".dstack/workflows.yaml"), workflows);
    write(
        &root.join(".dstack/variables.yaml"),
        "variables:\n  pipeline:\n    epochs: 3\n",
    );
    if let Some(p) = providers {
        write(&root.join(".dstack/providers.yaml"), p);
    }
    write(&root.join("providers/make.py"), PROGRAM);
    root
}

/// Loads with programs run on the host (the tests of containers below say so explicitly).
fn load(root: &Path) -> Project {
    let mut registry = ProviderRegistry::default();
    registry.set_program_runner(Arc::new(
        ProcessRunner::new(root.join(".dstack/state/providers"), root).on_host(),
    ));
    Project::load_with(root, registry).expect("loads")
}

/// Loads as the CLI does: programs in their image when a Docker engine answers.
fn load_auto(root: &Path) -> Project {
    Project::load_with(root, registry(root, &root.join(".dstack/state"))).expect("loads")
}

fn plan_error(root: &Path, workflow: &str) -> String {
    load(root)
        .plan(workflow, &Overrides::new())
        .expect_err("planning fails")
        .to_string()
}

const LOCAL: &str = "providers:\n  - name: staged\n    image: python:3.11\n    commands:\n      - python3 providers/make.py\n";

#[test]
fn a_project_provider_program_makes_the_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = project(
        dir.path(),
        "workflows:\n  - name: prep\n    provider: docker\n    image: busybox\n    commands: [echo prep]\n  - name: pipeline\n    provider: staged\n    depends-on: [prep]\n    message: hello ${{ epochs }}\n    stages: [fetch, train]\n",
        Some(LOCAL),
    );
    let plan = load(&root)
        .plan(
            "pipeline",
            &Overrides::from_args(&["--epochs", "7"]).expect("args"),
        )
        .expect("plans");
    let ids: Vec<&str> = plan.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["prep", "pipeline/fetch", "pipeline/train"]);
    let fetch = &plan.jobs[1];
    let train = &plan.jobs[2];
    assert_eq!(fetch.commands, ["echo fetch hello 7 7"]);
    assert_eq!(fetch.depends_on, ["prep"], "the workflow's depends-on");
    assert_eq!(train.depends_on, ["pipeline/fetch"], "the program's own");
    assert_eq!(
        fetch.image.as_deref(),
        Some("python:3.11"),
        "the provider's image"
    );
    assert_eq!(fetch.provider, "staged");
    assert_eq!(fetch.env["PROVIDER"], "staged");
    assert_eq!(fetch.env["WORKFLOW"], "pipeline");
    assert_eq!(fetch.env["EPOCHS"], "7", "variables reach the environment");
    assert_eq!(fetch.resources.cpu, Some(2));
    assert_eq!(fetch.resources.memory_bytes, Some(1_000_000_000));
    assert_eq!(plan.stages.len(), 3);
    // No input file is left behind.
    let inputs = root.join(".dstack/state/providers/inputs");
    assert_eq!(std::fs::read_dir(inputs).expect("inputs").count(), 0);
    // `validate` does not run programs: one that would fail (and leave a mark) is not run.
    write(
        &root.join(".dstack/providers.yaml"),
        &format!(
            "providers:\n  - name: staged\n    image: x\n    commands: [\"touch {}\", \"exit 1\"]\n",
            dir.path().join("ran").display()
        ),
    );
    let diags = load(&root).validate(&Overrides::new()).expect("valid");
    assert!(!diags.has_errors());
    assert!(!dir.path().join("ran").exists(), "validate ran the program");
}

#[test]
fn a_cycle_among_a_programs_jobs_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = "providers:
  - name: loop
    image: x
    commands: [\"echo '{\\\"jobs\\\": [{\\\"id\\\": \\\"a\\\", \\\"commands\\\": [\\\"x\\\"], \\\"depends_on\\\": [\\\"b\\\"]}, {\\\"id\\\": \\\"b\\\", \\\"commands\\\": [\\\"x\\\"], \\\"depends_on\\\": [\\\"a\\\"]}]}'\"]
";
    let root = project(
        dir.path(),
        "workflows:\n  - {name: w, provider: loop}\n",
        Some(providers),
    );
    let e = plan_error(&root, "w");
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn failing_garbage_and_invalid_programs_are_clear_errors_naming_the_provider() {
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = "providers:
  - name: crashes
    image: python:3.11
    commands: [\"echo starting >&2\", \"echo 'ValueError: no data' >&2\", \"exit 3\"]
  - name: garbage
    image: python:3.11
    commands: [\"echo this is not json\"]
  - name: invalid
    image: python:3.11
    commands: [\"echo '{\\\"jobs\\\": [{\\\"id\\\": \\\"a\\\", \\\"commands\\\": [\\\"x\\\"], \\\"depends_on\\\": [\\\"b\\\"]}]}'\"]
  - name: missing
    image: python:3.11
    commands: [\"no-such-program-anywhere\"]
";
    let root = project(
        dir.path(),
        "workflows:\n  - {name: a, provider: crashes}\n  - {name: b, provider: garbage}\n  - {name: c, provider: invalid}\n  - {name: d, provider: missing}\n",
        Some(providers),
    );
    let e = plan_error(&root, "a");
    assert!(e.contains("provider `crashes` (from `.dstack/providers.yaml`) failed for workflow `a`: its program exited with code 3"), "{e}");
    assert!(e.contains("ValueError: no data"), "stderr is shown: {e}");
    assert!(e.contains(".dstack/workflows.yaml:2:"), "located: {e}");
    let e = plan_error(&root, "b");
    assert!(e.contains("provider `garbage`"), "{e}");
    assert!(e.contains("this is not json"), "{e}");
    let e = plan_error(&root, "c");
    assert!(e.contains("made invalid jobs"), "{e}");
    assert!(e.contains("depends on `b`, which it did not make"), "{e}");
    let e = plan_error(&root, "d");
    assert!(e.contains("exited with code 127"), "{e}");
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn a_program_that_runs_too_long_is_killed_with_everything_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("marker");
    let providers = format!(
        "providers:\n  - name: slow\n    image: x\n    commands: [\"(sleep 3001; touch {m}) &\", \"sleep 3002\"]\n",
        m = marker.display()
    );
    let root = project(
        dir.path(),
        "workflows:\n  - {name: a, provider: slow}\n",
        Some(&providers),
    );
    let mut registry = ProviderRegistry::default();
    registry.set_program_runner(Arc::new(
        ProcessRunner::new(dir.path().join("cache"), &root)
            .on_host()
            .with_timeout(Duration::from_millis(300)),
    ));
    let e = Project::load_with(&root, registry)
        .expect("loads")
        .plan("a", &Overrides::new())
        .expect_err("times out")
        .to_string();
    assert!(e.contains("its program ran longer than 300ms"), "{e}");
    // Nothing of it is left running.
    let left = Command::new("pgrep")
        .args(["-f", "sleep 300[12]"])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// A provider repository with `hello` defined, tagged `v1`, then a second commit on `main`
/// that renames its message, and a branch `dev`.
fn provider_repo(dir: &Path) -> (PathBuf, String, String) {
    let repo = dir.join("providers-repo");
    write(
        &repo.join(".dstack/providers.yaml"),
        "providers:\n  - name: hello\n    image: python:3.11\n    commands: [\"sh make.sh\"]\n",
    );
    write(
        &repo.join("make.sh"),
        "echo '{\"jobs\": [{\"commands\": [\"echo v1\"]}]}'\n",
    );
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "v1"]);
    git(&repo, &["tag", "v1"]);
    let v1 = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["branch", "dev"]);
    git(&repo, &["branch", "feature/x"]);
    write(
        &repo.join("make.sh"),
        "echo '{\"jobs\": [{\"commands\": [\"echo v2\"]}]}'\n",
    );
    git(&repo, &["commit", "-q", "-am", "v2"]);
    let v2 = git(&repo, &["rev-parse", "HEAD"]);
    (repo, v1, v2)
}

fn repo_workflow(dir: &Path, repo: &str, name: &str) -> PathBuf {
    project(
        dir,
        &format!(
            "workflows:\n  - name: w\n    provider:\n      repo: {repo}\n      name: {name}\n"
        ),
        None,
    )
}

fn commands(root: &Path) -> Vec<String> {
    load(root).plan("w", &Overrides::new()).expect("plans").jobs[0]
        .commands
        .clone()
}

#[test]
fn providers_come_from_other_repositories_at_a_branch_tag_or_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, v1, v2) = provider_repo(dir.path());
    let path = repo.display().to_string();
    let root = repo_workflow(dir.path(), &path, "hello");
    assert_eq!(commands(&root), ["echo v2"], "the default branch");
    let job = &load(&root)
        .plan("w", &Overrides::new())
        .expect("plans")
        .jobs[0];
    assert_eq!(job.image.as_deref(), Some("python:3.11"));
    assert_eq!(job.provider, "hello");

    for (reference, expected) in [
        ("v1".to_owned(), "echo v1"),
        ("dev".to_owned(), "echo v1"),
        ("feature/x".to_owned(), "echo v1"),
        ("main".to_owned(), "echo v2"),
        (v1.clone(), "echo v1"),
        (v1[..10].to_owned(), "echo v1"),
        (v2.clone(), "echo v2"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = repo_workflow(dir.path(), &format!("{path}@{reference}"), "hello");
        assert_eq!(commands(&root), [expected], "@{reference}");
    }

    // file:// URLs work too.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let root2 = repo_workflow(dir2.path(), &format!("file://{path}@v1"), "hello");
    assert_eq!(commands(&root2), ["echo v1"]);

    // A pinned commit in the cache needs the repository no more.
    let pinned = repo_workflow(&dir.path().join("pinned"), &format!("{path}@{v1}"), "hello");
    assert_eq!(commands(&pinned), ["echo v1"]);
    std::fs::rename(&repo, dir.path().join("moved")).expect("move the repository away");
    assert_eq!(commands(&pinned), ["echo v1"], "served from the cache");
    let e = plan_error(&root, "w");
    assert!(e.contains("cannot get provider `hello`"), "{e}");
    assert!(e.contains(&path), "{e}");
}

#[test]
fn bad_provider_repositories_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, _, _) = provider_repo(dir.path());
    let path = repo.display().to_string();

    let root = repo_workflow(&dir.path().join("a"), &path, "helo");
    let e = plan_error(&root, "w");
    assert!(e.contains("has no provider `helo`"), "{e}");
    assert!(e.contains("did you mean `hello`"), "{e}");

    let root = repo_workflow(&dir.path().join("b"), &format!("{path}@v9"), "hello");
    let e = plan_error(&root, "w");
    assert!(e.contains("`v9` is no branch, tag or commit"), "{e}");
    assert!(
        e.contains("its branches and tags: dev, feature/x, main, v1"),
        "{e}"
    );

    let root = repo_workflow(&dir.path().join("c"), "/nonexistent/repository", "hello");
    let e = plan_error(&root, "w");
    assert!(
        e.contains(
            "cannot get provider `hello` of workflow `w` from repository `/nonexistent/repository`"
        ),
        "{e}"
    );

    let bare = dir.path().join("no-providers");
    write(&bare.join("README"), "nothing here\n");
    git(&bare, &["init", "-q"]);
    git(&bare, &["add", "-A"]);
    git(&bare, &["commit", "-q", "-m", "x"]);
    let root = repo_workflow(&dir.path().join("d"), &bare.display().to_string(), "hello");
    let e = plan_error(&root, "w");
    assert!(e.contains("has no `.dstack/providers.yaml`"), "{e}");

    let broken = dir.path().join("broken-providers");
    write(
        &broken.join(".dstack/providers.yaml"),
        "providers:\n  - name: x\n    imagee: y\n",
    );
    git(&broken, &["init", "-q"]);
    git(&broken, &["add", "-A"]);
    git(&broken, &["commit", "-q", "-m", "x"]);
    let root = repo_workflow(&dir.path().join("e"), &broken.display().to_string(), "x");
    let e = plan_error(&root, "w");
    assert!(e.contains("has problems"), "{e}");
    assert!(e.contains("imagee"), "{e}");

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(corrupt.join(".git")).expect("mkdir");
    write(&corrupt.join(".git/HEAD"), "garbage\n");
    let root = repo_workflow(&dir.path().join("f"), &corrupt.display().to_string(), "x");
    let e = plan_error(&root, "w");
    assert!(e.contains("cannot get provider `x`"), "{e}");

    let root = repo_workflow(&dir.path().join("g"), "git@example.invalid:org/repo", "x");
    let e = plan_error(&root, "w");
    assert!(e.contains("https://, file:// or from a local path"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// In their image, on the real engine of `scripts/setup-docker.sh`
// ---------------------------------------------------------------------------------------------

const BUSYBOX: &str = "dstack-busybox:test";

fn engine() -> Arc<dyn dstack_core::run::Executor> {
    dstack_exec::docker::select(&dstack_exec::docker::DockerConfig::default())
        .unwrap_or_else(|e| {
            panic!(
                "these tests need a Docker engine with the test images: run `bash scripts/setup-docker.sh` ({})",
                e.message
            )
        })
        .executor
}

fn load_in_containers(root: &Path) -> Project {
    let mut registry = ProviderRegistry::default();
    registry.set_program_runner(Arc::new(
        ProcessRunner::new(root.join(".dstack/state/providers"), root).in_containers(engine()),
    ));
    Project::load_with(root, registry).expect("loads")
}

#[test]
fn a_program_runs_in_its_image_with_its_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = format!(
        "providers:\n  - name: boxed\n    image: {BUSYBOX}\n    commands: [sh providers/boxed.sh]\n"
    );
    let root = project(
        dir.path(),
        "workflows:\n  - {name: w, provider: boxed, message: hi from the host}\n",
        Some(&providers),
    );
    write(
        &root.join("providers/boxed.sh"),
        r#"set -e
test -f /.dockerenv
test "$DSTACK_WORKFLOW_FILE" = /workflow/.dstack-provider-input.json
grep -q '"message": "hi from the host"' "$DSTACK_WORKFLOW_FILE"
test -f providers/make.py
echo "{\"jobs\": [{\"commands\": [\"echo $DSTACK_PROVIDER $DSTACK_WORKFLOW\"]}]}"
"#,
    );
    for project in [load_in_containers(&root), load_auto(&root)] {
        let plan = project.plan("w", &Overrides::new()).expect("plans");
        assert_eq!(plan.jobs[0].commands, ["echo boxed w"]);
        assert_eq!(plan.jobs[0].image.as_deref(), Some(BUSYBOX));
    }
    // The throwaway copy is gone; the project was only read.
    let work = root.join(".dstack/state/providers/work");
    assert_eq!(std::fs::read_dir(work).map_or(0, Iterator::count), 0);
    assert!(!root.join(".dstack-provider-input.json").exists());
}

#[test]
fn a_failing_program_or_a_missing_image_in_a_container_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = format!(
        "providers:
  - name: crashes
    image: {BUSYBOX}
    commands: [\"echo 'no stages in the container' >&2\", \"exit 3\"]
  - name: imageless
    image: dstack-no-such-image:never
    commands: [\"echo hi\"]
"
    );
    let root = project(
        dir.path(),
        "workflows:\n  - {name: a, provider: crashes}\n  - {name: b, provider: imageless}\n",
        Some(&providers),
    );
    let project = load_in_containers(&root);
    let e = project
        .plan("a", &Overrides::new())
        .expect_err("fails")
        .to_string();
    assert!(
        e.contains("its program exited with code 3 (in image `dstack-busybox:test`)"),
        "{e}"
    );
    assert!(e.contains("no stages in the container"), "{e}");
    let e = project
        .plan("b", &Overrides::new())
        .expect_err("fails")
        .to_string();
    assert!(e.contains("its image cannot be used"), "{e}");
    assert!(e.contains("dstack-no-such-image:never"), "{e}");
}
