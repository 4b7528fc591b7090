//! Data-driven CLI tests: every `tests/cases/*.toml` runs the real `dstack` binary in the
//! project folder `NAME.in/` and compares its exit code, stdout and stderr with `NAME.stdout`
//! and `NAME.stderr`. Re-bless after an intended change with `TRYCMD=overwrite cargo test`.
//!
//! Case names start with `docs-` (the documentation's examples, verbatim), `err-` (one case
//! per diagnostic) or `ok-` (accepted inputs and output formats). Create empty `NAME.stdout`
//! and `NAME.stderr` files for a new case before blessing it: trycmd only fills in files that
//! exist, and a missing file means "not checked".

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn cli_cases() {
    let cases = trycmd::TestCases::new();
    cases.case("tests/cases/*.toml");
    cases.run();
    // Runs after trycmd, in the same test, so that blessing never races with it.
    backslashes_exactly();
}

/// trycmd (snapbox) turns every `\` into `/` in both the expected and the actual output,
/// taking them for Windows path separators: it cannot tell the DOT label escape `\n` from `/n`,
/// a JSON escape `\"` from `/"`, or the schema's regular expressions from garbage, and
/// `TRYCMD=overwrite` writes the damaged text. So every case whose output (or expected output)
/// holds a backslash is compared again here, byte for byte, and blessed exactly.
fn backslashes_exactly() {
    let overwrite = std::env::var_os("TRYCMD").is_some_and(|m| m == "overwrite");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut tomls: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/cases is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    tomls.sort();
    let mut failures = Vec::new();
    for toml in tomls {
        let args = args_of(&toml);
        let cwd = toml.with_extension("in");
        let cwd = if cwd.is_dir() { cwd } else { dir.clone() };
        let state = tempfile::tempdir().expect("tempdir");
        let output = Command::new(env!("CARGO_BIN_EXE_dstack"))
            .args(&args)
            .current_dir(&cwd)
            .env("DSTACK_STATE_DIR", state.path())
            .output()
            .expect("dstack runs");
        for (ext, actual) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
            let path = toml.with_extension(ext);
            let Ok(expected) = std::fs::read(&path) else {
                continue;
            };
            if !actual.contains(&b'\\') && !expected.contains(&b'\\') {
                continue;
            }
            if &expected == actual {
                continue;
            }
            if overwrite {
                std::fs::write(&path, actual).expect("the expected file is writable");
            } else {
                failures.push(format!(
                    "{}: differs from the output (backslashes are compared exactly)\n--- expected\n{}\n--- actual\n{}",
                    path.display(),
                    String::from_utf8_lossy(&expected),
                    String::from_utf8_lossy(actual)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The `args = [...]` line of a case (written as a JSON-compatible array of strings).
fn args_of(toml: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(toml).expect("the case is readable");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("args = "))
        .unwrap_or_else(|| panic!("{}: no `args = [...]` line", toml.display()));
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{}: write `args` as a one-line array of double-quoted strings: {e}",
            toml.display()
        )
    })
}
