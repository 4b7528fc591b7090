//! Replays the seed corpus of the `parse_plan` fuzz target (`fuzz/corpus/parse_plan/`, and the
//! minimised crashes added to it) through the same entry point as the fuzzer, so that every
//! input the fuzzer ever found interesting stays a regression test of the normal suite.

#[path = "common/fuzz_entry.rs"]
mod fuzz_entry;

use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_plan")
}

fn corpus() -> Vec<PathBuf> {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs one corpus file; `Err` with the panic's message when it panicked.
fn replay(path: &Path) -> Result<fuzz_entry::Outcome, String> {
    let data =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    std::panic::catch_unwind(|| fuzz_entry::run(&data)).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        format!("{}: {message}", path.display())
    })
}

#[test]
fn every_corpus_file_is_refused_or_planned_without_panicking() {
    let files = corpus();
    assert!(
        files.len() >= 30,
        "the seed corpus has only {} files",
        files.len()
    );
    let mut failures = Vec::new();
    let mut loaded = 0;
    let mut plans = 0;
    for path in &files {
        match replay(path) {
            Ok(o) => {
                loaded += usize::from(o.loaded);
                plans += o.plans;
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "corpus files that panicked: {failures:#?}"
    );
    // The corpus is not only garbage: the documentation examples load and plan.
    assert!(loaded >= 10, "only {loaded} corpus files loaded");
    assert!(plans >= 10, "only {plans} plans were made from the corpus");
}

/// Named seeds whose outcome is known, so that a change that makes everything fail early
/// (and so hides everything behind it from the fuzzer) is noticed.
#[test]
fn documentation_examples_plan() {
    for name in [
        "doc_prepare_train",
        "doc_docker_hello",
        "doc_python_download_model",
        "doc_curl_download_dataset",
    ] {
        let o = replay(&corpus_dir().join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert!(o.loaded && o.validated, "{name}: {o:?}");
        assert!(o.plans >= 1 && o.failed_plans == 0, "{name}: {o:?}");
    }
}

#[test]
fn the_input_format_splits_at_separator_lines() {
    let p = fuzz_entry::split(b"a: 1\n%%%%\nb: 2\n%%%%\r\n--x 1\n%%%%\np: 3\n%%%%\nq\n");
    assert_eq!(p.workflows, "a: 1\n");
    assert_eq!(p.variables.as_deref(), Some("b: 2\n"));
    assert_eq!(p.overrides.as_deref(), Some("--x 1\n"));
    assert_eq!(p.providers.as_deref(), Some("p: 3\n%%%%\nq\n"));
    let p = fuzz_entry::split(b"x %%%%\n %%%%");
    assert_eq!(p.workflows, "x %%%%\n %%%%");
    assert_eq!(p.variables, None);
}
