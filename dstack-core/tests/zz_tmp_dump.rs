#![allow(clippy::print_stdout, clippy::unwrap_used)]
#[path = "common/fuzz_entry.rs"]
mod fuzz_entry;
use dstack_core::*;
#[test]
fn dump() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_plan");
    let mut v: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    for p in v {
        let data = std::fs::read(&p).unwrap();
        let o = fuzz_entry::run(&data);
        let parts = fuzz_entry::split(&data);
        let s = Sources { workflows: Some(parts.workflows), variables: parts.variables, providers: parts.providers };
        let r = Project::from_sources(".", &s, ProviderRegistry::default());
        let first = match &r { Ok(pr) => match pr.validate(&Overrides::new()) { Ok(_) => "validate ok".to_string(), Err(e) => format!("V: {}", e.to_string().lines().take(3).collect::<Vec<_>>().join(" | ")) }, Err(e) => format!("L: {}", e.to_string().lines().take(3).collect::<Vec<_>>().join(" | ")) };
        println!("{:40} {:?}\n      {}", p.file_name().unwrap().to_string_lossy(), o, first.chars().take(300).collect::<String>());
    }
}
