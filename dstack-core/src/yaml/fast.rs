//! A fast front end for the block-style subset of YAML that workflow files are written in.
//!
//! saphyr-parser's scanner handles all of YAML, one character at a time, and allocates every
//! scalar; on large workflow files it is most of the time of a load. This scanner reads the
//! common subset line by line and builds the same [`Node`] tree, with the same positions, that
//! saphyr-parser's events make through [`Builder`](super::Builder):
//!
//! - block mappings whose keys are plain scalars on one line (`key: value`, `key:` followed by
//!   a nested block, an indentless `- ` list, or nothing);
//! - block sequences (`- item`, `- key: value` compact mappings);
//! - flow sequences of scalars on one line (`[a, "b"]`);
//! - plain scalars on one line, single-quoted and double-quoted scalars on one line without
//!   backslash escapes;
//! - comments and blank lines.
//!
//! Anything else (anchors, aliases, tags, block scalars, flow mappings, multi-line scalars,
//! tabs, carriage returns, control characters, byte order marks, document markers, directives,
//! empty documents...) makes it give up, and so does anything the builder would report: a
//! duplicate key, a merge key (`<<`), nesting deeper than [`Limits::max_depth`], more than
//! [`Limits::max_nodes`] nodes. The caller then parses the whole text again with
//! saphyr-parser, which reports every problem as before. So the fast path decides nothing about
//! errors: a document it accepts is one saphyr-parser reads into the same tree without a word,
//! and every other document takes the saphyr-parser path. `tests/yaml_fast_path.rs` checks
//! both paths against each other.

use super::{CompactString, Entry, Key, Limits, Node, NodeKind, Pos, Scalar, Style};

/// The document is outside the subset (or the builder refused it): use saphyr-parser.
pub(super) struct GiveUp;

type Fast<T> = Result<T, GiveUp>;

/// Keys at least this long go to saphyr-parser, which refuses simple keys of more than 1,024
/// characters.
const MAX_KEY_BYTES: usize = 1000;

/// One line that holds something (not blank, not only a comment).
#[derive(Clone, Copy, Debug)]
struct Line {
    /// Byte offset of the line's first character.
    start: usize,
    /// Byte offset of its first non-space character.
    content: usize,
    /// Byte offset of its end (the `\n`, or the end of the text).
    end: usize,
    /// 1-based line number.
    no: u32,
    /// Whether the line is ASCII (columns are then byte offsets).
    ascii: bool,
}

impl Line {
    fn indent(&self) -> usize {
        self.content - self.start
    }
}

/// How a plain scalar on one line ends.
enum PlainEnd {
    /// At the end of the line, or at a comment.
    Line,
    /// At a `:` followed by a space or the end of the line, at this byte offset: a key.
    Colon(usize),
}

/// Checks that `text` holds nothing the subset excludes anywhere: control characters other
/// than `\n` (tabs and `\r` included), and the characters YAML or saphyr-parser treat
/// specially outside ASCII (byte order marks, NEL, line and paragraph separators).
fn plain_text(text: &str) -> bool {
    // In blocks without an early exit, so that the check runs on vectors.
    let refused = text.as_bytes().chunks(256).any(|block| {
        block.iter().fold(false, |bad, &b| {
            bad | ((b < 0x20) & (b != b'\n')) | (b == 0x7f)
        })
    });
    if refused {
        return false;
    }
    if text.is_ascii() {
        return true;
    }
    !text.chars().any(|c| {
        matches!(
            c,
            '\u{80}'..='\u{9f}' | '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
        )
    })
}

/// Parses `source` into its tree; `GiveUp` when it is outside the subset or when the builder
/// would report anything.
pub(super) fn parse(source: &str, limits: Limits) -> Fast<Node> {
    if !plain_text(source) {
        return Err(GiveUp);
    }
    let mut p = Scanner {
        src: source,
        bytes: source.as_bytes(),
        ascii: source.is_ascii(),
        next: 0,
        next_no: 1,
        peeked: None,
        limits,
        depth: 0,
        nodes: 0,
        entries: Vec::new(),
        keys: Vec::new(),
        items: Vec::new(),
    };
    let Some(first) = p.peek()? else {
        // An empty stream: saphyr-parser says what it is.
        return Err(GiveUp);
    };
    if first.indent() != 0 {
        return Err(GiveUp);
    }
    let root = p.block_node(first)?;
    if p.peek()?.is_some() {
        return Err(GiveUp);
    }
    Ok(root)
}

struct Scanner<'s> {
    src: &'s str,
    bytes: &'s [u8],
    /// Whether the whole text is ASCII (every column is then a byte offset).
    ascii: bool,
    /// Byte offset of the next line not read yet.
    next: usize,
    /// Its 1-based number.
    next_no: u32,
    /// The next line with content, read but not consumed.
    peeked: Option<Line>,
    limits: Limits,
    /// How many collections are open.
    depth: usize,
    /// Nodes made so far, counted as the builder counts them.
    nodes: usize,
    /// The entries of the mappings being read, innermost last: each mapping moves its own
    /// into a vector of the right size when it ends, so vectors never grow by copies.
    entries: Vec<Entry>,
    /// Their keys, borrowed from the text, for the duplicate check.
    keys: Vec<&'s str>,
    /// The items of the sequences being read, likewise.
    items: Vec<Node>,
}

impl<'s> Scanner<'s> {
    /// The next line with content, without consuming it.
    fn peek(&mut self) -> Fast<Option<Line>> {
        if self.peeked.is_some() {
            return Ok(self.peeked);
        }
        let bytes = self.bytes;
        while self.next < bytes.len() {
            let start = self.next;
            let end = find_newline(bytes, start);
            let no = self.next_no;
            self.next = end + 1;
            self.next_no = self.next_no.checked_add(1).ok_or(GiveUp)?;
            let content = start
                + bytes[start..end]
                    .iter()
                    .position(|&b| b != b' ')
                    .unwrap_or(end - start);
            if content == end || bytes[content] == b'#' {
                continue;
            }
            let line = &bytes[start..end];
            if content == start
                && (line.starts_with(b"---") || line.starts_with(b"...") || line[0] == b'%')
            {
                return Err(GiveUp);
            }
            self.peeked = Some(Line {
                start,
                content,
                end,
                no,
                ascii: self.ascii || line.is_ascii(),
            });
            return Ok(self.peeked);
        }
        Ok(None)
    }

    /// Marks the peeked line as read.
    fn consume(&mut self) {
        self.peeked = None;
    }

    /// The position of byte offset `at` of `line`.
    fn pos(&self, line: Line, at: usize) -> Pos {
        let chars = if line.ascii {
            at - line.start
        } else {
            self.src[line.start..at].chars().count()
        };
        Pos::new(line.no, u32::try_from(chars + 1).unwrap_or(u32::MAX))
    }

    /// Counts `n` nodes against the limit.
    fn count(&mut self, n: usize) -> Fast<()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(GiveUp);
        }
        Ok(())
    }

    fn scalar(&mut self, text: CompactString, style: Style, pos: Pos) -> Fast<Node> {
        // A scalar costs one node per 64 bytes of text too, as in the builder.
        self.count(1 + text.len() / 64)?;
        Ok(Node {
            pos,
            kind: NodeKind::Scalar(Scalar::new(text, style)),
        })
    }

    /// Enters a list or a mapping.
    fn open(&mut self) -> Fast<()> {
        if self.depth >= self.limits.max_depth {
            return Err(GiveUp);
        }
        self.depth += 1;
        self.count(1)
    }

    /// Whether `line` is a block sequence entry (`-` then a space or the end of the line).
    fn is_entry(&self, line: Line) -> bool {
        self.bytes[line.content] == b'-'
            && (line.content + 1 == line.end || self.bytes[line.content + 1] == b' ')
    }

    /// The offset of the first non-space byte of `line` at or after `at`.
    fn skip_spaces(&self, line: Line, mut at: usize) -> usize {
        while at < line.end && self.bytes[at] == b' ' {
            at += 1;
        }
        at
    }

    /// Checks that `line` holds nothing after `at` but spaces and a comment, and consumes it.
    fn end_of_line(&mut self, line: Line, at: usize) -> Fast<()> {
        let rest = self.skip_spaces(line, at);
        if rest < line.end && !(self.bytes[rest] == b'#' && rest > at) {
            return Err(GiveUp);
        }
        self.consume();
        Ok(())
    }

    /// A node that starts a line (after its indentation).
    fn block_node(&mut self, line: Line) -> Fast<Node> {
        if self.is_entry(line) {
            self.block_sequence(line, false)
        } else {
            self.node_at(line, line.content)
        }
    }

    /// A node at `at` that may be a block mapping (at the start of a line or after `- `).
    fn node_at(&mut self, line: Line, at: usize) -> Fast<Node> {
        match self.bytes[at] {
            b'[' => {
                let (node, end) = self.flow_sequence(line, at)?;
                self.end_of_line(line, end)?;
                Ok(node)
            }
            b'"' | b'\'' => {
                let (node, end) = self.quoted(line, at)?;
                self.end_of_line(line, end)?;
                Ok(node)
            }
            _ => {
                plain_start(self.bytes, at, line.end)?;
                let (text_end, how) = self.plain(line, at);
                match how {
                    PlainEnd::Colon(colon) if text_end == colon => {
                        self.block_mapping(line, at, colon)
                    }
                    PlainEnd::Colon(_) => Err(GiveUp),
                    PlainEnd::Line => {
                        let pos = self.pos(line, at);
                        let node = self.scalar(
                            CompactString::new(&self.src[at..text_end]),
                            Style::Plain,
                            pos,
                        )?;
                        self.consume();
                        Ok(node)
                    }
                }
            }
        }
    }

    /// A value after `key: ` on the same line: a scalar or a flow sequence.
    fn inline_value(&mut self, line: Line, at: usize) -> Fast<Node> {
        match self.bytes[at] {
            b'[' | b'"' | b'\'' => self.node_at(line, at),
            _ => {
                plain_start(self.bytes, at, line.end)?;
                let (text_end, how) = self.plain(line, at);
                if matches!(how, PlainEnd::Colon(_)) {
                    return Err(GiveUp);
                }
                let pos = self.pos(line, at);
                let node = self.scalar(
                    CompactString::new(&self.src[at..text_end]),
                    Style::Plain,
                    pos,
                )?;
                self.consume();
                Ok(node)
            }
        }
    }

    /// A plain scalar in block context from `at`: where its text ends and how.
    fn plain(&self, line: Line, at: usize) -> (usize, PlainEnd) {
        let bytes = self.bytes;
        let mut i = at;
        let mut text_end = at;
        while i < line.end {
            match bytes[i] {
                b' ' => {
                    if bytes.get(i + 1) == Some(&b'#') {
                        return (text_end, PlainEnd::Line);
                    }
                }
                b':' if i + 1 == line.end || bytes[i + 1] == b' ' => {
                    return (text_end, PlainEnd::Colon(i));
                }
                _ => text_end = i + 1,
            }
            i += 1;
        }
        (text_end, PlainEnd::Line)
    }

    /// A block mapping whose first key starts at `at` and ends at the `:` at `colon`.
    fn block_mapping(&mut self, first: Line, at: usize, colon: usize) -> Fast<Node> {
        let indent = at - first.start;
        let start = self.pos(first, at);
        self.open()?;
        let mark = self.entries.len();
        let key_mark = self.keys.len();
        // The keys are hashed once the mapping is large.
        let mut seen: Option<foldhash::HashSet<&'s str>> = None;
        let (mut line, mut at, mut colon) = (first, at, colon);
        loop {
            let key = &self.src[at..colon];
            if key.len() >= MAX_KEY_BYTES || key == "<<" {
                return Err(GiveUp);
            }
            // A duplicate key is reported by the builder: saphyr-parser's path says it.
            let duplicate = match &mut seen {
                Some(seen) => !seen.insert(key),
                None => self.keys[key_mark..].contains(&key),
            };
            if duplicate {
                return Err(GiveUp);
            }
            self.keys.push(key);
            if seen.is_none() && self.keys.len() - key_mark > 16 {
                seen = Some(self.keys[key_mark..].iter().copied().collect());
            }
            self.count(1 + key.len() / 64)?;
            let key_pos = self.pos(line, at);
            let value_at = self.skip_spaces(line, colon + 1);
            let value = if value_at == line.end || self.bytes[value_at] == b'#' {
                // The value is on the next lines, or there is none.
                self.consume();
                match self.peek()? {
                    Some(next) if next.indent() > indent => self.block_node(next)?,
                    Some(next) if next.indent() == indent && self.is_entry(next) => {
                        self.block_sequence(next, true)?
                    }
                    _ => {
                        let pos = self.pos(line, colon);
                        self.scalar(CompactString::default(), Style::Plain, pos)?
                    }
                }
            } else {
                self.inline_value(line, value_at)?
            };
            self.entries.push(Entry {
                key: Key {
                    text: CompactString::new(key),
                    pos: key_pos,
                },
                value,
            });
            // The next key, at the same indentation.
            match self.peek()? {
                Some(next) if next.indent() == indent => {
                    if self.is_entry(next) {
                        return Err(GiveUp);
                    }
                    plain_start(self.bytes, next.content, next.end)?;
                    match self.plain(next, next.content) {
                        (text_end, PlainEnd::Colon(c)) if text_end == c => {
                            (line, at, colon) = (next, next.content, c);
                        }
                        _ => return Err(GiveUp),
                    }
                }
                Some(next) if next.indent() > indent => return Err(GiveUp),
                _ => break,
            }
        }
        self.depth -= 1;
        self.keys.truncate(key_mark);
        let entries: Vec<Entry> = self.entries.drain(mark..).collect();
        Ok(Node {
            pos: start,
            kind: NodeKind::Map(entries),
        })
    }

    /// A block sequence whose first `-` starts `first`. An indentless sequence (the value of
    /// a key at the key's own indentation) starts where its first item does.
    fn block_sequence(&mut self, first: Line, indentless: bool) -> Fast<Node> {
        let indent = first.indent();
        let mut line = first;
        let mut at = self.entry_content(line)?;
        let start = self.pos(line, if indentless { at } else { line.content });
        self.open()?;
        let mark = self.items.len();
        loop {
            let item = self.node_at(line, at)?;
            self.items.push(item);
            match self.peek()? {
                Some(next) if next.indent() == indent && self.is_entry(next) => {
                    line = next;
                    at = self.entry_content(line)?;
                }
                Some(next) if next.indent() > indent => return Err(GiveUp),
                _ => break,
            }
        }
        self.depth -= 1;
        let items: Vec<Node> = self.items.drain(mark..).collect();
        Ok(Node {
            pos: start,
            kind: NodeKind::Seq(items),
        })
    }

    /// Where the item of the entry `line` starts (on the same line, not another `- `).
    fn entry_content(&self, line: Line) -> Fast<usize> {
        let at = self.skip_spaces(line, line.content + 1);
        if at == line.end || self.bytes[at] == b'#' {
            return Err(GiveUp);
        }
        if self.bytes[at] == b'-' && (at + 1 == line.end || self.bytes[at + 1] == b' ') {
            return Err(GiveUp);
        }
        Ok(at)
    }

    /// A quoted scalar on one line starting at `at`, and the offset after its closing quote.
    fn quoted(&mut self, line: Line, at: usize) -> Fast<(Node, usize)> {
        let bytes = self.bytes;
        let quote = bytes[at];
        let pos = self.pos(line, at);
        let body = at + 1;
        if quote == b'"' {
            let len = bytes[body..line.end]
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .ok_or(GiveUp)?;
            if bytes[body + len] == b'\\' {
                return Err(GiveUp);
            }
            let end = body + len;
            self.check_after_quoted(line, end + 1)?;
            let node = self.scalar(CompactString::new(&self.src[body..end]), Style::Quoted, pos)?;
            return Ok((node, end + 1));
        }
        // Single quotes: `''` stands for one quote.
        let mut i = body;
        let mut doubled = false;
        loop {
            let len = bytes[i..line.end]
                .iter()
                .position(|&b| b == b'\'')
                .ok_or(GiveUp)?;
            i += len;
            if bytes.get(i + 1) == Some(&b'\'') && i + 1 < line.end {
                doubled = true;
                i += 2;
                continue;
            }
            break;
        }
        let end = i;
        self.check_after_quoted(line, end + 1)?;
        let raw = &self.src[body..end];
        let text = if doubled {
            CompactString::from(raw.replace("''", "'"))
        } else {
            CompactString::new(raw)
        };
        let node = self.scalar(text, Style::Quoted, pos)?;
        Ok((node, end + 1))
    }

    /// After a closing quote in block context: a key (`"a": b`) is left to saphyr-parser.
    fn check_after_quoted(&self, line: Line, after: usize) -> Fast<()> {
        let rest = self.skip_spaces(line, after);
        if rest < line.end && self.bytes[rest] == b':' {
            return Err(GiveUp);
        }
        Ok(())
    }

    /// A flow sequence of scalars on one line, `[` at `at`, and the offset after its `]`.
    fn flow_sequence(&mut self, line: Line, at: usize) -> Fast<(Node, usize)> {
        let bytes = self.bytes;
        let start = self.pos(line, at);
        self.open()?;
        let mut items = Vec::new();
        let mut i = self.skip_spaces(line, at + 1);
        let done = |items, i: usize| {
            (
                Node {
                    pos: start,
                    kind: NodeKind::Seq(items),
                },
                i + 1,
            )
        };
        if i < line.end && bytes[i] == b']' {
            self.depth -= 1;
            return Ok(done(items, i));
        }
        loop {
            if i == line.end {
                return Err(GiveUp);
            }
            match bytes[i] {
                b'"' | b'\'' => {
                    let pos = self.pos(line, i);
                    let (node, end) = self.flow_quoted(line, i, pos)?;
                    items.push(node);
                    i = end;
                }
                b => {
                    if is_indicator(b) {
                        return Err(GiveUp);
                    }
                    let begin = i;
                    let mut text_end = i;
                    while i < line.end {
                        match bytes[i] {
                            b',' | b'[' | b']' | b'{' | b'}' => break,
                            b':' | b'#' => return Err(GiveUp),
                            b' ' => {}
                            _ => text_end = i + 1,
                        }
                        i += 1;
                    }
                    let pos = self.pos(line, begin);
                    items.push(self.scalar(
                        CompactString::new(&self.src[begin..text_end]),
                        Style::Plain,
                        pos,
                    )?);
                }
            }
            i = self.skip_spaces(line, i);
            match bytes.get(i) {
                Some(b',') if i < line.end => {
                    i = self.skip_spaces(line, i + 1);
                    if i < line.end && bytes[i] == b']' {
                        return Err(GiveUp);
                    }
                }
                Some(b']') if i < line.end => {
                    self.depth -= 1;
                    return Ok(done(items, i));
                }
                _ => return Err(GiveUp),
            }
        }
    }

    /// A quoted item of a flow sequence, and the offset after its closing quote.
    fn flow_quoted(&mut self, line: Line, at: usize, pos: Pos) -> Fast<(Node, usize)> {
        let bytes = self.bytes;
        let quote = bytes[at];
        let body = at + 1;
        let len = bytes[body..line.end]
            .iter()
            .position(|&b| b == quote || b == b'\\')
            .ok_or(GiveUp)?;
        let end = body + len;
        // Escapes and doubled single quotes go to saphyr-parser.
        if bytes[end] == b'\\' || bytes.get(end + 1) == Some(&quote) {
            return Err(GiveUp);
        }
        let node = self.scalar(CompactString::new(&self.src[body..end]), Style::Quoted, pos)?;
        Ok((node, end + 1))
    }
}

/// The offset of the first `\n` at or after `from`, or the length of `bytes`. Eight bytes at a
/// time.
fn find_newline(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word) ^ NEWLINES;
        // A zero byte of `w` is a newline; the lowest flagged byte is the first one.
        let found = w.wrapping_sub(ONES) & !w & HIGH;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| at + i)
}

/// Whether `b` cannot start a plain scalar (or starts one only in some contexts).
fn is_indicator(b: u8) -> bool {
    matches!(
        b,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'\''
            | b'"'
            | b'%'
            | b'@'
            | b'`'
    )
}

/// Checks that a plain scalar in block context may start at `at`: not an indicator, except
/// `-`, `?` and `:` followed by a character that is not a space.
fn plain_start(bytes: &[u8], at: usize, end: usize) -> Fast<()> {
    let b = bytes[at];
    if !is_indicator(b) {
        return Ok(());
    }
    if matches!(b, b'-' | b'?' | b':') && at + 1 < end && bytes[at + 1] != b' ' {
        return Ok(());
    }
    Err(GiveUp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..=len {
                let mut bytes = vec![b'a'; len];
                if at < len {
                    bytes[at] = b'\n';
                }
                for from in 0..=at.min(len) {
                    assert_eq!(find_newline(&bytes, from), at, "{len} {at} {from}");
                }
                // Bytes next to `\n` (0x0a) do not count.
                let others: Vec<u8> = (0..len).map(|i| [0x0b, 0x09, 0x8a, 0xff][i % 4]).collect();
                assert_eq!(find_newline(&others, 0), len);
            }
        }
    }

    #[test]
    fn refused_characters() {
        assert!(plain_text("a: b\nc: [d]\n"));
        assert!(plain_text("é: ü\n"));
        for bad in ["\t", "\r", "\0", "\u{7f}", "\u{85}", "\u{feff}", "\u{2028}"] {
            let text = format!("{}{bad}{}", "a".repeat(300), "b".repeat(300));
            assert!(!plain_text(&text), "{bad:?}");
        }
    }
}
