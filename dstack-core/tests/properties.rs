//! Property tests of loading, substitution and planning.
//!
//! (a) generated valid projects (random DAGs of docker and python workflows with variables and
//!     overrides) load, validate and plan, and every plan is a consistent DAG with the JSON
//!     contract's fields and the values that were asked for;
//! (b) a back edge added to a chain of dependencies is reported as exactly one cycle;
//! (c) arbitrary text never panics through load, validate, plan and the renderers;
//! (d) substitution is not recursive: a value that is itself `${{ other }}` stays literal;
//! (e) memory sizes round-trip through `parse_memory` and `format_bytes`.

#[path = "common/fuzz_entry.rs"]
mod fuzz_entry;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use dstack_core::resources::{MemoryError, format_bytes, parse_memory};
use dstack_core::variables::env_name;
use dstack_core::{Code, Error, Overrides, Plan, Project, ProviderRegistry, Sources};
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::test_runner::FileFailurePersistence;

// ---------------------------------------------------------------------------------------------
// Generated projects
// ---------------------------------------------------------------------------------------------

/// The variables the generated projects draw from; `gpu_count` also feeds `resources.gpu`.
const POOL: [&str; 5] = ["seed", "epochs", "lr", "batch-size", "gpu_count"];
const GPU_VAR: usize = 4;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(i64),
    Word(String),
}

impl Value {
    /// The value as YAML (and as it reaches commands and the environment).
    fn text(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Word(w) => w.clone(),
        }
    }
}

fn value(var: usize) -> BoxedStrategy<Value> {
    if var == GPU_VAR {
        (0i64..=4).prop_map(Value::Int).boxed()
    } else {
        prop_oneof![
            (-1000i64..100_000).prop_map(Value::Int),
            // A prefix keeps words from being YAML keywords (`null`, `true`, `0x1`...).
            "[a-z][a-z0-9]{0,6}".prop_map(|w| Value::Word(format!("v-{w}"))),
        ]
        .boxed()
    }
}

fn section() -> impl Strategy<Value = Vec<(usize, Value)>> {
    subsequence((0..POOL.len()).collect::<Vec<_>>(), 0..=POOL.len()).prop_flat_map(|vars| {
        vars.into_iter()
            .map(|v| (Just(v), value(v)))
            .collect::<Vec<_>>()
    })
}

#[derive(Clone, Debug)]
enum Kind {
    Docker {
        image: &'static str,
    },
    Python {
        version: &'static str,
        requirements: bool,
    },
}

#[derive(Clone, Debug)]
struct Wf {
    name: String,
    kind: Kind,
    /// Workflows (by index, all smaller) run first.
    deps: Vec<usize>,
    /// Workflows (by index, all smaller) whose tagged run is reused.
    tagged: Vec<usize>,
    cpu: Option<u32>,
    memory_mib: Option<u32>,
    /// A literal GPU count; when `None` and the workflow sees `gpu_count`, that is used.
    gpu: Option<u8>,
    /// Variables the commands print (those the workflow does not see are skipped).
    echoes: Vec<usize>,
    vars: Vec<(usize, Value)>,
}

#[derive(Clone, Debug)]
struct Gen {
    wfs: Vec<Wf>,
    /// The order in which the workflows are written to the file.
    file_order: Vec<usize>,
    global: Vec<(usize, Value)>,
    /// Command-line overrides (only of variables some section defines).
    overrides: Vec<(usize, Value)>,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        prop::sample::select(vec![
            "ubuntu",
            "python:3.10",
            "alpine:3.17",
            "nvidia/cuda:11.1"
        ])
        .prop_map(|image| Kind::Docker { image }),
        (
            prop::sample::select(vec!["3.8", "3.9", "3.10", "3.11"]),
            any::<bool>()
        )
            .prop_map(|(version, requirements)| Kind::Python {
                version,
                requirements
            }),
    ]
}

fn workflow(i: usize) -> impl Strategy<Value = Wf> {
    (
        "[a-z][a-z0-9]{0,5}",
        kind(),
        prop::collection::vec(0..3u8, i),
        prop::option::of(1u32..64),
        prop::option::of(1u32..(1 << 20)),
        prop::option::of(0u8..4),
        subsequence((0..POOL.len()).collect::<Vec<_>>(), 0..=POOL.len()),
        section(),
    )
        .prop_map(
            move |(stem, kind, edges, cpu, memory_mib, gpu, echoes, vars)| Wf {
                // The index makes names unique; `.`, `_` and `-` are allowed in names.
                name: format!("{stem}{}{i}", ["-", "_", "."][i % 3]),
                kind,
                deps: (0..i).filter(|&j| edges[j] == 1).collect(),
                tagged: (0..i).filter(|&j| edges[j] == 2).collect(),
                cpu,
                memory_mib,
                gpu,
                echoes,
                vars,
            },
        )
}

fn project() -> impl Strategy<Value = Gen> {
    (1usize..=8)
        .prop_flat_map(|n| {
            let wfs: Vec<_> = (0..n).map(workflow).collect();
            (
                wfs,
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                section(),
                section(),
            )
        })
        .prop_map(|(wfs, file_order, global, overrides)| {
            let defined: BTreeSet<usize> = global
                .iter()
                .chain(wfs.iter().flat_map(|w| &w.vars))
                .map(|(v, _)| *v)
                .collect();
            let overrides = overrides
                .into_iter()
                .filter(|(v, _)| defined.contains(v))
                .collect();
            Gen {
                wfs,
                file_order,
                global,
                overrides,
            }
        })
}

impl Gen {
    /// The variables workflow `i` sees, with their final values.
    fn visible(&self, i: usize) -> BTreeMap<usize, Value> {
        let mut out: BTreeMap<usize, Value> = self.global.iter().cloned().collect();
        out.extend(self.wfs[i].vars.iter().cloned());
        for (v, value) in &self.overrides {
            if let Some(slot) = out.get_mut(v) {
                *slot = value.clone();
            }
        }
        out
    }

    /// Whether workflow `i` takes its GPU count from `${{ gpu_count }}`.
    fn gpu_from_variable(&self, i: usize) -> bool {
        self.wfs[i].gpu.is_none() && self.visible(i).contains_key(&GPU_VAR)
    }

    fn workflows_yaml(&self) -> String {
        let mut y = String::from("workflows:\n");
        for &i in &self.file_order {
            let w = &self.wfs[i];
            let seen = self.visible(i);
            let _ = writeln!(y, "  - name: {}", w.name);
            let echoes: Vec<String> = w
                .echoes
                .iter()
                .filter(|v| seen.contains_key(v))
                .map(|&v| format!("echo {} ${{{{ {} }}}}", POOL[v], POOL[v]))
                .collect();
            match &w.kind {
                Kind::Docker { image } => {
                    let _ = writeln!(y, "    provider: docker\n    image: \"{image}\"");
                    y.push_str("    commands:\n      - echo start\n");
                    for e in &echoes {
                        let _ = writeln!(y, "      - \"{e}\"");
                    }
                }
                Kind::Python {
                    version,
                    requirements,
                } => {
                    let _ = writeln!(y, "    provider: python\n    python: \"{version}\"");
                    let args: String = echoes.iter().map(|e| format!(" --{e}")).collect();
                    let _ = writeln!(y, "    script: \"train.py{args}\"");
                    if *requirements {
                        y.push_str("    requirements: requirements.txt\n");
                    }
                }
            }
            let deps: Vec<String> = w
                .deps
                .iter()
                .map(|&j| self.wfs[j].name.clone())
                .chain(
                    w.tagged
                        .iter()
                        .map(|&j| format!("{}:latest", self.wfs[j].name)),
                )
                .collect();
            if !deps.is_empty() {
                y.push_str("    depends-on:\n");
                for d in deps {
                    let _ = writeln!(y, "      - \"{d}\"");
                }
            }
            let _ = writeln!(y, "    artifacts: [\"out/{}\"]", w.name);
            y.push_str("    resources:\n");
            if let Some(cpu) = w.cpu {
                let _ = writeln!(y, "      cpu: {cpu}");
            }
            if let Some(m) = w.memory_mib {
                let _ = writeln!(y, "      memory: {m}MiB");
            }
            if let Some(g) = w.gpu {
                let _ = writeln!(y, "      gpu: {g}");
            } else if self.gpu_from_variable(i) {
                y.push_str("      gpu: ${{ gpu_count }}\n");
            }
        }
        y
    }

    fn variables_yaml(&self) -> String {
        let mut y = String::from("variables:\n");
        let mut section = |name: &str, vars: &[(usize, Value)]| {
            if vars.is_empty() {
                return;
            }
            let _ = writeln!(y, "  {name}:");
            for (v, value) in vars {
                let _ = writeln!(y, "    {}: {}", POOL[*v], value.text());
            }
        };
        section("global", &self.global);
        for w in &self.wfs {
            section(&w.name, &w.vars);
        }
        y
    }

    fn override_words(&self) -> Vec<String> {
        self.overrides
            .iter()
            .flat_map(|(v, value)| [format!("--{}", POOL[*v]), value.text()])
            .collect()
    }

    /// The workflows that planning `target` runs: itself and its untagged dependencies.
    fn closure(&self, target: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if out.insert(i) {
                todo.extend(&self.wfs[i].deps);
            }
        }
        out
    }
}

fn load(workflows: String, variables: Option<String>) -> Result<Project, Error> {
    let sources = Sources {
        workflows: Some(workflows),
        variables,
        providers: None,
    };
    Project::from_sources(".", &sources, ProviderRegistry::default())
}

fn overrides(words: &[String]) -> Overrides {
    Overrides::from_args(words).expect("generated override words parse")
}

/// Checks the jobs of one plan against what was generated.
fn check_generated_plan(g: &Gen, target: usize, plan: &Plan) {
    let closure = g.closure(target);
    let planned: BTreeSet<&str> = plan.jobs.iter().map(|j| j.workflow.as_str()).collect();
    let expected: BTreeSet<&str> = closure.iter().map(|&i| g.wfs[i].name.as_str()).collect();
    assert_eq!(planned, expected, "the plan runs the wrong workflows");
    let by_name: HashMap<&str, usize> = g
        .wfs
        .iter()
        .enumerate()
        .map(|(i, w)| (w.name.as_str(), i))
        .collect();
    for job in &plan.jobs {
        let i = by_name[job.workflow.as_str()];
        let w = &g.wfs[i];
        assert_eq!(job.id, w.name, "one job per workflow, named after it");
        let deps: BTreeSet<String> = w
            .deps
            .iter()
            .map(|&j| g.wfs[j].name.clone())
            .chain(
                w.tagged
                    .iter()
                    .map(|&j| format!("{}:latest", g.wfs[j].name)),
            )
            .collect();
        let got: BTreeSet<String> = job.depends_on.iter().cloned().collect();
        assert_eq!(got, deps, "dependencies of `{}`", job.id);

        let seen = g.visible(i);
        for (v, value) in &seen {
            assert_eq!(
                job.env.get(&env_name(POOL[*v])),
                Some(&value.text()),
                "variable `{}` of `{}` in the environment",
                POOL[*v],
                job.id
            );
        }
        for c in &job.commands {
            assert!(!c.contains("${{"), "unsubstituted command `{c}`");
        }
        for &v in w.echoes.iter().filter(|v| seen.contains_key(v)) {
            let printed = format!("echo {} {}", POOL[v], seen[&v].text());
            assert!(
                job.commands.iter().any(|c| c.contains(&printed)),
                "`{printed}` is not among the commands of `{}`: {:?}",
                job.id,
                job.commands
            );
        }
        let gpu = match w.gpu {
            Some(g) => u32::from(g),
            None => match seen.get(&GPU_VAR) {
                Some(Value::Int(n)) => u32::try_from(*n).expect("a small count"),
                _ => 0,
            },
        };
        assert_eq!(job.resources.gpu_count(), gpu, "GPUs of `{}`", job.id);
        assert_eq!(job.resources.cpu, w.cpu, "CPUs of `{}`", job.id);
        assert_eq!(
            job.resources.memory_bytes,
            w.memory_mib.map(|m| u64::from(m) << 20),
            "memory of `{}`",
            job.id
        );
        assert_eq!(job.artifacts, [format!("out/{}", w.name)]);
        match &w.kind {
            Kind::Docker { image } => {
                assert_eq!(job.provider, "docker");
                assert_eq!(job.image.as_deref(), Some(*image));
            }
            Kind::Python { version, .. } => {
                assert_eq!(job.provider, "python");
                let image = job.image.as_deref().unwrap_or_default();
                assert!(
                    image.contains(version),
                    "image `{image}` is not for Python {version}"
                );
                assert!(
                    job.commands
                        .last()
                        .is_some_and(|c| c.starts_with("python train.py"))
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chains with a back edge
// ---------------------------------------------------------------------------------------------

/// A chain `w0 <- w1 <- ... <- w(n-1)` (each depends on the previous one) plus the edge
/// `w(from)` depends on `w(to)` with `to > from`, written in a shuffled order.
fn chain_with_back_edge(n: usize, from: usize, to: usize, order: &[usize]) -> String {
    let mut y = String::from("workflows:\n");
    for &i in order {
        let mut deps: Vec<String> = Vec::new();
        if i > 0 {
            deps.push(format!("w{}", i - 1));
        }
        if i == from {
            deps.push(format!("w{to}"));
        }
        let _ = writeln!(
            y,
            "  - {{name: w{i}, provider: docker, image: ubuntu, commands: [echo {i}], depends-on: [{}]}}",
            deps.join(", ")
        );
    }
    debug_assert!(to < n && from < to);
    y
}

fn chain_case() -> impl Strategy<Value = (usize, usize, usize, Vec<usize>)> {
    (2usize..=12).prop_flat_map(|n| {
        (0..n - 1).prop_flat_map(move |from| {
            (
                Just(n),
                Just(from),
                from + 1..n,
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            )
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Arbitrary text
// ---------------------------------------------------------------------------------------------

/// Text made of the tokens dstack files are made of, so that it often gets past the YAML
/// parser into the later stages.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        8 => prop::sample::select(vec![
            "workflows:", "variables:", "providers:", "global:", "\n", "\n", "\n", "  ", "  ",
            "    ", "- ", "- ", ": ", ":", "name: ", "provider: ", "docker", "python", "curl",
            "image: ", "ubuntu", "commands:", "script: ", "x.py", "depends-on:", "depends-on: [",
            "]", "[", "{", "}", ", ", "resources:", "cpu: ", "memory: ", "gpu: ", "1GB", "512MiB",
            "artifacts:", "ports:", "environment:", "python: ", "3.10", "requirements: ", "url: ",
            "https://e.com/x", "output: ", "timeout: ", "1h", "retries: ", "working_dir: ",
            "${{ ", " }}", "${{", "}}", "&a ", "*a", "<<: ", "!!str ", "? ", "|\n", ">\n", "\"",
            "'", "#", "~", "---\n", "%%%%\n", "--", "=", "\t", "\r\n", "0", "1", "-1", "1e9",
            "99999999999999999999", ".inf", "\u{e9}", "\u{1F980}", "\u{0}", ":latest", "a", "b",
            "c", "epochs", "--epochs 3",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z0-9 ._-]{1,6}".prop_map(|s| s),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..120).prop_map(|t| t.concat())
}

/// A YAML scalar of the kinds dstack files hold, right and wrong.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "ubuntu", "echo hi", "\"${{ x }}\"", "${{ x }}", "\"${{ y }}\"", "\"a ${{ x }} b\"",
            "\"${{ nope }}\"", "\"${{\"", "1", "0", "-1", "2", "65536", "1GB", "512MiB", "1.5Gi",
            "10XB", "3.10", "\"3.9\"", "a", "b", "c", "\"a:latest\"", "\"https://e.com/f\"",
            "out", "/abs", "../up", "1h", "10m", "~", "true", "1.5", "99999999999999999999", "\"\"",
            "x.py", "requirements.txt", "\"K=V\"", ".inf", "0x1F", "\"\u{e9}\u{1F980}\"",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z0-9]{1,4}",
    ]
}

/// A key of a workflow, of its resources or of a GPU request.
fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "image",
        "commands",
        "script",
        "resources",
        "cpu",
        "memory",
        "gpu",
        "ports",
        "artifacts",
        "environment",
        "python",
        "requirements",
        "url",
        "output",
        "timeout",
        "retries",
        "working_dir",
        "depends-on",
        "help",
        "count",
        "shm_size",
        "name",
        "path",
        "interruptible",
        "version",
        "python_script",
        "x-extra",
        "<<",
    ])
}

/// A YAML value in flow style: scalars, lists and mappings, a few levels deep.
fn flow_value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                let kv: BTreeMap<&str, String> = kv.into_iter().collect();
                let kv: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", kv.join(", "))
            }),
        ]
    })
}

/// A whole input for the fuzz entry point that is valid YAML, with random (often wrong)
/// workflows, variables, overrides and providers, so that it reaches every later stage.
fn structured_input() -> impl Strategy<Value = String> {
    let base = prop::sample::select(vec![
        "provider: docker, image: ubuntu, commands: [\"echo ${{ x }}\"]",
        "provider: docker, image: \"${{ y }}\"",
        "provider: python, script: \"x.py ${{ x }}\"",
        "provider: python, script: x.py, requirements: [a, b], python: \"3.9\"",
        "provider: curl, url: \"https://e.com/f\", output: out/f",
        "provider: mine, anything: [1, 2]",
        "provider: nope",
        "provider: {repo: \"https://e.com/r@v1\", name: p}",
    ]);
    let item = (
        base,
        prop::collection::vec((key(), flow_value()), 0..2),
        prop::collection::vec((0..8usize, any::<bool>()), 0..3),
    );
    let section = (
        prop::sample::select(vec!["w0", "w1", "w2", "w3", "zz"]),
        prop::collection::btree_map(
            prop::sample::select(vec!["x", "y", "gpu"]),
            flow_value(),
            0..3,
        ),
    )
        .prop_map(|(name, vars)| {
            let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            (name, format!("  {name}: {{{}}}\n", vars.join(", ")))
        });
    (
        prop::collection::vec(item, 0..5),
        prop::collection::vec(section, 0..4),
        prop::collection::vec(
            prop::sample::select(vec![
                "--x 1",
                "--y=${{ x }}",
                "--gp 2",
                "--z 3",
                "--x",
                "!--z 1",
            ]),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(items, sections, words, providers)| {
            let mut input = String::from("workflows:\n");
            for (i, (base, kv, deps)) in items.iter().enumerate() {
                let kv: BTreeMap<&str, &String> = kv.iter().map(|(k, v)| (*k, v)).collect();
                let kv: String = kv.iter().map(|(k, v)| format!(", {k}: {v}")).collect();
                // Mostly earlier workflows (a DAG); `j >= i` may be a cycle or unknown.
                let deps: Vec<String> = deps
                    .iter()
                    .map(|&(j, tagged)| (if j < 6 && i > 0 { j % i } else { j }, tagged))
                    .map(|(j, tagged)| {
                        if tagged {
                            format!("\"w{j}:t\"")
                        } else {
                            format!("w{j}")
                        }
                    })
                    .collect();
                let _ = writeln!(
                    input,
                    "  - {{name: w{i}, {base}{kv}, depends-on: [{}]}}",
                    deps.join(", ")
                );
            }
            input.push_str("%%%%\n");
            input.push_str("variables:\n  global: {x: 1, y: ubuntu}\n");
            let sections: BTreeMap<&str, String> = sections.into_iter().collect();
            input.extend(sections.into_values());
            let _ = writeln!(input, "%%%%\n{}", words.join(" "));
            if providers {
                input.push_str("%%%%\nproviders:\n  - {name: mine, image: img, commands: [run]}\n");
            }
            input
        })
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

proptest! {
    // Failures are saved (and replayed first) in `tests/properties.proptest-regressions`; the
    // default location is looked up from `lib.rs`, which integration tests do not have.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/properties.proptest-regressions",
        ))),
        ..ProptestConfig::with_cases(128)
    })]

    /// (a)
    #[test]
    fn generated_projects_load_and_plan(g in project()) {
        let workflows = g.workflows_yaml();
        let variables = g.variables_yaml();
        let project = match load(workflows.clone(), Some(variables.clone())) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n--- workflows.yaml\n{workflows}--- variables.yaml\n{variables}"),
        };
        prop_assert_eq!(project.workflows().len(), g.wfs.len());
        let o = overrides(&g.override_words());
        if let Err(e) = project.validate(&o) {
            panic!("{e}\n--- workflows.yaml\n{workflows}--- variables.yaml\n{variables}");
        }
        for (i, w) in g.wfs.iter().enumerate() {
            let plan = match project.plan(&w.name, &o) {
                Ok(p) => p,
                Err(e) => panic!("planning `{}`: {e}\n--- workflows.yaml\n{workflows}--- variables.yaml\n{variables}", w.name),
            };
            // Stages, dependencies in earlier stages, topological job order, JSON contract.
            fuzz_entry::check_plan(&plan, &w.name);
            check_generated_plan(&g, i, &plan);
            let json: serde_json::Value = serde_json::from_str(&plan.to_json()).expect("JSON");
            let stages: usize = json["stages"].as_array().map_or(0, |s| {
                s.iter().map(|s| s.as_array().map_or(0, Vec::len)).sum()
            });
            prop_assert_eq!(stages, plan.jobs.len());
            prop_assert_eq!(json["jobs"].as_array().map(Vec::len), Some(plan.jobs.len()));
        }
        // The whole input also passes the fuzz entry point's checks.
        let mut input = format!("{workflows}%%%%\n{variables}%%%%\n");
        input.push_str(&g.override_words().join(" "));
        let outcome = fuzz_entry::run(input.as_bytes());
        prop_assert!(outcome.loaded && outcome.validated);
        prop_assert_eq!(outcome.plans, g.wfs.len());
    }

    /// (b)
    #[test]
    fn a_back_edge_is_exactly_one_cycle((n, from, to, order) in chain_case()) {
        let yaml = chain_with_back_edge(n, from, to, &order);
        match load(yaml.clone(), None) {
            Ok(_) => panic!("a cycle was accepted:\n{yaml}"),
            Err(Error::Invalid(d)) => {
                let codes: Vec<Code> = d.as_slice().iter().map(|d| d.code).collect();
                prop_assert_eq!(codes, vec![Code::Cycle], "{}\n{}", d, yaml);
                let message = &d.as_slice()[0].message;
                // Every workflow on the cycle is named.
                for i in from..=to {
                    prop_assert!(message.contains(&format!("w{i}")), "{} misses w{}", message, i);
                }
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
        // Without the back edge, the chain plans into one stage per workflow.
        let mut y = String::from("workflows:\n");
        for &i in &order {
            let deps = if i > 0 { format!("[w{}]", i - 1) } else { "[]".to_owned() };
            let _ = writeln!(y, "  - {{name: w{i}, provider: docker, image: ubuntu, depends-on: {deps}}}");
        }
        let project = load(y, None).expect("a chain loads");
        let plan = project.plan(&format!("w{}", n - 1), &Overrides::new()).expect("a chain plans");
        prop_assert_eq!(plan.stages.len(), n);
        fuzz_entry::check_plan(&plan, &format!("w{}", n - 1));
    }

    /// (c): bytes.
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_entry::run(&data);
    }

    /// (c): text made of YAML and dstack tokens, in every one of the four parts.
    #[test]
    fn arbitrary_yamlish_text_never_panics(text in yamlish()) {
        fuzz_entry::run(text.as_bytes());
    }

    /// (c): valid YAML with random workflows, variables and overrides.
    #[test]
    fn random_structured_projects_never_panic(input in structured_input()) {
        fuzz_entry::run(input.as_bytes());
    }

    /// (c): the same text as every file at once (with a well-formed variables file prefix).
    #[test]
    fn arbitrary_text_in_each_file_never_panics(
        w in yamlish(),
        v in yamlish(),
        o in "(--[a-z]{1,4}[ =][a-z0-9${}]{0,4} ?){0,4}",
        p in yamlish(),
    ) {
        let input = format!("workflows:\n{w}\n%%%%\nvariables:\n{v}\n%%%%\n{o}\n%%%%\nproviders:\n{p}");
        fuzz_entry::run(input.as_bytes());
    }

    /// (d)
    #[test]
    fn substitution_is_not_recursive(
        a in "a[a-z0-9_]{0,8}",
        b in "B[a-z0-9-]{0,8}",
        before in "[a-z0-9 ./-]{0,10}",
        after in "[a-z0-9 ./-]{0,10}",
        b_value in "v[a-z0-9]{0,8}",
        via_override in any::<bool>(),
    ) {
        let workflows = format!(
            "workflows:\n  - name: w\n    provider: docker\n    image: ubuntu\n    commands:\n      - \"{before}${{{{ {a} }}}}{after}\"\n      - ${{{{ {a} }}}}\n      - \"${{{{ {b} }}}}\"\n"
        );
        let literal = format!("${{{{ {b} }}}}");
        let (a_value, words) = if via_override {
            ("placeholder".to_owned(), vec![format!("--{a}"), literal.clone()])
        } else {
            (format!("\"{literal}\""), Vec::new())
        };
        let variables = format!("variables:\n  w:\n    {a}: {a_value}\n    {b}: {b_value}\n");
        let project = load(workflows.clone(), Some(variables.clone()))
            .unwrap_or_else(|e| panic!("{e}\n{workflows}{variables}"));
        let plan = project
            .plan("w", &overrides(&words))
            .unwrap_or_else(|e| panic!("{e}\n{workflows}{variables}{words:?}"));
        let job = &plan.jobs[0];
        prop_assert_eq!(
            &job.commands,
            &vec![format!("{before}{literal}{after}"), literal.clone(), b_value.clone()]
        );
        prop_assert_eq!(job.env.get(&env_name(&a)), Some(&literal));
        prop_assert_eq!(job.env.get(&env_name(&b)), Some(&b_value));
    }

    /// (e)
    #[test]
    fn mebibytes_round_trip(n in 0u64..(1 << 44)) {
        prop_assert_eq!(parse_memory(&format!("{n}MiB")), Ok(n << 20));
        prop_assert_eq!(parse_memory(&format!("{n}mib")), Ok(n << 20));
        prop_assert_eq!(parse_memory(&format!(" {n} Mi ")), Ok(n << 20));
    }

    /// (e): past 2^64 bytes a size is refused, never wrapped.
    #[test]
    fn too_many_mebibytes_are_refused(n in (1u64 << 44)..u64::MAX) {
        let parsed = parse_memory(&format!("{n}MiB"));
        prop_assert!(matches!(parsed, Err(MemoryError::TooLarge(_))), "{:?}", parsed);
    }

    /// (e): what `format_bytes` prints, `parse_memory` reads back exactly.
    #[test]
    fn formatted_sizes_parse_back(bytes in any::<u64>(), shift in 0u32..44) {
        let bytes = bytes >> shift << shift.min(20);
        prop_assert_eq!(parse_memory(&format_bytes(bytes)), Ok(bytes));
    }
}
