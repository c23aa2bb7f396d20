//! Disk-cache artifacts. One engine with a disk cache under a fixed key compiles a module,
//! which writes a genuine artifact; each input then replaces that file, and the engine
//! compiles the module again from the disk cache (`CachePolicy::DiskOnly`). The first
//! byte picks how the file is made from the rest: 0 the rest is the whole file, 1 the
//! genuine header then the rest as the body, 2 the genuine file with the rest applied as
//! `(offset, xor)` byte pairs, 3 the genuine file cut at the offset in the next two
//! bytes then the rest appended. Whatever the file, compiling succeeds (a refused file is
//! recompiled), and the file is loaded (a disk hit) only if it is byte for byte the
//! genuine one: bytes the key did not authenticate are never deserialized.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use caxton_core::Digest;
use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{AgentEngine, CachePolicy, DiskCacheKey, EngineConfig};

/// The header's length: magic, format, source, engine, length and tag.
const HEADER_LEN: usize = 8 + 4 + 32 + 32 + 8 + 32;

struct Harness {
    engine: AgentEngine,
    module: Vec<u8>,
    path: PathBuf,
    genuine: Vec<u8>,
    _dir: tempfile::TempDir,
}

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

/// Removes the harness's cache folder: a static is never dropped, so a test that replays
/// the corpus calls this at its end (a fuzzer run keeps it until the process exits).
#[allow(dead_code)]
pub(crate) fn remove_cache() {
    if let Some(harness) = HARNESS.get() {
        let harness = harness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = std::fs::remove_dir_all(harness._dir.path());
    }
}

fn harness() -> &'static Mutex<Harness> {
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let key = DiskCacheKey::from_bytes([7; DiskCacheKey::LEN]);
        let config = EngineConfig::default()
            .on_demand()
            .disk_cache(dir.path().join("cache"), key);
        let engine = AgentEngine::new(config).expect("an engine with a disk cache");
        let module = Fixture::Echo.wasm();
        engine
            .compile_with(&module, CachePolicy::DiskOnly)
            .expect("the fixture compiles");
        let path = engine
            .disk_cache_path(&Digest::of(&module))
            .expect("a disk cache is set up");
        let genuine = std::fs::read(&path).expect("the genuine artifact was written");
        assert!(genuine.len() > HEADER_LEN);
        Mutex::new(Harness {
            engine,
            module,
            path,
            genuine,
            _dir: dir,
        })
    })
}

fn file_from(data: &[u8], genuine: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return genuine.to_vec();
    };
    match mode % 4 {
        0 => rest.to_vec(),
        1 => [&genuine[..HEADER_LEN], rest].concat(),
        2 => {
            let mut file = genuine.to_vec();
            for pair in rest.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % file.len();
                file[at] ^= pair[2];
            }
            file
        }
        _ => {
            let (cut, tail) = match rest {
                [a, b, tail @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), tail),
                _ => (genuine.len(), rest),
            };
            [&genuine[..cut.min(genuine.len())], tail].concat()
        }
    }
}

pub(crate) fn check(data: &[u8]) {
    let harness = harness().lock().unwrap_or_else(|p| p.into_inner());
    let file = file_from(data, &harness.genuine);
    std::fs::write(&harness.path, &file).expect("the cache file can be replaced");
    let before = harness.engine.stats();
    harness
        .engine
        .compile_with(&harness.module, CachePolicy::DiskOnly)
        .expect("a bad cache file is recompiled, not an error");
    let after = harness.engine.stats();
    let loaded = after.disk_hits - before.disk_hits;
    if file == harness.genuine {
        assert_eq!(loaded, 1, "the genuine artifact was not loaded");
    } else {
        assert_eq!(
            loaded, 0,
            "a file other than the genuine artifact was loaded"
        );
        assert_eq!(
            after.disk_rejects - before.disk_rejects,
            1,
            "not counted as refused"
        );
    }
}
