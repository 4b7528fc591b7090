//! Capturing a project's Git state at `dstack run`, on a generated repository of 10,000 files
//! (100 folders of 100 files, about 500 bytes each) with 100 of them modified.
//!
//! The baseline is the Git command line on the same repository in the same run:
//! `git status --porcelain && git diff` (two processes, which is what a shell-out capture would
//! cost at least). Run with `cargo bench -p dstack-exec --bench git_capture`; the same
//! comparison by hand, on a repository the bench leaves nowhere:
//! `time (git status --porcelain >/dev/null && git diff >/dev/null)`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dstack_exec::git;

const FOLDERS: usize = 100;
const FILES_PER_FOLDER: usize = 100;
const MODIFIED: usize = 100;

fn git_cli(root: &Path, config: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .env("GIT_CONFIG_GLOBAL", config)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    out.stdout
}

/// Makes the repository: commits 10,000 files, lets the index get older than them (as in a
/// repository that is worked in, where Git's stat cache is fresh), then modifies 100.
fn generate(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("gitconfig");
    fs::write(
        &config,
        "[user]\n\tname = Bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n",
    )
    .unwrap();
    let root = dir.join("repo");
    for d in 0..FOLDERS {
        let folder = root.join(format!("pkg{d:03}"));
        fs::create_dir_all(&folder).unwrap();
        for f in 0..FILES_PER_FOLDER {
            let line = format!("def f_{d}_{f}(x):\n    return x * {f} + {d}\n");
            fs::write(folder.join(format!("mod{f:03}.py")), line.repeat(12)).unwrap();
        }
    }
    git_cli(&root, &config, &["init", "-q"]);
    git_cli(&root, &config, &["add", "-A"]);
    git_cli(&root, &config, &["commit", "-q", "-m", "10,000 files"]);
    // Files written in the same second as the index are "racily clean" and hashed on every
    // status; a second later, a status refresh makes the stat cache trustworthy.
    std::thread::sleep(Duration::from_millis(1100));
    git_cli(&root, &config, &["status", "--porcelain"]);
    for i in 0..MODIFIED {
        let path = root.join(format!(
            "pkg{:03}/mod{:03}.py",
            i,
            (i * 7) % FILES_PER_FOLDER
        ));
        let mut content = fs::read(&path).unwrap();
        content.extend_from_slice(b"# modified\n");
        fs::write(path, content).unwrap();
    }
    root
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = generate(dir.path());
    let config = dir.path().join("gitconfig");
    let state = root.join(".dstack/state");

    let snapshot = git::capture(&root, &state).unwrap();
    assert_eq!(snapshot.counts.modified, MODIFIED as u64);
    assert_eq!(snapshot.changes.len(), MODIFIED);
    let porcelain = git_cli(&root, &config, &["status", "--porcelain"]);
    assert_eq!(
        porcelain
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        MODIFIED
    );

    let mut group = c.benchmark_group("git_capture_10k_files_100_modified");
    group.sample_size(30);
    group.bench_function("dstack capture", |b| {
        b.iter(|| black_box(git::capture(&root, &state).unwrap()));
    });
    group.bench_function("git status --porcelain && git diff", |b| {
        b.iter(|| {
            black_box(git_cli(&root, &config, &["status", "--porcelain"]));
            black_box(git_cli(&root, &config, &["diff"]));
        });
    });
    let saved = dir.path().join("saved");
    let mut saves = 0;
    group.bench_function("dstack capture + save", |b| {
        b.iter_batched(
            || {
                saves += 1;
                saved.join(saves.to_string())
            },
            |dest| git::capture(&root, &state).unwrap().save(&dest).unwrap(),
            BatchSize::PerIteration,
        );
    });
    // Each iteration writes a fresh folder; nothing is deleted while measuring (ext4 makes
    // creating files right after deleting thousands of others very slow, which would be
    // measured instead).
    group.sample_size(10);
    let out = dir.path().join("out");
    let mut n = 0;
    group.bench_function("dstack materialise (10,000 files)", |b| {
        b.iter_batched(
            || {
                n += 1;
                out.join(format!("dstack-{n}"))
            },
            |dest| git::materialise(&root, &snapshot, &dest).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("git archive HEAD | tar -x (10,000 files)", |b| {
        b.iter_batched(
            || {
                n += 1;
                let dest = out.join(format!("archive-{n}"));
                fs::create_dir_all(&dest).unwrap();
                dest
            },
            |dest| {
                let status = Command::new("sh")
                    .arg("-c")
                    .arg("git archive --format=tar HEAD | tar -x -C \"$0\"")
                    .arg(&dest)
                    .current_dir(&root)
                    .env("GIT_CONFIG_GLOBAL", &config)
                    .status()
                    .unwrap();
                assert!(status.success());
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
