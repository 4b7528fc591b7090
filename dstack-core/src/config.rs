//! The project: `.dstack/workflows.yaml`, `.dstack/variables.yaml`, `.dstack/providers.yaml`.
//!
//! [`Project::load`] reads the files, checks their structure (names, providers, `depends-on`,
//! cycles) and keeps each workflow's provider parameters as located YAML, to be substituted and
//! typed per workflow when it is planned. Every problem of every file is reported at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use petgraph::graph::NodeIndex;

use crate::diag::{Code, Diagnostic, Diagnostics, Sink, did_you_mean};
use crate::error::Error;
use crate::provider::{BUILTIN_PROVIDERS, ProviderRegistry};
use crate::variables::{GLOBAL_SECTION, Variables};
use crate::yaml::{self, Entry, Limits, Node, NodeKind, Pos, ScalarValue};

/// The keys every workflow may have, whatever its provider.
pub const WORKFLOW_KEYS: [&str; 6] = [
    "name",
    "provider",
    "depends-on",
    "help",
    "timeout",
    "retries",
];

/// The folder, inside the project root, that holds the configuration.
pub const DSTACK_DIR: &str = ".dstack";

/// Where a workflow's provider comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderRef {
    /// A built-in provider, one from `.dstack/providers.yaml`, or one registered in code.
    Named(String),
    /// A provider defined in another Git repository: `{repo: URL, name: NAME}`.
    Repo {
        /// The repository URL or path, without the `@ref` suffix.
        repo: String,
        /// The branch, tag or commit after `@`, if any.
        git_ref: Option<String>,
        /// The provider's name in that repository's `.dstack/providers.yaml`.
        name: String,
    },
}

impl ProviderRef {
    /// The provider's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            ProviderRef::Named(n) | ProviderRef::Repo { name: n, .. } => n,
        }
    }
}

/// One `depends-on` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// The workflow depended on.
    pub workflow: String,
    /// `Some("latest")` for `prepare:latest`: reuse the tagged run instead of running it.
    pub tag: Option<String>,
    /// Where it is written.
    pub pos: Pos,
}

impl Dependency {
    /// `workflow` or `workflow:tag`.
    #[must_use]
    pub fn reference(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{}:{tag}", self.workflow),
            None => self.workflow.clone(),
        }
    }
}

/// One workflow of `workflows.yaml`, before variable substitution.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    /// Its name.
    pub name: String,
    /// Where the workflow's mapping starts.
    pub pos: Pos,
    /// Its provider.
    pub provider: ProviderRef,
    /// Where `provider` is written.
    pub provider_pos: Pos,
    /// What it depends on.
    pub depends_on: Vec<Dependency>,
    /// A one-line description.
    pub help: Option<String>,
    /// Every other key: the provider's parameters, plus `timeout` and `retries`.
    pub params: Vec<Entry>,
}

/// A provider defined in `.dstack/providers.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomProvider {
    /// Its name.
    pub name: String,
    /// The image its program runs in.
    pub image: String,
    /// The commands that run it.
    pub commands: Vec<String>,
    /// A one-line description.
    pub help: Option<String>,
    /// Where it is defined.
    pub pos: Pos,
}

/// The paths of a project's files, as shown to the user.
#[derive(Clone, Debug)]
pub struct Files {
    /// `.dstack/workflows.yaml`.
    pub workflows: Arc<Path>,
    /// `.dstack/variables.yaml`.
    pub variables: Arc<Path>,
    /// `.dstack/providers.yaml`.
    pub providers: Arc<Path>,
}

impl Files {
    fn new(root: &Path) -> Files {
        let base = if root.as_os_str().is_empty() || root == Path::new(".") {
            PathBuf::from(DSTACK_DIR)
        } else {
            root.join(DSTACK_DIR)
        };
        Files {
            workflows: base.join("workflows.yaml").into(),
            variables: base.join("variables.yaml").into(),
            providers: base.join("providers.yaml").into(),
        }
    }
}

/// The text of a project's files, for loading without a file system (tests, fuzzing, embedding).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `workflows.yaml`; `None` when the file does not exist.
    pub workflows: Option<String>,
    /// `variables.yaml`, if any.
    pub variables: Option<String>,
    /// `providers.yaml`, if any.
    pub providers: Option<String>,
}

impl Sources {
    /// Reads the files of the project at `root`; missing files are `None`.
    ///
    /// # Errors
    /// Returns [`Error::Io`] when a file exists but cannot be read (a folder, no permission),
    /// and [`Error::Invalid`] when files are not UTF-8: one located problem per file, at its
    /// first bad byte.
    pub fn read(root: &Path) -> Result<Sources, Error> {
        // The paths as diagnostics name them.
        let files = Files::new(root);
        // Files that are not UTF-8 are reported together, each at its first bad byte.
        let mut diags = Vec::new();
        let mut read = |path: &Arc<Path>| -> Result<Option<String>, Error> {
            use std::io::Read as _;
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(Error::Io {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            };
            // Read at most one byte more than the parser accepts: a huge file costs bounded
            // memory and is refused by the parser as too large.
            let limit = Limits::default().max_bytes as u64 + 1;
            // Sized from the file's length, so that reading does not copy as it grows.
            let expected = file.metadata().map_or(0, |m| m.len().min(limit));
            let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0) + 1);
            file.take(limit)
                .read_to_end(&mut bytes)
                .map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            if bytes.len() as u64 == limit {
                return Ok(Some(String::from_utf8_lossy(&bytes).into_owned()));
            }
            match String::from_utf8(bytes) {
                Ok(text) => Ok(Some(text)),
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    let bytes = e.as_bytes();
                    let mut sink = Sink::new(path, &mut diags);
                    sink.error(
                        utf8_position(bytes, at),
                        Code::Syntax,
                        format!(
                            "the file is not valid UTF-8: byte 0x{:02x} cannot start or continue a character here",
                            bytes[at]
                        ),
                    )
                    .help("YAML files are UTF-8 text: save the file as UTF-8");
                    Ok(None)
                }
            }
        };
        let sources = Sources {
            workflows: read(&files.workflows)?,
            variables: read(&files.variables)?,
            providers: read(&files.providers)?,
        };
        if diags.is_empty() {
            Ok(sources)
        } else {
            Err(Error::Invalid(Diagnostics(diags)))
        }
    }
}

/// The line and column (in characters) of byte `at` of `bytes`, all of which before `at` is
/// valid UTF-8.
fn utf8_position(bytes: &[u8], at: usize) -> Pos {
    let before = &bytes[..at];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = std::str::from_utf8(&before[line_start..])
        .map_or(at - line_start, |s| s.chars().count())
        + 1;
    Pos::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// A loaded, structurally valid project.
#[derive(Debug)]
pub struct Project {
    pub(crate) root: PathBuf,
    pub(crate) files: Files,
    pub(crate) workflows: Vec<Workflow>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) variables: Variables,
    pub(crate) custom: Vec<CustomProvider>,
    pub(crate) registry: ProviderRegistry,
    pub(crate) warnings: Diagnostics,
    /// The text of `workflows.yaml`, to locate expressions inside quoted and block scalars.
    pub(crate) workflows_source: Option<String>,
    /// False when `variables.yaml` has errors: part of it may be lost, so a variable that is
    /// not found is not reported as unknown (the file's own errors are).
    pub(crate) variables_complete: bool,
}

impl Project {
    /// Loads the project whose root folder (the one holding `.dstack/`) is `root`, with the
    /// built-in providers.
    ///
    /// # Errors
    /// [`Error::Invalid`] with every problem found, or [`Error::Io`] when a file cannot be read.
    pub fn load(root: impl AsRef<Path>) -> Result<Project, Error> {
        Project::load_with(root, ProviderRegistry::default())
    }

    /// Loads the project at `root` with extra providers registered in code.
    ///
    /// # Errors
    /// As [`Project::load`].
    pub fn load_with(root: impl AsRef<Path>, registry: ProviderRegistry) -> Result<Project, Error> {
        let root = root.as_ref();
        let mut sources = Sources::read(root)?;
        // The text of workflows.yaml is kept in the project: moved there, not copied.
        let workflows = sources.workflows.take();
        Project::build(root, workflows, &sources, registry)
    }

    /// Loads a project from file contents; `root` only names the files in messages.
    ///
    /// # Errors
    /// [`Error::Invalid`] with every problem found.
    pub fn from_sources(
        root: impl AsRef<Path>,
        sources: &Sources,
        registry: ProviderRegistry,
    ) -> Result<Project, Error> {
        Project::build(root.as_ref(), sources.workflows.clone(), sources, registry)
    }

    /// [`Project::from_sources`] with the text of `workflows.yaml` given apart (the one of
    /// `sources` is not read).
    fn build(
        root: &Path,
        workflows_text: Option<String>,
        sources: &Sources,
        registry: ProviderRegistry,
    ) -> Result<Project, Error> {
        let root = root.to_path_buf();
        let files = Files::new(&root);
        let mut diags = Vec::new();

        let custom = match &sources.providers {
            Some(text) => {
                let mut sink = Sink::new(&files.providers, &mut diags);
                parse_providers(text, &mut sink)
            }
            None => Vec::new(),
        };
        let variables_start = diags.len();
        let variables = match &sources.variables {
            Some(text) => {
                let mut sink = Sink::new(&files.variables, &mut diags);
                match yaml::parse(text, Limits::default(), &mut sink) {
                    Some(node) => Variables::from_node(node, &mut sink),
                    None => Variables::default(),
                }
            }
            None => Variables::default(),
        };
        let variables_complete = !diags[variables_start..].iter().any(Diagnostic::is_error);
        let workflows = match &workflows_text {
            None => {
                diags.push(
                    Diagnostic::error(
                        Code::MissingFile,
                        format!("no workflows file: `{}` does not exist", files.workflows.display()),
                    )
                    .with_help(format!(
                        "create it with a `workflows:` list, or give dstack the folder that holds `{DSTACK_DIR}/` (`-C DIR`; `Project(DIR)` in Python)"
                    )),
                );
                Vec::new()
            }
            Some(text) => {
                let mut sink = Sink::new(&files.workflows, &mut diags);
                match yaml::parse(text, Limits::default(), &mut sink) {
                    Some(node) => parse_workflows(node, &mut sink),
                    None if sink_is_clean(text) => {
                        sink.error(Pos::new(1, 1), Code::EmptyFile, "the workflows file is empty")
                            .help("add a `workflows:` list, e.g. `workflows: [{name: hello, provider: docker, image: ubuntu, commands: [echo hi]}]`");
                        Vec::new()
                    }
                    None => Vec::new(),
                }
            }
        };

        let mut project = Project {
            root,
            files,
            index: HashMap::with_capacity(workflows.len()),
            workflows: Vec::new(),
            variables,
            custom,
            registry,
            warnings: Diagnostics::default(),
            workflows_source: None,
            variables_complete,
        };
        project.workflows_source = workflows_text;
        project.index_workflows(workflows, &mut diags);
        project.check_providers(&mut diags);
        project.check_dependencies(&mut diags);
        project.check_variable_sections(&mut diags);

        if diags.iter().any(Diagnostic::is_error) {
            // Report the problems of the workflows' parameters too, not only the first layer.
            project.check_parameters(&mut diags);
            let mut diags = Diagnostics(diags);
            diags.sort();
            return Err(Error::Invalid(diags));
        }
        if project.workflows.is_empty() && project.workflows_source.is_some() {
            let mut sink = Sink::new(&project.files.workflows, &mut diags);
            sink.warning(Pos::new(1, 1), Code::Unused, "no workflows are defined")
                .help("add workflows to the `workflows:` list");
        }
        let mut diags = Diagnostics(diags);
        diags.sort();
        project.warnings = diags;
        Ok(project)
    }

    /// The project's root folder.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The paths of the project's files.
    #[must_use]
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The workflows, in file order.
    #[must_use]
    pub fn workflows(&self) -> &[Workflow] {
        &self.workflows
    }

    /// The workflow called `name`.
    #[must_use]
    pub fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.index.get(name).map(|&i| &self.workflows[i])
    }

    /// The variables of `variables.yaml`.
    #[must_use]
    pub fn variables(&self) -> &Variables {
        &self.variables
    }

    /// The providers of `providers.yaml`.
    #[must_use]
    pub fn custom_providers(&self) -> &[CustomProvider] {
        &self.custom
    }

    /// Warnings found while loading (deprecated keys, unused variable sections).
    #[must_use]
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    fn index_workflows(&mut self, workflows: Vec<Workflow>, diags: &mut Vec<Diagnostic>) {
        let mut sink = Sink::new(&self.files.workflows, diags);
        self.workflows.reserve_exact(workflows.len());
        for wf in workflows {
            if let Some(&first) = self.index.get(&wf.name) {
                let line = self.workflows[first].pos.line;
                sink.error(
                    wf.pos,
                    Code::DuplicateWorkflow,
                    format!("workflow `{}` is defined twice", wf.name),
                )
                .help(format!(
                    "the first definition is at line {line}; rename or remove one"
                ));
                // Kept, but not indexed: nothing can depend on it, and the load fails, but
                // its providers, dependencies and parameters are checked like the others',
                // so that every problem of the file is reported at once.
                self.workflows.push(wf);
                continue;
            }
            self.index.insert(wf.name.clone(), self.workflows.len());
            self.workflows.push(wf);
        }
    }

    fn check_providers(&self, diags: &mut Vec<Diagnostic>) {
        let mut sink = Sink::new(&self.files.workflows, diags);
        for wf in &self.workflows {
            let ProviderRef::Named(name) = &wf.provider else {
                continue;
            };
            if self.registry.get(name).is_some() || self.custom.iter().any(|c| &c.name == name) {
                continue;
            }
            let names: Vec<&str> = self
                .registry
                .names()
                .chain(self.custom.iter().map(|c| c.name.as_str()))
                .collect();
            let hint = did_you_mean(name, names.iter().copied());
            let d = sink.error(
                wf.provider_pos,
                Code::UnknownProvider,
                format!("unknown provider `{name}` in workflow `{}`", wf.name),
            );
            d.suggest(hint);
            if hint.is_none() {
                d.help(format!(
                    "use one of `{}`, or define it in `.dstack/providers.yaml`",
                    names.join("`, `")
                ));
            }
        }
    }

    fn check_dependencies(&self, diags: &mut Vec<Diagnostic>) {
        let mut sink = Sink::new(&self.files.workflows, diags);
        // Node `i` is workflow `i`: an index-based graph, no hashing.
        let edges = self.workflows.iter().map(|w| w.depends_on.len()).sum();
        let mut graph =
            petgraph::graph::DiGraph::<(), ()>::with_capacity(self.workflows.len(), edges);
        for _ in &self.workflows {
            graph.add_node(());
        }
        let mut suggestions = crate::diag::SUGGESTIONS_PER_KIND;
        for (i, wf) in self.workflows.iter().enumerate() {
            for dep in &wf.depends_on {
                if dep.workflow == wf.name && dep.tag.is_none() {
                    sink.error(
                        dep.pos,
                        Code::SelfDependency,
                        format!("workflow `{}` depends on itself", wf.name),
                    )
                    .help("remove it from its own `depends-on`");
                    continue;
                }
                match self.index.get(&dep.workflow) {
                    Some(_) if dep.tag.is_some() => {}
                    Some(&j) => {
                        graph.add_edge(NodeIndex::new(i), NodeIndex::new(j), ());
                    }
                    None => {
                        let hint = if suggestions > 0 {
                            suggestions -= 1;
                            did_you_mean(
                                &dep.workflow,
                                self.workflows.iter().map(|w| w.name.as_str()),
                            )
                        } else {
                            None
                        };
                        sink.error(
                            dep.pos,
                            Code::UnknownDependency,
                            format!(
                                "workflow `{}` depends on `{}`, which is not defined",
                                wf.name, dep.workflow
                            ),
                        )
                        .suggest(hint);
                    }
                }
            }
        }
        // Kosaraju's algorithm in petgraph is iterative: a chain of any length cannot
        // overflow the stack (its Tarjan is recursive).
        for scc in petgraph::algo::kosaraju_scc(&graph) {
            if scc.len() < 2 {
                continue;
            }
            let scc: Vec<usize> = scc.iter().map(|n| n.index()).collect();
            let Some(&start) = scc.iter().min() else {
                continue;
            };
            let cycle = self.cycle_from(start, &scc);
            let path: Vec<&str> = cycle
                .iter()
                .map(|&i| self.workflows[i].name.as_str())
                .collect();
            let first = &self.workflows[start];
            let next = &self.workflows[cycle[1]].name;
            let pos = first
                .depends_on
                .iter()
                .find(|d| &d.workflow == next && d.tag.is_none())
                .map_or(first.pos, |d| d.pos);
            sink.error(
                pos,
                Code::Cycle,
                format!("dependency cycle: {}", path.join(" -> ")),
            )
            .help("remove one of these `depends-on` entries to break the cycle");
        }
    }

    /// A cycle through `start` inside one strongly connected component, as a list of workflow
    /// indices that begins and ends with `start`.
    fn cycle_from(&self, start: usize, scc: &[usize]) -> Vec<usize> {
        let in_scc: std::collections::HashSet<usize> = scc.iter().copied().collect();
        let deps = |i: usize| -> Vec<usize> {
            self.workflows[i]
                .depends_on
                .iter()
                .filter(|d| d.tag.is_none())
                .filter_map(|d| self.index.get(&d.workflow).copied())
                .filter(|j| in_scc.contains(j) && *j != i)
                .collect()
        };
        // Breadth-first search for the shortest way back to `start`.
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for next in deps(node) {
                if next == start {
                    let mut path = vec![start];
                    let mut at = node;
                    while at != start {
                        path.push(at);
                        at = parent[&at];
                    }
                    path.push(start);
                    // `path` is start, node, ..., start walked backwards: reverse it.
                    path.reverse();
                    return path;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(next) {
                    e.insert(node);
                    queue.push_back(next);
                }
            }
        }
        vec![start, start]
    }

    fn check_variable_sections(&self, diags: &mut Vec<Diagnostic>) {
        let mut sink = Sink::new(&self.files.variables, diags);
        for (name, section) in &self.variables.sections {
            if name == GLOBAL_SECTION || self.index.contains_key(name) {
                continue;
            }
            let names = self.workflows.iter().map(|w| w.name.as_str());
            let hint = did_you_mean(name, std::iter::once(GLOBAL_SECTION).chain(names));
            sink.warning(
                section.pos,
                Code::Unused,
                format!("variables section `{name}` matches no workflow"),
            )
            .suggest(hint);
        }
    }
}

fn sink_is_clean(text: &str) -> bool {
    // `yaml::parse` returns `None` both for an empty stream and after reporting an error; the
    // text tells them apart: an empty stream has nothing but blanks and comments.
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// Workflow, variable-section and provider names: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn name_of(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<String> {
    let Some(s) = node.as_scalar().filter(|s| s.value != ScalarValue::Null) else {
        sink.error(
            node.pos,
            Code::Type,
            format!("{what} must be a string, found {}", node.type_name()),
        );
        return None;
    };
    if !valid_name(&s.text) {
        let d = sink.error(
            node.pos,
            Code::InvalidName,
            format!("`{}` is not a valid {what}", s.text),
        );
        if s.text.contains("${{") {
            d.help("variables cannot be used in names, providers or `depends-on`");
        } else {
            d.help("use letters, digits, `-`, `_` and `.`, starting with a letter or digit");
        }
        return None;
    }
    Some(s.text.as_str().to_owned())
}

fn parse_workflows(mut root: Node, sink: &mut Sink<'_>) -> Vec<Workflow> {
    let Some(entries) = root.as_map() else {
        sink.error(
            root.pos,
            Code::Type,
            format!(
                "the workflows file must be a mapping with a `workflows` list, found {}",
                root.type_name()
            ),
        )
        .help("start the file with `workflows:`");
        return Vec::new();
    };
    for e in entries {
        if e.key.text != "workflows" && !e.key.text.starts_with("x-") {
            let hint = did_you_mean(&e.key.text, ["workflows"]);
            let d = sink.error(
                e.key.pos,
                Code::UnknownKey,
                format!("unknown top-level key `{}`", e.key.text),
            );
            d.suggest(hint);
            d.help("the top level holds `workflows` (and `x-` keys for YAML anchors)");
        }
    }
    let Some(list) = root.get("workflows") else {
        sink.error(
            root.pos,
            Code::MissingKey,
            "the workflows file has no `workflows` key",
        )
        .help("write `workflows:` followed by a list of workflows");
        return Vec::new();
    };
    match &list.kind {
        NodeKind::Seq(_) => {}
        NodeKind::Scalar(s) if s.value == ScalarValue::Null => return Vec::new(),
        _ => {
            sink.error(
                list.pos,
                Code::Type,
                format!("`workflows` must be a list, found {}", list.type_name()),
            )
            .help("write each workflow as a list item: `- name: train`");
            return Vec::new();
        }
    }
    // The workflows' parameters are moved out of the tree, not copied.
    let items = match &mut root.kind {
        NodeKind::Map(entries) => entries
            .iter_mut()
            .find(|e| e.key.text == "workflows")
            .map(|e| std::mem::replace(&mut e.value.kind, NodeKind::Seq(Vec::new()))),
        _ => None,
    };
    let Some(NodeKind::Seq(items)) = items else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    out.extend(
        items
            .into_iter()
            .filter_map(|item| parse_workflow(item, sink)),
    );
    out
}

/// The keys `parse_workflow` reads itself; every other key is a parameter.
const WORKFLOW_OWN_KEYS: [&str; 5] = ["name", "provider", "depends-on", "depends_on", "help"];

fn parse_workflow(node: Node, sink: &mut Sink<'_>) -> Option<Workflow> {
    let Some(entries) = node.as_map() else {
        sink.error(
            node.pos,
            Code::Type,
            format!("a workflow must be a mapping, found {}", node.type_name()),
        )
        .help("e.g. `- name: train` followed by `provider: python` on the next line");
        return None;
    };
    let name = match node.get("name") {
        Some(n) => name_of(n, "workflow name", sink),
        None => {
            sink.error(node.pos, Code::MissingKey, "workflow without a `name`")
                .help("add `name: NAME`");
            None
        }
    };
    let shown = name.as_deref().unwrap_or("?");
    let mut provider = None;
    let mut provider_pos = node.pos;
    let mut depends_on = Vec::new();
    let mut help = None;
    for e in entries {
        match e.key.text.as_str() {
            "name" => {}
            "provider" => {
                // The name itself for `provider: NAME`; the key for `provider: {repo, name}`.
                provider_pos = if e.value.as_scalar().is_some() {
                    e.value.pos
                } else {
                    e.key.pos
                };
                provider = parse_provider_ref(&e.value, shown, sink);
            }
            "depends-on" | "depends_on" => {
                if e.key.text == "depends_on" {
                    sink.error(
                        e.key.pos,
                        Code::UnknownKey,
                        format!("unknown key `depends_on` in workflow `{shown}`"),
                    )
                    .suggest(Some("depends-on"));
                }
                depends_on = parse_depends_on(&e.value, shown, sink);
            }
            "help" => match e.value.as_scalar() {
                Some(s) if s.value != ScalarValue::Null => help = Some(s.text.as_str().to_owned()),
                _ => {
                    sink.error(
                        e.value.pos,
                        Code::Type,
                        format!(
                            "`help` in workflow `{shown}` must be a string, found {}",
                            e.value.type_name()
                        ),
                    );
                }
            },
            _ => {}
        }
    }
    if node.get("provider").is_none() {
        sink.error(
            node.pos,
            Code::MissingKey,
            format!("workflow `{shown}` has no `provider`"),
        )
        .help(format!(
            "add `provider: NAME`; the built-in providers are `{}`",
            BUILTIN_PROVIDERS.join("`, `")
        ));
    }
    let (name, provider) = (name?, provider?);
    let pos = node.pos;
    let params = match node.kind {
        NodeKind::Map(entries) => entries
            .into_iter()
            .filter(|e| !WORKFLOW_OWN_KEYS.contains(&e.key.text.as_str()))
            .collect(),
        _ => Vec::new(),
    };
    Some(Workflow {
        name,
        pos,
        provider,
        provider_pos,
        depends_on,
        help,
        params,
    })
}

fn parse_provider_ref(node: &Node, workflow: &str, sink: &mut Sink<'_>) -> Option<ProviderRef> {
    match &node.kind {
        NodeKind::Scalar(_) => name_of(node, "provider name", sink).map(ProviderRef::Named),
        NodeKind::Map(entries) => {
            for e in entries {
                if e.key.text != "repo" && e.key.text != "name" {
                    sink.error(
                        e.key.pos,
                        Code::UnknownKey,
                        format!(
                            "unknown key `provider.{}` in workflow `{workflow}`",
                            e.key.text
                        ),
                    )
                    .suggest(did_you_mean(&e.key.text, ["repo", "name"]))
                    .help("a provider from another repository is `{repo: URL, name: NAME}`");
                }
            }
            let name = match node.get("name") {
                Some(n) => name_of(n, "provider name", sink),
                None => {
                    sink.error(
                        node.pos,
                        Code::MissingKey,
                        format!("`provider` in workflow `{workflow}` has a `repo` but no `name`"),
                    )
                    .help(
                        "add the provider's `name` from that repository's `.dstack/providers.yaml`",
                    );
                    None
                }
            };
            let repo = match node.get("repo") {
                Some(r) => match r.as_scalar() {
                    Some(s) if s.value == ScalarValue::Str && !s.text.trim().is_empty() => {
                        Some(s.text.trim().to_owned())
                    }
                    _ => {
                        sink.error(r.pos, Code::Type, format!("`provider.repo` in workflow `{workflow}` must be a repository URL, found {}", r.type_name()));
                        None
                    }
                },
                None => {
                    sink.error(
                        node.pos,
                        Code::MissingKey,
                        format!("`provider` in workflow `{workflow}` has no `repo`"),
                    )
                    .help("write `provider: {repo: URL, name: NAME}`, or just `provider: NAME`");
                    None
                }
            };
            let repo = repo?;
            if repo.chars().any(char::is_whitespace) {
                sink.error(
                    node.get("repo").map_or(node.pos, |r| r.pos),
                    Code::InvalidValue,
                    format!("`provider.repo` `{repo}` contains spaces"),
                );
                return None;
            }
            // `URL@REF` pins a branch, tag or commit (`feature/x` too); `git@host:path` is an
            // SSH URL and `https://user@host/...` carries a user name: neither is a ref.
            let (repo, git_ref) = split_git_ref(&repo);
            Some(ProviderRef::Repo {
                repo,
                git_ref,
                name: name?,
            })
        }
        NodeKind::Seq(_) => {
            sink.error(node.pos, Code::Type, format!("`provider` in workflow `{workflow}` must be a name or `{{repo: URL, name: NAME}}`, found a list"));
            None
        }
    }
}

/// Splits `URL@REF` at the last `@` of the URL's path (after `scheme://host/` or
/// `user@host:`), so that refs may hold `/` and user names are never refs.
fn split_git_ref(repo: &str) -> (String, Option<String>) {
    let path_start = if let Some(scheme) = repo.find("://") {
        let rest = scheme + 3;
        repo[rest..]
            .find('/')
            .map_or(repo.len(), |slash| rest + slash)
    } else if let Some(colon) = repo.find(':').filter(|&c| !repo[..c].contains('/')) {
        colon + 1 // scp-like `user@host:path`
    } else {
        0
    };
    match repo[path_start..].rfind('@') {
        Some(at) => {
            let at = path_start + at;
            let (url, r) = (&repo[..at], &repo[at + 1..]);
            let is_url = url.contains('/') || url.contains(':');
            if r.is_empty() || r.contains(':') || !is_url || url.ends_with('/') {
                (repo.to_owned(), None)
            } else {
                (url.to_owned(), Some(r.to_owned()))
            }
        }
        None => (repo.to_owned(), None),
    }
}

fn parse_depends_on(node: &Node, workflow: &str, sink: &mut Sink<'_>) -> Vec<Dependency> {
    let items: Vec<&Node> = match &node.kind {
        NodeKind::Seq(items) => items.iter().collect(),
        NodeKind::Scalar(s) if s.value == ScalarValue::Null => return Vec::new(),
        NodeKind::Scalar(_) => vec![node],
        NodeKind::Map(_) => {
            sink.error(node.pos, Code::Type, format!("`depends-on` in workflow `{workflow}` must be a list of workflow names, found a mapping"));
            return Vec::new();
        }
    };
    let mut out: Vec<Dependency> = Vec::with_capacity(items.len());
    // Workflow name -> index in `out`, so long lists stay linear; short ones are scanned.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let hashed = items.len() > 16;
    for item in items {
        let Some(s) = item.as_scalar().filter(|s| s.value != ScalarValue::Null) else {
            sink.error(item.pos, Code::Type, format!("items of `depends-on` in workflow `{workflow}` must be workflow names, found {}", item.type_name()));
            continue;
        };
        let (name, tag) = match s.text.split_once(':') {
            Some((n, t)) => (n, Some(t)),
            None => (s.text.as_str(), None),
        };
        let name_ok = valid_name(name);
        let tag_ok = tag.is_none_or(valid_name);
        if !name_ok || !tag_ok {
            let d = sink.error(
                item.pos,
                Code::InvalidName,
                format!(
                    "`{}` in `depends-on` of workflow `{workflow}` is not a workflow name",
                    s.text
                ),
            );
            if s.text.contains("${{") {
                d.help("variables cannot be used in `depends-on`");
            } else {
                d.help("write `WORKFLOW` to run it first, or `WORKFLOW:TAG` to reuse a tagged run");
            }
            continue;
        }
        let dep = Dependency {
            workflow: name.to_owned(),
            tag: tag.map(str::to_owned),
            pos: item.pos,
        };
        let earlier = if hashed {
            seen.get(&dep.workflow).map(|&i| &out[i])
        } else {
            out.iter().find(|d| d.workflow == dep.workflow)
        };
        if earlier.is_some_and(|d| d.tag == dep.tag) {
            sink.warning(
                item.pos,
                Code::DuplicateKey,
                format!(
                    "`{}` is listed twice in `depends-on` of workflow `{workflow}`",
                    s.text
                ),
            );
            continue;
        }
        if earlier.is_some() {
            sink.error(
                item.pos,
                Code::DuplicateKey,
                format!(
                    "workflow `{workflow}` depends on `{}` twice, with different tags",
                    dep.workflow
                ),
            )
            .help("keep either the workflow (run it now) or one tagged run");
            continue;
        }
        if hashed {
            seen.insert(dep.workflow.clone(), out.len());
        }
        out.push(dep);
    }
    out
}

/// Parses a `providers.yaml` (of this project or another repository); `path` names it in
/// diagnostics.
///
/// # Errors
/// Every problem found, located.
pub fn parse_providers_file(text: &str, path: &Path) -> Result<Vec<CustomProvider>, Diagnostics> {
    let path: Arc<Path> = path.into();
    let mut diags = Vec::new();
    let providers = parse_providers(text, &mut Sink::new(&path, &mut diags));
    let diags = Diagnostics(diags);
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(providers)
    }
}

fn parse_providers(text: &str, sink: &mut Sink<'_>) -> Vec<CustomProvider> {
    let Some(root) = yaml::parse(text, Limits::default(), sink) else {
        return Vec::new();
    };
    let Some(entries) = root.as_map() else {
        sink.error(
            root.pos,
            Code::Type,
            format!(
                "`providers.yaml` must be a mapping with a `providers` list, found {}",
                root.type_name()
            ),
        );
        return Vec::new();
    };
    for e in entries {
        if e.key.text != "providers" && !e.key.text.starts_with("x-") {
            sink.error(
                e.key.pos,
                Code::UnknownKey,
                format!("unknown key `{}`", e.key.text),
            )
            .suggest(did_you_mean(&e.key.text, ["providers"]));
        }
    }
    let items = match root.get("providers").map(|n| (n, &n.kind)) {
        Some((_, NodeKind::Seq(items))) => items,
        Some((n, _)) if n.is_null() => return Vec::new(),
        Some((n, _)) => {
            sink.error(
                n.pos,
                Code::Type,
                format!("`providers` must be a list, found {}", n.type_name()),
            );
            return Vec::new();
        }
        None => {
            sink.error(
                root.pos,
                Code::MissingKey,
                "`providers.yaml` has no `providers` list",
            );
            return Vec::new();
        }
    };
    let mut out: Vec<CustomProvider> = Vec::new();
    for item in items {
        let Some(entries) = item.as_map() else {
            sink.error(
                item.pos,
                Code::Type,
                format!("a provider must be a mapping, found {}", item.type_name()),
            );
            continue;
        };
        let known = ["name", "image", "commands", "help"];
        for e in entries {
            if !known.contains(&e.key.text.as_str()) {
                sink.error(
                    e.key.pos,
                    Code::UnknownKey,
                    format!("unknown key `{}` in a provider", e.key.text),
                )
                .suggest(did_you_mean(&e.key.text, known));
            }
        }
        let name = match item.get("name") {
            Some(n) => name_of(n, "provider name", sink),
            None => {
                sink.error(item.pos, Code::MissingKey, "provider without a `name`");
                None
            }
        };
        let image = match item.get("image").and_then(Node::as_scalar) {
            Some(s) if s.value != ScalarValue::Null => Some(s.text.as_str().to_owned()),
            _ => {
                sink.error(
                    item.get("image").map_or(item.pos, |n| n.pos),
                    Code::MissingKey,
                    "provider needs an `image` (a string)",
                );
                None
            }
        };
        let mut commands = Vec::new();
        match item.get("commands").map(|n| (n, &n.kind)) {
            Some((_, NodeKind::Seq(cmds))) => {
                for c in cmds {
                    match c.as_scalar() {
                        Some(s) if s.value != ScalarValue::Null => {
                            commands.push(s.text.as_str().to_owned())
                        }
                        _ => {
                            sink.error(
                                c.pos,
                                Code::Type,
                                format!(
                                    "provider commands must be strings, found {}",
                                    c.type_name()
                                ),
                            );
                        }
                    }
                }
            }
            Some((n, _)) => {
                sink.error(
                    n.pos,
                    Code::Type,
                    format!(
                        "provider `commands` must be a list of strings, found {}",
                        n.type_name()
                    ),
                );
            }
            None => {
                sink.error(
                    item.pos,
                    Code::MissingKey,
                    "provider needs `commands`, the commands that run its program",
                );
            }
        }
        let help = item
            .get("help")
            .and_then(Node::as_scalar)
            .map(|s| s.text.as_str().to_owned());
        let (Some(name), Some(image)) = (name, image) else {
            continue;
        };
        if BUILTIN_PROVIDERS.contains(&name.as_str()) {
            sink.error(
                item.pos,
                Code::InvalidName,
                format!("provider `{name}` shadows the built-in provider of that name"),
            )
            .help("give it another name");
            continue;
        }
        if let Some(first) = out.iter().find(|p| p.name == name) {
            let line = first.pos.line;
            sink.error(
                item.pos,
                Code::DuplicateKey,
                format!("provider `{name}` is defined twice"),
            )
            .help(format!("the first definition is at line {line}"));
            continue;
        }
        out.push(CustomProvider {
            name,
            image,
            commands,
            help,
            pos: item.pos,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("train-mnist"));
        assert!(valid_name("v1.2_x"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name(""));
    }
}

#[cfg(test)]
mod git_ref_tests {
    use super::split_git_ref;

    #[test]
    fn refs_may_hold_slashes_and_user_names_are_not_refs() {
        let split = |r: &str| {
            let (u, g) = split_git_ref(r);
            (u, g.unwrap_or_default())
        };
        let cases = [
            (
                "https://github.com/org/repo@v1.2",
                ("https://github.com/org/repo", "v1.2"),
            ),
            (
                "https://github.com/org/repo@feature/x",
                ("https://github.com/org/repo", "feature/x"),
            ),
            (
                "https://github.com/org/repo",
                ("https://github.com/org/repo", ""),
            ),
            (
                "https://user@host.example/org/repo",
                ("https://user@host.example/org/repo", ""),
            ),
            (
                "https://user@host.example/org/repo@main",
                ("https://user@host.example/org/repo", "main"),
            ),
            ("git@github.com:org/repo", ("git@github.com:org/repo", "")),
            (
                "git@github.com:org/repo@release/1.0",
                ("git@github.com:org/repo", "release/1.0"),
            ),
            ("/srv/repo@abc123", ("/srv/repo", "abc123")),
            ("../providers@v1", ("../providers", "v1")),
            ("file:///srv/repo@dev", ("file:///srv/repo", "dev")),
            ("repo@", ("repo@", "")),
            ("name@v1", ("name@v1", "")),
        ];
        for (input, (url, r)) in cases {
            assert_eq!(split(input), (url.to_owned(), r.to_owned()), "{input}");
        }
    }
}
