//! Replays the committed fuzz corpus and the regression inputs of one target through its
//! check. Fails when the corpus is missing or empty, so a replay never passes vacuously.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`.
pub(crate) fn replay(target: &str, check: impl Fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = files(&fuzz.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "the corpus of fuzz target `{target}` is missing or empty"
    );
    let regressions = files(&fuzz.join("regressions").join(target));
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // Name the input that fails: the check's own message says what broke.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        if let Err(panic) = result {
            eprintln!("fuzz input {} failed", file.display());
            std::panic::resume_unwind(panic);
        }
    }
}
