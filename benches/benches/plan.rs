//! Planning synthetic projects end to end, next to the baseline of parsing the same YAML.
//!
//! For each shape and n in 100, 1000, 10000, group `SHAPE/N` holds:
//! - `end_to_end`: `Project::from_sources` (parse, check, index) and `plan` of the last
//!   workflow (substitute, materialise through the providers, order in stages), from the
//!   source strings;
//! - `serde_yaml_ng_value`: parsing the same two files into untyped `serde_yaml_ng::Value`s;
//! - `saphyr_events`: iterating the raw events of saphyr-parser (the parser `dstack-core` falls
//!   back to) over the same two files, i.e. the floor under any YAML loader built on it;
//! - `located_tree`: `dstack_core::yaml::parse_str` of the same two files, the located tree
//!   that loading starts from (through the fast front end when the text is in its subset);
//! - the phases of `end_to_end`: `load` (`from_sources` alone), `plan` (of an already loaded
//!   project) and `to_json` (what `dstack plan --format json` adds).
//!
//! The cases of one size and shape run one after the other, so that their ratios are measured
//! under the same conditions.
//!
//! Run: `cargo bench -p benches --bench plan -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use benches::{Dag, Shape};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dstack_core::{Overrides, Project, ProviderRegistry, Sources};
use saphyr_parser::Parser;

const SIZES: [usize; 3] = [100, 1000, 10_000];

struct Case {
    label: String,
    sources: Sources,
    last: String,
    bytes: u64,
}

fn cases() -> Vec<(usize, Case)> {
    let mut out = Vec::new();
    for shape in Shape::ALL {
        for n in SIZES {
            let dag = Dag::new(n, shape);
            let workflows = dag.workflows_yaml();
            let variables = dag.variables_yaml();
            let bytes = (workflows.len() + variables.len()) as u64;
            out.push((
                n,
                Case {
                    label: format!("{shape}/{n}"),
                    sources: Sources {
                        workflows: Some(workflows),
                        variables: Some(variables),
                        providers: None,
                    },
                    last: dag.last(),
                    bytes,
                },
            ));
        }
    }
    out
}

fn load(sources: &Sources) -> Project {
    Project::from_sources("bench", sources, ProviderRegistry::default())
        .unwrap_or_else(|e| panic!("the generated project does not load:\n{e}"))
}

fn texts(sources: &Sources) -> [&str; 2] {
    [
        sources.workflows.as_deref().unwrap_or_default(),
        sources.variables.as_deref().unwrap_or_default(),
    ]
}

fn plan(c: &mut Criterion) {
    let overrides = Overrides::new();
    for (n, case) in cases() {
        let mut group = c.benchmark_group(&case.label);
        if n >= 10_000 {
            group.sample_size(10);
        }
        group.throughput(Throughput::Bytes(case.bytes));
        group.bench_function("end_to_end", |b| {
            b.iter(|| {
                let project = load(black_box(&case.sources));
                let plan = project
                    .plan(&case.last, &overrides)
                    .unwrap_or_else(|e| panic!("the generated project does not plan:\n{e}"));
                black_box(plan)
            });
        });
        group.bench_function("serde_yaml_ng_value", |b| {
            b.iter(|| {
                texts(black_box(&case.sources)).map(|t| {
                    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(t)
                        .unwrap_or_else(|e| panic!("{e}"))
                })
            });
        });
        group.bench_function("saphyr_events", |b| {
            b.iter(|| {
                let mut events = 0usize;
                for text in texts(black_box(&case.sources)) {
                    let mut parser = Parser::new_from_str(text);
                    while let Some(event) = parser.next_event() {
                        black_box(event.unwrap_or_else(|e| panic!("{e}")));
                        events += 1;
                    }
                }
                events
            });
        });
        group.bench_function("located_tree", |b| {
            b.iter(|| {
                texts(black_box(&case.sources)).map(|t| {
                    dstack_core::yaml::parse_str(t, std::path::Path::new("bench.yaml"))
                        .unwrap_or_else(|e| panic!("{e}"))
                })
            });
        });
        group.bench_function("load", |b| b.iter(|| load(black_box(&case.sources))));
        let project = load(&case.sources);
        group.bench_function("plan", |b| {
            b.iter(|| {
                project
                    .plan(black_box(&case.last), &overrides)
                    .unwrap_or_else(|e| panic!("{e}"))
            });
        });
        let plan = project
            .plan(&case.last, &overrides)
            .unwrap_or_else(|e| panic!("{e}"));
        group.bench_function("to_json", |b| b.iter(|| black_box(&plan).to_json()));
        group.finish();
    }
}

criterion_group!(benches, plan);
criterion_main!(benches);
