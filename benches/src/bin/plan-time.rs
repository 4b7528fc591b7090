//! `plan-time DIR WORKFLOW [RUNS]`: the Rust side of `benches/python_plan.py`.
//!
//! Loads the project at `DIR` once, then times `Project::plan(WORKFLOW)` in-process `RUNS`
//! times (default 20, after 3 warm-up calls) and prints one line of JSON:
//! `{"jobs": N, "runs_ms": [...], "median_ms": M, "min_ms": m}`. The Python benchmark times
//! `dstack_py.Project.plan` on the same project and compares the two.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use dstack_core::{Overrides, Project};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), Some(workflow)) = (args.next().map(PathBuf::from), args.next()) else {
        let _ = writeln!(std::io::stderr(), "usage: plan-time DIR WORKFLOW [RUNS]");
        return ExitCode::from(2);
    };
    let runs: usize = match args.next().map(|r| r.to_string_lossy().parse()) {
        None => 20,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "plan-time: RUNS must be a positive number"
            );
            return ExitCode::from(2);
        }
    };
    let workflow = workflow.to_string_lossy().into_owned();
    match run(&dir, &workflow, runs) {
        Ok(line) => {
            let _ = writeln!(std::io::stdout(), "{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "plan-time: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &std::path::Path, workflow: &str, runs: usize) -> Result<String, dstack_core::Error> {
    let project = Project::load(dir)?;
    let overrides = Overrides::new();
    let mut jobs = 0;
    for _ in 0..3 {
        jobs = project.plan(workflow, &overrides)?.jobs.len();
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let plan = project.plan(workflow, &overrides)?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        drop(plan);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let list: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
    Ok(format!(
        "{{\"jobs\": {jobs}, \"runs_ms\": [{}], \"median_ms\": {median:.3}, \"min_ms\": {:.3}}}",
        list.join(", "),
        sorted[0]
    ))
}
