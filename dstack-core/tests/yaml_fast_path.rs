//! The fast YAML front end against saphyr-parser.
//!
//! `yaml.rs` reads the common block-style subset with its own scanner and leaves every other
//! document to saphyr-parser. Whenever the fast front end accepts a document, the tree it
//! makes (positions included) must be the one saphyr-parser makes, and saphyr-parser must have
//! nothing to report about it: `dstack_core::yaml::compare_front_ends` checks exactly that.
//! These tests run it over every YAML file of the repository, over mutations of them, and over
//! random documents built from fragments chosen to sit on the edges of the subset.

use std::path::{Path, PathBuf};

use dstack_core::yaml::compare_front_ends;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every YAML text of the repository: CLI cases, example projects, and the parts of the fuzz
/// corpus files (separated by `%%%%` lines).
fn documents() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![
        root().join("examples/tests/cases"),
        root().join("examples/projects"),
    ];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                out.push((path.display().to_string(), text));
            }
        }
    }
    let corpus = root().join("fuzz/corpus/parse_plan");
    for entry in std::fs::read_dir(&corpus)
        .expect("the fuzz corpus")
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).expect("a corpus file");
        let text = String::from_utf8_lossy(&bytes);
        for (n, part) in text.split("\n%%%%\n").enumerate() {
            out.push((format!("{}#{n}", entry.path().display()), part.to_owned()));
        }
    }
    out.sort();
    out
}

fn check(name: &str, text: &str) -> bool {
    match compare_front_ends(text) {
        Ok(accepted) => accepted,
        Err(e) => panic!("{name}: the front ends disagree on\n---\n{text}\n---\n{e}"),
    }
}

#[test]
fn repository_files_read_the_same_through_both_front_ends() {
    let docs = documents();
    assert!(docs.len() > 150, "only {} documents", docs.len());
    let accepted = docs.iter().filter(|(name, text)| check(name, text)).count();
    // Most of the repository's files are in the subset: the fast path is really taken.
    assert!(
        accepted * 2 > docs.len(),
        "the fast front end read only {accepted} of {} documents",
        docs.len()
    );
}

#[test]
fn mutated_files_read_the_same_through_both_front_ends() {
    const EDITS: [&str; 12] = [
        "", " ", "  ", ":", "-", "#", "\"", "'", "\n", "[", "]", "- ",
    ];
    let mut accepted = 0;
    let mut total = 0;
    for (name, text) in documents() {
        if text.len() > 3000 {
            continue;
        }
        let cuts: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for (k, &at) in cuts.iter().enumerate().step_by(3) {
            let edit = EDITS[k % EDITS.len()];
            let mut doc = String::with_capacity(text.len() + 2);
            doc.push_str(&text[..at]);
            if edit.is_empty() {
                // Delete the character at `at`.
                let next = cuts.get(k + 1).copied().unwrap_or(text.len());
                doc.push_str(&text[next..]);
            } else {
                doc.push_str(edit);
                doc.push_str(&text[at..]);
            }
            total += 1;
            accepted += usize::from(check(&format!("{name} (edit {edit:?} at {at})"), &doc));
        }
    }
    assert!(total > 10_000, "only {total} mutations");
    assert!(accepted > total / 10, "{accepted} of {total} accepted");
}

/// xorshift64*: deterministic random documents.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        // Lossless on 64-bit targets; the modulo bias does not matter here.
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const KEYS: [&str; 12] = [
    "a",
    "b",
    "name",
    "key with spaces",
    "k-1",
    "é",
    "x.y",
    "-k",
    ":k",
    "?k",
    "a#b",
    "<<",
];

const VALUES: [&str; 64] = [
    "",
    "v",
    "value with spaces",
    "1",
    "-1",
    "3.10",
    "0x1F",
    "0o17",
    "1e3",
    ".nan",
    ".inf",
    "null",
    "~",
    "true",
    "False",
    "${{ v }}",
    "echo \"${{ message }}\" > out/log.txt",
    "http://host:80/x",
    "a:b",
    "a: b",
    "a :b",
    "a : b",
    "a:",
    "x # comment",
    "x#y",
    "x  ",
    "\"q\"",
    "\"q\" # c",
    "\"q\"x",
    "\"q\":",
    "\"\"",
    "\"a\\\"b\"",
    "\"a\\nb\"",
    "\"unterminated",
    "'s'",
    "'it''s'",
    "''",
    "'unterminated",
    "[]",
    "[a]",
    "[a, b]",
    "[ a , \"b\" , 'c' ]",
    "[a, ]",
    "[a,,b]",
    "[a, [b]]",
    "[a: b]",
    "[-1]",
    "[a # c]",
    "[a]x",
    "[a] # c",
    "{a: 1}",
    "|",
    ">-",
    "&anchor v",
    "*anchor",
    "!!str 1",
    "- x",
    "? x",
    ": x",
    "%x",
    "@x",
    "`x",
    ",x",
    "a, b]",
];

/// A random line: an indentation and one fragment.
fn line(rng: &mut Rng) -> String {
    let indent = " ".repeat([0, 0, 2, 2, 4, 4, 6, 1, 3, 8][rng.below(10)]);
    let key = rng.pick(&KEYS);
    let value = rng.pick(&VALUES);
    let body = match rng.below(16) {
        0..=5 => format!("{key}: {value}"),
        6 => format!("{key}:"),
        7 => format!("- {value}"),
        8 => format!("- {key}: {value}"),
        9 => "-".to_owned(),
        10 => format!("- - {value}"),
        11 => format!("# {value}"),
        12 => String::new(),
        13 => value.to_owned(),
        14 => format!("{key}:  {value}  # trailing"),
        _ => format!("-   {key}: {value}"),
    };
    format!("{indent}{body}")
}

#[test]
fn random_documents_read_the_same_through_both_front_ends() {
    let mut rng = Rng(0x5eed_f00d_d00d_cafe);
    let mut accepted = 0;
    let total = 30_000;
    for n in 0..total {
        let lines = 1 + rng.below(12);
        let mut doc: Vec<String> = (0..lines).map(|_| line(&mut rng)).collect();
        // Well-formed skeletons are more likely to be accepted: start most documents with one.
        if rng.below(3) > 0 {
            doc.insert(0, "workflows:".to_owned());
        }
        let mut text = doc.join("\n");
        if rng.below(4) > 0 {
            text.push('\n');
        }
        accepted += usize::from(check(&format!("random document {n}"), &text));
    }
    assert!(
        accepted > total / 50,
        "the fast front end read only {accepted} of {total} random documents"
    );
}

/// A random block-style tree written out: mappings, sequences (indented, indentless, compact
/// `- key: value`), flow sequences, with scalars from [`VALUES`] and [`KEYS`].
fn tree(rng: &mut Rng, out: &mut String, indent: usize, depth: usize) {
    let pad = |n: usize| " ".repeat(n);
    let entries = 1 + rng.below(4);
    if rng.below(3) == 0 && depth > 0 {
        // A sequence.
        for _ in 0..entries {
            out.push_str(&pad(indent));
            out.push_str("- ");
            match rng.below(4) {
                0 if depth < 4 => {
                    // A compact mapping: its keys line up after `- `.
                    let key_indent = indent + 2;
                    let mut item = String::new();
                    mapping(rng, &mut item, key_indent, depth + 1);
                    out.push_str(item.trim_start());
                }
                1 => {
                    out.push_str(&flow(rng));
                    out.push('\n');
                }
                _ => {
                    out.push_str(rng.pick(&VALUES));
                    out.push('\n');
                }
            }
            if rng.below(8) == 0 {
                out.push_str(&pad(rng.below(6)));
                out.push_str("# a comment\n\n");
            }
        }
    } else {
        mapping(rng, out, indent, depth);
    }
}

fn mapping(rng: &mut Rng, out: &mut String, indent: usize, depth: usize) {
    let entries = 1 + rng.below(4);
    for _ in 0..entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(rng.pick(&KEYS));
        out.push(':');
        match rng.below(6) {
            0 | 1 if depth < 5 => {
                out.push('\n');
                if rng.below(3) == 0 {
                    // An indentless sequence.
                    let mut seq = String::new();
                    tree(rng, &mut seq, indent, depth + 1);
                    if seq.trim_start().starts_with('-') {
                        out.push_str(&seq);
                    } else {
                        let mut nested = String::new();
                        let deeper = indent + 1 + rng.below(3);
                        tree(rng, &mut nested, deeper, depth + 1);
                        out.push_str(&nested);
                    }
                } else {
                    let deeper = indent + 1 + rng.below(3);
                    tree(rng, out, deeper, depth + 1);
                }
            }
            2 => {
                out.push(' ');
                out.push_str(&flow(rng));
                out.push('\n');
            }
            3 => out.push('\n'),
            _ => {
                out.push(' ');
                out.push_str(rng.pick(&VALUES));
                out.push('\n');
            }
        }
    }
}

fn flow(rng: &mut Rng) -> String {
    let n = rng.below(4);
    let items: Vec<&str> = (0..n)
        .map(|_| {
            rng.pick(&[
                "a", "b c", "\"q\"", "'s'", "1", "${{ v }}", "x/y", "é", "-1", "a:b",
            ])
        })
        .collect();
    format!("[{}]", items.join(", "))
}

#[test]
fn random_trees_read_the_same_through_both_front_ends() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let mut accepted = 0;
    let total = 20_000;
    for n in 0..total {
        let mut text = String::new();
        tree(&mut rng, &mut text, 0, 0);
        if rng.below(5) == 0 {
            text.pop();
        }
        accepted += usize::from(check(&format!("random tree {n}"), &text));
    }
    assert!(
        accepted > total / 10,
        "the fast front end read only {accepted} of {total} random trees"
    );
}

#[test]
fn the_documented_subset_takes_the_fast_path() {
    // Every construct ARCHITECTURE.md lists for the fast front end, in one fuzz seed.
    let path = root().join("fuzz/corpus/parse_plan/fast_path_block_subset");
    let text = std::fs::read_to_string(&path).expect("the seed");
    for part in text.split("\n%%%%\n") {
        assert_eq!(compare_front_ends(part), Ok(true), "{part}");
    }
    // Its companion holds a construct outside the subset in every document.
    let path = root().join("fuzz/corpus/parse_plan/fast_path_edges");
    let text = std::fs::read_to_string(&path).expect("the seed");
    for part in text.split("\n%%%%\n") {
        assert_eq!(compare_front_ends(part), Ok(false), "{part}");
    }
}

#[test]
fn the_generated_benchmark_shape_takes_the_fast_path() {
    let text = "workflows:\n  - name: step-00001\n    help: prepare shard 1 of the dataset\n    provider: python\n    script: prepare.py --shard 1 --seed ${{ seed }}\n    requirements: requirements.txt\n    python: \"3.10\"\n    environment:\n      PYTHONPATH: src\n      SHARD: \"1\"\n    artifacts:\n      - data/step-00001\n    resources:\n      cpu: 2\n      memory: 8GB\n  - name: step-00004\n    provider: docker\n    image: python:3.10-slim\n    commands:\n      - echo \"${{ message }}\" > out/log.txt\n    ports:\n      - ${{ port }}\n    artifacts: [logs/step-00004]\n    depends-on:\n      - step-00001\n";
    assert_eq!(compare_front_ends(text), Ok(true));
    let variables = "variables:\n  global:\n    seed: 42\n    message: hello from dstack\n  step-00002:\n    lr: 0.001\n    batch-size: 64\n";
    assert_eq!(compare_front_ends(variables), Ok(true));
    // The same key at different levels is no duplicate; a duplicate goes to saphyr-parser.
    let nested = "a:\n  a: 1\n  b:\n    a: 2\n    b: [a, b]\n  c:\n  - a: 3\n    b: 4\nb: 5\n";
    assert_eq!(compare_front_ends(nested), Ok(true));
    assert_eq!(compare_front_ends("a: 1\nb:\n  c: 2\na: 3\n"), Ok(false));
    let many: String = (0..40).map(|i| format!("k{i}: {i}\n")).collect();
    assert_eq!(compare_front_ends(&many), Ok(true));
    assert_eq!(compare_front_ends(&format!("{many}k7: again\n")), Ok(false));
}
