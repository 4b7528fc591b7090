//! Variables: `.dstack/variables.yaml`, overrides from the command line or the API, and
//! `${{ name }}` substitution.
//!
//! `variables.yaml` holds one section per workflow (and an optional `global` section that every
//! workflow sees, its own section winning). Overrides win over both; an override applies to
//! every section that defines the variable, so a run's dependencies see it too. Override names
//! may be an unambiguous prefix of a variable (`--epoch` for `epochs`) and may spell `-` as `_`,
//! as the original dstack's argparse did.
//!
//! Substitution works on parsed values, never on raw text: a scalar that is exactly
//! `${{ name }}` becomes the variable's value with its type (`gpu: ${{ tgpu }}` is an integer);
//! inside a longer string it is interpolated as text. Substituted text is not scanned again.

use indexmap::IndexMap;

use crate::diag::{Code, Diagnostic, Sink, did_you_mean};
use crate::yaml::{Entry, Node, NodeKind, Pos, Scalar, ScalarValue, Style};

/// The name of the section every workflow sees.
pub const GLOBAL_SECTION: &str = "global";

/// One variable as defined in `variables.yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    /// Where its name is written.
    pub pos: Pos,
    /// Its value, with the type YAML gave it.
    pub value: Node,
}

/// The variables of one section of `variables.yaml`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Section {
    /// Where the section's name is written.
    pub pos: Pos,
    /// The variables, in file order.
    pub vars: IndexMap<String, Variable>,
}

/// The contents of `.dstack/variables.yaml`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variables {
    /// Sections by workflow name, `global` included, in file order.
    pub sections: IndexMap<String, Section>,
}

impl Variables {
    /// Reads the document of `variables.yaml`.
    pub(crate) fn from_node(mut root: Node, sink: &mut Sink<'_>) -> Variables {
        let mut out = Variables::default();
        let Some(entries) = root.as_map() else {
            sink.error(
                root.pos,
                Code::Type,
                format!(
                    "`variables.yaml` must be a mapping with a `variables` key, found {}",
                    root.type_name()
                ),
            );
            return out;
        };
        for e in entries {
            if e.key.text != "variables" && !e.key.text.starts_with("x-") {
                sink.error(
                    e.key.pos,
                    Code::UnknownKey,
                    format!("unknown key `{}`", e.key.text),
                )
                .suggest(did_you_mean(&e.key.text, ["variables"]))
                .help("the only top-level key of variables.yaml is `variables`");
            }
        }
        let Some(vars) = root.get("variables") else {
            sink.error(
                root.pos,
                Code::MissingKey,
                "`variables.yaml` has no `variables` key",
            )
            .help("write `variables:` followed by one section per workflow");
            return out;
        };
        if vars.is_null() {
            return out;
        }
        if vars.as_map().is_none() {
            sink.error(
                vars.pos,
                Code::Type,
                format!(
                    "`variables` must be a mapping of workflow names to variables, found {}",
                    vars.type_name()
                ),
            )
            .help("e.g. `variables: {train: {epochs: 10}}`");
            return out;
        }
        // The values are moved out of the tree, not copied.
        let sections = match &mut root.kind {
            NodeKind::Map(entries) => entries
                .iter_mut()
                .find(|e| e.key.text == "variables")
                .map(|e| std::mem::replace(&mut e.value.kind, NodeKind::Seq(Vec::new()))),
            _ => None,
        };
        let Some(NodeKind::Map(sections)) = sections else {
            return out;
        };
        out.sections.reserve(sections.len());
        for s in sections {
            let mut section = Section {
                pos: s.key.pos,
                vars: IndexMap::new(),
            };
            let value_pos = s.value.pos;
            let value_type = s.value.type_name();
            match s.value.kind {
                NodeKind::Map(vars) => {
                    section.vars.reserve(vars.len());
                    for v in vars {
                        if !valid_variable_name(&v.key.text) {
                            sink.error(
                                v.key.pos,
                                Code::InvalidName,
                                format!("`{}` is not a valid variable name", v.key.text),
                            )
                            .help(
                                "use letters, digits, `_` and `-`, starting with a letter or `_`",
                            );
                            continue;
                        }
                        section.vars.insert(
                            v.key.text.into_string(),
                            Variable {
                                pos: v.key.pos,
                                value: v.value,
                            },
                        );
                    }
                }
                NodeKind::Scalar(sc) if sc.value == ScalarValue::Null => {}
                _ => {
                    sink.error(
                        value_pos,
                        Code::Type,
                        format!(
                            "section `{}` of `variables` must be a mapping of variable names to values, found {}",
                            s.key.text, value_type
                        ),
                    );
                }
            }
            out.sections.insert(s.key.text.into_string(), section);
        }
        out
    }

    /// Every variable name defined in any section, each once.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut seen = std::collections::HashSet::new();
        self.sections
            .values()
            .flat_map(|s| s.vars.keys())
            .map(String::as_str)
            .filter(move |n| seen.insert(*n))
    }

    /// The variables workflow `workflow` sees: `global`, then its own section, then the
    /// overrides that name a variable it sees (or every override allowed without a definition).
    #[must_use]
    pub fn visible(&self, workflow: &str, overrides: &ResolvedOverrides) -> IndexMap<String, Node> {
        self.visible_refs(workflow, overrides)
            .iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }

    /// [`Variables::visible`] without copies: names and values borrowed from `self` and
    /// `overrides`, in the same order.
    pub(crate) fn visible_refs<'a>(
        &'a self,
        workflow: &str,
        overrides: &'a ResolvedOverrides,
    ) -> Visible<'a> {
        let mut vars = Visible::default();
        for name in [GLOBAL_SECTION, workflow] {
            if let Some(section) = self.sections.get(name) {
                for (k, v) in &section.vars {
                    vars.insert(k.as_str(), &v.value);
                }
            }
        }
        for (name, value, defined) in &overrides.values {
            if !defined || vars.get_key_value(name).is_some() {
                vars.insert(name.as_str(), value);
            }
        }
        vars
    }
}

/// The variables one workflow sees, by name, in the order of [`Variables::visible`]. Usually a
/// handful: a list searched in order, with a hash index only once it is long.
#[derive(Clone, Debug, Default)]
pub(crate) struct Visible<'a> {
    list: Vec<(&'a str, &'a Node)>,
    index: Option<foldhash::HashMap<&'a str, usize>>,
}

impl<'a> Visible<'a> {
    /// Beyond this many variables, lookups go through a hash index.
    const SCAN: usize = 16;

    /// Sets `name`; a name already there keeps its place and takes the new value.
    pub(crate) fn insert(&mut self, name: &'a str, value: &'a Node) {
        let at = match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.list.iter().position(|(n, _)| *n == name),
        };
        if let Some(at) = at {
            self.list[at].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(name, self.list.len());
        }
        self.list.push((name, value));
        if self.index.is_none() && self.list.len() > Self::SCAN {
            self.index = Some(
                self.list
                    .iter()
                    .enumerate()
                    .map(|(i, (n, _))| (*n, i))
                    .collect(),
            );
        }
    }

    /// The variable called `name`, with its name borrowed for as long as the variables.
    pub(crate) fn get_key_value(&self, name: &str) -> Option<(&'a str, &'a Node)> {
        let at = match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.list.iter().position(|(n, _)| *n == name),
        }?;
        Some(self.list[at])
    }

    /// The names, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.list.iter().map(|(n, _)| *n)
    }

    /// The names and values, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Node)> + '_ {
        self.list.iter().copied()
    }
}

impl<'a, 'v> IntoIterator for &'v Visible<'a> {
    type Item = (&'a str, &'a Node);
    type IntoIter = std::iter::Copied<std::slice::Iter<'v, (&'a str, &'a Node)>>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter().copied()
    }
}

/// `[A-Za-z_][A-Za-z0-9_-]*`
pub(crate) fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The environment variable a workflow variable becomes: upper case, every character outside
/// `A-Z0-9` turned into `_` (`batch-size` -> `BATCH_SIZE`).
#[must_use]
pub fn env_name(variable: &str) -> String {
    // Every character becomes one byte: the name's length in bytes is enough.
    let mut name = String::with_capacity(variable.len());
    name.extend(variable.chars().map(|c| {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            c
        } else {
            '_'
        }
    }));
    name
}

/// Variable values given on the command line or through the API, before they are matched to
/// the variables of `variables.yaml`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    entries: Vec<(String, Node)>,
    allow_unknown: bool,
    /// Made by [`Overrides::from_args`]: messages name a value `--NAME`, else `NAME`.
    from_command_line: bool,
}

impl Overrides {
    /// No overrides.
    #[must_use]
    pub fn new() -> Self {
        Overrides::default()
    }

    /// Sets `name` to a typed value (as the Python bindings and Rust callers do).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: Scalar) -> Self {
        self.set(name, value);
        self
    }

    /// Sets `name` to a typed value.
    pub fn set(&mut self, name: impl Into<String>, value: Scalar) {
        self.entries
            .push((name.into(), Node::synthetic(NodeKind::Scalar(value))));
    }

    /// Sets `name` to a value written as on the command line: typed like a plain YAML scalar
    /// (`2` is an integer, `0.1` a number, `abc` a string).
    pub fn set_text(&mut self, name: impl Into<String>, text: impl Into<String>) {
        self.set(name, Scalar::new(text.into(), Style::Plain));
    }

    /// Accept overrides of variables that no section defines (they reach every workflow).
    #[must_use]
    pub fn allow_unknown(mut self, allow: bool) -> Self {
        self.allow_unknown = allow;
        self
    }

    /// The overrides as a JSON object (name to value), as a run records them.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.entries
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// Whether there are no overrides.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses command-line words `--name value` and `--name=value`, as they follow the workflow
    /// name (`dstack run train --gpu 2 --epoch=100`).
    ///
    /// # Errors
    /// Returns a diagnostic for a word that is not an option, or an option with no value.
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<Overrides, Diagnostic> {
        let mut out = Overrides {
            from_command_line: true,
            ..Overrides::default()
        };
        let mut i = 0;
        while i < args.len() {
            let word = args[i].as_ref();
            let Some(option) = word.strip_prefix("--").filter(|o| !o.is_empty()) else {
                return Err(Diagnostic::error(
                    Code::UnknownVariable,
                    format!("unexpected argument `{word}`; variables are given as `--NAME VALUE`"),
                ));
            };
            if let Some((name, value)) = option.split_once('=') {
                out.set_text(name, value);
                i += 1;
                continue;
            }
            match args.get(i + 1).map(AsRef::as_ref) {
                Some(value) if !(value.starts_with("--") && value.len() > 2) => {
                    out.set_text(option, value);
                    i += 2;
                }
                _ => {
                    return Err(Diagnostic::error(
                        Code::UnknownVariable,
                        format!("variable `--{option}` has no value"),
                    )
                    .with_help(format!("write `--{option} VALUE` or `--{option}=VALUE`")));
                }
            }
        }
        Ok(out)
    }

    /// Matches every override to a variable of `variables`: exact names first, then `_` for
    /// `-`, then unambiguous prefixes.
    ///
    /// # Errors
    /// Returns every override that matches no variable (unless unknown ones are allowed) or
    /// several.
    pub fn resolve(&self, variables: &Variables) -> Result<ResolvedOverrides, Vec<Diagnostic>> {
        if self.entries.is_empty() {
            return Ok(ResolvedOverrides::default());
        }
        let names: Vec<&str> = variables.names().collect();
        let mut out = ResolvedOverrides::default();
        let mut errors = Vec::new();
        let dashes = if self.from_command_line { "--" } else { "" };
        for (given, value) in &self.entries {
            match match_variable(given, &names) {
                Match::Exact(name) => out.push(name.to_owned(), value.clone(), true),
                Match::Prefix(name) => {
                    out.notes
                        .push(format!("`{dashes}{given}` is taken as variable `{name}`"));
                    out.push(name.to_owned(), value.clone(), true);
                }
                Match::Ambiguous(candidates) => {
                    let list = candidates.join("`, `");
                    errors.push(
                        Diagnostic::error(
                            Code::UnknownVariable,
                            format!("`{dashes}{given}` is ambiguous: it could be `{list}`"),
                        )
                        .with_help("write more of the variable's name"),
                    );
                }
                Match::None if self.allow_unknown => {
                    out.push(given.clone(), value.clone(), false);
                }
                Match::None => {
                    let mut d = Diagnostic::error(
                        Code::UnknownVariable,
                        format!(
                            "unknown variable `{dashes}{given}`: no section of variables.yaml defines it"
                        ),
                    );
                    d.suggest(did_you_mean(given, names.iter().copied()));
                    if names.is_empty() {
                        d.help("define it in `.dstack/variables.yaml` under the workflow's name");
                    }
                    errors.push(d);
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// Overrides matched to variable names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResolvedOverrides {
    /// `(variable name, value, defined in variables.yaml)`.
    values: Vec<(String, Node, bool)>,
    /// How prefixes were resolved, for the user ("`--epoch` is taken as variable `epochs`").
    pub notes: Vec<String>,
}

impl ResolvedOverrides {
    fn push(&mut self, name: String, value: Node, defined: bool) {
        if let Some(slot) = self.values.iter_mut().find(|(n, _, _)| *n == name) {
            *slot = (name, value, defined);
        } else {
            self.values.push((name, value, defined));
        }
    }

    /// The overridden variables and their values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.values.iter().map(|(n, v, _)| (n.as_str(), v))
    }
}

enum Match<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Ambiguous(Vec<&'a str>),
    None,
}

fn match_variable<'a>(given: &str, names: &[&'a str]) -> Match<'a> {
    if let Some(n) = names.iter().find(|n| **n == given) {
        return Match::Exact(n);
    }
    let norm = |s: &str| s.replace('_', "-");
    let given_n = norm(given);
    let same: Vec<&'a str> = names
        .iter()
        .copied()
        .filter(|n| norm(n) == given_n)
        .collect();
    if same.len() == 1 {
        return Match::Exact(same[0]);
    }
    if same.len() > 1 {
        return Match::Ambiguous(same);
    }
    let prefixed: Vec<&'a str> = names
        .iter()
        .copied()
        .filter(|n| norm(n).starts_with(&given_n))
        .collect();
    match prefixed.len() {
        0 => Match::None,
        1 => Match::Prefix(prefixed[0]),
        _ => Match::Ambiguous(prefixed),
    }
}

/// `${{ name }}` substitution for one workflow.
///
/// Problems are reported to the sink; a scalar whose substitution failed is marked
/// [`ScalarValue::Invalid`], so later checks do not report it a second time. Every value put
/// in is remembered with where it came from ([`Substitution::origins`]), so a later type error
/// can say "`two` comes from `--tgpu` on the command line".
pub(crate) struct Substitution<'a> {
    /// The variables the workflow sees.
    pub vars: &'a Visible<'a>,
    /// The workflow's name, for messages.
    pub workflow: &'a str,
    /// The text of the file being substituted, to locate expressions inside quoted and block
    /// scalars, whose text differs from the source.
    pub source: Option<&'a str>,
    /// Every value put in, with the variable it came from.
    pub origins: Vec<Origin<'a>>,
    /// What the substitutions of one load or plan may still produce.
    pub budget: &'a mut Budget,
    /// False when `variables.yaml` could not be read whole: a name that is not found is then
    /// not reported (it may be in the lost part), only its value poisoned.
    pub report_unknown: bool,
}

/// Bounds on the work substitution does for one load or plan, so that a small file cannot make
/// gigabytes of text or minutes of suggestions.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    /// Bytes of text that substitutions may still insert.
    pub bytes: usize,
    /// "Did you mean" suggestions still to compute for undefined variables.
    pub suggestions: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            bytes: 16 * 1024 * 1024,
            suggestions: crate::diag::SUGGESTIONS_PER_KIND,
        }
    }
}

/// A value that substitution put into a workflow, and the variable it came from. Turned into
/// a help line ("`two` is the value of variable `tgpu`, set at ...") only when a check of that
/// value fails.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin<'a> {
    /// Where the value was put.
    pub pos: Pos,
    /// The variable's name.
    pub name: &'a str,
    /// The variable's value.
    pub value: &'a Node,
}

impl Origin<'_> {
    /// The help line that says where the value comes from.
    pub(crate) fn describe(&self, variables_path: &std::path::Path) -> String {
        let (name, value) = (self.name, self.value);
        let shown = match &value.kind {
            NodeKind::Scalar(s) => format!("`{}`", s.text),
            _ => value.type_name().to_owned(),
        };
        let from = if value.pos.is_known() {
            format!(
                "set at {}:{}:{}",
                variables_path.display(),
                value.pos.line,
                value.pos.column
            )
        } else {
            "given on the command line or through the API".to_owned()
        };
        format!("{shown} is the value of variable `{name}`, {from}")
    }
}

/// Whether `node` holds a `${{` anywhere (in a string scalar: keys are never substituted).
fn has_expression(node: &Node) -> bool {
    match &node.kind {
        NodeKind::Scalar(s) => s.value == ScalarValue::Str && find_open(&s.text).is_some(),
        NodeKind::Seq(items) => items.iter().any(has_expression),
        NodeKind::Map(entries) => entries.iter().any(|e| has_expression(&e.value)),
    }
}

/// The bytes of text in a node.
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

const OPEN: &str = "${{";

/// The byte offset of the first `${{` in `text` (a search for `$`, cheaper than a substring
/// search for the common text without any).
fn find_open(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|&b| b == b'$') {
        let at = from + i;
        if bytes[at..].starts_with(OPEN.as_bytes()) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}
const CLOSE: &str = "}}";

impl<'a> Substitution<'a> {
    /// Substitutes every string of `node`.
    #[cfg(test)]
    pub(crate) fn node(&mut self, node: &Node, sink: &mut Sink<'_>) -> Node {
        self.changed(node, sink).unwrap_or_else(|| node.clone())
    }

    /// Substitutes every string of `node`; `None` when nothing in it changes (no `${{`), so
    /// that the caller keeps the node as it is instead of a copy. Only the subtrees that hold
    /// an expression are rebuilt.
    pub(crate) fn changed(&mut self, node: &Node, sink: &mut Sink<'_>) -> Option<Node> {
        if !has_expression(node) {
            return None;
        }
        Some(match &node.kind {
            NodeKind::Scalar(s) => self.scalar(node, s, sink),
            NodeKind::Seq(items) => Node {
                pos: node.pos,
                kind: NodeKind::Seq(
                    items
                        .iter()
                        .map(|n| self.changed(n, sink).unwrap_or_else(|| n.clone()))
                        .collect(),
                ),
            },
            NodeKind::Map(entries) => Node {
                pos: node.pos,
                kind: NodeKind::Map(
                    entries
                        .iter()
                        .map(|e| Entry {
                            key: e.key.clone(),
                            value: self
                                .changed(&e.value, sink)
                                .unwrap_or_else(|| e.value.clone()),
                        })
                        .collect(),
                ),
            },
        })
    }

    /// Takes `bytes` from the budget; reports and returns false when it is spent.
    fn spend(&mut self, bytes: usize, pos: Pos, sink: &mut Sink<'_>) -> bool {
        if bytes <= self.budget.bytes {
            self.budget.bytes -= bytes;
            return true;
        }
        if self.budget.bytes != usize::MAX {
            sink.error(
                pos,
                Code::Limit,
                format!(
                    "substituting variables in workflow `{}` makes more than {} MiB of text; refusing",
                    self.workflow,
                    Budget::default().bytes >> 20
                ),
            )
            .help("a variable holds a large value that is used many times");
            // Report the limit once.
            self.budget.bytes = usize::MAX;
        }
        false
    }

    fn origin(&mut self, pos: Pos, name: &'a str, value: &'a Node) {
        self.origins.push(Origin { pos, name, value });
    }

    /// Where the expression starting at byte `offset` of the scalar's text is in the file.
    fn locate(&self, node: &Node, s: &Scalar, offset: usize) -> Pos {
        let nth = s.text[..offset].matches(OPEN).count();
        if let Some(pos) = self
            .source
            .and_then(|src| find_in_source(src, node.pos, nth))
        {
            return pos;
        }
        match s.style {
            Style::Plain if !s.text.contains('\n') => {
                node.pos.shifted(s.text[..offset].chars().count())
            }
            _ => node.pos,
        }
    }

    fn report(&self, problem: Lookup, pos: Pos, sink: &mut Sink<'_>) {
        if self.report_unknown || !matches!(problem, Lookup::Unknown { .. }) {
            problem.report(pos, self.workflow, sink);
        }
    }

    fn scalar(&mut self, node: &Node, s: &Scalar, sink: &mut Sink<'_>) -> Node {
        if s.value != ScalarValue::Str || find_open(&s.text).is_none() {
            return node.clone();
        }
        let text = s.text.as_str();
        // A scalar that is exactly one expression (nothing around it, not even spaces) takes
        // the variable's value and type.
        if text.starts_with(OPEN)
            && text.ends_with(CLOSE)
            && text[OPEN.len()..].find(CLOSE) == Some(text.len() - OPEN.len() - CLOSE.len())
        {
            let start = 0;
            let inner = &text[OPEN.len()..text.len() - CLOSE.len()];
            return match self.lookup(inner) {
                Ok((name, value)) => {
                    if self.budget.bytes == usize::MAX
                        || !self.spend(text_bytes(value), node.pos, sink)
                    {
                        return poisoned(node, s);
                    }
                    self.origin(node.pos, name, value);
                    relocated(value, node.pos)
                }
                Err(problem) => {
                    let pos = self.locate(node, s, start);
                    self.report(problem, pos, sink);
                    poisoned(node, s)
                }
            };
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = 0;
        let mut ok = true;
        while let Some(found) = find_open(&text[rest..]) {
            let start = rest + found;
            out.push_str(&text[rest..start]);
            let after = start + OPEN.len();
            let Some(len) = text[after..].find(CLOSE) else {
                let pos = self.locate(node, s, start);
                sink.error(
                    pos,
                    Code::Expression,
                    format!("unterminated `${{{{` in workflow `{}`", self.workflow),
                )
                .help("close the expression with `}}`, as in `${{ name }}`");
                return poisoned(node, s);
            };
            let inner = &text[after..after + len];
            match self.lookup(inner) {
                Ok((name, value)) => match &value.kind {
                    NodeKind::Scalar(v) => {
                        if self.budget.bytes == usize::MAX
                            || !self.spend(v.text.len(), node.pos, sink)
                        {
                            return poisoned(node, s);
                        }
                        if v.value != ScalarValue::Null {
                            out.push_str(&v.text);
                        }
                        self.origin(node.pos, name, value);
                    }
                    _ => {
                        let pos = self.locate(node, s, start);
                        sink.error(
                            pos,
                            Code::Type,
                            format!(
                                "variable `{name}` is {} and cannot be put inside a string",
                                value.type_name()
                            ),
                        )
                        .help("use the variable as the whole value, or make it a string");
                        ok = false;
                    }
                },
                Err(problem) => {
                    let pos = self.locate(node, s, start);
                    self.report(problem, pos, sink);
                    ok = false;
                }
            }
            rest = after + len + CLOSE.len();
        }
        if !ok {
            return poisoned(node, s);
        }
        out.push_str(&text[rest..]);
        Node {
            pos: node.pos,
            kind: NodeKind::Scalar(Scalar::string(out)),
        }
    }

    fn lookup(&mut self, inner: &str) -> Result<(&'a str, &'a Node), Lookup> {
        let name = inner.trim();
        if name.is_empty() {
            return Err(Lookup::Empty);
        }
        let name = name.strip_prefix("variables.").unwrap_or(name);
        if !valid_variable_name(name) {
            return Err(Lookup::NotAName(name.to_owned()));
        }
        let vars = self.vars;
        match vars.get_key_value(name) {
            Some((name, v)) => Ok((name, v)),
            None => {
                let hint = if self.budget.suggestions > 0 {
                    self.budget.suggestions -= 1;
                    did_you_mean(name, vars.keys()).map(str::to_owned)
                } else {
                    None
                };
                Err(Lookup::Unknown {
                    name: name.to_owned(),
                    hint,
                })
            }
        }
    }
}

/// Why an expression could not be resolved.
enum Lookup {
    Empty,
    NotAName(String),
    Unknown { name: String, hint: Option<String> },
}

impl Lookup {
    fn report(self, pos: Pos, workflow: &str, sink: &mut Sink<'_>) {
        match self {
            Lookup::Empty => {
                sink.error(pos, Code::Expression, "empty `${{ }}` expression")
                    .help("put a variable's name inside, as in `${{ epochs }}`");
            }
            Lookup::NotAName(name) => {
                sink.error(
                    pos,
                    Code::Expression,
                    format!("`${{{{ {name} }}}}` is not a variable name; only `${{{{ name }}}}` is supported"),
                );
            }
            Lookup::Unknown { name, hint } => {
                let d = sink.error(
                    pos,
                    Code::UndefinedVariable,
                    format!("unknown variable `{name}` in workflow `{workflow}`"),
                );
                d.suggest(hint.as_deref());
                d.help(format!(
                    "define it in `.dstack/variables.yaml` under `{workflow}:` (or `global:`)"
                ));
            }
        }
    }
}

/// The position of the `nth` (0-based) `${{` at or after `from` in `source`.
fn find_in_source(source: &str, from: Pos, nth: usize) -> Option<Pos> {
    if !from.is_known() {
        return None;
    }
    let mut line_start = 0;
    for _ in 1..from.line {
        line_start += source[line_start..].find('\n')? + 1;
    }
    let column_offset: usize = source[line_start..]
        .chars()
        .take(from.column.saturating_sub(1) as usize)
        .map(char::len_utf8)
        .sum();
    let start = line_start + column_offset;
    let mut at = start;
    for _ in 0..nth {
        at += source[at..].find(OPEN)? + OPEN.len();
    }
    let found = at + source[at..].find(OPEN)?;
    let before = &source[..found];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    Some(Pos::new(
        u32::try_from(line).ok()?,
        u32::try_from(column).ok()?,
    ))
}

/// `value` with every node placed at `pos` (a variable's list or mapping put into a workflow:
/// its problems are reported where the variable is used).
fn relocated(value: &Node, pos: Pos) -> Node {
    let kind = match &value.kind {
        NodeKind::Scalar(s) => NodeKind::Scalar(s.clone()),
        NodeKind::Seq(items) => NodeKind::Seq(items.iter().map(|n| relocated(n, pos)).collect()),
        NodeKind::Map(entries) => NodeKind::Map(
            entries
                .iter()
                .map(|e| Entry {
                    key: crate::yaml::Key {
                        text: e.key.text.clone(),
                        pos,
                    },
                    value: relocated(&e.value, pos),
                })
                .collect(),
        ),
    };
    Node { pos, kind }
}

/// A copy of `node` marked as already reported, so that later checks stay silent about it.
fn poisoned(node: &Node, s: &Scalar) -> Node {
    Node {
        pos: node.pos,
        kind: NodeKind::Scalar(Scalar {
            text: s.text.clone(),
            style: s.style,
            value: ScalarValue::Invalid,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    fn var(text: &str) -> Node {
        Node::synthetic(NodeKind::Scalar(Scalar::new(text, Style::Plain)))
    }

    fn run(text: &str, style: Style, vars: &[(&str, &str)]) -> (Node, Vec<Diagnostic>) {
        let values: Vec<(&str, Node)> = vars.iter().map(|(k, v)| (*k, var(v))).collect();
        let mut vars = Visible::default();
        for (k, v) in &values {
            vars.insert(k, v);
        }
        let node = Node {
            pos: Pos::new(3, 10),
            kind: NodeKind::Scalar(Scalar::new(text, style)),
        };
        let path: Arc<Path> = Path::new("w.yaml").into();
        let mut out = Vec::new();
        let mut budget = Budget::default();
        let mut sub = Substitution {
            vars: &vars,
            workflow: "train",
            source: None,
            origins: Vec::new(),
            budget: &mut budget,
            report_unknown: true,
        };
        let n = sub.node(&node, &mut Sink::new(&path, &mut out));
        (n, out)
    }

    #[test]
    fn expressions_are_located_in_the_source() {
        let src = "a:\n  b: \"x\\t ${{ one }}\"\n  c: |\n    echo ${{ two }}\n";
        assert_eq!(
            find_in_source(src, Pos::new(2, 6), 0),
            Some(Pos::new(2, 11))
        );
        assert_eq!(
            find_in_source(src, Pos::new(3, 6), 0),
            Some(Pos::new(4, 10))
        );
        assert_eq!(
            find_in_source(src, Pos::new(1, 1), 1),
            Some(Pos::new(4, 10))
        );
        assert_eq!(find_in_source(src, Pos::new(9, 1), 0), None);
    }

    #[test]
    fn whole_value_keeps_the_type() {
        let (n, d) = run("${{ tgpu }}", Style::Plain, &[("tgpu", "1")]);
        assert!(d.is_empty());
        assert_eq!(n.as_scalar().map(|s| s.value), Some(ScalarValue::Int(1)));
        assert_eq!(n.pos, Pos::new(3, 10));
    }

    #[test]
    fn interpolation_makes_text_and_is_not_recursive() {
        let (n, d) = run(
            "a-${{x}}-${{ y }}",
            Style::Plain,
            &[("x", "${{ y }}"), ("y", "2")],
        );
        assert!(d.is_empty());
        let s = n.as_scalar().expect("scalar");
        assert_eq!(s.text, "a-${{ y }}-2");
        assert_eq!(s.value, ScalarValue::Str);
    }

    #[test]
    fn unknown_and_unterminated_are_located() {
        let (_, d) = run("x ${{ epoch }}", Style::Plain, &[("epochs", "1")]);
        assert_eq!(d[0].message, "unknown variable `epoch` in workflow `train`");
        assert_eq!(d[0].help[0], "did you mean `epochs`?");
        assert_eq!(d[0].location.as_ref().map(|l| l.column), Some(12));
        let (n, d) = run("'${{ epoch'", Style::Quoted, &[]);
        assert_eq!(d[0].code, Code::Expression);
        assert_eq!(d[0].location.as_ref().map(|l| l.column), Some(10));
        assert!(n.is_invalid(), "a failed substitution is marked");
    }

    #[test]
    fn override_prefixes_and_underscores() {
        let mut vars = Variables::default();
        let mut section = Section::default();
        for name in ["epochs", "batch-size", "seed", "seeds-extra", "lr"] {
            section.vars.insert(
                name.into(),
                Variable {
                    pos: Pos::NONE,
                    value: var("1"),
                },
            );
        }
        vars.sections.insert("train".into(), section);
        let args = ["--epoch", "100", "--batch_size=3", "--lr", "0.1"];
        let o = Overrides::from_args(&args).expect("parses");
        let r = o.resolve(&vars).expect("resolves");
        let names: Vec<&str> = r.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["epochs", "batch-size", "lr"]);
        assert_eq!(r.notes, ["`--epoch` is taken as variable `epochs`"]);

        let o = Overrides::from_args(&["--see", "1", "--epohcs", "2"]).expect("parses");
        let errors = o.resolve(&vars).expect_err("fails");
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].message,
            "`--see` is ambiguous: it could be `seed`, `seeds-extra`"
        );
        assert_eq!(errors[1].help, ["did you mean `epochs`?"]);
        // Through the API, names are not command-line options.
        let o = Overrides::new().with("epoch", Scalar::new("1", Style::Plain));
        assert_eq!(
            o.resolve(&vars).expect("resolves").notes,
            ["`epoch` is taken as variable `epochs`"]
        );
        let o = Overrides::new().with("see", Scalar::new("1", Style::Plain));
        assert_eq!(
            o.resolve(&vars).expect_err("fails")[0].message,
            "`see` is ambiguous: it could be `seed`, `seeds-extra`"
        );
        // An exact name wins over being a prefix of another.
        let o = Overrides::from_args(&["--seed", "5"]).expect("parses");
        assert!(o.resolve(&vars).is_ok());
    }

    #[test]
    fn bad_override_words() {
        assert!(Overrides::from_args(&["epochs"]).is_err());
        assert!(Overrides::from_args(&["--epochs"]).is_err());
        assert!(Overrides::from_args(&["--a", "--b", "1"]).is_err());
        let o = Overrides::from_args(&["--delta", "-1"]).expect("negative values are values");
        assert!(!o.is_empty());
    }

    #[test]
    fn visible_variables_keep_their_place_when_set_again() {
        let values: Vec<Node> = (0..40).map(|i| var(&i.to_string())).collect();
        let names: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        for n in [3, 40] {
            let mut vars = Visible::default();
            for i in 0..n {
                vars.insert(&names[i], &values[i]);
            }
            // Setting a name again keeps its place, with the new value.
            vars.insert(&names[1], &values[39]);
            let order: Vec<&str> = vars.keys().collect();
            assert_eq!(
                order,
                names[..n].iter().map(String::as_str).collect::<Vec<_>>()
            );
            let (name, value) = vars.get_key_value("v1").expect("set");
            assert_eq!((name, value), ("v1", &values[39]));
            assert!(vars.get_key_value("v99").is_none());
            assert_eq!(vars.iter().count(), n);
        }
    }

    #[test]
    fn env_names_are_upper_snake() {
        assert_eq!(env_name("batch-size"), "BATCH_SIZE");
        assert_eq!(env_name("lr"), "LR");
        assert_eq!(env_name("log.interval"), "LOG_INTERVAL");
        assert_eq!(env_name("größe"), "GR__E");
    }
}
