//! Planning: from a target workflow to a DAG of fully resolved jobs.
//!
//! A [`Plan`] holds the jobs of the target workflow and of everything it depends on (not
//! unrelated workflows), each with its dependencies, grouped into `stages`: levels whose jobs
//! can run in parallel, every job's dependencies being in earlier stages. `name:tag`
//! dependencies stay references (the run store resolves them when the plan runs).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::ops::Range;

use foldhash::{HashMap, HashMapExt};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::config::{Project, ProviderRef};
use crate::diag::{Code, Diagnostic, Diagnostics, Sink, did_you_mean};
use crate::error::Error;
use crate::params::{Param, Params};
use crate::resources::{Resources, format_bytes};
use crate::variables::{Budget, Overrides, ResolvedOverrides, Substitution, env_name};
use crate::yaml::{Node, NodeKind, ScalarValue};

mod json;

/// A file to download (the `curl` provider's job).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Download {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// Where to store it, relative to the working directory.
    pub output: String,
}

/// One job, fully resolved: what an executor needs to run it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Unique within the plan: the workflow's name, or `workflow/name` when a provider makes
    /// several jobs.
    pub id: String,
    /// The workflow the job belongs to.
    pub workflow: String,
    /// The provider that made it.
    pub provider: String,
    /// The container image, if the job runs in one.
    pub image: Option<String>,
    /// Shell commands, run in order in one shell; the first failure fails the job.
    pub commands: Vec<String>,
    /// The working directory, relative to the job's tree (`.` for its root).
    pub working_dir: String,
    /// Environment variables: the workflow's variables (upper-cased), then `environment`.
    pub env: BTreeMap<String, String>,
    /// Folders saved after the job, relative to the working directory.
    pub artifacts: Vec<String>,
    /// TCP ports to open.
    pub ports: Vec<u16>,
    /// Job ids this job waits for, and `workflow:tag` references to tagged runs.
    pub depends_on: Vec<String>,
    /// What the job needs.
    pub resources: Resources,
    /// A file to download instead of commands to run.
    pub download: Option<Download>,
    /// The workflow's `timeout`, in seconds.
    pub timeout_secs: Option<u64>,
    /// How many times to retry the job after a failure.
    pub retries: u32,
    /// The workflow's one-line description.
    pub help: Option<String>,
}

/// The jobs to run for one workflow, in dependency order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The workflow asked for.
    pub workflow: String,
    /// Every job, in a topological order (each after its dependencies).
    pub jobs: Vec<JobSpec>,
    /// Job ids level by level; jobs of one stage can run in parallel.
    pub stages: Vec<Vec<String>>,
    /// How command-line variables were matched ("`--epoch` is taken as variable `epochs`").
    #[serde(skip)]
    pub notes: Vec<String>,
    /// Warnings about the workflows planned (deprecated keys...).
    #[serde(skip)]
    pub warnings: Diagnostics,
}

impl Project {
    /// Plans `workflow` with variable `overrides`.
    ///
    /// # Errors
    /// [`Error::Invalid`] with every problem of the planned workflows: unknown workflow or
    /// variables, bad parameters, undefined `${{ }}`...
    pub fn plan(&self, workflow: &str, overrides: &Overrides) -> Result<Plan, Error> {
        let resolved = overrides
            .resolve(&self.variables)
            .map_err(|d| Error::Invalid(Diagnostics(d)))?;
        let Some(&target) = self.index.get(workflow) else {
            let hint = did_you_mean(workflow, self.workflows.iter().map(|w| w.name.as_str()));
            let mut d = Diagnostic::error(
                Code::UnknownWorkflow,
                format!(
                    "no workflow named `{workflow}` in `{}`",
                    self.files.workflows.display()
                ),
            );
            d.suggest(hint);
            if hint.is_none() {
                let names: Vec<&str> = self.workflows.iter().map(|w| w.name.as_str()).collect();
                d.help(format!("the workflows are `{}`", names.join("`, `")));
            }
            return Err(Error::Invalid(d.into()));
        };
        let order = self.closure(target);
        let threads = crate::parallel::threads();
        let (mut jobs, jobs_of, mut diags) =
            match self.materialise_parallel(&order, &resolved, threads) {
                Some(done) => done,
                None => self.materialise_in_order(&order, &resolved),
            };
        if !diags.iter().any(Diagnostic::is_error) {
            self.link(&order, &mut jobs, &jobs_of);
        }
        diags.extend(self.warnings.0.iter().cloned());
        let mut diags = Diagnostics(diags);
        diags.sort();
        if diags.has_errors() {
            return Err(Error::Invalid(diags));
        }
        let (jobs, stages) = order_jobs(jobs).map_err(Error::Invalid)?;
        Ok(Plan {
            workflow: workflow.to_owned(),
            jobs,
            stages,
            notes: resolved.notes,
            warnings: diags,
        })
    }

    /// Checks every workflow as it would be planned with `overrides`: parameters, variables,
    /// providers. Returns the warnings.
    ///
    /// # Errors
    /// [`Error::Invalid`] with every problem found in every workflow.
    pub fn validate(&self, overrides: &Overrides) -> Result<Diagnostics, Error> {
        let resolved = overrides
            .resolve(&self.variables)
            .map_err(|d| Error::Invalid(Diagnostics(d)))?;
        let mut diags = self.warnings.0.clone();
        self.check_all(&resolved, &mut diags);
        let mut diags = Diagnostics(diags);
        diags.sort();
        if diags.has_errors() {
            Err(Error::Invalid(diags))
        } else {
            Ok(diags)
        }
    }

    /// Checks the parameters of every workflow with the default variables (for `load`, which
    /// reports them beside structural problems).
    pub(crate) fn check_parameters(&self, diags: &mut Vec<Diagnostic>) {
        self.check_all(&ResolvedOverrides::default(), diags);
    }

    fn check_all(&self, resolved: &ResolvedOverrides, diags: &mut Vec<Diagnostic>) {
        let mut budget = Budget::default();
        for i in 0..self.workflows.len() {
            self.materialise(i, resolved, false, &mut budget, diags);
        }
    }

    /// The workflows `target` needs, itself included, each after its dependencies (by level,
    /// then file order).
    fn closure(&self, target: usize) -> Vec<usize> {
        // `level[i]`: the level of workflow `i` once known. A map, not a vector of all the
        // workflows: planning one workflow costs what its closure holds, so planning each of
        // N workflows is not N².
        let mut level: HashMap<usize, usize> = HashMap::new();
        let mut order: Vec<usize> = Vec::new();
        // Iterative post-order walk; `load` has ruled out cycles.
        let mut stack = vec![(target, false)];
        while let Some((i, expanded)) = stack.pop() {
            if level.contains_key(&i) {
                continue;
            }
            let deps = self.workflows[i]
                .depends_on
                .iter()
                .filter(|d| d.tag.is_none())
                .filter_map(|d| self.index.get(&d.workflow).copied());
            if expanded {
                let l = deps
                    .filter_map(|j| level.get(&j))
                    .map(|l| l + 1)
                    .max()
                    .unwrap_or(0);
                level.insert(i, l);
                order.push(i);
            } else {
                stack.push((i, true));
                stack.extend(deps.filter(|j| !level.contains_key(j)).map(|j| (j, false)));
            }
        }
        order.sort_unstable_by_key(|&i| (level[&i], i));
        order
    }

    /// Materialises the workflows of `order` one after the other: the jobs, where each
    /// workflow's jobs are, and the problems found.
    fn materialise_in_order(&self, order: &[usize], resolved: &ResolvedOverrides) -> Materialised {
        let mut diags = Vec::new();
        let mut jobs = Vec::with_capacity(order.len());
        let mut jobs_of: HashMap<usize, Range<usize>> = HashMap::with_capacity(order.len());
        let mut budget = Budget::default();
        for &i in order {
            let made = self.materialise(i, resolved, true, &mut budget, &mut diags);
            jobs_of.insert(i, jobs.len()..jobs.len() + made.len());
            jobs.extend(made);
        }
        (jobs, jobs_of, diags)
    }

    /// [`Project::materialise_in_order`] on several threads, for large plans: the workflows
    /// are independent until [`Project::link`], and threads claim them in pieces
    /// ([`crate::parallel::pieces`]). `None` when it does not apply: a small plan, one
    /// processor, a workflow whose provider is a program (programs run one at a time) or is
    /// not [`Provider::concurrent`](crate::Provider::concurrent), or any error found. Errors
    /// are then found again in order, so that every message, and which of them the budgets
    /// allow, is the same as without threads.
    fn materialise_parallel(
        &self,
        order: &[usize],
        resolved: &ResolvedOverrides,
        threads: usize,
    ) -> Option<Materialised> {
        let threads = threads.min(order.len() / PARALLEL_WORKFLOWS);
        if threads < 2 {
            return None;
        }
        // Programs run one at a time; so do providers that say so.
        let concurrent = |i: &usize| match &self.workflows[*i].provider {
            ProviderRef::Named(name) => self.registry.get(name).is_some_and(|p| p.concurrent()),
            ProviderRef::Repo { .. } => false,
        };
        if !order.iter().all(concurrent) {
            return None;
        }
        let parts: Vec<&[usize]> = order.chunks(PIECE_WORKFLOWS).collect();
        let work = |k: usize| {
            // Each piece has its share of the budget: spending more makes an error, and errors
            // are found again in order with the whole budget.
            let mut budget = Budget::default();
            budget.bytes /= parts.len();
            let mut diags = Vec::new();
            let mut sizes = Vec::with_capacity(parts[k].len());
            let mut jobs = Vec::with_capacity(parts[k].len());
            for &i in parts[k] {
                let made = self.materialise(i, resolved, true, &mut budget, &mut diags);
                if diags.iter().any(Diagnostic::is_error) {
                    return None;
                }
                sizes.push(made.len());
                jobs.extend(made);
            }
            Some((jobs, sizes, diags))
        };
        let ((), parts) = crate::parallel::pieces(parts.len(), threads, || (), work);
        let mut jobs = Vec::with_capacity(parts.iter().flatten().map(|p| p.0.len()).sum());
        let mut jobs_of: HashMap<usize, Range<usize>> = HashMap::with_capacity(order.len());
        let mut diags = Vec::new();
        let mut at = order.iter();
        for part in parts {
            let (made, sizes, found) = part?;
            let mut start = jobs.len();
            for size in sizes {
                jobs_of.insert(*at.next()?, start..start + size);
                start += size;
            }
            jobs.extend(made);
            diags.extend(found);
        }
        Some((jobs, jobs_of, diags))
    }

    /// Gives the jobs of every workflow of `order` that wait for nothing inside their
    /// workflow the workflow's own dependencies: the jobs of the workflows it depends on
    /// (before it in `jobs`), and its `name:tag` references.
    fn link(&self, order: &[usize], jobs: &mut [JobSpec], jobs_of: &HashMap<usize, Range<usize>>) {
        for &i in order {
            let wf = &self.workflows[i];
            if wf.depends_on.is_empty() {
                continue;
            }
            let Some(range) = jobs_of.get(&i) else {
                continue;
            };
            let (before, own) = jobs.split_at_mut(range.start);
            let own = &mut own[..range.len()];
            let mut external: Vec<String> = Vec::new();
            for d in &wf.depends_on {
                match &d.tag {
                    Some(_) => external.push(d.reference()),
                    None => {
                        let made = self
                            .index
                            .get(&d.workflow)
                            .and_then(|j| jobs_of.get(j))
                            .and_then(|r| before.get(r.clone()))
                            .unwrap_or_default();
                        external.extend(made.iter().map(|j| j.id.clone()));
                    }
                }
            }
            let waiting: Vec<usize> = (0..own.len())
                .filter(|&n| own[n].depends_on.is_empty())
                .collect();
            // The last of them takes the list; the others get copies.
            if let Some((&last, rest)) = waiting.split_last() {
                for &n in rest {
                    own[n].depends_on.clone_from(&external);
                }
                own[last].depends_on = external;
            }
        }
    }

    /// Substitutes and materialises workflow `i` into its jobs. `planning` is false for
    /// `validate`, which accepts custom providers whose programs cannot run here.
    fn materialise(
        &self,
        i: usize,
        resolved: &ResolvedOverrides,
        planning: bool,
        budget: &mut Budget,
        diags: &mut Vec<Diagnostic>,
    ) -> Vec<JobSpec> {
        let wf = &self.workflows[i];
        let vars = self.variables.visible_refs(&wf.name, resolved);
        let mut substitution = Substitution {
            vars: &vars,
            workflow: &wf.name,
            source: self.workflows_source.as_deref(),
            origins: Vec::new(),
            budget,
            report_unknown: self.variables_complete,
        };
        // Only the values that hold a `${{ }}` are rebuilt; the others are read in place.
        let substituted: Vec<Option<Node>> = {
            let mut sink = Sink::new(&self.files.workflows, diags);
            wf.params
                .iter()
                .map(|e| substitution.changed(&e.value, &mut sink))
                .collect()
        };
        let params: Vec<Param<'_>> = wf
            .params
            .iter()
            .zip(&substituted)
            .map(|(e, new)| Param {
                key: &e.key,
                value: new.as_ref().unwrap_or(&e.value),
            })
            .collect();
        let provider_name = wf.provider.name();
        let mut reader = Params::from_params(
            &wf.name,
            provider_name,
            self.files.workflows.clone(),
            wf.pos,
            params,
        );
        reader.origins = substitution.origins;
        reader.variables_path = Some(&self.files.variables);
        let timeout = reader.duration("timeout");
        let retries = reader
            .integer("retries", 0, 100)
            .and_then(|r| u32::try_from(r).ok());
        let provider = match &wf.provider {
            ProviderRef::Named(name) => self.registry.get(name),
            ProviderRef::Repo { .. } => None,
        };
        let mut jobs = match provider {
            Some(p) => {
                let jobs = p.jobs(&mut reader);
                match crate::program::check_jobs(&jobs) {
                    Ok(()) => jobs,
                    Err(problems) => {
                        reader
                            .error(
                                wf.provider_pos,
                                Code::Provider,
                                format!(
                                    "provider `{provider_name}` made invalid jobs for workflow `{}`: {}",
                                    wf.name,
                                    problems.join("; ")
                                ),
                            )
                            .help("jobs of one workflow need distinct ids, and depend only on each other");
                        Vec::new()
                    }
                }
            }
            None if matches!(&wf.provider, ProviderRef::Named(n) if !self.custom.iter().any(|c| &c.name == n)) =>
            {
                // An unknown provider, already reported by `load`: its keys cannot be checked.
                for e in &wf.params {
                    reader.raw_any(&e.key.text);
                }
                Vec::new()
            }
            None if planning && self.registry.program_runner().is_some() => {
                let params = wf
                    .params
                    .iter()
                    .zip(&substituted)
                    .filter(|(e, _)| !matches!(e.key.text.as_str(), "timeout" | "retries"))
                    .map(|(e, new)| {
                        (
                            e.key.text.as_str().to_owned(),
                            new.as_ref().unwrap_or(&e.value),
                        )
                    })
                    .filter(|(_, v)| !v.is_invalid())
                    .map(|(k, v)| (k, v.to_json()))
                    .collect();
                let variables = vars
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_json()))
                    .collect();
                for e in &wf.params {
                    reader.raw_any(&e.key.text);
                }
                let input = crate::program::ProgramInput {
                    workflow: wf.name.clone(),
                    provider: provider_name.to_owned(),
                    params,
                    variables,
                };
                match self.registry.program_runner() {
                    Some(runner) if !reader.has_errors() => crate::program::jobs_of_program(
                        self,
                        wf,
                        input,
                        runner.as_ref(),
                        &mut reader,
                    ),
                    _ => Vec::new(),
                }
            }
            None if self.registry.program_runner().is_some() => {
                // `validate`: the program runs when the workflow is planned; its parameters
                // are the program's to check.
                for e in &wf.params {
                    reader.raw_any(&e.key.text);
                }
                Vec::new()
            }
            None => {
                let origin = match &wf.provider {
                    ProviderRef::Named(_) => "`.dstack/providers.yaml`".to_owned(),
                    ProviderRef::Repo { repo, .. } => format!("repository `{repo}`"),
                };
                let message = format!(
                    "workflow `{}` uses provider `{provider_name}` from {origin}, whose program must run to make its jobs, and no provider program runner is set",
                    wf.name
                );
                let d = if planning {
                    reader.error(wf.provider_pos, Code::Provider, message)
                } else {
                    reader.warning(wf.provider_pos, Code::Provider, message)
                };
                if self.registry.get(provider_name).is_some() {
                    d.help(format!("the built-in provider `{provider_name}` needs no repository: write `provider: {provider_name}`"));
                } else {
                    d.help("set one with `ProviderRegistry::set_program_runner` (dstack-exec has one), or use a built-in provider (`docker`, `python`, `curl`) or one registered through the Rust API");
                }
                // Its parameters belong to the provider program: do not report them as unknown.
                for e in &wf.params {
                    reader.raw_any(&e.key.text);
                }
                Vec::new()
            }
        };
        let mut var_env: BTreeMap<String, String> = BTreeMap::new();
        for (n, (name, value)) in (&vars).into_iter().enumerate() {
            let key = env_name(name);
            if var_env.insert(key, env_text(value)).is_some() {
                // Two variables, one environment variable (`batch-size`, `batch_size`): the
                // later one wins; say so. Rare, so the earlier one is looked for only now.
                let key = env_name(name);
                let earlier = (&vars)
                    .into_iter()
                    .take(n)
                    .find(|(other, _)| env_name(other) == key)
                    .map_or("", |(other, _)| other);
                let message = format!(
                    "variables `{earlier}` and `{name}` of workflow `{}` both become the environment variable `{key}`",
                    wf.name
                );
                reader.warning(wf.pos, Code::Unused, message).help(format!(
                    "the job gets the value of `{name}`; rename one of them"
                ));
            }
        }
        diags.extend(reader.finish());

        let single = jobs.len() == 1;
        let local_ids: Vec<String> = if single {
            Vec::new()
        } else {
            crate::program::local_ids(&jobs)
        };
        let count = jobs.len();
        for (n, job) in jobs.iter_mut().enumerate() {
            // The last job takes the workflow's values; the others get copies.
            let last = n + 1 == count;
            let id = if single {
                wf.name.clone()
            } else {
                format!("{}/{}", wf.name, local_ids[n])
            };
            // Jobs with no dependencies inside the workflow wait for the workflow's own
            // dependencies: `link` adds them once every workflow's jobs are known.
            let deps: Vec<String> = job
                .depends_on
                .iter()
                .map(|local| format!("{}/{local}", wf.name))
                .collect();
            let mut env = if last {
                std::mem::take(&mut var_env)
            } else {
                var_env.clone()
            };
            // The job's own variables win, as with `append`, but in place: `append` would
            // build a third tree.
            for (k, v) in std::mem::take(&mut job.env) {
                env.insert(k, v);
            }
            *job = JobSpec {
                id,
                workflow: wf.name.clone(),
                provider: provider_name.to_owned(),
                env,
                depends_on: deps,
                timeout_secs: timeout.map(|t| t.as_secs().max(1)),
                retries: retries.unwrap_or(0),
                help: wf.help.clone(),
                ..std::mem::take(job)
            };
        }
        jobs
    }
}

/// The jobs of a plan in the order of its workflows, where the jobs of each workflow are, and
/// the problems found.
type Materialised = (Vec<JobSpec>, HashMap<usize, Range<usize>>, Vec<Diagnostic>);

/// Plans of fewer workflows than this per thread are made on one thread: starting one costs
/// about as much as materialising a few dozen workflows.
const PARALLEL_WORKFLOWS: usize = 256;

/// How many workflows a thread claims at a time.
const PIECE_WORKFLOWS: usize = 64;

/// A variable's value as environment text: scalars as written, lists and mappings as JSON.
fn env_text(value: &Node) -> String {
    match &value.kind {
        NodeKind::Scalar(s) if s.value == ScalarValue::Null => String::new(),
        NodeKind::Scalar(s) => s.text.as_str().to_owned(),
        _ => value.to_json().to_string(),
    }
}

/// Sorts jobs topologically and groups them into stages (Kahn's algorithm by levels).
fn order_jobs(jobs: Vec<JobSpec>) -> Result<(Vec<JobSpec>, Vec<Vec<String>>), Diagnostics> {
    let n = jobs.len();
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.as_str(), i))
        .collect();
    // The edges `dependency -> dependent`, as one flat list grouped by dependency (CSR):
    // `dependents[starts[d]..starts[d + 1]]` wait for job `d`. Two vectors instead of one
    // per job.
    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut indegree = vec![0usize; n];
    let mut starts = vec![0usize; n + 1];
    for (i, job) in jobs.iter().enumerate() {
        for dep in &job.depends_on {
            if let Some(&d) = index.get(dep.as_str()) {
                indegree[i] += 1;
                starts[d + 1] += 1;
                edges.push((d, i));
            }
        }
    }
    for d in 0..n {
        starts[d + 1] += starts[d];
    }
    let mut dependents = vec![0usize; edges.len()];
    let mut fill = starts.clone();
    for &(d, i) in &edges {
        dependents[fill[d]] = i;
        fill[d] += 1;
    }
    // Kahn's algorithm by levels: `order` holds the jobs stage after stage, `ends[k]` where
    // stage `k` ends in it.
    let mut order: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    order.reserve(n - order.len());
    let mut ends = Vec::new();
    let mut begin = 0;
    while begin < order.len() {
        let end = order.len();
        order[begin..end].sort_unstable();
        for at in begin..end {
            let i = order[at];
            for &d in &dependents[starts[i]..starts[i + 1]] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    order.push(d);
                }
            }
        }
        ends.push(end);
        begin = end;
    }
    if order.len() != n {
        let stuck: Vec<&str> = (0..n)
            .filter(|&i| indegree[i] > 0)
            .map(|i| jobs[i].id.as_str())
            .collect();
        return Err(Diagnostic::error(
            Code::Cycle,
            format!(
                "the jobs made by the providers form a cycle: `{}`",
                stuck.join("`, `")
            ),
        )
        .into());
    }
    drop(index);
    let mut stages: Vec<Vec<String>> = Vec::with_capacity(ends.len());
    let mut begin = 0;
    for &end in &ends {
        stages.push(
            order[begin..end]
                .iter()
                .map(|&i| jobs[i].id.clone())
                .collect(),
        );
        begin = end;
    }
    // Put every job at its place in stage order, in place: `place[i]` is where job `i` goes.
    let mut jobs = jobs;
    let mut place = vec![0usize; n];
    for (at, &i) in order.iter().enumerate() {
        place[i] = at;
    }
    for i in 0..n {
        while place[i] != i {
            let to = place[i];
            jobs.swap(i, to);
            place.swap(i, to);
        }
    }
    Ok((jobs, stages))
}

impl Plan {
    /// The job with id `id`.
    #[must_use]
    pub fn job(&self, id: &str) -> Option<&JobSpec> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// The plan as the JSON object of the CLI contract (pretty-printed).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes [`Plan::to_json`]'s text, and a newline, to `out` without building it in memory.
    ///
    /// # Errors
    /// When `out` fails.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        json::write_plan(self, out)?;
        out.write_all(b"\n")
    }

    /// The plan as a Graphviz DOT graph; edges go from a dependency to its dependent.
    #[must_use]
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph plan {\n  rankdir=LR;\n  node [shape=box];\n");
        let mut refs: IndexMap<&str, ()> = IndexMap::new();
        for job in &self.jobs {
            let label = match &job.image {
                Some(image) => format!(
                    "{}\\n{} · {}",
                    dot_escape(&job.id),
                    job.provider,
                    dot_escape(image)
                ),
                None => format!("{}\\n{}", dot_escape(&job.id), job.provider),
            };
            let _ = writeln!(out, "  \"{}\" [label=\"{label}\"];", dot_escape(&job.id));
            for dep in &job.depends_on {
                if self.job(dep).is_none() {
                    refs.insert(dep, ());
                }
            }
        }
        for r in refs.keys() {
            let _ = writeln!(out, "  \"{}\" [shape=note, style=dashed];", dot_escape(r));
        }
        for job in &self.jobs {
            for dep in &job.depends_on {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\";",
                    dot_escape(dep),
                    dot_escape(&job.id)
                );
            }
        }
        out.push_str("}\n");
        out
    }

    /// The plan as a Mermaid flowchart.
    #[must_use]
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let mut ids: HashMap<&str, String> = HashMap::new();
        for (n, job) in self.jobs.iter().enumerate() {
            let id = format!("j{n}");
            let _ = writeln!(out, "  {id}[\"{}\"]", mermaid_escape(&job.id));
            ids.insert(&job.id, id);
        }
        let mut refs = 0;
        for job in &self.jobs {
            for dep in &job.depends_on {
                if !ids.contains_key(dep.as_str()) {
                    let id = format!("t{refs}");
                    refs += 1;
                    let _ = writeln!(out, "  {id}[(\"{}\")]", mermaid_escape(dep));
                    ids.insert(dep, id);
                }
            }
        }
        for job in &self.jobs {
            for dep in &job.depends_on {
                let _ = writeln!(out, "  {} --> {}", ids[dep.as_str()], ids[job.id.as_str()]);
            }
        }
        out
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

impl fmt::Display for Plan {
    /// A readable outline: stages, and for each job its provider, image, commands, environment,
    /// artifacts and resources.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jobs = self.jobs.len();
        let stages = self.stages.len();
        writeln!(
            f,
            "plan for `{}`: {jobs} job{} in {stages} stage{}",
            self.workflow,
            if jobs == 1 { "" } else { "s" },
            if stages == 1 { "" } else { "s" }
        )?;
        for (n, stage) in self.stages.iter().enumerate() {
            writeln!(f, "\nstage {}", n + 1)?;
            for id in stage {
                let Some(job) = self.job(id) else { continue };
                write!(f, "  {}  ({}", job.id, job.provider)?;
                if let Some(image) = &job.image {
                    write!(f, ", {image}")?;
                }
                write!(f, ")")?;
                if !job.depends_on.is_empty() {
                    write!(f, "  after {}", job.depends_on.join(", "))?;
                }
                writeln!(f)?;
                if let Some(help) = &job.help {
                    writeln!(f, "    # {help}")?;
                }
                if job.working_dir != "." {
                    writeln!(f, "    workdir:   {}", job.working_dir)?;
                }
                for c in &job.commands {
                    // Continuation lines of a multi-line command are marked, so a value can
                    // never pass for another field of the plan.
                    let mut lines = c.lines();
                    writeln!(f, "    $ {}", lines.next().unwrap_or_default())?;
                    for line in lines {
                        writeln!(f, "    > {line}")?;
                    }
                }
                if let Some(d) = &job.download {
                    writeln!(f, "    download:  {} -> {}", d.url, d.output)?;
                }
                if !job.env.is_empty() {
                    let env: Vec<String> = job
                        .env
                        .iter()
                        .map(|(k, v)| format!("{k}={}", shown(v)))
                        .collect();
                    writeln!(f, "    env:       {}", env.join(" "))?;
                }
                if !job.artifacts.is_empty() {
                    writeln!(f, "    artifacts: {}", job.artifacts.join(", "))?;
                }
                if !job.ports.is_empty() {
                    let ports: Vec<String> = job.ports.iter().map(u16::to_string).collect();
                    writeln!(f, "    ports:     {}", ports.join(", "))?;
                }
                let res = describe_resources(&job.resources);
                if !res.is_empty() {
                    writeln!(f, "    resources: {res}")?;
                }
                if let Some(t) = job.timeout_secs {
                    writeln!(
                        f,
                        "    timeout:   {}",
                        humantime::format_duration(std::time::Duration::from_secs(t))
                    )?;
                }
                if job.retries > 0 {
                    writeln!(f, "    retries:   {}", job.retries)?;
                }
            }
        }
        Ok(())
    }
}

/// A value on one line: quoted and escaped when it holds spaces or control characters.
fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_control() || c == ' ' || c == '"')
    {
        format!("{value:?}").into()
    } else {
        value.into()
    }
}

fn plural(n: u32, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn describe_resources(r: &Resources) -> String {
    let mut parts = Vec::new();
    if let Some(cpu) = r.cpu {
        parts.push(plural(cpu, "CPU"));
    }
    if let Some(m) = r.memory_bytes {
        parts.push(format!("{} memory", format_bytes(m)));
    }
    if let Some(g) = &r.gpu {
        let mut s = match &g.name {
            Some(name) => plural(g.count, &format!("{name} GPU")),
            None => plural(g.count, "GPU"),
        };
        if let Some(m) = g.memory_bytes {
            let _ = write!(s, " with {}", format_bytes(m));
        }
        parts.push(s);
    }
    if let Some(s) = r.shm_size_bytes {
        parts.push(format!("{} shm", format_bytes(s)));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Sources;
    use crate::params::Params;
    use crate::provider::{Provider, ProviderRegistry};

    /// Two jobs per workflow, the second waiting for the first.
    #[derive(Debug)]
    struct Pair;

    impl Provider for Pair {
        fn name(&self) -> &str {
            "pair"
        }

        fn jobs(&self, params: &mut Params<'_>) -> Vec<JobSpec> {
            let image = params.required_string("image", "ubuntu");
            vec![
                JobSpec {
                    id: "first".into(),
                    image: image.clone(),
                    ..JobSpec::default()
                },
                JobSpec {
                    id: "second".into(),
                    image,
                    depends_on: vec!["first".into()],
                    ..JobSpec::default()
                },
            ]
        }
    }

    /// `n` workflows: docker, python and two-job ones, each depending on one to three
    /// earlier ones, some on tagged runs, with variables.
    fn project(n: usize, broken: Option<usize>) -> Project {
        let mut workflows = String::from("workflows:\n");
        let mut variables = String::from("variables:\n  global:\n    seed: 7\n");
        for i in 0..n {
            let mut deps: Vec<String> = Vec::new();
            for d in [i / 2, i.saturating_sub(1), i * 7 / 10] {
                let d = format!("w{d}");
                if d != format!("w{i}") && !deps.contains(&d) {
                    deps.push(d);
                }
            }
            if i % 50 == 0 && i > 0 {
                deps.push("w0:latest".to_owned());
            }
            let seed = if broken == Some(i) {
                "${{ sed }}"
            } else {
                "${{ seed }}"
            };
            match i % 3 {
                0 => workflows.push_str(&format!(
                    "  - name: w{i}\n    provider: docker\n    image: busybox\n    commands: [\"echo {seed} ${{{{ x }}}}\"]\n"
                )),
                1 => workflows.push_str(&format!(
                    "  - name: w{i}\n    provider: python\n    script: run.py --seed {seed}\n"
                )),
                _ => workflows.push_str(&format!("  - name: w{i}\n    provider: pair\n    image: busybox\n")),
            }
            if !deps.is_empty() {
                workflows.push_str(&format!("    depends-on: [{}]\n", deps.join(", ")));
            }
            variables.push_str(&format!("  w{i}:\n    x: {i}\n"));
        }
        let sources = Sources {
            workflows: Some(workflows),
            variables: Some(variables),
            providers: None,
        };
        let mut registry = ProviderRegistry::default();
        registry.register(Arc::new(Pair));
        Project::from_sources(".", &sources, registry).expect("loads")
    }

    #[test]
    fn materialising_on_threads_makes_the_same_jobs() {
        let project = project(1500, None);
        let target = project.index["w1499"];
        let order = project.closure(target);
        let resolved = ResolvedOverrides::default();
        let (mut jobs, jobs_of, diags) = project.materialise_in_order(&order, &resolved);
        project.link(&order, &mut jobs, &jobs_of);
        assert!(
            jobs.len() > order.len(),
            "two-job workflows are in the plan"
        );
        for threads in [2, 3, 5] {
            let (mut par, par_of, par_diags) = project
                .materialise_parallel(&order, &resolved, threads)
                .expect("no error: materialised on threads");
            project.link(&order, &mut par, &par_of);
            assert_eq!(par, jobs, "{threads} threads");
            assert_eq!(par_of, jobs_of);
            assert_eq!(format!("{par_diags:?}"), format!("{diags:?}"));
        }
        // Dependencies: jobs of the workflows depended on, and the tagged runs.
        let w100 = jobs.iter().find(|j| j.id == "w100").expect("w100");
        assert_eq!(
            w100.depends_on,
            ["w50/first", "w50/second", "w99", "w70", "w0:latest"]
        );
        let second = jobs.iter().find(|j| j.id == "w101/second").expect("pair");
        assert_eq!(second.depends_on, ["w101/first"]);
        let first = jobs.iter().find(|j| j.id == "w101/first").expect("pair");
        assert_eq!(first.depends_on, ["w50/first", "w50/second", "w100", "w70"]);
        // Too few workflows per thread: one thread.
        let small = project.closure(project.index["w300"]);
        assert!(project.materialise_parallel(&small, &resolved, 2).is_none());
    }

    /// Returns the jobs it was given.
    #[derive(Debug)]
    struct Given(Vec<JobSpec>);

    impl Provider for Given {
        fn name(&self) -> &str {
            "given"
        }

        fn jobs(&self, _: &mut Params<'_>) -> Vec<JobSpec> {
            self.0.clone()
        }
    }

    #[test]
    fn jobs_of_providers_in_code_are_checked() {
        let job = |id: &str, deps: &[&str]| JobSpec {
            id: id.into(),
            commands: vec!["true".into()],
            depends_on: deps.iter().map(|&d| d.to_owned()).collect(),
            ..JobSpec::default()
        };
        let plan = |jobs: Vec<JobSpec>| {
            let sources = Sources {
                workflows: Some("workflows:\n  - name: sweep\n    provider: given\n".to_owned()),
                variables: None,
                providers: None,
            };
            let mut registry = ProviderRegistry::default();
            registry.register(Arc::new(Given(jobs)));
            Project::from_sources(".", &sources, registry)
                .expect("loads")
                .plan("sweep", &crate::Overrides::new())
        };
        let problem = |jobs: Vec<JobSpec>| match plan(jobs) {
            Err(crate::Error::Invalid(d)) => {
                let d: Vec<&Diagnostic> = d.errors().collect();
                assert_eq!(d.len(), 1, "{d:?}");
                assert_eq!(d[0].code, Code::Provider);
                assert_eq!(
                    d[0].location.as_ref().map(|l| (l.line, l.column)),
                    Some((3, 15))
                );
                d[0].message.clone()
            }
            other => panic!("expected an error, got {other:?}"),
        };
        let prefix = "provider `given` made invalid jobs for workflow `sweep`: ";
        assert_eq!(
            problem(vec![job("x", &[]), job("x", &[])]),
            format!("{prefix}job id `x` is used twice")
        );
        assert_eq!(
            problem(vec![job("x", &[]), job("y", &["nope", "y"])]),
            format!(
                "{prefix}job `y` depends on `nope`, which it did not make; job `y` depends on itself"
            )
        );
        assert_eq!(
            problem(vec![job("a b", &[]), job("", &[])]),
            format!("{prefix}job id `a b` must be letters, digits, `-`, `_` or `.`")
        );
        assert_eq!(
            problem(vec![job("only", &["sweep"])]),
            format!("{prefix}its only job depends on `sweep`, which it did not make")
        );
        let mut nested = job("", &[]);
        nested.artifacts = vec!["out".into(), "logs".into(), "out/models".into()];
        assert_eq!(
            problem(vec![nested]),
            format!(
                "{prefix}artifacts `out` and `out/models` are one inside the other; list only the outer one"
            )
        );
        // Jobs without ids are numbered; they may depend on each other by those numbers.
        let made = plan(vec![job("", &[]), job("", &["1"])]).expect("plans");
        let ids: Vec<(&str, &[String])> = made
            .jobs
            .iter()
            .map(|j| (j.id.as_str(), j.depends_on.as_slice()))
            .collect();
        assert_eq!(
            ids,
            [
                ("sweep/1", &[][..]),
                ("sweep/2", &["sweep/1".to_owned()][..])
            ]
        );
    }

    /// Jobs in stages: each job one stage after its last dependency, a stage in input order;
    /// references to jobs outside the list (tagged runs) are not edges.
    #[test]
    fn jobs_are_ordered_by_stages() {
        // A random DAG over 400 jobs, listed in a shuffled order.
        let n = 400;
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % bound as u64).expect("small")
        };
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, d) in deps.iter_mut().enumerate().skip(1) {
            for _ in 0..next(4) {
                let j = next(i);
                if !d.contains(&j) {
                    d.push(j);
                }
            }
        }
        let mut listed: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            listed.swap(i, next(i + 1));
        }
        let jobs: Vec<JobSpec> = listed
            .iter()
            .map(|&i| {
                let mut depends_on: Vec<String> = deps[i].iter().map(|d| format!("j{d}")).collect();
                if i % 7 == 0 {
                    depends_on.push("prepare:latest".to_owned());
                }
                JobSpec {
                    id: format!("j{i}"),
                    depends_on,
                    ..JobSpec::default()
                }
            })
            .collect();
        // The expected stages: levels of the longest path from a job without dependencies.
        let mut level = vec![0usize; n];
        for i in 0..n {
            level[i] = deps[i].iter().map(|&d| level[d] + 1).max().unwrap_or(0);
        }
        let stages_count = level.iter().max().map_or(0, |l| l + 1);
        let expected: Vec<Vec<String>> = (0..stages_count)
            .map(|l| {
                listed
                    .iter()
                    .filter(|&&i| level[i] == l)
                    .map(|i| format!("j{i}"))
                    .collect()
            })
            .collect();
        let (ordered, stages) = order_jobs(jobs).expect("no cycle");
        assert_eq!(stages, expected);
        let ids: Vec<&str> = ordered.iter().map(|j| j.id.as_str()).collect();
        let flat: Vec<&str> = expected.iter().flatten().map(String::as_str).collect();
        assert_eq!(ids, flat, "the jobs in stage order");

        // A cycle among the jobs a provider made is an error that names them.
        let job = |id: &str, dep: &str| JobSpec {
            id: id.into(),
            depends_on: vec![dep.into()],
            ..JobSpec::default()
        };
        let jobs = vec![
            JobSpec {
                id: "w/root".into(),
                ..JobSpec::default()
            },
            job("w/a", "w/b"),
            job("w/b", "w/a"),
            job("w/c", "w/root"),
        ];
        let err = order_jobs(jobs).expect_err("a cycle");
        let text = format!("{:?}", err.0);
        assert!(text.contains("form a cycle: `w/a`, `w/b`"), "{text}");
    }

    /// A provider that must be called one at a time.
    #[derive(Debug)]
    struct OneAtATime;

    impl Provider for OneAtATime {
        fn name(&self) -> &str {
            "pair"
        }

        fn jobs(&self, params: &mut Params<'_>) -> Vec<JobSpec> {
            Pair.jobs(params)
        }

        fn concurrent(&self) -> bool {
            false
        }
    }

    #[test]
    fn providers_that_are_not_concurrent_plan_on_one_thread() {
        let mut project = project(1500, None);
        let order = project.closure(project.index["w1499"]);
        let resolved = ResolvedOverrides::default();
        assert!(project.materialise_parallel(&order, &resolved, 2).is_some());
        project.registry.register(Arc::new(OneAtATime));
        assert!(project.materialise_parallel(&order, &resolved, 2).is_none());
        // Planned all the same, on the calling thread.
        let plan = project.plan("w1499", &Overrides::new()).expect("plans");
        assert!(plan.jobs.iter().any(|j| j.id == "w1499/second"));
    }

    #[test]
    fn errors_are_found_in_order() {
        let good = project(1200, None);
        let order = good.closure(good.index["w1199"]);
        // With an override: the same on threads.
        let resolved = Overrides::from_args(&["--seed", "9"])
            .expect("args")
            .resolve(&good.variables)
            .expect("resolves");
        let (mut jobs, jobs_of, _) = good.materialise_in_order(&order, &resolved);
        good.link(&order, &mut jobs, &jobs_of);
        let (mut par, par_of, _) = good
            .materialise_parallel(&order, &resolved, 2)
            .expect("no error");
        good.link(&order, &mut par, &par_of);
        assert_eq!(par, jobs);
        assert!(jobs[0].commands[0].contains("echo 9"), "{:?}", jobs[0]);
        // An undefined variable (found when planning, not when loading) in one workflow.
        let bad = project(1200, Some(999));
        let order = bad.closure(bad.index["w1000"]);
        let resolved = ResolvedOverrides::default();
        assert!(bad.materialise_parallel(&order, &resolved, 2).is_none());
        let Err(Error::Invalid(d)) = bad.plan("w1000", &Overrides::new()) else {
            panic!("an undefined variable")
        };
        assert_eq!(d.0.len(), 1, "{d:?}");
        assert!(d.0[0].message.contains("`sed`"), "{d:?}");
    }
}
