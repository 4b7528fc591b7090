//! Fuzzes loading, validating, planning and rendering dstack projects.
//!
//! The input is `workflows.yaml`, then optionally `variables.yaml`, override words and
//! `providers.yaml`, separated by lines that are exactly `%%%%`: the format and every checked
//! invariant are documented in `dstack-core/tests/common/fuzz_entry.rs`, which this target
//! shares with the corpus replay test `dstack-core/tests/fuzz_corpus.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../dstack-core/tests/common/fuzz_entry.rs"]
mod fuzz_entry;

fuzz_target!(|data: &[u8]| {
    fuzz_entry::run(data);
});
