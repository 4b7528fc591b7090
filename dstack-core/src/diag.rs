//! Diagnostics: every problem found in the user's files, each with its file, line and column.
//!
//! Loading and planning never stop at the first problem: they collect [`Diagnostic`]s and
//! return them together as [`Diagnostics`]. A diagnostic is structured data (a [`Code`], a
//! message, a location, help lines); rendering is separate ([`fmt::Display`]), so callers can
//! also serialise them (the Python bindings, `dstack validate --format json`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::yaml::Pos;

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// The configuration works but should change (deprecated keys, unused sections).
    Warning,
}

/// What kind of problem a diagnostic reports. Stable: callers match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Code {
    /// The file is not valid YAML.
    Syntax,
    /// The file exceeds a size, depth or alias-expansion limit.
    Limit,
    /// A value has the wrong type.
    Type,
    /// A key that nothing expects.
    UnknownKey,
    /// A required key is missing.
    MissingKey,
    /// The same key twice in one mapping.
    DuplicateKey,
    /// Two workflows with one name.
    DuplicateWorkflow,
    /// A workflow, variable or provider name that breaks the naming rules.
    InvalidName,
    /// A value of the right type that is still wrong (a bad memory unit, a zero CPU count...).
    InvalidValue,
    /// An artifact or working directory that is absolute or escapes the working directory.
    InvalidPath,
    /// `provider` names no known provider.
    UnknownProvider,
    /// The workflow asked for does not exist.
    UnknownWorkflow,
    /// `depends-on` names a workflow that does not exist.
    UnknownDependency,
    /// A workflow depends on itself.
    SelfDependency,
    /// `depends-on` forms a cycle.
    Cycle,
    /// `${{ name }}` names no variable visible to the workflow.
    UndefinedVariable,
    /// A malformed `${{ }}` expression (unterminated, empty, not a name).
    Expression,
    /// An override names no variable, or names it ambiguously.
    UnknownVariable,
    /// A required file is missing.
    MissingFile,
    /// A file exists but holds nothing.
    EmptyFile,
    /// A file could not be read.
    Io,
    /// A key spelt the old way.
    Deprecated,
    /// Something defined and never used (a variables section for no workflow).
    Unused,
    /// A provider that cannot make jobs here.
    Provider,
}

/// Where a problem is: a file and, when known, a 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The file, as the user would write it (relative to where `dstack` was started).
    #[serde(serialize_with = "serialize_path")]
    pub path: Arc<Path>,
    /// 1-based line; `0` when the problem concerns the whole file.
    pub line: u32,
    /// 1-based column in characters; `0` when the problem concerns the whole file.
    pub column: u32,
}

// Serde's signature is fixed: the field is passed by reference.
#[allow(clippy::ref_option)]
fn serialize_path<S: serde::Serializer>(path: &Arc<Path>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What kind of problem.
    pub code: Code,
    /// One lowercase sentence that names the thing: "unknown key `scirpt` in workflow `train`".
    pub message: String,
    /// Where; `None` for problems that are not in a file (an override on the command line).
    pub location: Option<Location>,
    /// Suggestions shown after the message ("did you mean `script`?").
    pub help: Vec<String>,
}

impl Diagnostic {
    /// An error without a location.
    #[must_use]
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            location: None,
            help: Vec::new(),
        }
    }

    /// Adds a help line.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help.push(help.into());
        self
    }

    /// Adds a help line in place.
    pub fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help.push(help.into());
        self
    }

    /// Adds a "did you mean" help line when there is a suggestion.
    pub fn suggest(&mut self, suggestion: Option<&str>) -> &mut Self {
        if let Some(s) = suggestion {
            self.help.push(format!("did you mean `{s}`?"));
        }
        self
    }

    /// Whether this is an error (not a warning).
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `PATH:LINE:COLUMN: error: MESSAGE`, then one indented `help:` line per suggestion.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.location {
            Some(l) if l.line > 0 => write!(
                f,
                "{}:{}:{}: {severity}: {}",
                l.path.display(),
                l.line,
                l.column,
                self.message
            )?,
            Some(l) => write!(f, "{}: {severity}: {}", l.path.display(), self.message)?,
            None => write!(f, "{severity}: {}", self.message)?,
        }
        for help in &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found at once, sorted by file and position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The errors (not the warnings).
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Whether any diagnostic is an error.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// All diagnostics.
    #[must_use]
    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.0
    }

    /// Sorts by path, line, column, keeping the discovery order of equal positions.
    pub(crate) fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            let key = |d: &Diagnostic| {
                d.location
                    .as_ref()
                    .map(|l| (l.path.clone(), l.line, l.column))
            };
            key(a).cmp(&key(b))
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut errors = 0;
        for d in &self.0 {
            writeln!(f, "{d}")?;
            errors += usize::from(d.is_error());
        }
        if errors > 0 {
            let s = if errors == 1 { "" } else { "s" };
            write!(f, "{errors} error{s} found")?;
        }
        Ok(())
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// Collects the diagnostics of one file.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    path: Arc<Path>,
    out: &'a mut Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(path: &Arc<Path>, out: &'a mut Vec<Diagnostic>) -> Self {
        Sink {
            path: path.clone(),
            out,
        }
    }

    fn push(
        &mut self,
        severity: Severity,
        pos: Pos,
        code: Code,
        message: String,
    ) -> &mut Diagnostic {
        self.out.push(Diagnostic {
            severity,
            code,
            message,
            location: Some(Location {
                path: self.path.clone(),
                line: pos.line,
                column: pos.column,
            }),
            help: Vec::new(),
        });
        let last = self.out.len() - 1;
        &mut self.out[last]
    }

    /// Reports an error at `pos` (a `Pos::NONE` is reported against the whole file).
    pub(crate) fn error(
        &mut self,
        pos: Pos,
        code: Code,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Severity::Error, pos, code, message.into())
    }

    /// Reports a warning at `pos`.
    pub(crate) fn warning(
        &mut self,
        pos: Pos,
        code: Code,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Severity::Warning, pos, code, message.into())
    }
}

/// The longest name for which suggestions are computed (Jaro-Winkler is quadratic in the
/// length of the names compared).
const SUGGEST_MAX_LEN: usize = 64;

/// The most suggestions one load or plan computes for a kind of problem (each compares a name
/// with every candidate); later problems of that kind are reported without one.
pub(crate) const SUGGESTIONS_PER_KIND: usize = 32;

/// The closest candidate to `name` by edit distance, if one is close enough to be a typo.
/// Names and candidates longer than 64 characters are not compared.
#[must_use]
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    if name.len() > SUGGEST_MAX_LEN {
        return None;
    }
    let mut best: Option<(f64, &'a str)> = None;
    for candidate in candidates {
        if candidate.len() > SUGGEST_MAX_LEN {
            continue;
        }
        let score = strsim::jaro_winkler(name, candidate);
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_message_and_help() {
        let path: Arc<Path> = Path::new(".dstack/workflows.yaml").into();
        let mut out = Vec::new();
        let mut sink = Sink::new(&path, &mut out);
        sink.error(Pos::new(3, 5), Code::UnknownKey, "unknown key `scirpt`")
            .suggest(Some("script"));
        assert_eq!(
            out[0].to_string(),
            ".dstack/workflows.yaml:3:5: error: unknown key `scirpt`\n  help: did you mean `script`?"
        );
    }

    #[test]
    fn suggestions_need_to_be_close() {
        let names = ["script", "requirements", "python"];
        assert_eq!(did_you_mean("scirpt", names), Some("script"));
        assert_eq!(did_you_mean("requirement", names), Some("requirements"));
        assert_eq!(did_you_mean("zzz", names), None);
    }
}
