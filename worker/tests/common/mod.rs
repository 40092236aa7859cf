//! What the replay test binaries share.

use std::path::PathBuf;

/// Every recorded history in `tests/histories`, by path, sorted.
pub(crate) fn histories() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(
        !out.is_empty(),
        "no recorded histories in {}",
        dir.display()
    );
    out
}
