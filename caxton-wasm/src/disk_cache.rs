//! The on-disk cache of precompiled agents.
//!
//! Each file holds one artifact of [`wasmtime::Module::serialize`] behind a header:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `CXARTFCT` |
//! | 4 | format version, little-endian (`1`) |
//! | 32 | SHA-256 of the source module |
//! | 32 | SHA-256 of the engine's `precompile_compatibility_hash` |
//! | 8 | artifact length, little-endian |
//! | 32 | SHA-256 of the artifact |
//!
//! Files are written only by this cache, atomically (a temporary file in the same folder,
//! renamed into place). A file is deserialized only when every header field checks out;
//! anything else is a [`Rejection`], and the caller compiles and rewrites the file.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use caxton_core::Digest;
use sha2::{Digest as _, Sha256};
use wasmtime::{Engine, Module};

const MAGIC: &[u8; 8] = b"CXARTFCT";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 32 + 32 + 8 + 32;

/// Why a cached artifact was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Rejection {
    /// The file is shorter than the header.
    #[error("the file has {len} bytes, fewer than the {HEADER_LEN}-byte header")]
    TooShort {
        /// The file's length.
        len: usize,
    },
    /// The file does not start with the cache's magic bytes.
    #[error("the file was not written by the Caxton artifact cache (bad magic)")]
    BadMagic,
    /// The header's format version is not one this build reads.
    #[error("the file has format version {found}; this build reads {FORMAT_VERSION}")]
    UnsupportedFormat {
        /// The version in the file.
        found: u32,
    },
    /// The artifact was compiled from another module.
    #[error("the artifact was compiled from another module")]
    OtherSource,
    /// The artifact was compiled by an incompatible engine configuration.
    #[error("the artifact was compiled for an incompatible engine configuration")]
    OtherEngine,
    /// The artifact's length differs from the one in the header (a truncated file).
    #[error("the header declares {declared} artifact bytes, but the file holds {actual}")]
    LengthMismatch {
        /// The length in the header.
        declared: u64,
        /// The bytes after the header.
        actual: u64,
    },
    /// The artifact's bytes do not hash to the header's checksum (a corrupted file).
    #[error("the artifact's SHA-256 does not match its header")]
    ChecksumMismatch,
}

/// An artifact whose header checked out. Only [`verify`] makes one.
#[derive(Debug)]
pub(crate) struct VerifiedArtifact<'a> {
    bytes: &'a [u8],
}

/// Feeds a [`Hash`] value into SHA-256, to turn wasmtime's compatibility hash into bytes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The SHA-256 of `engine`'s precompiled-code compatibility hash.
pub(crate) fn engine_compatibility(engine: &Engine) -> [u8; 32] {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

/// The header and artifact of a cache file.
pub(crate) fn encode(source: &Digest, compatibility: &[u8; 32], artifact: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(HEADER_LEN + artifact.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(source.as_bytes());
    file.extend_from_slice(compatibility);
    file.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    file.extend_from_slice(&Sha256::digest(artifact));
    file.extend_from_slice(artifact);
    file
}

/// Checks every header field of `file` against the expected source and engine.
pub(crate) fn verify<'a>(
    file: &'a [u8],
    source: &Digest,
    compatibility: &[u8; 32],
) -> Result<VerifiedArtifact<'a>, Rejection> {
    if file.len() < HEADER_LEN {
        return Err(Rejection::TooShort { len: file.len() });
    }
    let (header, artifact) = file.split_at(HEADER_LEN);
    let (magic, rest) = header.split_at(8);
    let (version, rest) = rest.split_at(4);
    let (file_source, rest) = rest.split_at(32);
    let (file_engine, rest) = rest.split_at(32);
    let (declared_len, checksum) = rest.split_at(8);
    if magic != MAGIC {
        return Err(Rejection::BadMagic);
    }
    let version = u32::from_le_bytes(version.try_into().map_err(|_| Rejection::BadMagic)?);
    if version != FORMAT_VERSION {
        return Err(Rejection::UnsupportedFormat { found: version });
    }
    if file_source != source.as_bytes() {
        return Err(Rejection::OtherSource);
    }
    if file_engine != compatibility {
        return Err(Rejection::OtherEngine);
    }
    let declared = u64::from_le_bytes(declared_len.try_into().map_err(|_| Rejection::BadMagic)?);
    if declared != artifact.len() as u64 {
        return Err(Rejection::LengthMismatch {
            declared,
            actual: artifact.len() as u64,
        });
    }
    if Sha256::digest(artifact).as_slice() != checksum {
        return Err(Rejection::ChecksumMismatch);
    }
    Ok(VerifiedArtifact { bytes: artifact })
}

/// Loads a verified artifact into `engine`.
///
/// # Safety argument
///
/// `Module::deserialize` is unsafe because it maps the bytes as executable code without
/// checking them: bytes that were not produced by `Module::serialize` of a compatible engine
/// could run arbitrary code. A [`VerifiedArtifact`] exists only when [`verify`] found that
/// the file carries this cache's magic and format, was made from the expected module by an
/// engine with the same `precompile_compatibility_hash` as `engine`, and that its bytes hash
/// to the SHA-256 recorded when this cache serialized them, so they are byte for byte what
/// `Module::serialize` produced. The cache folder must be writable only by the host: the
/// checksum detects corruption and truncation, not a forger who can write there.
#[allow(unsafe_code)]
pub(crate) fn deserialize(
    engine: &Engine,
    artifact: VerifiedArtifact<'_>,
) -> wasmtime::Result<Module> {
    // SAFETY: see the safety argument above; `artifact` passed `verify`.
    unsafe { Module::deserialize(engine, artifact.bytes) }
}

/// A folder of precompiled artifacts for one engine configuration.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    compatibility: [u8; 32],
}

impl DiskCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(DiskCache {
            dir: dir.to_owned(),
            compatibility: engine_compatibility(engine),
        })
    }

    /// The file of `source`'s artifact; the name carries the engine so configurations do not
    /// overwrite each other's files.
    pub(crate) fn path(&self, source: &Digest) -> PathBuf {
        let engine: String = self.compatibility[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{}-{engine}.cxart", source.to_hex()))
    }

    /// The cached module of `source`: `Ok(None)` when there is no file, `Err` when there is
    /// one that must not be loaded.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        source: &Digest,
    ) -> Result<Option<Module>, LoadFailure> {
        let file = match fs::read(self.path(source)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(LoadFailure::Io(err.to_string())),
        };
        let artifact = verify(&file, source, &self.compatibility).map_err(LoadFailure::Rejected)?;
        deserialize(engine, artifact)
            .map(Some)
            .map_err(|err| LoadFailure::Deserialize(format!("{err:#}")))
    }

    /// Writes `artifact` for `source`, replacing any file atomically.
    pub(crate) fn store(&self, source: &Digest, artifact: &[u8]) -> io::Result<()> {
        let mut temp = tempfile::Builder::new()
            .prefix(".cxart-")
            .tempfile_in(&self.dir)?;
        temp.write_all(&encode(source, &self.compatibility, artifact))?;
        temp.as_file().sync_all()?;
        temp.persist(self.path(source)).map_err(|err| err.error)?;
        Ok(())
    }
}

/// Why a cache file was not used.
#[derive(Debug)]
pub(crate) enum LoadFailure {
    Io(String),
    Rejected(Rejection),
    Deserialize(String),
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadFailure::Io(err) => write!(f, "could not read it: {err}"),
            LoadFailure::Rejected(rejection) => rejection.fmt(f),
            LoadFailure::Deserialize(err) => write!(f, "wasmtime refused it: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Digest, [u8; 32], Vec<u8>) {
        let source = Digest::of(b"module");
        let engine = [7u8; 32];
        let artifact: Vec<u8> = (0..200u32).map(|i| (i * 31 % 251) as u8).collect();
        (source, engine, artifact)
    }

    #[test]
    fn an_intact_file_verifies() {
        let (source, engine, artifact) = sample();
        let file = encode(&source, &engine, &artifact);
        let verified = verify(&file, &source, &engine).unwrap();
        assert_eq!(verified.bytes, &artifact[..]);
    }

    #[test]
    fn another_source_or_engine_is_rejected() {
        let (source, engine, artifact) = sample();
        let file = encode(&source, &engine, &artifact);
        assert_eq!(
            verify(&file, &Digest::of(b"other"), &engine).unwrap_err(),
            Rejection::OtherSource
        );
        assert_eq!(
            verify(&file, &source, &[8u8; 32]).unwrap_err(),
            Rejection::OtherEngine
        );
    }

    proptest! {
        #[test]
        fn any_single_byte_change_is_rejected(index in 0usize..(HEADER_LEN + 200), flip in 1u8..=255) {
            let (source, engine, artifact) = sample();
            let mut file = encode(&source, &engine, &artifact);
            file[index] ^= flip;
            prop_assert!(verify(&file, &source, &engine).is_err());
        }

        #[test]
        fn any_truncation_is_rejected(keep in 0usize..(HEADER_LEN + 200)) {
            let (source, engine, artifact) = sample();
            let file = encode(&source, &engine, &artifact);
            prop_assert!(verify(&file[..keep], &source, &engine).is_err());
        }
    }
}
