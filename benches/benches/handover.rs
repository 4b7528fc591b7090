//! Artifact hand-over: making a 1 GiB artifact (one 1 GiB file, and 1 GiB in 1,024 files)
//! visible in a dependent job's tree. Links, not copies: the target is under 50 ms.
//!
//! `cargo bench -p benches --bench handover`

use std::io::Write as _;
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dstack_core::run::Input;
use dstack_core::run::artifacts::hand_over;

fn write_file(path: &Path, bytes: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..bytes / chunk.len() {
        f.write_all(&chunk).expect("write");
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
    let one = dir.path().join("store-one/data");
    let many = dir.path().join("store-many/data");
    std::fs::create_dir_all(&one).expect("mkdir");
    std::fs::create_dir_all(&many).expect("mkdir");
    write_file(&one.join("big.bin"), 1 << 30);
    for i in 0..1024 {
        write_file(&many.join(format!("part-{i:04}.bin")), 1 << 20);
    }
    let mut group = c.benchmark_group("handover_1GiB");
    group.sample_size(20);
    for (name, source) in [("one file", &one), ("1024 files", &many)] {
        let inputs = vec![Input {
            from_job: "prepare".into(),
            source: source.clone(),
            path: "data".into(),
        }];
        group.bench_function(name, |b| {
            b.iter_batched(
                || tempfile::tempdir_in(dir.path()).expect("job tree"),
                |tree| {
                    hand_over(&inputs, tree.path()).expect("hands over");
                    tree
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
