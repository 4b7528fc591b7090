//! `gen`: writes a synthetic project for benchmarks.
//!
//! `cargo run -p benches --bin gen -- --n 1000 --shape chain --out DIR` writes
//! `DIR/.dstack/workflows.yaml`, `DIR/.dstack/variables.yaml`, and the same pipeline as
//! `DIR/Snakefile` and `DIR/dvc.yaml`. It prints `key=value` lines: `last` (the workflow to
//! plan), `jobs` and `stages` (what its plan holds), for scripts to read.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use benches::{Dag, Shape};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "gen",
    about = "Write a synthetic dstack project (plus Snakefile and dvc.yaml)"
)]
struct Args {
    /// How many workflows.
    #[arg(long)]
    n: usize,
    /// `chain`, `fan-in` or `random`.
    #[arg(long, default_value = "chain")]
    shape: Shape,
    /// The project folder to write (created if needed).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    if args.n == 0 {
        return Err(std::io::Error::other("--n must be at least 1"));
    }
    let dag = Dag::new(args.n, args.shape);
    let dstack = args.out.join(".dstack");
    std::fs::create_dir_all(&dstack)?;
    std::fs::write(dstack.join("workflows.yaml"), dag.workflows_yaml())?;
    std::fs::write(dstack.join("variables.yaml"), dag.variables_yaml())?;
    std::fs::write(args.out.join("Snakefile"), dag.snakefile())?;
    std::fs::write(args.out.join("dvc.yaml"), dag.dvc_yaml())?;
    let target = dag.len() - 1;
    let mut out = std::io::stdout().lock();
    writeln!(out, "last={}", dag.last())?;
    writeln!(out, "jobs={}", dag.closure_len(target))?;
    writeln!(out, "stages={}", dag.stages(target))?;
    Ok(())
}
