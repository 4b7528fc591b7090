//! `parse-untyped DIR`: the whole-program baseline of `compare.sh`.
//!
//! Reads `DIR/.dstack/workflows.yaml` and `DIR/.dstack/variables.yaml` and parses them into
//! untyped `serde_yaml_ng::Value`s, nothing more: no types, no positions, no variables, no
//! plan. `dstack plan` does all of that on the same files; the ratio of the two is the price
//! of the typed, located model. Prints the number of workflows. It uses the same allocator as
//! `dstack` (mimalloc).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The allocator of the `dstack` binary, so that the comparison is of the parsing, not of the
/// allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        let _ = writeln!(std::io::stderr(), "usage: parse-untyped DIR");
        return ExitCode::from(2);
    };
    match run(&dir) {
        Ok(n) => {
            let _ = writeln!(std::io::stdout(), "{n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "parse-untyped: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &std::path::Path) -> Result<usize, Box<dyn std::error::Error>> {
    let dstack = dir.join(".dstack");
    let workflows: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dstack.join("workflows.yaml"))?)?;
    let variables: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dstack.join("variables.yaml"))?)?;
    std::hint::black_box(&variables);
    Ok(workflows["workflows"].as_sequence().map_or(0, Vec::len))
}
