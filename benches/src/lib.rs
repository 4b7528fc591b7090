//! Synthetic dstack projects for benchmarks, and the same pipelines for Snakemake and DVC.
//!
//! A [`Dag`] is a dependency graph of `n` workflows named `step-00001` ... in one of three
//! [`Shape`]s. From it come the `.dstack/workflows.yaml` and `.dstack/variables.yaml` texts
//! ([`Dag::workflows_yaml`], [`Dag::variables_yaml`]) and, for whole-program comparisons, a
//! `Snakefile` and a `dvc.yaml` with the same rules/stages and the same edges.
//!
//! The workflows are meant to look like a real project's, not like a minimal parser test: they
//! rotate through four kinds (a Python data-preparation script, a Python training job on a GPU,
//! a Docker job of shell commands, a Docker service with ports), with `help`, `requirements`,
//! `environment`, `artifacts`, `resources`, `timeout`/`retries`, and `${{ }}` variables that
//! come from a `global` section and from each workflow's own section of `variables.yaml`.
//!
//! Everything is deterministic: the `random` shape uses a fixed-seed xorshift generator.
//!
//! ```
//! use benches::{Dag, Shape};
//!
//! let dag = Dag::new(10, Shape::Chain);
//! assert_eq!(dag.last(), "step-00010");
//! assert!(dag.workflows_yaml().starts_with("workflows:\n"));
//! assert_eq!(dag.closure_len(dag.len() - 1), 10);
//! ```

use std::fmt;
use std::str::FromStr;

/// How the workflows depend on each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Each workflow depends on the previous one: `n` stages of one job.
    Chain,
    /// `n - 1` independent workflows and a final one that depends on all of them: two stages.
    FanIn,
    /// Each workflow depends on up to three earlier ones (one of them among the eight just
    /// before it), chosen by a seeded generator.
    Random,
}

impl Shape {
    /// Every shape, in the order benchmarks report them.
    pub const ALL: [Shape; 3] = [Shape::Chain, Shape::FanIn, Shape::Random];

    /// The name used on the command line and in benchmark ids: `chain`, `fan-in`, `random`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::FanIn => "fan-in",
            Shape::Random => "random",
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`Shape::from_str`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownShape(pub String);

impl fmt::Display for UnknownShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown shape `{}` (expected `chain`, `fan-in` or `random`)",
            self.0
        )
    }
}

impl std::error::Error for UnknownShape {}

impl FromStr for Shape {
    type Err = UnknownShape;

    fn from_str(s: &str) -> Result<Shape, UnknownShape> {
        match s {
            "chain" => Ok(Shape::Chain),
            "fan-in" | "fanin" | "fan_in" => Ok(Shape::FanIn),
            "random" => Ok(Shape::Random),
            _ => Err(UnknownShape(s.to_owned())),
        }
    }
}

/// A tiny xorshift64* generator: deterministic, good enough to draw graph edges.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator started from `seed` (zero is replaced, xorshift would stay at zero).
    #[must_use]
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: usize) -> usize {
        // Both conversions are lossless on 64-bit targets and harmless elsewhere.
        (self.next_u64() % bound as u64) as usize
    }
}

/// The seed of the `random` shape.
pub const SEED: u64 = 0x00d5_7ac6_2022;

/// A graph of `n` workflows; workflow `i` (0-based) is called `step-{i + 1:05}` and depends
/// only on workflows with a smaller index.
#[derive(Clone, Debug)]
pub struct Dag {
    shape: Shape,
    deps: Vec<Vec<usize>>,
}

impl Dag {
    /// Builds the graph of `n` workflows in `shape`.
    #[must_use]
    pub fn new(n: usize, shape: Shape) -> Dag {
        let deps = match shape {
            Shape::Chain => (0..n)
                .map(|i| if i == 0 { Vec::new() } else { vec![i - 1] })
                .collect(),
            Shape::FanIn => (0..n)
                .map(|i| {
                    if i + 1 == n && n > 1 {
                        (0..i).collect()
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            Shape::Random => {
                let mut rng = XorShift::new(SEED ^ n as u64);
                (0..n)
                    .map(|i| {
                        if i == 0 {
                            return Vec::new();
                        }
                        let want = (1 + rng.below(3)).min(i);
                        // One recent dependency keeps the graph deep, the others reach back.
                        let mut d = vec![i - 1 - rng.below(i.min(8))];
                        while d.len() < want {
                            let j = rng.below(i);
                            if !d.contains(&j) {
                                d.push(j);
                            }
                        }
                        d.sort_unstable();
                        d
                    })
                    .collect()
            }
        };
        Dag { shape, deps }
    }

    /// The shape it was built with.
    #[must_use]
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The number of workflows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.deps.len()
    }

    /// Whether it has no workflow.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.deps.is_empty()
    }

    /// The workflows that workflow `i` depends on.
    #[must_use]
    pub fn deps(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    /// The name of workflow `i`.
    #[must_use]
    pub fn name(i: usize) -> String {
        format!("step-{:05}", i + 1)
    }

    /// The name of the last workflow, the one benchmarks plan.
    #[must_use]
    pub fn last(&self) -> String {
        Dag::name(self.len().saturating_sub(1))
    }

    /// Which workflows planning `target` needs (itself included).
    #[must_use]
    pub fn closure(&self, target: usize) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(self.deps[i].iter().copied().filter(|&j| !seen[j]));
            }
        }
        seen
    }

    /// How many jobs the plan of `target` has (one per workflow: every kind makes one job).
    #[must_use]
    pub fn closure_len(&self, target: usize) -> usize {
        self.closure(target).iter().filter(|&&b| b).count()
    }

    /// How many stages the plan of `target` has: the longest dependency path, in workflows.
    #[must_use]
    pub fn stages(&self, target: usize) -> usize {
        let needed = self.closure(target);
        let mut level = vec![0usize; self.len()];
        // Dependencies always have smaller indices, so one pass in index order suffices.
        for i in 0..=target {
            if needed[i] {
                level[i] = self.deps[i]
                    .iter()
                    .map(|&j| level[j] + 1)
                    .max()
                    .unwrap_or(0);
            }
        }
        level[target] + 1
    }

    /// The text of `.dstack/workflows.yaml`.
    #[must_use]
    pub fn workflows_yaml(&self) -> String {
        let mut out = String::with_capacity(self.len() * 420);
        self.write_workflows(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    /// The text of `.dstack/variables.yaml`.
    #[must_use]
    pub fn variables_yaml(&self) -> String {
        let mut out = String::with_capacity(self.len() * 60);
        self.write_variables(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    /// A `Snakefile` with one rule per workflow and the same edges (through `out/NAME.done`
    /// files); `snakemake -n out/LAST.done` is the equivalent of planning the last workflow.
    #[must_use]
    pub fn snakefile(&self) -> String {
        let mut out = String::with_capacity(self.len() * 260);
        self.write_snakefile(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    /// A `dvc.yaml` with one stage per workflow and the same edges; `dvc repro --dry LAST` is
    /// the equivalent of planning the last workflow.
    #[must_use]
    pub fn dvc_yaml(&self) -> String {
        let mut out = String::with_capacity(self.len() * 160);
        self.write_dvc(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_workflows(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(out, "workflows:")?;
        for i in 0..self.len() {
            let name = Dag::name(i);
            let n = i + 1;
            writeln!(out, "  - name: {name}")?;
            match Kind::of(i) {
                Kind::Prepare => {
                    writeln!(out, "    help: prepare shard {n} of the dataset")?;
                    writeln!(out, "    provider: python")?;
                    writeln!(
                        out,
                        "    script: prepare.py --shard {n} --seed ${{{{ seed }}}}"
                    )?;
                    writeln!(out, "    requirements: requirements.txt")?;
                    writeln!(out, "    python: \"3.10\"")?;
                    writeln!(out, "    environment:")?;
                    writeln!(out, "      PYTHONPATH: src")?;
                    writeln!(out, "      SHARD: \"{n}\"")?;
                    writeln!(out, "    artifacts:")?;
                    writeln!(out, "      - data/{name}")?;
                    writeln!(out, "    resources:")?;
                    writeln!(out, "      cpu: 2")?;
                    writeln!(out, "      memory: 8GB")?;
                }
                Kind::Train => {
                    writeln!(out, "    help: train model {n}")?;
                    writeln!(out, "    provider: python")?;
                    writeln!(
                        out,
                        "    script: train.py --epochs ${{{{ epochs }}}} --lr ${{{{ lr }}}} --batch-size ${{{{ batch-size }}}}"
                    )?;
                    writeln!(out, "    requirements:")?;
                    writeln!(out, "      - torch")?;
                    writeln!(out, "      - numpy")?;
                    writeln!(out, "    environment:")?;
                    writeln!(out, "      PYTHONPATH: src")?;
                    writeln!(out, "    artifacts:")?;
                    writeln!(out, "      - checkpoints/{name}")?;
                    writeln!(out, "    timeout: 2h")?;
                    writeln!(out, "    retries: 2")?;
                    writeln!(out, "    resources:")?;
                    writeln!(out, "      cpu: 4")?;
                    writeln!(out, "      memory: 16GiB")?;
                    writeln!(out, "      gpu: ${{{{ gpu }}}}")?;
                }
                Kind::Shell => {
                    writeln!(out, "    provider: docker")?;
                    writeln!(out, "    image: ubuntu:22.04")?;
                    writeln!(out, "    commands:")?;
                    writeln!(out, "      - mkdir -p out/{name}")?;
                    writeln!(
                        out,
                        "      - echo \"${{{{ message }}}}\" > out/{name}/log.txt"
                    )?;
                    writeln!(
                        out,
                        "      - sha256sum out/{name}/log.txt > out/{name}/sums"
                    )?;
                    writeln!(out, "    artifacts:")?;
                    writeln!(out, "      - out/{name}")?;
                    writeln!(out, "    resources:")?;
                    writeln!(out, "      cpu: 1")?;
                    writeln!(out, "      memory: 512MiB")?;
                }
                Kind::Serve => {
                    writeln!(out, "    help: serve model {n}")?;
                    writeln!(out, "    provider: docker")?;
                    writeln!(out, "    image: python:3.10-slim")?;
                    writeln!(out, "    commands:")?;
                    writeln!(out, "      - pip install -r requirements.txt")?;
                    writeln!(out, "      - python serve.py --port ${{{{ port }}}}")?;
                    writeln!(out, "    ports:")?;
                    writeln!(out, "      - ${{{{ port }}}}")?;
                    writeln!(out, "    artifacts: [logs/{name}]")?;
                    writeln!(out, "    resources:")?;
                    writeln!(out, "      cpu: 2")?;
                    writeln!(out, "      memory: 2GB")?;
                    writeln!(out, "      gpu:")?;
                    writeln!(out, "        count: 1")?;
                    writeln!(out, "        name: V100")?;
                }
            }
            if !self.deps[i].is_empty() {
                writeln!(out, "    depends-on:")?;
                for &d in &self.deps[i] {
                    writeln!(out, "      - {}", Dag::name(d))?;
                }
            }
        }
        Ok(())
    }

    fn write_variables(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(out, "variables:")?;
        writeln!(out, "  global:")?;
        writeln!(out, "    seed: 42")?;
        writeln!(out, "    message: hello from dstack")?;
        for i in 0..self.len() {
            writeln!(out, "  {}:", Dag::name(i))?;
            let n = i + 1;
            match Kind::of(i) {
                Kind::Prepare => {
                    writeln!(out, "    shard-size: {}", 1000 + n % 7 * 250)?;
                }
                Kind::Train => {
                    writeln!(out, "    epochs: {}", 5 + n % 20)?;
                    writeln!(out, "    lr: 0.001")?;
                    writeln!(out, "    batch-size: 64")?;
                    writeln!(out, "    gpu: 1")?;
                }
                Kind::Shell => {
                    writeln!(out, "    message: step {n} done")?;
                }
                Kind::Serve => {
                    writeln!(out, "    port: {}", 8000 + n % 1000)?;
                }
            }
        }
        Ok(())
    }

    fn write_snakefile(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(
            out,
            "# Generated by `cargo run -p benches --bin gen`: the same DAG as .dstack/workflows.yaml."
        )?;
        for i in 0..self.len() {
            let name = Dag::name(i);
            let n = i + 1;
            writeln!(out, "\nrule {}:", name.replace('-', "_"))?;
            if !self.deps[i].is_empty() {
                writeln!(out, "    input:")?;
                for &d in &self.deps[i] {
                    writeln!(out, "        \"out/{}.done\",", Dag::name(d))?;
                }
            }
            writeln!(out, "    output:")?;
            writeln!(out, "        \"out/{name}.done\",")?;
            let (threads, mem_mb) = Kind::of(i).cpu_mem();
            writeln!(out, "    threads: {threads}")?;
            writeln!(out, "    resources:")?;
            writeln!(out, "        mem_mb={mem_mb},")?;
            writeln!(out, "    shell:")?;
            writeln!(out, "        \"{} > {{output}}\"", Kind::of(i).command(n))?;
        }
        Ok(())
    }

    fn write_dvc(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(out, "stages:")?;
        for i in 0..self.len() {
            let name = Dag::name(i);
            writeln!(out, "  {name}:")?;
            writeln!(
                out,
                "    cmd: {} > out/{name}.done",
                Kind::of(i).command(i + 1)
            )?;
            if !self.deps[i].is_empty() {
                writeln!(out, "    deps:")?;
                for &d in &self.deps[i] {
                    writeln!(out, "      - out/{}.done", Dag::name(d))?;
                }
            }
            writeln!(out, "    outs:")?;
            writeln!(out, "      - out/{name}.done")?;
        }
        Ok(())
    }
}

/// The four kinds of workflow the generator rotates through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Prepare,
    Train,
    Shell,
    Serve,
}

impl Kind {
    fn of(i: usize) -> Kind {
        match i % 4 {
            0 => Kind::Prepare,
            1 => Kind::Train,
            2 => Kind::Shell,
            _ => Kind::Serve,
        }
    }

    /// Threads and megabytes of memory, for the Snakemake rules.
    fn cpu_mem(self) -> (u32, u32) {
        match self {
            Kind::Prepare => (2, 8000),
            Kind::Train => (4, 17180),
            Kind::Shell => (1, 512),
            Kind::Serve => (2, 2000),
        }
    }

    /// The command, with the variables' values, for Snakemake and DVC (no quotes inside).
    fn command(self, n: usize) -> String {
        match self {
            Kind::Prepare => format!("python prepare.py --shard {n} --seed 42"),
            Kind::Train => format!(
                "python train.py --epochs {} --lr 0.001 --batch-size 64",
                5 + n % 20
            ),
            Kind::Shell => format!("echo step {n} done"),
            Kind::Serve => format!("python serve.py --port {}", 8000 + n % 1000),
        }
    }
}

/// The `.dstack/workflows.yaml` text of `n` workflows in `shape`.
#[must_use]
pub fn generate(n: usize, shape: Shape) -> String {
    Dag::new(n, shape).workflows_yaml()
}

/// The `.dstack/variables.yaml` text that goes with [`generate`]`(n, shape)`.
#[must_use]
pub fn generate_variables(n: usize, shape: Shape) -> String {
    Dag::new(n, shape).variables_yaml()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dstack_core::{Overrides, Project, ProviderRegistry, Sources};

    fn load(dag: &Dag) -> Project {
        let sources = Sources {
            workflows: Some(dag.workflows_yaml()),
            variables: Some(dag.variables_yaml()),
            providers: None,
        };
        match Project::from_sources("bench", &sources, ProviderRegistry::default()) {
            Ok(p) => p,
            Err(e) => panic!("{} ({}) does not load:\n{e}", dag.len(), dag.shape()),
        }
    }

    #[test]
    fn generated_projects_load_validate_and_plan_every_shape() {
        for shape in Shape::ALL {
            for n in [1, 2, 7, 60] {
                let dag = Dag::new(n, shape);
                let project = load(&dag);
                assert_eq!(project.workflows().len(), n);
                assert!(
                    project.warnings().0.is_empty(),
                    "{shape}: {}",
                    project.warnings()
                );
                if let Err(e) = project.validate(&Overrides::new()) {
                    panic!("{n} ({shape}) does not validate:\n{e}");
                }
                let plan = match project.plan(&dag.last(), &Overrides::new()) {
                    Ok(p) => p,
                    Err(e) => panic!("{n} ({shape}) does not plan:\n{e}"),
                };
                assert_eq!(plan.jobs.len(), dag.closure_len(n - 1), "{n} {shape}");
                assert_eq!(plan.stages.len(), dag.stages(n - 1), "{n} {shape}");
            }
        }
    }

    #[test]
    fn shapes_have_the_documented_jobs_and_stages() {
        let n = 200;
        let chain = Dag::new(n, Shape::Chain);
        assert_eq!((chain.closure_len(n - 1), chain.stages(n - 1)), (n, n));
        let fan_in = Dag::new(n, Shape::FanIn);
        assert_eq!((fan_in.closure_len(n - 1), fan_in.stages(n - 1)), (n, 2));
        let random = Dag::new(n, Shape::Random);
        assert!((1..=n - 1).all(|i| (1..=3).contains(&random.deps(i).len())));
        assert!((0..n).all(|i| random.deps(i).iter().all(|&d| d < i)));
        // The plan of the last workflow of a random DAG reaches most of it.
        assert!(random.closure_len(n - 1) > n / 2);
    }

    #[test]
    fn substitutes_variables_and_keeps_their_types() {
        let dag = Dag::new(4, Shape::Chain);
        let plan = load(&dag)
            .plan(&dag.last(), &Overrides::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let train = plan
            .job("step-00002")
            .unwrap_or_else(|| panic!("no train job"));
        assert_eq!(
            train.commands.last().map(String::as_str),
            Some("python train.py --epochs 7 --lr 0.001 --batch-size 64")
        );
        assert_eq!(train.resources.gpu_count(), 1);
        assert_eq!(train.env.get("SEED").map(String::as_str), Some("42"));
        let shell = plan
            .job("step-00003")
            .unwrap_or_else(|| panic!("no shell job"));
        assert_eq!(
            shell.commands[1],
            "echo \"step 3 done\" > out/step-00003/log.txt"
        );
        let serve = plan
            .job("step-00004")
            .unwrap_or_else(|| panic!("no serve job"));
        assert_eq!(serve.ports, [8004]);
    }

    #[test]
    fn random_shape_is_deterministic() {
        let a = Dag::new(500, Shape::Random).workflows_yaml();
        let b = Dag::new(500, Shape::Random).workflows_yaml();
        assert_eq!(a, b);
        assert_eq!(generate(500, Shape::Random), a);
    }

    #[test]
    fn snakemake_and_dvc_pipelines_have_the_same_edges() {
        let dag = Dag::new(50, Shape::Random);
        let dvc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&dag.dvc_yaml()).unwrap_or_else(|e| panic!("{e}"));
        let stages = dvc["stages"]
            .as_mapping()
            .unwrap_or_else(|| panic!("no stages"));
        assert_eq!(stages.len(), 50);
        for i in 0..dag.len() {
            let deps = stages[Dag::name(i).as_str()]["deps"]
                .as_sequence()
                .map_or(0, Vec::len);
            assert_eq!(deps, dag.deps(i).len());
        }
        let snakefile = dag.snakefile();
        assert_eq!(snakefile.matches("\nrule step_").count(), 50);
        let edges: usize = (0..dag.len()).map(|i| dag.deps(i).len()).sum();
        // Every input line is an edge; every rule has one output line.
        assert_eq!(snakefile.matches(".done\",\n").count(), edges + dag.len());
    }

    #[test]
    fn shapes_parse_from_their_names() {
        for shape in Shape::ALL {
            assert_eq!(shape.as_str().parse::<Shape>(), Ok(shape));
        }
        assert!("star".parse::<Shape>().is_err());
    }
}
