//! Data-driven CLI tests: every `tests/cases/*.toml` runs the real `dstack` binary in the
//! project folder `NAME.in/` and compares its exit code, stdout and stderr with `NAME.stdout`
//! and `NAME.stderr`. Re-bless after an intended change with `TRYCMD=overwrite cargo test`.

#[test]
fn cli_cases() {
    trycmd::TestCases::new().case("tests/cases/*.toml");
}
