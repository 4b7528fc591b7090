//! Typed reading of a workflow's provider parameters, with located diagnostics.
//!
//! A provider asks [`Params`] for the keys it understands (`params.string("image")`,
//! `params.resources()`...). Every key it asks for is remembered, so when it is done,
//! [`Params::finish`] reports the keys nobody asked for as unknown, with a "did you mean" drawn
//! from the keys that were asked for. Problems never stop the reading: each accessor reports
//! what is wrong and returns `None`, so one pass finds every problem of a workflow.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::diag::{Code, Diagnostic, Location, Severity, did_you_mean};
use crate::resources::{GpuRequest, MEMORY_UNITS_HELP, Resources, parse_memory};
use crate::variables::Origin;
use crate::yaml::{Key, Node, NodeKind, Pos, ScalarValue};

/// The keys the built-in providers read (the names `Params` records need no copy).
const BUILTIN_KEYS: [&str; 17] = [
    "timeout",
    "retries",
    "image",
    "commands",
    "ports",
    "working_dir",
    "environment",
    "artifacts",
    "resources",
    "script",
    "python_script",
    "python",
    "version",
    "requirements",
    "url",
    "output",
    "help",
];

/// One parameter: its key as written and its value (substituted, or as written when it holds
/// no `${{ }}`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Param<'a> {
    pub key: &'a Key,
    pub value: &'a Node,
}

/// The parameters of one workflow, after variable substitution, as a provider sees them.
#[derive(Debug)]
pub struct Params<'a> {
    workflow: &'a str,
    provider: &'a str,
    path: Arc<Path>,
    pos: Pos,
    entries: Vec<Param<'a>>,
    used: Vec<bool>,
    pub(crate) asked: Vec<Cow<'a, str>>,
    diagnostics: Vec<Diagnostic>,
    /// Required keys reported missing, with the index of that diagnostic.
    missing: Vec<(String, usize)>,
    /// Where substituted values came from, by the position they were put at.
    pub(crate) origins: Vec<Origin<'a>>,
    /// The file that defines the variables with a position (`variables.yaml`).
    pub(crate) variables_path: Option<&'a Path>,
}

impl<'a> Params<'a> {
    pub(crate) fn from_params(
        workflow: &'a str,
        provider: &'a str,
        path: Arc<Path>,
        pos: Pos,
        entries: Vec<Param<'a>>,
    ) -> Self {
        Params {
            workflow,
            provider,
            path,
            pos,
            used: vec![false; entries.len()],
            entries,
            asked: Vec::new(),
            diagnostics: Vec::new(),
            missing: Vec::new(),
            origins: Vec::new(),
            variables_path: None,
        }
    }

    /// The workflow's name.
    #[must_use]
    pub fn workflow(&self) -> &str {
        self.workflow
    }

    /// The position of the workflow in its file.
    #[must_use]
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// Whether the workflow sets `key` (without marking it as understood).
    #[must_use]
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key.text == key)
    }

    /// Takes the raw node under `key`, marking the key as understood.
    pub fn raw(&mut self, key: &str) -> Option<&'a Node> {
        let found = self.entries.iter().position(|e| e.key.text == key);
        if !self.asked.iter().any(|k| k == key) {
            // Borrowed from the workflow's own key, or from the keys of the built-in
            // providers, when it can be: this runs for every key of every planned workflow.
            let name = match found {
                Some(i) => Cow::Borrowed(self.entries[i].key.text.as_str()),
                None => BUILTIN_KEYS
                    .iter()
                    .find(|k| **k == key)
                    .map_or_else(|| Cow::Owned(key.to_owned()), |k| Cow::Borrowed(*k)),
            };
            self.asked.push(name);
        }
        let i = found?;
        self.used[i] = true;
        Some(self.entries[i].value)
    }

    /// Marks `key` as understood without reading it (parameters meant for someone else).
    pub(crate) fn raw_any(&mut self, key: &str) {
        if let Some(i) = self.entries.iter().position(|e| e.key.text == key) {
            self.used[i] = true;
        }
    }

    /// Takes `key`, or its deprecated spelling `old` with a warning that names the new key.
    pub fn raw_or_deprecated(&mut self, key: &str, old: &str) -> Option<&'a Node> {
        let new = self.raw(key);
        let Some(i) = self.entries.iter().position(|e| e.key.text == old) else {
            return new;
        };
        self.used[i] = true;
        let entry = self.entries[i];
        if new.is_some() {
            self.error(
                entry.key.pos,
                Code::DuplicateKey,
                format!("both `{key}` and its old spelling `{old}` are set"),
            )
            .help(format!("remove `{old}`"));
            return new;
        }
        self.warning(
            entry.key.pos,
            Code::Deprecated,
            format!("`{old}` is deprecated; use `{key}`"),
        );
        Some(entry.value)
    }

    /// Reports an error located at `pos` in the workflow's file.
    pub fn error(&mut self, pos: Pos, code: Code, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Error, pos, code, message.into())
    }

    /// Reports a warning located at `pos` in the workflow's file.
    pub fn warning(&mut self, pos: Pos, code: Code, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Warning, pos, code, message.into())
    }

    fn push(
        &mut self,
        severity: Severity,
        pos: Pos,
        code: Code,
        message: String,
    ) -> &mut Diagnostic {
        // A bad value that a variable put there: say where the variable's value comes from.
        let help = match code {
            Code::Type | Code::InvalidValue | Code::InvalidPath => {
                let variables = self.variables_path.unwrap_or(Path::new(""));
                self.origins
                    .iter()
                    .filter(|o| o.pos == pos)
                    .map(|o| o.describe(variables))
                    .collect()
            }
            _ => Vec::new(),
        };
        self.diagnostics.push(Diagnostic {
            severity,
            code,
            message,
            location: Some(Location {
                path: self.path.clone(),
                line: pos.line,
                column: pos.column,
            }),
            help,
        });
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    /// Whether an error has been reported so far.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    fn type_error(&mut self, key: &str, node: &Node, expected: &str) {
        if node.is_invalid() {
            return;
        }
        let message = format!(
            "`{key}` in workflow `{}` must be {expected}, found {}",
            self.workflow,
            node.type_name()
        );
        self.error(node.pos, Code::Type, message);
    }

    /// Reports that the required `key` is missing; `example` shows a valid value.
    pub fn report_missing(&mut self, key: &str, example: &str) {
        let message = format!(
            "workflow `{}` is missing `{key}`, which the `{}` provider requires",
            self.workflow, self.provider
        );
        let pos = self.pos;
        self.error(pos, Code::MissingKey, message)
            .help(format!("add it, e.g. `{key}: {example}`"));
        self.missing
            .push((key.to_owned(), self.diagnostics.len() - 1));
    }

    /// Text of a scalar node (any scalar but null), or a type error.
    fn text_of(&mut self, key: &str, node: &Node) -> Option<String> {
        if node.is_invalid() {
            return None;
        }
        match &node.kind {
            NodeKind::Scalar(s) if s.value != ScalarValue::Null => Some(s.text.as_str().to_owned()),
            _ => {
                self.type_error(key, node, "a string");
                None
            }
        }
    }

    /// An optional string.
    pub fn string(&mut self, key: &str) -> Option<String> {
        let node = self.raw(key)?;
        self.text_of(key, node)
    }

    /// A required string; `example` shows a valid value in the help line when it is missing.
    pub fn required_string(&mut self, key: &str, example: &str) -> Option<String> {
        match self.raw(key) {
            Some(node) => self.text_of(key, node),
            None => {
                self.report_missing(key, example);
                None
            }
        }
    }

    /// A list of strings; a single string is taken as a list of one.
    pub fn string_list(&mut self, key: &str) -> Option<Vec<String>> {
        let node = self.raw(key)?;
        self.strings_of(key, node)
    }

    fn strings_of(&mut self, key: &str, node: &Node) -> Option<Vec<String>> {
        match &node.kind {
            NodeKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for item in items {
                    match &item.kind {
                        _ if item.is_invalid() => ok = false,
                        NodeKind::Scalar(s) if s.value != ScalarValue::Null => {
                            out.push(s.text.as_str().to_owned());
                        }
                        _ => {
                            let message = format!(
                                "items of `{key}` in workflow `{}` must be strings, found {}",
                                self.workflow,
                                item.type_name()
                            );
                            self.error(item.pos, Code::Type, message);
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            }
            NodeKind::Scalar(s) if s.value != ScalarValue::Null => {
                Some(vec![s.text.as_str().to_owned()])
            }
            _ => {
                self.type_error(key, node, "a list of strings");
                None
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn integer(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        let node = self.raw(key)?;
        self.integer_of(key, node, min, max)
    }

    fn integer_of(&mut self, key: &str, node: &Node, min: i64, max: i64) -> Option<i64> {
        if node.is_invalid() {
            return None;
        }
        let Some(scalar) = node.as_scalar() else {
            self.type_error(key, node, "a whole number");
            return None;
        };
        let value = match scalar.value {
            ScalarValue::Int(i) => Some(i),
            ScalarValue::Str => scalar.text.trim().parse::<i64>().ok(),
            _ => None,
        };
        let Some(value) = value else {
            let message = format!(
                "`{key}` in workflow `{}` must be a whole number, found `{}`",
                self.workflow, scalar.text
            );
            self.error(node.pos, Code::Type, message);
            return None;
        };
        if value < min || value > max {
            let range = if max >= i64::from(u32::MAX) {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            let message = format!(
                "`{key}` in workflow `{}` must be {range}, found {value}",
                self.workflow
            );
            self.error(node.pos, Code::InvalidValue, message);
            return None;
        }
        Some(value)
    }

    fn memory_of(&mut self, key: &str, node: &Node) -> Option<u64> {
        if node.is_invalid() {
            return None;
        }
        let Some(scalar) = node.as_scalar().filter(|s| s.value != ScalarValue::Null) else {
            self.type_error(key, node, "a memory size such as `32GB`");
            return None;
        };
        match parse_memory(&scalar.text) {
            Ok(0) => {
                let message = format!(
                    "`{key}` in workflow `{}` must be more than 0 bytes, found `{}`",
                    self.workflow,
                    scalar.text.trim()
                );
                self.error(node.pos, Code::InvalidValue, message)
                    .help("leave the key out to set no limit");
                None
            }
            Ok(bytes) => Some(bytes),
            Err(e) => {
                let message = format!("invalid `{key}` in workflow `{}`: {e}", self.workflow);
                self.error(node.pos, Code::InvalidValue, message)
                    .help(MEMORY_UNITS_HELP);
                None
            }
        }
    }

    /// A duration such as `30m`, `1h 30m` or a number of seconds.
    pub fn duration(&mut self, key: &str) -> Option<std::time::Duration> {
        let node = self.raw(key).filter(|n| !n.is_invalid())?;
        let Some(scalar) = node.as_scalar().filter(|s| s.value != ScalarValue::Null) else {
            self.type_error(key, node, "a duration such as `30m`");
            return None;
        };
        let parsed = match scalar.value {
            ScalarValue::Int(secs) if secs > 0 => {
                Ok(std::time::Duration::from_secs(secs.unsigned_abs()))
            }
            // Zero or negative, however written (`-5`, `-1h`): not for humantime to refuse
            // with its own words.
            ScalarValue::Int(_) => Ok(std::time::Duration::ZERO),
            _ if scalar.text.trim_start().starts_with('-') => Ok(std::time::Duration::ZERO),
            _ => humantime::parse_duration(scalar.text.trim()).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                let message = format!(
                    "`{key}` in workflow `{}` must be longer than zero, found `{}`",
                    self.workflow, scalar.text
                );
                self.error(node.pos, Code::InvalidValue, message);
                None
            }
            Err(e) => {
                // humantime's "expected number at 0" says less than this.
                let why = if e.starts_with("expected number") {
                    "not a duration".to_owned()
                } else {
                    e
                };
                let message = format!(
                    "invalid `{key}` in workflow `{}`: `{}`: {why}",
                    self.workflow, scalar.text
                );
                self.error(node.pos, Code::InvalidValue, message)
                    .help("write a duration such as `90s`, `30m`, `2h` or `1h 30m`");
                None
            }
        }
    }

    /// A path relative to the working directory that stays inside it, normalised
    /// (`./data/` -> `data`). `allow_root` accepts `.` itself.
    pub fn relative_path(&mut self, key: &str, allow_root: bool) -> Option<String> {
        let node = self.raw(key)?;
        let text = self.text_of(key, node)?;
        self.check_relative(key, node.pos, &text, allow_root)
    }

    fn check_relative(
        &mut self,
        key: &str,
        pos: Pos,
        text: &str,
        allow_root: bool,
    ) -> Option<String> {
        match normalise_relative(text) {
            Ok(p) if p.is_empty() && !allow_root => {
                let message = format!(
                    "`{key}` in workflow `{}` names the working directory itself",
                    self.workflow
                );
                self.error(pos, Code::InvalidPath, message)
                    .help("name a folder inside the working directory, e.g. `output`");
                None
            }
            Ok(p) if p.is_empty() => Some(".".to_owned()),
            Ok(p) => Some(p),
            Err(why) => {
                let message = format!(
                    "`{key}` path `{text}` in workflow `{}` {why}",
                    self.workflow
                );
                self.error(pos, Code::InvalidPath, message).help(
                    "paths are relative to the job's working directory and must stay inside it",
                );
                None
            }
        }
    }

    /// `artifacts`: a list of folders relative to the working directory (also `{path: DIR}`).
    pub fn artifacts(&mut self) -> Vec<String> {
        let Some(node) = self.raw("artifacts") else {
            return Vec::new();
        };
        let items: &[Node] = match &node.kind {
            NodeKind::Seq(items) => items,
            _ => {
                self.type_error("artifacts", node, "a list of folders");
                return Vec::new();
            }
        };
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            let text = match &item.kind {
                _ if item.is_invalid() => continue,
                NodeKind::Scalar(s) if s.value != ScalarValue::Null => s.text.as_str().to_owned(),
                NodeKind::Map(_) if item.get("path").is_some() => {
                    let Some(path) = item.get("path") else {
                        continue;
                    };
                    for e in item.as_map().unwrap_or_default() {
                        if e.key.text != "path" {
                            let message = format!("unknown key `{}` in an artifact", e.key.text);
                            self.error(e.key.pos, Code::UnknownKey, message)
                                .help("an artifact is a folder name or `{path: FOLDER}`");
                        }
                    }
                    match self.text_of("artifacts.path", path) {
                        Some(t) => t,
                        None => continue,
                    }
                }
                _ => {
                    let message = format!(
                        "items of `artifacts` in workflow `{}` must be folder names, found {}",
                        self.workflow,
                        item.type_name()
                    );
                    self.error(item.pos, Code::Type, message);
                    continue;
                }
            };
            if let Some(path) = self.check_relative("artifacts", item.pos, &text, false) {
                if out.contains(&path) {
                    let message = format!(
                        "artifact `{path}` is listed twice in workflow `{}`",
                        self.workflow
                    );
                    self.warning(item.pos, Code::DuplicateKey, message);
                } else if let Some(other) = out.iter().find(|o| nested_paths(o, &path)) {
                    let (inner, outer) = if path.len() > other.len() {
                        (&path, other)
                    } else {
                        (other, &path)
                    };
                    let message = format!(
                        "artifact `{inner}` is inside artifact `{outer}` in workflow `{}`",
                        self.workflow
                    );
                    self.error(item.pos, Code::InvalidPath, message)
                        .help(format!(
                            "list only `{outer}`: what it holds is saved with it"
                        ));
                } else {
                    out.push(path);
                }
            }
        }
        out
    }

    /// `environment`: a mapping of names to scalar values, or a list of `NAME=VALUE` strings.
    pub fn environment(&mut self) -> IndexMap<String, String> {
        let mut env = IndexMap::new();
        self.environment_with(&mut |k, v| {
            env.insert(k, v);
        });
        env
    }

    /// [`Params::environment`], sorted by name (as a job holds it).
    pub(crate) fn environment_sorted(&mut self) -> std::collections::BTreeMap<String, String> {
        let mut env = std::collections::BTreeMap::new();
        self.environment_with(&mut |k, v| {
            env.insert(k, v);
        });
        env
    }

    /// Reads `environment`, handing each variable to `put` in order (a later one with the same
    /// name wins).
    fn environment_with(&mut self, put: &mut dyn FnMut(String, String)) {
        let Some(node) = self.raw("environment") else {
            return;
        };
        match &node.kind {
            NodeKind::Map(entries) => {
                for e in entries {
                    if !valid_env_name(&e.key.text) {
                        self.bad_env_name(e.key.pos, &e.key.text);
                        continue;
                    }
                    match &e.value.kind {
                        NodeKind::Scalar(s) => {
                            let value = if s.value == ScalarValue::Null {
                                String::new()
                            } else {
                                s.text.as_str().to_owned()
                            };
                            put(e.key.text.as_str().to_owned(), value);
                        }
                        _ => {
                            let message = format!(
                                "environment variable `{}` in workflow `{}` must be a string, found {}",
                                e.key.text,
                                self.workflow,
                                e.value.type_name()
                            );
                            self.error(e.value.pos, Code::Type, message);
                        }
                    }
                }
            }
            NodeKind::Seq(items) => {
                for item in items {
                    let Some(s) = item.as_scalar().filter(|s| s.value != ScalarValue::Null) else {
                        self.type_error("environment", item, "`NAME=VALUE` strings");
                        continue;
                    };
                    match s.text.split_once('=') {
                        Some((k, v)) if valid_env_name(k) => {
                            put(k.to_owned(), v.to_owned());
                        }
                        Some((k, _)) => self.bad_env_name(item.pos, k),
                        None => {
                            let message = format!(
                                "environment entry `{}` in workflow `{}` has no `=`",
                                s.text, self.workflow
                            );
                            self.error(item.pos, Code::InvalidValue, message)
                                .help("write `NAME=VALUE`, or use a mapping `NAME: VALUE`");
                        }
                    }
                }
            }
            NodeKind::Scalar(_) => {
                self.type_error("environment", node, "a mapping of names to values")
            }
        }
    }

    fn bad_env_name(&mut self, pos: Pos, name: &str) {
        let message = format!(
            "`{name}` in workflow `{}` is not a valid environment variable name",
            self.workflow
        );
        self.error(pos, Code::InvalidName, message)
            .help("use letters, digits and `_`, not starting with a digit");
    }

    /// `ports`: a list of TCP ports (1-65535).
    pub fn ports(&mut self) -> Vec<u16> {
        let Some(node) = self.raw("ports") else {
            return Vec::new();
        };
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            NodeKind::Scalar(_) => vec![node],
            NodeKind::Map(_) => {
                self.type_error("ports", node, "a list of port numbers");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in items {
            if let Some(p) = self.integer_of("ports", item, 1, 65535) {
                let p = u16::try_from(p).unwrap_or(u16::MAX);
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// `resources`: `cpu`, `memory`, `gpu` (count or `{count, name, memory}`), `NAME/gpu: N`,
    /// and `shm_size`.
    pub fn resources(&mut self) -> Resources {
        let mut res = Resources::default();
        let Some(node) = self.raw("resources") else {
            return res;
        };
        let Some(entries) = node.as_map() else {
            if !node.is_null() && !node.is_invalid() {
                self.type_error(
                    "resources",
                    node,
                    "a mapping such as `{cpu: 2, memory: 8GB}`",
                );
            }
            return res;
        };
        let mut gpu_pos: Option<Pos> = None;
        for e in entries {
            let key = e.key.text.as_str();
            match key {
                "cpu" => {
                    res.cpu = self
                        .integer_of("resources.cpu", &e.value, 1, i64::from(u32::MAX))
                        .and_then(|c| u32::try_from(c).ok());
                }
                "memory" => res.memory_bytes = self.memory_of("resources.memory", &e.value),
                "shm_size" => res.shm_size_bytes = self.memory_of("resources.shm_size", &e.value),
                "gpu" => {
                    if let Some(first) = gpu_pos {
                        self.gpu_twice(e.key.pos, first);
                    }
                    gpu_pos = Some(e.key.pos);
                    res.gpu = self.gpu(&e.value);
                }
                "interruptible" | "local" => {
                    // Accepted by the original dstack for its cloud runners; meaningless here.
                    let message = format!(
                        "`resources.{key}` in workflow `{}` has no effect with dstack-rs executors",
                        self.workflow
                    );
                    self.warning(e.key.pos, Code::Unused, message);
                }
                _ if key.ends_with("/gpu") && key.len() > 4 => {
                    if let Some(first) = gpu_pos {
                        self.gpu_twice(e.key.pos, first);
                    }
                    gpu_pos = Some(e.key.pos);
                    let name = key.trim_end_matches("/gpu").to_owned();
                    res.gpu = self
                        .integer_of(
                            &format!("resources.{key}"),
                            &e.value,
                            0,
                            i64::from(u32::MAX),
                        )
                        .and_then(|c| u32::try_from(c).ok())
                        .filter(|&count| count > 0)
                        .map(|count| GpuRequest {
                            count,
                            name: Some(name),
                            memory_bytes: None,
                        });
                }
                _ => {
                    let known = ["cpu", "memory", "gpu", "shm_size"];
                    let message = format!(
                        "unknown key `resources.{key}` in workflow `{}`",
                        self.workflow
                    );
                    let hint = did_you_mean(key, known);
                    let d = self.error(e.key.pos, Code::UnknownKey, message);
                    d.suggest(hint);
                    if hint.is_none() {
                        d.help("resources take `cpu`, `memory`, `gpu`, `NAME/gpu` (e.g. `v100/gpu: 2`) and `shm_size`");
                    }
                }
            }
        }
        res
    }

    fn gpu_twice(&mut self, pos: Pos, first: Pos) {
        let message = format!("workflow `{}` asks for GPUs twice", self.workflow);
        self.error(pos, Code::DuplicateKey, message).help(format!(
            "GPUs are already requested at line {}; keep one request",
            first.line
        ));
    }

    fn gpu(&mut self, node: &Node) -> Option<GpuRequest> {
        match &node.kind {
            NodeKind::Map(entries) => {
                let mut gpu = GpuRequest {
                    count: 1,
                    name: None,
                    memory_bytes: None,
                };
                for e in entries {
                    match e.key.text.as_str() {
                        "count" => {
                            gpu.count = self
                                .integer_of("resources.gpu.count", &e.value, 0, i64::from(u32::MAX))
                                .and_then(|c| u32::try_from(c).ok())?;
                        }
                        "name" => gpu.name = self.text_of("resources.gpu.name", &e.value),
                        "memory" => {
                            gpu.memory_bytes = self.memory_of("resources.gpu.memory", &e.value)
                        }
                        other => {
                            let message = format!(
                                "unknown key `resources.gpu.{other}` in workflow `{}`",
                                self.workflow
                            );
                            let hint = did_you_mean(other, ["count", "name", "memory"]);
                            self.error(e.key.pos, Code::UnknownKey, message)
                                .suggest(hint);
                        }
                    }
                }
                (gpu.count > 0).then_some(gpu)
            }
            NodeKind::Seq(_) => {
                self.type_error(
                    "resources.gpu",
                    node,
                    "a number of GPUs (`gpu: 2`) or a mapping (`gpu: {count: 2, name: V100}`)",
                );
                None
            }
            _ => {
                let count = self.integer_of("resources.gpu", node, 0, i64::from(u32::MAX))?;
                let count = u32::try_from(count).ok()?;
                (count > 0).then_some(GpuRequest {
                    count,
                    name: None,
                    memory_bytes: None,
                })
            }
        }
    }

    /// Reports every key that no accessor asked for, and returns all diagnostics.
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        if self.used.iter().all(|&u| u) {
            return self.diagnostics;
        }
        let mut keys: Vec<&str> = self.asked.iter().map(|k| &**k).collect();
        keys.extend(crate::config::WORKFLOW_KEYS);
        keys.sort_unstable();
        keys.dedup();
        let list = keys.join("`, `");
        let mut drop = Vec::new();
        for (i, entry) in self.entries.clone().into_iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let key = &entry.key.text;
            // The provider's keys and those of every workflow (`Name` for `name`,
            // `dependson` for `depends-on`).
            let candidates = self
                .asked
                .iter()
                .map(|k| &**k)
                .chain(crate::config::WORKFLOW_KEYS);
            let hint = did_you_mean(key, candidates).map(str::to_owned);
            let hint = hint.as_deref();
            // `scirpt` for a missing `script` is one mistake: report it once, as the typo.
            if let Some((_, index)) = self.missing.iter().find(|(m, _)| Some(m.as_str()) == hint) {
                drop.push(*index);
            }
            let message = format!(
                "unknown key `{key}` in workflow `{}` (provider `{}`)",
                self.workflow, self.provider
            );
            let d = self.push(Severity::Error, entry.key.pos, Code::UnknownKey, message);
            d.suggest(hint);
            if hint.is_none() {
                d.help(format!("the keys of this workflow are `{list}`"));
            }
        }
        let mut out = Vec::with_capacity(self.diagnostics.len());
        for (i, d) in self.diagnostics.into_iter().enumerate() {
            if !drop.contains(&i) {
                out.push(d);
            }
        }
        out
    }
}

/// Whether one of two different normalised relative paths holds the other (`a` and `a/b`).
pub(crate) fn nested_paths(a: &str, b: &str) -> bool {
    let inside = |inner: &str, outer: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    inside(a, b) || inside(b, a)
}

/// Normalises a relative path: drops `.` parts and resolves `..`; refuses absolute paths and
/// paths that climb out of their base. Returns `""` for the base itself.
pub fn normalise_relative(text: &str) -> Result<String, &'static str> {
    let t = text.trim();
    if t.is_empty() {
        return Err("is empty");
    }
    if t.starts_with('/') || t.starts_with('\\') || t.as_bytes().get(1) == Some(&b':') {
        return Err("is absolute");
    }
    if t.contains('\0') {
        return Err("contains a NUL character");
    }
    // Already normal (the usual case, `data/out`): no backslash and no `.`, `..` or empty part.
    if !t.contains('\\') && t.split('/').all(|p| !matches!(p, "" | "." | "..")) {
        return Ok(t.to_owned());
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in t.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("escapes the working directory");
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(normalise_relative("./data/"), Ok("data".into()));
        assert_eq!(normalise_relative(" data/x.y "), Ok("data/x.y".into()));
        assert_eq!(normalise_relative("data//x"), Ok("data/x".into()));
        assert_eq!(normalise_relative("data\\x"), Ok("data/x".into()));
        assert_eq!(normalise_relative("a/."), Ok("a".into()));
        assert_eq!(normalise_relative("a/..."), Ok("a/...".into()));
        assert_eq!(normalise_relative("a/../b"), Ok("b".into()));
        assert_eq!(normalise_relative("."), Ok(String::new()));
        assert_eq!(
            normalise_relative("../x"),
            Err("escapes the working directory")
        );
        assert_eq!(
            normalise_relative("a/../../x"),
            Err("escapes the working directory")
        );
        assert_eq!(normalise_relative("/etc"), Err("is absolute"));
        assert_eq!(normalise_relative("C:\\x"), Err("is absolute"));
        assert_eq!(normalise_relative(""), Err("is empty"));
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("PYTHONPATH"));
        assert!(valid_env_name("_X1"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }
}
