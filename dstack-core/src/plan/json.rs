//! The JSON of a [`Plan`], written directly.
//!
//! The text is exactly what `serde_json::to_writer_pretty` makes of the derived `Serialize`
//! (two-space indents, `[]` and `{}` for empty lists and objects, serde_json's string escapes),
//! which stays the reference: [`Plan::to_json`] uses it, and the tests compare the two. Written
//! by hand, the JSON of a plan of thousands of jobs costs a fraction of the generic path.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::{Download, JobSpec, Plan};
use crate::resources::{GpuRequest, Resources};

/// A member name as JSON followed by `: `, as bytes.
macro_rules! key {
    ($name:literal) => {
        concat!("\"", $name, "\": ").as_bytes()
    };
}

/// Bytes gathered before they are handed to the writer.
const CHUNK: usize = 64 * 1024;

/// Writes the JSON of `plan` (without a final newline) to `out`.
pub(super) fn write_plan(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    let mut w = Json {
        buf: Vec::with_capacity(CHUNK + 4096),
        indent: 0,
        first: false,
        out,
    };
    w.begin(b'{');
    w.key(key!("workflow"));
    w.string(&plan.workflow);
    w.key(key!("jobs"));
    w.begin(b'[');
    for job in &plan.jobs {
        w.item();
        w.job(job);
        w.flush_if_full()?;
    }
    w.end(b']');
    w.key(key!("stages"));
    w.begin(b'[');
    for stage in &plan.stages {
        w.item();
        w.strings(stage);
        w.flush_if_full()?;
    }
    w.end(b']');
    w.end(b'}');
    w.out.write_all(&w.buf)
}

struct Json<'w, W: Write> {
    buf: Vec<u8>,
    /// The nesting depth.
    indent: usize,
    /// Whether the innermost list or object has no member yet.
    first: bool,
    out: &'w mut W,
}

impl<W: Write> Json<'_, W> {
    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// `,` (unless `comma` is false), a newline and the indentation, in one copy.
    fn newline(&mut self, comma: bool) {
        // `,\n` and 62 spaces: enough for 31 levels, far more than a plan has.
        const LINE: &[u8; 64] =
            b",\n                                                              ";
        let from = usize::from(!comma);
        let width = 2 * self.indent;
        if width <= LINE.len() - 2 {
            self.buf.extend_from_slice(&LINE[from..2 + width]);
        } else {
            self.buf.extend_from_slice(&LINE[from..2]);
            self.buf.resize(self.buf.len() + width, b' ');
        }
    }

    /// Opens a list (`[`) or an object (`{`).
    fn begin(&mut self, bracket: u8) {
        self.buf.push(bracket);
        self.indent += 1;
        self.first = true;
    }

    /// Closes a list (`]`) or an object (`}`).
    fn end(&mut self, bracket: u8) {
        self.indent -= 1;
        if !self.first {
            self.newline(false);
        }
        self.buf.push(bracket);
        self.first = false;
    }

    /// Starts a member of the innermost list.
    fn item(&mut self) {
        let comma = !self.first;
        self.first = false;
        self.newline(comma);
    }

    /// Starts a member of the innermost object; `quoted` is its name as JSON with the `: `
    /// after it (`"id": `), made by [`key!`].
    fn key(&mut self, quoted: &[u8]) {
        self.item();
        self.buf.extend_from_slice(quoted);
    }

    /// Starts the member `name` of the innermost object.
    fn any_key(&mut self, name: &str) {
        self.item();
        self.string(name);
        self.buf.extend_from_slice(b": ");
    }

    fn string(&mut self, s: &str) {
        let bytes = s.as_bytes();
        if !needs_escape(bytes) {
            self.buf.reserve(bytes.len() + 2);
            self.buf.push(b'"');
            self.buf.extend_from_slice(bytes);
            self.buf.push(b'"');
            return;
        }
        let buf = &mut self.buf;
        buf.push(b'"');
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\t' => b"\\t",
                b'\r' => b"\\r",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => continue,
            };
            buf.extend_from_slice(&bytes[start..i]);
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            } else {
                buf.extend_from_slice(escape);
            }
            start = i + 1;
        }
        buf.extend_from_slice(&bytes[start..]);
        buf.push(b'"');
    }

    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.null(),
        }
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(b"null");
    }

    fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            // `n % 10` is below 10.
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&digits[at..]);
    }

    fn opt_number(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.number(n),
            None => self.null(),
        }
    }

    fn strings(&mut self, items: &[String]) {
        self.begin(b'[');
        for s in items {
            self.item();
            self.string(s);
        }
        self.end(b']');
    }

    fn map(&mut self, map: &BTreeMap<String, String>) {
        self.begin(b'{');
        for (k, v) in map {
            self.any_key(k);
            self.string(v);
        }
        self.end(b'}');
    }

    fn job(&mut self, job: &JobSpec) {
        self.begin(b'{');
        self.key(key!("id"));
        self.string(&job.id);
        self.key(key!("workflow"));
        self.string(&job.workflow);
        self.key(key!("provider"));
        self.string(&job.provider);
        self.key(key!("image"));
        self.opt_string(job.image.as_deref());
        self.key(key!("commands"));
        self.strings(&job.commands);
        self.key(key!("working_dir"));
        self.string(&job.working_dir);
        self.key(key!("env"));
        self.map(&job.env);
        self.key(key!("artifacts"));
        self.strings(&job.artifacts);
        self.key(key!("ports"));
        self.begin(b'[');
        for &port in &job.ports {
            self.item();
            self.number(u64::from(port));
        }
        self.end(b']');
        self.key(key!("depends_on"));
        self.strings(&job.depends_on);
        self.key(key!("resources"));
        self.resources(&job.resources);
        self.key(key!("download"));
        match &job.download {
            Some(d) => self.download(d),
            None => self.null(),
        }
        self.key(key!("timeout_secs"));
        self.opt_number(job.timeout_secs);
        self.key(key!("retries"));
        self.number(u64::from(job.retries));
        self.key(key!("help"));
        self.opt_string(job.help.as_deref());
        self.end(b'}');
    }

    fn resources(&mut self, r: &Resources) {
        self.begin(b'{');
        self.key(key!("cpu"));
        self.opt_number(r.cpu.map(u64::from));
        self.key(key!("memory_bytes"));
        self.opt_number(r.memory_bytes);
        self.key(key!("gpu"));
        match &r.gpu {
            Some(g) => self.gpu(g),
            None => self.null(),
        }
        self.key(key!("shm_size_bytes"));
        self.opt_number(r.shm_size_bytes);
        self.end(b'}');
    }

    fn gpu(&mut self, g: &GpuRequest) {
        self.begin(b'{');
        self.key(key!("count"));
        self.number(u64::from(g.count));
        self.key(key!("name"));
        self.opt_string(g.name.as_deref());
        self.key(key!("memory_bytes"));
        self.opt_number(g.memory_bytes);
        self.end(b'}');
    }

    fn download(&mut self, d: &Download) {
        self.begin(b'{');
        self.key(key!("url"));
        self.string(&d.url);
        self.key(key!("output"));
        self.string(&d.output);
        self.end(b'}');
    }
}

/// Whether `bytes` holds a byte that JSON strings escape: `"`, `\\` or a control character
/// below 0x20. Eight bytes at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether a byte of `w` is below `n` (for `n` <= 0x80): the classic SWAR test.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let chunks = bytes.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        if below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            != 0
        {
            return true;
        }
    }
    rest.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(plan: &Plan) {
        let mut fast = Vec::new();
        write_plan(plan, &mut fast).expect("a Vec takes everything");
        let reference = serde_json::to_string_pretty(plan).expect("serialisable");
        assert_eq!(String::from_utf8(fast).expect("UTF-8"), reference);
    }

    #[test]
    fn escapes_are_found_in_every_position() {
        for len in 0..20 {
            let plain = "a".repeat(len);
            assert!(!needs_escape(plain.as_bytes()));
            for at in 0..len {
                for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{bytes:?}");
                }
                for fine in [b' ', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = fine;
                    assert!(!needs_escape(&bytes), "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn the_same_text_as_serde_json() {
        let mut plan = Plan {
            workflow: "w \"q\" \\ \u{1}\u{1f}\u{7f}\u{8}\u{c}\r\n\té/".into(),
            jobs: Vec::new(),
            stages: Vec::new(),
            notes: Vec::new(),
            warnings: crate::diag::Diagnostics::default(),
        };
        both(&plan);
        plan.stages = vec![Vec::new(), vec!["a".into(), "b".into()]];
        plan.jobs.push(JobSpec::default());
        both(&plan);
        plan.jobs.push(JobSpec {
            id: "train".into(),
            workflow: "train".into(),
            provider: "python".into(),
            image: Some("python:3.10".into()),
            commands: vec![
                "pip install -r requirements.txt".into(),
                "echo \"x\"\n".into(),
            ],
            working_dir: ".".into(),
            env: [
                ("A".to_owned(), "1".to_owned()),
                ("B".into(), String::new()),
            ]
            .into(),
            artifacts: vec!["out".into()],
            ports: vec![80, 65535],
            depends_on: vec!["prepare".into(), "data:latest".into()],
            resources: Resources {
                cpu: Some(4),
                memory_bytes: Some(u64::MAX),
                gpu: Some(GpuRequest {
                    count: 2,
                    name: Some("V100".into()),
                    memory_bytes: None,
                }),
                shm_size_bytes: Some(0),
            },
            download: Some(Download {
                url: "https://example.com/x".into(),
                output: "data/x".into(),
            }),
            timeout_secs: Some(7200),
            retries: u32::MAX,
            help: Some("train it".into()),
        });
        both(&plan);
    }
}
