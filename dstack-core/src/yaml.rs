//! A YAML tree that remembers where every node came from.
//!
//! `saphyr-parser` produces events with positions; this module folds them into [`Node`]s that keep
//! a 1-based line and column for every scalar, sequence, mapping and mapping key, so that every
//! later stage (typing, substitution, planning) can point at the user's text. The builder is an
//! explicit stack machine, not a recursive descent, and refuses hostile input early: nesting
//! deeper than [`Limits::max_depth`], more than [`Limits::max_nodes`] nodes, or alias expansions
//! beyond [`Limits::max_alias_nodes`] (the "billion laughs" attack) end the load with one error,
//! in time and memory proportional to the input read so far.

pub use compact_str::CompactString;
use foldhash::{HashMap, HashMapExt};
use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::diag::{Code, Sink};

mod fast;

/// A position in a source file: 1-based line and column (in characters).
///
/// Line `0` means "no position" (values that came from the command line or the API).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// 1-based line; `0` when the value has no position in a file.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

impl Pos {
    /// The position of values that do not come from a file.
    pub const NONE: Pos = Pos { line: 0, column: 0 };

    /// Creates a position from a 1-based line and column.
    #[must_use]
    pub const fn new(line: u32, column: u32) -> Self {
        Pos { line, column }
    }

    /// Whether this position points into a file.
    #[must_use]
    pub const fn is_known(self) -> bool {
        self.line != 0
    }

    fn from_marker(m: saphyr_parser::Marker) -> Self {
        Pos {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            column: u32::try_from(m.col().saturating_add(1)).unwrap_or(u32::MAX),
        }
    }

    /// This position moved `chars` characters to the right on the same line.
    #[must_use]
    pub fn shifted(self, chars: usize) -> Self {
        if !self.is_known() {
            return self;
        }
        let chars = u32::try_from(chars).unwrap_or(u32::MAX);
        Pos {
            line: self.line,
            column: self.column.saturating_add(chars),
        }
    }
}

/// How a scalar was written in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Plain (unquoted): typed by the YAML 1.2 core schema.
    Plain,
    /// Single- or double-quoted: always a string.
    Quoted,
    /// Literal (`|`) or folded (`>`) block: always a string.
    Block,
}

/// The type a scalar resolves to under the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScalarValue {
    /// `~`, `null`, or nothing at all.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A decimal, octal (`0o`) or hexadecimal (`0x`) integer that fits in an `i64`.
    Int(i64),
    /// A floating point number, including `.inf` and `.nan`.
    Float(f64),
    /// Anything else.
    Str,
    /// A value whose `${{ }}` substitution failed. The failure is already reported, so checks
    /// of this value stay silent instead of reporting the same problem twice.
    Invalid,
}

/// A scalar: its text exactly as the user wrote it (after YAML unquoting) and its resolved type.
///
/// Keeping the text matters: `python: 3.10` is the float 3.1 to YAML, but the user meant "3.10".
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The scalar's text after YAML unquoting. Texts of up to 24 bytes (most keys and values
    /// of a workflow file) are held inline, without an allocation of their own.
    pub text: CompactString,
    /// How it was written.
    pub style: Style,
    /// Its type.
    pub value: ScalarValue,
}

impl Scalar {
    /// A scalar with the type YAML would give `text` written in `style`.
    #[must_use]
    pub fn new(text: impl Into<CompactString>, style: Style) -> Self {
        let text = text.into();
        let value = if style == Style::Plain {
            resolve_plain(&text)
        } else {
            ScalarValue::Str
        };
        Scalar { text, style, value }
    }

    /// A quoted string scalar.
    #[must_use]
    pub fn string(text: impl Into<CompactString>) -> Self {
        Scalar::new(text, Style::Quoted)
    }

    /// The name of this scalar's type, for messages.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self.value {
            ScalarValue::Null => "null",
            ScalarValue::Bool(_) => "a boolean",
            ScalarValue::Int(_) => "an integer",
            ScalarValue::Float(_) => "a number",
            ScalarValue::Str | ScalarValue::Invalid => "a string",
        }
    }
}

/// A mapping key: always a scalar, kept as text with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key's text (inline up to 24 bytes, like [`Scalar::text`]).
    pub text: CompactString,
    /// Where the key is written.
    pub pos: Pos,
}

/// One `key: value` entry of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: Key,
    /// The value.
    pub value: Node,
}

/// The shape of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, without duplicate keys.
    Map(Vec<Entry>),
}

/// A YAML value with the position it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it is.
    pub kind: NodeKind,
}

impl Node {
    /// A node without a position in any file.
    #[must_use]
    pub fn synthetic(kind: NodeKind) -> Self {
        Node {
            pos: Pos::NONE,
            kind,
        }
    }

    /// The scalar, if this node is one.
    #[must_use]
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping entries, if this node is a mapping.
    #[must_use]
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Whether the node's substitution failed (and was reported).
    #[must_use]
    pub fn is_invalid(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar(s) if s.value == ScalarValue::Invalid)
    }

    /// Whether the node is a null scalar.
    #[must_use]
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar(s) if s.value == ScalarValue::Null)
    }

    /// The value stored under `key`, if this node is a mapping that has it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|e| e.key.text == key)
            .map(|e| &e.value)
    }

    /// The name of this node's type, for messages ("a string", "a list", "a mapping").
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(s) => s.type_name(),
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// This node as a JSON value (used for the JSON Schema checks and the Python bindings).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            NodeKind::Scalar(s) => match s.value {
                ScalarValue::Null => J::Null,
                ScalarValue::Bool(b) => J::Bool(b),
                ScalarValue::Int(i) => J::from(i),
                ScalarValue::Float(f) => serde_json::Number::from_f64(f)
                    .map_or_else(|| J::String(s.text.as_str().to_owned()), J::Number),
                ScalarValue::Str | ScalarValue::Invalid => J::String(s.text.as_str().to_owned()),
            },
            NodeKind::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.text.as_str().to_owned(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Bounds that keep hostile input from costing unbounded time or memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest accepted file, in bytes.
    pub max_bytes: usize,
    /// The deepest accepted nesting of sequences and mappings.
    pub max_depth: usize,
    /// The most nodes a document may hold, alias expansions included.
    pub max_nodes: usize,
    /// The most nodes that alias expansions may add.
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 32 * 1024 * 1024,
            max_depth: 64,
            max_nodes: 4_000_000,
            max_alias_nodes: 100_000,
        }
    }
}

/// Resolves a plain scalar's type under the YAML 1.2 core schema.
#[must_use]
pub fn resolve_plain(text: &str) -> ScalarValue {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarValue::Null,
        "true" | "True" | "TRUE" => return ScalarValue::Bool(true),
        "false" | "False" | "FALSE" => return ScalarValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ScalarValue::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return ScalarValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return ScalarValue::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return i64::from_str_radix(hex, 16).map_or(ScalarValue::Str, ScalarValue::Int);
        }
        return ScalarValue::Str;
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return i64::from_str_radix(oct, 8).map_or(ScalarValue::Str, ScalarValue::Int);
        }
        return ScalarValue::Str;
    }
    let digits = match bytes.first() {
        Some(b'-' | b'+') => &bytes[1..],
        _ => bytes,
    };
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        return match text.parse::<i64>() {
            Ok(i) => ScalarValue::Int(i),
            Err(_) => text
                .parse::<f64>()
                .map_or(ScalarValue::Str, ScalarValue::Float),
        };
    }
    if is_core_float(digits) {
        return text
            .parse::<f64>()
            .map_or(ScalarValue::Str, ScalarValue::Float);
    }
    ScalarValue::Str
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?` without the sign.
fn is_core_float(s: &[u8]) -> bool {
    let mut i = 0;
    let int_digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == s.len()
}

/// Reports a parser error with the hints a person needs: where a tab indents, which bracket
/// was never closed, that indentation is the usual culprit.
fn explain_syntax_error(source: &str, pos: Pos, info: &str, sink: &mut Sink<'_>) {
    if info.contains("tab") {
        let tab = source.lines().enumerate().find_map(|(i, line)| {
            let indent: &str = &line[..line.len() - line.trim_start().len()];
            indent
                .find('\t')
                .map(|col| (i, indent[..col].chars().count()))
        });
        if let Some((line, col)) = tab {
            let at = Pos::new(
                u32::try_from(line + 1).unwrap_or(u32::MAX),
                u32::try_from(col + 1).unwrap_or(u32::MAX),
            );
            sink.error(
                at,
                Code::Syntax,
                "invalid YAML: a tab indents this line; YAML indentation must use spaces",
            )
            .help("replace the tab with spaces");
            return;
        }
    }
    let d = sink.error(pos, Code::Syntax, format!("invalid YAML: {info}"));
    if let Some((line, column, bracket)) = unclosed_bracket(source, pos.line) {
        d.help(format!(
            "the `{bracket}` at line {line}, column {column} is never closed"
        ));
    } else if info.contains("expected key")
        || info.contains("mapping values")
        || info.contains("expected '-'")
    {
        d.help("check the indentation of this line against the lines above it");
    }
}

/// The last `[` or `{` opened before the end of line `until` and not closed, outside quotes
/// and comments.
fn unclosed_bracket(source: &str, until: u32) -> Option<(usize, usize, char)> {
    let mut open: Vec<(usize, usize, char)> = Vec::new();
    for (n, line) in source.lines().enumerate().take(until as usize) {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut chars = line.chars().enumerate().peekable();
        while let Some((col, c)) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if prev.is_whitespace() => break,
                    '\'' | '"' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':') => {
                        quote = Some(c)
                    }
                    '[' | '{' => open.push((n + 1, col + 1, c)),
                    ']' | '}' => {
                        open.pop();
                    }
                    _ => {}
                },
            }
            prev = c;
        }
    }
    open.pop()
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        size: usize,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<Key>,
        merges: Vec<Node>,
        size: usize,
        index: Option<HashMap<String, usize>>,
    },
}

/// Parses one YAML document into a [`Node`], for callers outside the loader (tools, tests).
///
/// `path` only names the file in diagnostics. Returns `Ok(None)` for an empty document.
///
/// # Errors
/// Every problem found, located (syntax, duplicate keys, exceeded [`Limits`]).
pub fn parse_str(
    text: &str,
    path: &std::path::Path,
) -> Result<Option<Node>, crate::diag::Diagnostics> {
    let path: std::sync::Arc<std::path::Path> = path.into();
    let mut out = Vec::new();
    let node = parse(text, Limits::default(), &mut Sink::new(&path, &mut out));
    if out.is_empty() {
        Ok(node)
    } else {
        Err(crate::diag::Diagnostics(out))
    }
}

/// Checks the fast front end against saphyr-parser on `text`, for tests and fuzzing.
///
/// Returns `Ok(true)` when the fast front end read the document and made the same tree as
/// saphyr-parser (positions included) about which saphyr-parser reports nothing, `Ok(false)`
/// when it left the document to saphyr-parser.
///
/// # Errors
/// A description of the difference when the two disagree.
#[doc(hidden)]
pub fn compare_front_ends(text: &str) -> Result<bool, String> {
    let Ok(fast) = fast::parse(text, Limits::default()) else {
        return Ok(false);
    };
    let path: std::sync::Arc<std::path::Path> = std::path::Path::new("t.yaml").into();
    let mut diags = Vec::new();
    let slow = parse_saphyr(text, Limits::default(), &mut Sink::new(&path, &mut diags));
    if !diags.is_empty() {
        return Err(format!(
            "the fast front end accepted a document about which saphyr-parser reports {diags:?}"
        ));
    }
    // Debug text, so that NaN equals NaN.
    let (fast, slow) = (format!("{:?}", Some(fast)), format!("{slow:?}"));
    if fast == slow {
        Ok(true)
    } else {
        Err(format!("fast front end: {fast}\nsaphyr-parser: {slow}"))
    }
}

/// Parses one YAML document into a [`Node`].
///
/// Returns `None` for an empty stream (no document, or a document that is only comments), or
/// when the input could not be parsed; every problem is reported through `sink`. Duplicate keys
/// and non-scalar keys are reported and the load goes on; syntax errors and exceeded
/// [`Limits`] end it.
pub(crate) fn parse(source: &str, limits: Limits, sink: &mut Sink<'_>) -> Option<Node> {
    if source.len() > limits.max_bytes {
        sink.error(
            Pos::new(1, 1),
            Code::Limit,
            // The reader stops one byte past the limit: the file's own size is not known.
            format!(
                "file is too large: more than the limit of {} bytes ({} MiB)",
                limits.max_bytes,
                limits.max_bytes >> 20
            ),
        );
        return None;
    }
    // The common block-style subset first; saphyr-parser for everything else, and for any
    // document about which there is something to report.
    if let Ok(root) = fast::parse(source, limits) {
        return Some(root);
    }
    parse_saphyr(source, limits, sink)
}

/// [`parse`] with saphyr-parser only.
fn parse_saphyr(source: &str, limits: Limits, sink: &mut Sink<'_>) -> Option<Node> {
    let mut builder = Builder::new(limits);
    let mut parser = Parser::new_from_str(source);
    while let Some(item) = parser.next_event() {
        match item {
            Ok((event, span)) => {
                let pos = Pos::from_marker(span.start);
                match builder.event(event, pos, sink) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(()) => return None,
                }
            }
            Err(e) => {
                let pos = Pos::from_marker(*e.marker());
                explain_syntax_error(source, pos, e.info(), sink);
                return None;
            }
        }
    }
    builder.root
}

struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    alias_nodes: usize,
    root: Option<Node>,
    documents: usize,
}

impl Builder {
    fn new(limits: Limits) -> Builder {
        Builder {
            limits,
            stack: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            alias_nodes: 0,
            root: None,
            documents: 0,
        }
    }

    /// Handles one event. `Ok(false)` ends the stream; `Err` means a fatal error was reported.
    fn event(&mut self, event: Event<'_>, pos: Pos, sink: &mut Sink<'_>) -> Result<bool, ()> {
        match event {
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
            Event::StreamEnd => return Ok(false),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    sink.error(
                        pos,
                        Code::Syntax,
                        "this file holds more than one YAML document; only one is allowed",
                    )
                    .help("remove the `---` line that starts the second document");
                    return Err(());
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    _ => Style::Block,
                };
                let mut scalar = Scalar::new(text.into_owned(), style);
                if tag.is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str") {
                    scalar.value = ScalarValue::Str;
                }
                let node = Node {
                    pos,
                    kind: NodeKind::Scalar(scalar),
                };
                // A scalar costs one node per 64 bytes of text too, so that aliases of long
                // strings count for what they copy.
                let cost = 1 + text_len(&node) / 64;
                self.count(cost, pos, sink)?;
                self.finish(node, anchor, cost, sink)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.open(pos, sink)?;
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                    size: 1,
                });
            }
            Event::MappingStart(anchor, _) => {
                self.open(pos, sink)?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    merges: Vec::new(),
                    size: 1,
                    index: None,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    pos,
                    anchor,
                    items,
                    size,
                }) = self.stack.pop()
                {
                    let node = Node {
                        pos,
                        kind: NodeKind::Seq(items),
                    };
                    self.finish(node, anchor, size, sink)?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pos,
                    anchor,
                    mut entries,
                    merges,
                    size,
                    ..
                }) = self.stack.pop()
                {
                    apply_merges(&mut entries, merges, sink);
                    let node = Node {
                        pos,
                        kind: NodeKind::Map(entries),
                    };
                    self.finish(node, anchor, size, sink)?;
                }
            }
            Event::Alias(id) => {
                let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                    sink.error(pos, Code::Syntax, "invalid YAML: unknown anchor");
                    return Err(());
                };
                self.alias_nodes = self.alias_nodes.saturating_add(size);
                if self.alias_nodes > self.limits.max_alias_nodes {
                    sink.error(
                        pos,
                        Code::Limit,
                        format!(
                            "aliases expand to more than {} nodes; refusing this file (a YAML alias bomb?)",
                            self.limits.max_alias_nodes
                        ),
                    )
                    .help("the limit protects dstack from files that expand exponentially; write the repeated parts out, or reuse fewer aliases");
                    return Err(());
                }
                self.count(size, pos, sink)?;
                let Some((node, _)) = self.anchors.get(&id) else {
                    return Err(());
                };
                let node = Node {
                    pos,
                    kind: node.kind.clone(),
                };
                self.finish(node, 0, size, sink)?;
            }
        }
        Ok(true)
    }

    fn open(&mut self, pos: Pos, sink: &mut Sink<'_>) -> Result<(), ()> {
        if self.stack.len() >= self.limits.max_depth {
            sink.error(
                pos,
                Code::Limit,
                format!(
                    "nesting is deeper than {} levels; refusing this file",
                    self.limits.max_depth
                ),
            )
            .help("workflow files need only a few levels of lists and mappings");
            return Err(());
        }
        self.count(1, pos, sink)
    }

    fn count(&mut self, n: usize, pos: Pos, sink: &mut Sink<'_>) -> Result<(), ()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            sink.error(
                pos,
                Code::Limit,
                format!(
                    "the document holds more than {} nodes; refusing this file",
                    self.limits.max_nodes
                ),
            );
            return Err(());
        }
        Ok(())
    }

    /// Places a completed node into its parent (or makes it the root).
    fn finish(
        &mut self,
        node: Node,
        anchor: usize,
        size: usize,
        sink: &mut Sink<'_>,
    ) -> Result<(), ()> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq {
                items, size: total, ..
            }) => {
                *total += size;
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                key,
                merges,
                size: total,
                index,
                ..
            }) => match key.take() {
                None => {
                    let text = match node.kind {
                        NodeKind::Scalar(s) => s.text,
                        _ => {
                            sink.error(
                                node.pos,
                                Code::Type,
                                "mapping keys must be plain text, not a list or a mapping",
                            );
                            CompactString::default()
                        }
                    };
                    *key = Some(Key {
                        text,
                        pos: node.pos,
                    });
                }
                Some(k) => {
                    *total += size + 1;
                    // Small mappings are scanned; large ones get a hash index, so a mapping
                    // of any size loads in linear time.
                    if index.is_none() && entries.len() >= 16 {
                        *index = Some(
                            entries
                                .iter()
                                .enumerate()
                                .map(|(i, e)| (e.key.text.as_str().to_owned(), i))
                                .collect(),
                        );
                    }
                    let earlier = match index {
                        Some(index) => index.get(k.text.as_str()).map(|&i| &entries[i]),
                        None => entries.iter().find(|e| e.key.text == k.text),
                    };
                    if k.text == "<<" {
                        merges.push(node);
                    } else if let Some(first) = earlier {
                        sink.error(
                            k.pos,
                            Code::DuplicateKey,
                            format!("duplicate key `{}`", k.text),
                        )
                        .help(format!(
                            "`{}` is already set at line {}; keep one of them",
                            k.text, first.key.pos.line
                        ));
                    } else {
                        if let Some(index) = index {
                            index.insert(k.text.as_str().to_owned(), entries.len());
                        }
                        entries.push(Entry {
                            key: k,
                            value: node,
                        });
                    }
                }
            },
        }
        Ok(())
    }
}

/// The length of a scalar's text (0 for other nodes).
fn text_len(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar(s) => s.text.len(),
        _ => 0,
    }
}

/// Applies YAML merge keys (`<<: *defaults`): entries already present win.
fn apply_merges(entries: &mut Vec<Entry>, merges: Vec<Node>, sink: &mut Sink<'_>) {
    if merges.is_empty() {
        return;
    }
    let mut present: std::collections::HashSet<String> = entries
        .iter()
        .map(|e| e.key.text.as_str().to_owned())
        .collect();
    for merge in merges {
        let sources: Vec<Node> = match merge.kind {
            NodeKind::Seq(items) => items,
            other => vec![Node {
                pos: merge.pos,
                kind: other,
            }],
        };
        for source in sources {
            match source.kind {
                NodeKind::Map(more) => {
                    for entry in more {
                        if present.insert(entry.key.text.as_str().to_owned()) {
                            entries.push(entry);
                        }
                    }
                }
                _ => {
                    sink.error(
                        source.pos,
                        Code::Type,
                        format!(
                            "a merge key `<<` takes a mapping or a list of mappings, not {}",
                            source.type_name()
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{Diagnostic, Sink};
    use std::path::Path;

    fn load(src: &str) -> (Option<Node>, Vec<Diagnostic>) {
        let mut out = Vec::new();
        let path: std::sync::Arc<Path> = Path::new("t.yaml").into();
        let node = {
            let mut sink = Sink::new(&path, &mut out);
            parse(src, Limits::default(), &mut sink)
        };
        (node, out)
    }

    #[test]
    fn core_schema_types() {
        assert_eq!(resolve_plain("3"), ScalarValue::Int(3));
        assert_eq!(resolve_plain("-3"), ScalarValue::Int(-3));
        assert_eq!(resolve_plain("0x1F"), ScalarValue::Int(31));
        assert_eq!(resolve_plain("0o17"), ScalarValue::Int(15));
        assert_eq!(resolve_plain("3.10"), ScalarValue::Float(3.1));
        assert_eq!(resolve_plain("1e3"), ScalarValue::Float(1000.0));
        assert_eq!(resolve_plain(".5"), ScalarValue::Float(0.5));
        assert_eq!(resolve_plain("1e"), ScalarValue::Str);
        assert_eq!(resolve_plain("."), ScalarValue::Str);
        assert_eq!(resolve_plain("yes"), ScalarValue::Str);
        assert_eq!(resolve_plain("true"), ScalarValue::Bool(true));
        assert_eq!(resolve_plain("~"), ScalarValue::Null);
        assert_eq!(resolve_plain("32GB"), ScalarValue::Str);
        assert_eq!(resolve_plain("0xZZ"), ScalarValue::Str);
    }

    #[test]
    fn positions_are_one_based() {
        let (node, diags) = load("a:\n  b: [1, x]\n");
        assert!(diags.is_empty());
        let node = node.expect("a document");
        let b = node.get("a").and_then(|a| a.get("b")).expect("a.b");
        assert_eq!(b.pos, Pos::new(2, 6));
        let NodeKind::Seq(items) = &b.kind else {
            panic!("a list")
        };
        assert_eq!(items[1].pos, Pos::new(2, 10));
        assert_eq!(node.as_map().expect("map")[0].key.pos, Pos::new(1, 1));
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let (node, _) = load("a: '3'\nb: 3.10\n");
        let node = node.expect("doc");
        let a = node.get("a").and_then(Node::as_scalar).expect("a");
        assert_eq!(a.value, ScalarValue::Str);
        let b = node.get("b").and_then(Node::as_scalar).expect("b");
        assert_eq!(b.text, "3.10");
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_lines() {
        let (_, diags) = load("a: 1\nb: 2\na: 3\n");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].message, "duplicate key `a`");
        assert_eq!(diags[0].location.as_ref().map(|l| l.line), Some(3));
    }

    #[test]
    fn merge_keys_fill_missing_entries() {
        let (node, diags) = load("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n");
        assert!(diags.is_empty(), "{diags:?}");
        let c = node.expect("doc");
        let c = c.get("c").expect("c");
        assert_eq!(
            c.get("x")
                .and_then(Node::as_scalar)
                .map(|s| s.text.as_str()),
            Some("1")
        );
        assert_eq!(
            c.get("y")
                .and_then(Node::as_scalar)
                .map(|s| s.text.as_str()),
            Some("3")
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let (node, diags) = load(&src);
        assert!(node.is_none());
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].message.contains("alias bomb"),
            "{}",
            diags[0].message
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (node, diags) = load(&src);
        assert!(node.is_none());
        assert!(diags[0].message.contains("recursion limit"), "{diags:?}");
        // Block nesting within the parser's own limit still meets ours.
        let mut src = String::new();
        for depth in 0..100 {
            src.push_str(&" ".repeat(depth));
            src.push_str("k:\n");
        }
        let (node, diags) = load(&src);
        assert!(node.is_none());
        assert!(
            diags[0].message.contains("nesting is deeper than 64"),
            "{diags:?}"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (node, diags) = load("a: [1, 2\nb: 3\n");
        assert!(node.is_none());
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.starts_with("invalid YAML"));
        assert!(diags[0].location.is_some());
    }

    #[test]
    fn empty_stream_is_none() {
        assert!(load("").0.is_none());
        assert!(load("# only a comment\n").0.is_none());
    }

    #[test]
    fn second_document_is_an_error() {
        let (_, diags) = load("a: 1\n---\nb: 2\n");
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("more than one YAML document"));
    }
}
