//! Hostile input that is too large for the fuzzer to stumble on (it explores inputs of a few
//! KiB): every file here is well under the 32 MiB limit of `Limits::max_bytes`, and each must be
//! refused or processed quickly, in bounded memory, without overflowing the stack.
//!
//! The second half are regression tests of bugs found this way (each test's comment tells what
//! the library used to do). A test that takes too long fails at its deadline instead of running
//! for minutes (the work is left running in a background thread until the binary exits).

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dstack_core::yaml::{Node, NodeKind};
use dstack_core::{Error, Overrides, Project, ProviderRegistry, Sources};

/// Time allowed for work that a linear implementation does in well under a second (in a debug
/// build); the quadratic implementations these tests caught took minutes.
const DEADLINE: Duration = Duration::from_secs(15);

/// Expansion allowed to a loaded or planned project: the input limit itself.
const MAX_EXPANDED_BYTES: usize = 32 * 1024 * 1024;

/// What running an input did, in a form that can cross threads.
#[derive(Debug)]
struct Report {
    loaded: bool,
    /// Bytes of text in the loaded workflows' parameters (after alias expansion).
    param_bytes: usize,
    /// Bytes of the commands and environment of every planned job.
    plan_bytes: usize,
    /// The first line of the first error.
    error: Option<String>,
}

fn text_bytes(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar(s) => s.text.len(),
        NodeKind::Seq(items) => items.iter().map(text_bytes).sum(),
        NodeKind::Map(entries) => entries
            .iter()
            .map(|e| e.key.text.len() + text_bytes(&e.value))
            .sum(),
    }
}

fn first_line(e: &Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// Loads, validates and plans every workflow of `workflows` / `variables`.
fn run(workflows: String, variables: Option<String>) -> Report {
    let sources = Sources {
        workflows: Some(workflows),
        variables,
        providers: None,
    };
    let project = match Project::from_sources(".", &sources, ProviderRegistry::default()) {
        Ok(p) => p,
        Err(e) => {
            return Report {
                loaded: false,
                param_bytes: 0,
                plan_bytes: 0,
                error: Some(first_line(&e)),
            };
        }
    };
    let param_bytes = project
        .workflows()
        .iter()
        .flat_map(|w| &w.params)
        .map(|e| text_bytes(&e.value))
        .sum();
    let mut report = Report {
        loaded: true,
        param_bytes,
        plan_bytes: 0,
        error: None,
    };
    let overrides = Overrides::new();
    if let Err(e) = project.validate(&overrides) {
        report.error = Some(first_line(&e));
    }
    let names: Vec<String> = project.workflows().iter().map(|w| w.name.clone()).collect();
    for name in names {
        match project.plan(&name, &overrides) {
            Ok(plan) => {
                for job in &plan.jobs {
                    report.plan_bytes += job.commands.iter().map(String::len).sum::<usize>();
                    report.plan_bytes += job.env.values().map(String::len).sum::<usize>();
                }
            }
            Err(e) => {
                report.error.get_or_insert_with(|| first_line(&e));
            }
        }
    }
    report
}

/// Runs `run` in a thread with a 2 MiB stack (the default of `std::thread::spawn`, and so of
/// most embedders' threads), failing the test if it takes longer than `DEADLINE`.
fn run_with_deadline(what: &str, workflows: String, variables: Option<String>) -> Report {
    let bytes = workflows.len() + variables.as_ref().map_or(0, String::len);
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::Builder::new()
        .name(what.to_owned())
        .stack_size(2 << 20)
        .spawn(move || {
            let _ = tx.send(run(workflows, variables));
        })
        .expect("a thread");
    match rx.recv_timeout(DEADLINE) {
        Ok(report) => report,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "{what}: a {bytes}-byte input is still being processed after {:?}",
            start.elapsed()
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the worker panicked"),
    }
}

fn docker(name: &str, deps: &str) -> String {
    format!("  - {{name: {name}, provider: docker, image: ubuntu, depends-on: [{deps}]}}\n")
}

// ---------------------------------------------------------------------------------------------
// Scale that always worked.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_long_chain_in_file_order_plans() {
    let mut w = String::from("workflows:\n");
    for i in 0..5_000 {
        let dep = if i > 0 {
            format!("w{}", i - 1)
        } else {
            String::new()
        };
        w.push_str(&docker(&format!("w{i}"), &dep));
    }
    let sources = Sources {
        workflows: Some(w),
        ..Sources::default()
    };
    let project = Project::from_sources(".", &sources, ProviderRegistry::default()).expect("loads");
    let plan = project.plan("w4999", &Overrides::new()).expect("plans");
    assert_eq!(plan.stages.len(), 5_000);
}

#[test]
fn a_long_cycle_is_one_error() {
    let mut w = String::from("workflows:\n");
    for i in 0..5_000 {
        w.push_str(&docker(&format!("w{i}"), &format!("w{}", (i + 1) % 5_000)));
    }
    let report = run_with_deadline("long cycle", w, None);
    assert!(!report.loaded);
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("dependency cycle")),
        "{report:?}"
    );
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut w = String::from("x-0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let _ = writeln!(
            w,
            "x-{i}: &a{i} [{}]",
            vec![format!("*a{}", i - 1); 10].join(", ")
        );
    }
    w.push_str("workflows: []\n");
    let report = run_with_deadline("alias bomb", w, None);
    assert!(!report.loaded, "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// Regressions: each of these was a bug (a crash, unbounded memory or quadratic time).
// ---------------------------------------------------------------------------------------------

/// `check_dependencies` used `petgraph::algo::tarjan_scc`, which recurses once per workflow
/// along a dependency path: a chain written so that each workflow depends on the next one
/// overflowed the stack and aborted the process (not even a panic). On an 8 MiB main thread,
/// 60 000 workflows (4 MB) were enough; on a 2 MiB thread far fewer.
#[test]
fn a_long_chain_in_reverse_order_does_not_overflow_the_stack() {
    let n = 30_000;
    let mut w = String::from("workflows:\n");
    for i in 0..n {
        let dep = if i + 1 < n {
            format!("w{}", i + 1)
        } else {
            String::new()
        };
        w.push_str(&docker(&format!("w{i}"), &dep));
    }
    // Planning every workflow of a chain is quadratic by nature; the head's plan holds the
    // whole chain, which is what could overflow a recursive implementation.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let sources = Sources {
                workflows: Some(w),
                ..Sources::default()
            };
            let result = Project::from_sources(".", &sources, ProviderRegistry::default())
                .and_then(|p| {
                    p.validate(&Overrides::new())?;
                    p.plan("w0", &Overrides::new())
                })
                .map(|plan| plan.stages.len());
            let _ = tx.send(result.map_err(|e| first_line(&e)));
        })
        .expect("a thread");
    let stages = rx
        .recv_timeout(DEADLINE)
        .expect("finishes in time without overflowing the stack");
    assert_eq!(stages, Ok(n));
}

/// Alias expansion counted nodes (`max_alias_nodes`), not bytes: one anchored long string
/// aliased many times was copied each time. 1 000 aliases of a 64 KiB string (a 68 KB file)
/// made 64 MiB; 99 000 aliases of a 1 MiB string (a 1.4 MB file) would have made 100 GB.
#[test]
fn aliases_of_a_long_string_are_bounded() {
    let mut w = format!(
        "x-s: &s \"{}\"\nworkflows:\n  - name: a\n    provider: docker\n    image: ubuntu\n    commands: [",
        "x".repeat(64 * 1024)
    );
    w.push_str(&vec!["*s"; 1_000].join(", "));
    w.push_str("]\n");
    let report = run_with_deadline("aliased string", w, None);
    assert!(
        !report.loaded || report.param_bytes <= MAX_EXPANDED_BYTES,
        "a 68 KB file loaded into {} bytes of parameters",
        report.param_bytes
    );
}

/// `${{ }}` substitution had no output limit: a 64 KiB variable used 1 000 times in one
/// command (an 8 KB workflow) made a 64 MiB command. At the file limit (a 16 MiB variable,
/// 2 million uses) it would have been 32 TB.
#[test]
fn substitution_output_is_bounded() {
    let variables = format!("variables:\n  a:\n    big: \"{}\"\n", "x".repeat(64 * 1024));
    let workflows = format!(
        "workflows:\n  - name: a\n    provider: docker\n    image: ubuntu\n    commands: [\"{}\"]\n",
        "${{big}}".repeat(1_000)
    );
    let report = run_with_deadline("substitution", workflows, Some(variables));
    assert!(
        report.plan_bytes <= MAX_EXPANDED_BYTES,
        "a 74 KB project planned into {} bytes of commands",
        report.plan_bytes
    );
}

/// The YAML loader found duplicate keys by scanning the keys seen so far, for every key:
/// a mapping of 100 000 keys (1.2 MB) took minutes.
#[test]
fn a_mapping_with_many_keys_loads_quickly() {
    let mut w = String::from("x-big:\n");
    for i in 0..100_000 {
        let _ = writeln!(w, "  k{i}: 1");
    }
    w.push_str("workflows: []\n");
    run_with_deadline("many keys", w, None);
}

/// `depends-on` entries were checked for duplicates against every earlier entry: one workflow
/// depending on 50 000 others (2.7 MB) took minutes.
#[test]
fn a_workflow_with_many_dependencies_loads_quickly() {
    let n = 50_000;
    let mut w = String::from("workflows:\n");
    for i in 0..n {
        w.push_str(&docker(&format!("w{i}"), ""));
    }
    let deps: Vec<String> = (0..n).map(|j| format!("w{j}")).collect();
    w.push_str(&docker("all", &deps.join(",")));
    run_with_deadline("many dependencies", w, None);
}

/// Every unknown dependency computed "did you mean" against every workflow name: 10 000
/// workflows with one unknown dependency each (0.7 MB) took minutes.
#[test]
fn many_unknown_dependencies_are_reported_quickly() {
    let mut w = String::from("workflows:\n");
    for i in 0..10_000 {
        w.push_str(&docker(&format!("w{i}"), &format!("x{i}")));
    }
    let report = run_with_deadline("unknown dependencies", w, None);
    assert!(!report.loaded);
}

/// "Did you mean" uses Jaro-Winkler, quadratic in the length of the names compared: two
/// workflows with 50 000-character names and unknown dependencies of the same length (200 KB)
/// took minutes. Names have no length limit.
#[test]
fn long_unknown_dependency_names_are_reported_quickly() {
    let mut w = String::from("workflows:\n");
    for i in 0..2 {
        let name = format!("{}{i}", "a".repeat(50_000));
        let dep = format!("{}{i}", "b".repeat(50_000));
        w.push_str(&docker(&name, &dep));
    }
    let report = run_with_deadline("long names", w, None);
    assert!(!report.loaded);
}

/// The same for an undefined `${{ name }}` against long variable names (explicit `? ` keys
/// have no 1024-character limit): 90 KB took minutes.
#[test]
fn long_undefined_variable_names_are_reported_quickly() {
    let name = "v".repeat(30_000);
    let variables = format!("variables:\n  a:\n    ? {name}0\n    : 1\n    ? {name}1\n    : 2\n");
    let workflows = format!(
        "workflows:\n  - name: a\n    provider: docker\n    image: ubuntu\n    commands: [\"${{{{ {name}x }}}}\"]\n"
    );
    let report = run_with_deadline("long variable names", workflows, Some(variables));
    assert!(report.error.is_some(), "{report:?}");
}

/// And for many undefined variables against many defined ones: 5 000 of each (133 KB).
#[test]
fn many_undefined_variables_are_reported_quickly() {
    let mut variables = String::from("variables:\n  a:\n");
    for i in 0..5_000 {
        let _ = writeln!(variables, "    var{i}: 1");
    }
    let refs: String = (0..5_000).map(|i| format!("${{{{vra{i}}}}}")).collect();
    let workflows = format!(
        "workflows:\n  - name: a\n    provider: docker\n    image: ubuntu\n    commands: [\"{refs}\"]\n"
    );
    let report = run_with_deadline("undefined variables", workflows, Some(variables));
    assert!(report.error.is_some(), "{report:?}");
}
