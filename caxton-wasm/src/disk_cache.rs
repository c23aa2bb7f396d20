//! The on-disk cache of precompiled agents.
//!
//! Each file holds one artifact of [`wasmtime::Module::serialize`] behind a header:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `CXARTFCT` |
//! | 4 | format version, little-endian (`2`) |
//! | 32 | SHA-256 of the source module |
//! | 32 | SHA-256 of the engine's `precompile_compatibility_hash` |
//! | 8 | artifact length, little-endian |
//! | 32 | HMAC-SHA-256, under the host's [`DiskCacheKey`], of the 84 bytes above and the artifact |
//!
//! Every field but the tag can be computed from public information (the module, the
//! wasmtime release and its configuration), so the tag is what makes a file trustworthy: a
//! file is deserialized only when every header field checks out and the tag is the one the
//! key gives; anything else is a [`Rejection`], and the caller compiles and rewrites the
//! file. Format 1 carried a plain SHA-256 of the artifact, which anyone could recompute for
//! a file of their own; its files are rejected and rewritten.
//!
//! Files are written only by this cache, atomically (a locked temporary file in the same
//! folder, renamed into place); they are opened without following symbolic links.

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use caxton_core::Digest;
use hmac::{Hmac, Mac};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};
use wasmtime::{Engine, Module};

const MAGIC: &[u8; 8] = b"CXARTFCT";
const FORMAT_VERSION: u32 = 2;
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = 8 + 4 + 32 + 32 + 8 + TAG_LEN;
/// The name of a file being written starts with this; the cache itself never names a
/// finished file so, and a crash leaves such files behind.
const TEMP_PREFIX: &str = ".cxart-";
const KEY_TEMP_PREFIX: &str = ".cxkey-";

type HmacSha256 = Hmac<Sha256>;

/// The secret key that authenticates the files of a disk cache (HMAC-SHA-256).
///
/// Whoever holds the key can write a file that an engine with the same key will load and
/// run as native code, so keep it where only the user that runs Caxton can read it, and
/// outside the cache folder: [`load_or_create`](DiskCacheKey::load_or_create) creates the
/// key file `0600` and refuses one that its group or others can read or write.
///
/// Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct DiskCacheKey {
    bytes: [u8; DiskCacheKey::LEN],
    /// The canonical path of the key file, so a cache can refuse a key kept inside it.
    origin: Option<PathBuf>,
}

impl std::fmt::Debug for DiskCacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCacheKey")
            .field("path", &self.origin)
            .finish_non_exhaustive()
    }
}

impl DiskCacheKey {
    /// The length of a key, in bytes.
    pub const LEN: usize = 32;

    /// Loads the key in the file `path` (exactly 32 bytes), or creates that file with a new
    /// random key, mode `0600`, when there is none. This is the key of a cache that lasts
    /// across restarts of the host.
    ///
    /// The file must be a regular file (a symbolic link is not followed) owned by this
    /// process's user, that its group and others can neither read nor write; its folder
    /// must not be writable by its group or others (they could swap the key for one they
    /// know). A missing folder is created, `0700`. Two processes creating the key at once
    /// end up with the same key.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<DiskCacheKey, DiskCacheError> {
        let path = path.as_ref();
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        create_private_dir(parent).map_err(|source| DiskCacheError::Io {
            action: "could not create the folder of the artifact cache key",
            path: parent.to_owned(),
            source,
        })?;
        let folder = fs::metadata(parent).map_err(|source| DiskCacheError::Io {
            action: "could not read the folder of the artifact cache key",
            path: parent.to_owned(),
            source,
        })?;
        if folder.mode() & 0o022 != 0 {
            return Err(DiskCacheError::WritableByOthers {
                path: parent.to_owned(),
                mode: folder.mode() & 0o7777,
            });
        }
        let bytes = match read_key(path)? {
            Some(bytes) => bytes,
            None => create_key(path, parent)?,
        };
        let origin = fs::canonicalize(path).map_err(|source| DiskCacheError::Io {
            action: "could not resolve the artifact cache key",
            path: path.to_owned(),
            source,
        })?;
        Ok(DiskCacheKey {
            bytes,
            origin: Some(origin),
        })
    }

    /// A new random key that lives only in this process. Artifacts written under it can be
    /// loaded only by engines given this same key (clones of it), so after a restart every
    /// file is refused once and rewritten: for tests, benchmarks and hosts that want the
    /// cache only within one run.
    pub fn ephemeral() -> Result<DiskCacheKey, DiskCacheError> {
        let mut bytes = [0u8; DiskCacheKey::LEN];
        getrandom::fill(&mut bytes).map_err(|err| DiskCacheError::Random {
            source: io::Error::from(err),
        })?;
        Ok(DiskCacheKey::from_bytes(bytes))
    }

    /// A key the host keeps itself (in a secret store, say). It must be secret and random.
    pub fn from_bytes(bytes: [u8; DiskCacheKey::LEN]) -> DiskCacheKey {
        DiskCacheKey {
            bytes,
            origin: None,
        }
    }

    /// The canonical path of the file the key was loaded from, if it came from one.
    pub fn path(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.bytes).expect("HMAC accepts any key length")
    }
}

/// Reads the key file at `path`, `None` when there is none.
fn read_key(path: &Path) -> Result<Option<[u8; DiskCacheKey::LEN]>, DiskCacheError> {
    let io_error = |source| DiskCacheError::Io {
        action: "could not read the artifact cache key",
        path: path.to_owned(),
        source,
    };
    let mut file = match open_no_follow(path) {
        Ok(file) => file,
        Err(OpenError::NotFound) => return Ok(None),
        Err(OpenError::Link) => {
            return Err(DiskCacheError::KeyNotAFile {
                path: path.to_owned(),
            });
        }
        Err(OpenError::Io(err)) => return Err(io_error(err)),
    };
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(DiskCacheError::KeyNotAFile {
            path: path.to_owned(),
        });
    }
    check_owner(path, &meta)?;
    if meta.mode() & 0o077 != 0 {
        return Err(DiskCacheError::KeyExposed {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.len() != DiskCacheKey::LEN as u64 {
        return Err(DiskCacheError::KeyLength {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let mut bytes = [0u8; DiskCacheKey::LEN];
    file.read_exact(&mut bytes).map_err(io_error)?;
    Ok(Some(bytes))
}

/// Writes a new random key to `path`, unless another process got there first; returns the
/// key in the file.
fn create_key(path: &Path, parent: &Path) -> Result<[u8; DiskCacheKey::LEN], DiskCacheError> {
    let io_error = |source| DiskCacheError::Io {
        action: "could not create the artifact cache key",
        path: path.to_owned(),
        source,
    };
    let key = DiskCacheKey::ephemeral()?;
    // tempfile creates the file 0600; it becomes the key only once complete, and never
    // replaces a key another process created meanwhile.
    let mut temp = tempfile::Builder::new()
        .prefix(KEY_TEMP_PREFIX)
        .tempfile_in(parent)
        .map_err(io_error)?;
    temp.write_all(&key.bytes).map_err(io_error)?;
    temp.as_file().sync_all().map_err(io_error)?;
    match temp.persist_noclobber(path) {
        Ok(_) => Ok(key.bytes),
        Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => {
            read_key(path)?.ok_or_else(|| io_error(io::Error::from(io::ErrorKind::NotFound)))
        }
        Err(err) => Err(io_error(err.error)),
    }
}

/// Why the disk cache or its key cannot be used.
///
/// Every error names the file or folder it is about. Two errors are equal when their texts
/// are (an I/O error is not comparable otherwise).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskCacheError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The cache path exists and is not a folder.
    #[error("the artifact cache {} is not a folder", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The folder can be written by its group or by others, who could put files in it.
    #[error(
        "the folder {} is writable by its group or by others (mode {mode:04o}); only its \
         owner may write it (chmod go-w)",
        path.display()
    )]
    WritableByOthers {
        /// The folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file or folder belongs to another user, who could change it.
    #[error(
        "{} is owned by uid {owner}, not by the user running Caxton (uid {user})",
        path.display()
    )]
    OwnedByOther {
        /// The file or folder.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective user.
        user: u32,
    },
    /// The key path is a symbolic link or not a regular file.
    #[error("the artifact cache key {} is not a regular file (links are not followed)", path.display())]
    KeyNotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The key file can be read or written by its group or by others.
    #[error(
        "the artifact cache key {} can be read or written by its group or by others \
         (mode {mode:04o}); it must be 0600",
        path.display()
    )]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly [`DiskCacheKey::LEN`] bytes.
    #[error(
        "the artifact cache key {} holds {len} bytes; a key is exactly {} bytes",
        path.display(),
        DiskCacheKey::LEN
    )]
    KeyLength {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The key file is inside the cache folder, where it protects nothing.
    #[error(
        "the artifact cache key {} is inside the cache folder {}; keep it outside",
        key.display(),
        dir.display()
    )]
    KeyInsideCache {
        /// The key file.
        key: PathBuf,
        /// The cache folder.
        dir: PathBuf,
    },
    /// The operating system's random source failed while making a key.
    #[error("no random artifact cache key could be made: {source}")]
    Random {
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl PartialEq for DiskCacheError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for DiskCacheError {}

/// Why a cached artifact was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Rejection {
    /// The cache entry is a symbolic link or not a regular file.
    #[error("the cache entry is not a regular file (links are not followed)")]
    NotAFile,
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
    /// The tag is not the one the host's key gives: the file was altered, or written by
    /// someone without the key (or under another key).
    #[error("the file's HMAC does not match this host's cache key (altered or foreign)")]
    Unauthenticated,
}

/// An artifact whose header and tag checked out. Only [`verify`] makes one.
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

/// The header and artifact of a cache file, tagged with `key`.
pub(crate) fn encode(
    source: &Digest,
    compatibility: &[u8; 32],
    key: &DiskCacheKey,
    artifact: &[u8],
) -> Vec<u8> {
    let mut file = Vec::with_capacity(HEADER_LEN + artifact.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(source.as_bytes());
    file.extend_from_slice(compatibility);
    file.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    let mut mac = key.mac();
    mac.update(&file);
    mac.update(artifact);
    file.extend_from_slice(&mac.finalize().into_bytes());
    file.extend_from_slice(artifact);
    file
}

/// Checks every header field of `file` against the expected source and engine, and its
/// tag against `key`.
pub(crate) fn verify<'a>(
    file: &'a [u8],
    source: &Digest,
    compatibility: &[u8; 32],
    key: &DiskCacheKey,
) -> Result<VerifiedArtifact<'a>, Rejection> {
    if file.len() < HEADER_LEN {
        return Err(Rejection::TooShort { len: file.len() });
    }
    let (header, artifact) = file.split_at(HEADER_LEN);
    let (signed, tag) = header.split_at(HEADER_LEN - TAG_LEN);
    let (magic, rest) = signed.split_at(8);
    let (version, rest) = rest.split_at(4);
    let (file_source, rest) = rest.split_at(32);
    let (file_engine, declared_len) = rest.split_at(32);
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
    let mut mac = key.mac();
    mac.update(signed);
    mac.update(artifact);
    // Constant-time comparison: the time taken says nothing about how much of a guess was
    // right.
    mac.verify_slice(tag)
        .map_err(|_| Rejection::Unauthenticated)?;
    Ok(VerifiedArtifact { bytes: artifact })
}

/// Loads a verified artifact into `engine`.
///
/// # Safety argument
///
/// `Module::deserialize` is unsafe because it maps the bytes as executable code without
/// checking them: bytes that were not produced by `Module::serialize` of a compatible engine
/// could run arbitrary code. A [`VerifiedArtifact`] exists only when [`verify`] found that
/// the file carries this cache's magic and format, claims the expected module and an engine
/// with the same `precompile_compatibility_hash` as `engine`, and that the header and bytes
/// carry the HMAC-SHA-256 of the host's [`DiskCacheKey`]. Only this cache, holding the key,
/// computes that tag, and only over what `Module::serialize` produced for that very module
/// ([`DiskCache::store`]); without the key a tag cannot be forged, so the bytes are byte for
/// byte what this cache wrote for this module. What remains trusted is the key (its
/// secrecy) and the process itself, as [`crate::EngineConfig::disk_cache`] documents.
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
    key: DiskCacheKey,
}

impl DiskCache {
    /// Opens (creating it `0700` if need be) the cache folder `dir`: refuses a folder that
    /// another user owns or that its group or others may write, and a key kept inside it;
    /// then removes the temporary files that writers which crashed left behind.
    pub(crate) fn open(
        dir: &Path,
        engine: &Engine,
        key: &DiskCacheKey,
    ) -> Result<Self, DiskCacheError> {
        create_private_dir(dir).map_err(|source| DiskCacheError::Io {
            action: "could not create the artifact cache folder",
            path: dir.to_owned(),
            source,
        })?;
        // Follows a link to the folder on purpose: what is checked is the folder files
        // land in. The folders above it must be trusted (see `EngineConfig::disk_cache`).
        let meta = fs::metadata(dir).map_err(|source| DiskCacheError::Io {
            action: "could not read the artifact cache folder",
            path: dir.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(DiskCacheError::NotADirectory {
                path: dir.to_owned(),
            });
        }
        check_owner(dir, &meta)?;
        if meta.mode() & 0o022 != 0 {
            return Err(DiskCacheError::WritableByOthers {
                path: dir.to_owned(),
                mode: meta.mode() & 0o7777,
            });
        }
        if let Some(key_path) = key.path() {
            let canonical = fs::canonicalize(dir).map_err(|source| DiskCacheError::Io {
                action: "could not resolve the artifact cache folder",
                path: dir.to_owned(),
                source,
            })?;
            if key_path.starts_with(&canonical) {
                return Err(DiskCacheError::KeyInsideCache {
                    key: key_path.to_owned(),
                    dir: dir.to_owned(),
                });
            }
        }
        let cache = DiskCache {
            dir: dir.to_owned(),
            compatibility: engine_compatibility(engine),
            key: key.clone(),
        };
        cache.remove_leftovers()?;
        Ok(cache)
    }

    /// Removes the temporary files of writers that are gone. A live writer holds a lock on
    /// its file, so another engine's write in progress is left alone.
    fn remove_leftovers(&self) -> Result<(), DiskCacheError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| DiskCacheError::Io {
            action: "could not list the artifact cache folder",
            path: self.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            if !entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(TEMP_PREFIX))
            {
                continue;
            }
            let path = entry.path();
            let abandoned = match open_no_follow(&path) {
                Ok(file) => file.try_lock().is_ok(),
                // A link under the cache's own prefix was not made by the cache.
                Err(OpenError::Link) => true,
                Err(OpenError::NotFound) => false,
                Err(OpenError::Io(err)) => {
                    tracing::warn!(
                        target: "caxton::wasm",
                        path = %path.display(),
                        "could not check a temporary file of the artifact cache: {err}"
                    );
                    false
                }
            };
            if !abandoned {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(
                    target: "caxton::wasm",
                    path = %path.display(),
                    "removed a temporary file an interrupted write left in the artifact cache"
                ),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => tracing::warn!(
                    target: "caxton::wasm",
                    path = %path.display(),
                    "could not remove a leftover temporary file of the artifact cache: {err}"
                ),
            }
        }
        Ok(())
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
        let mut file = match open_no_follow(&self.path(source)) {
            Ok(file) => file,
            Err(OpenError::NotFound) => return Ok(None),
            Err(OpenError::Link) => return Err(LoadFailure::Rejected(Rejection::NotAFile)),
            Err(OpenError::Io(err)) => return Err(LoadFailure::Io(err.to_string())),
        };
        let meta = file
            .metadata()
            .map_err(|err| LoadFailure::Io(err.to_string()))?;
        if !meta.is_file() {
            return Err(LoadFailure::Rejected(Rejection::NotAFile));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|err| LoadFailure::Io(err.to_string()))?;
        let artifact = verify(&bytes, source, &self.compatibility, &self.key)
            .map_err(LoadFailure::Rejected)?;
        deserialize(engine, artifact)
            .map(Some)
            .map_err(|err| LoadFailure::Deserialize(format!("{err:#}")))
    }

    /// Writes `artifact` for `source`, replacing any file (or link) atomically.
    pub(crate) fn store(&self, source: &Digest, artifact: &[u8]) -> io::Result<()> {
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)?;
        // Held until the file is renamed and closed: tells `remove_leftovers` of another
        // engine that this write is alive.
        temp.as_file().lock()?;
        temp.write_all(&encode(source, &self.compatibility, &self.key, artifact))?;
        temp.as_file().sync_all()?;
        // A rename replaces a link at the destination rather than writing through it.
        temp.persist(self.path(source)).map_err(|err| err.error)?;
        Ok(())
    }
}

/// Creates `dir` and any missing parents, `0700` (less the umask); an existing folder is
/// left as it is.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Refuses a file or folder that is not this process's user's.
fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<(), DiskCacheError> {
    let user = rustix::process::geteuid().as_raw();
    if meta.uid() != user {
        return Err(DiskCacheError::OwnedByOther {
            path: path.to_owned(),
            owner: meta.uid(),
            user,
        });
    }
    Ok(())
}

enum OpenError {
    NotFound,
    /// The path is a symbolic link.
    Link,
    Io(io::Error),
}

/// Opens `path` for reading without following a symbolic link at its end, and without
/// blocking on a FIFO someone put there.
fn open_no_follow(path: &Path) -> Result<File, OpenError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::NOENT) => Err(OpenError::NotFound),
        Err(Errno::LOOP) => Err(OpenError::Link),
        Err(errno) => Err(OpenError::Io(errno.into())),
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

    /// What a forger can compute from the documented format: the body's SHA-256.
    fn recompute_checksum(file: &mut [u8]) {
        let checksum = Sha256::digest(&file[HEADER_LEN..]);
        file[HEADER_LEN - 32..HEADER_LEN].copy_from_slice(&checksum);
    }

    fn sample() -> (Digest, [u8; 32], Vec<u8>) {
        let source = Digest::of(b"module");
        let engine = [7u8; 32];
        let artifact: Vec<u8> = (0..200u32).map(|i| (i * 31 % 251) as u8).collect();
        (source, engine, artifact)
    }

    fn key() -> DiskCacheKey {
        DiskCacheKey::from_bytes([42u8; DiskCacheKey::LEN])
    }

    #[test]
    fn an_intact_file_verifies() {
        let (source, engine, artifact) = sample();
        let file = encode(&source, &engine, &key(), &artifact);
        let verified = verify(&file, &source, &engine, &key()).unwrap();
        assert_eq!(verified.bytes, &artifact[..]);
    }

    #[test]
    fn another_source_or_engine_is_rejected() {
        let (source, engine, artifact) = sample();
        let file = encode(&source, &engine, &key(), &artifact);
        assert_eq!(
            verify(&file, &Digest::of(b"other"), &engine, &key()).unwrap_err(),
            Rejection::OtherSource
        );
        assert_eq!(
            verify(&file, &source, &[8u8; 32], &key()).unwrap_err(),
            Rejection::OtherEngine
        );
    }

    #[test]
    fn a_changed_body_with_a_recomputed_checksum_is_rejected() {
        let (source, engine, artifact) = sample();
        let mut file = encode(&source, &engine, &key(), &artifact);
        // What a forger can do from the documented format alone.
        let last = file.len() - 1;
        file[last] ^= 1;
        recompute_checksum(&mut file);
        assert_eq!(
            verify(&file, &source, &engine, &key()).unwrap_err(),
            Rejection::Unauthenticated
        );
    }

    #[test]
    fn a_relabelled_header_with_a_recomputed_checksum_is_rejected() {
        let (source, engine, artifact) = sample();
        let mut file = encode(&Digest::of(b"another module"), &engine, &key(), &artifact);
        file[12..44].copy_from_slice(source.as_bytes());
        recompute_checksum(&mut file);
        assert_eq!(
            verify(&file, &source, &engine, &key()).unwrap_err(),
            Rejection::Unauthenticated
        );
    }

    #[test]
    fn a_file_tagged_under_another_key_is_rejected() {
        let (source, engine, artifact) = sample();
        let other = DiskCacheKey::from_bytes([43u8; DiskCacheKey::LEN]);
        let file = encode(&source, &engine, &other, &artifact);
        assert_eq!(
            verify(&file, &source, &engine, &key()).unwrap_err(),
            Rejection::Unauthenticated
        );
    }

    #[test]
    fn a_format_1_file_is_rejected() {
        let (source, engine, artifact) = sample();
        let mut file = encode(&source, &engine, &key(), &artifact);
        file[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            verify(&file, &source, &engine, &key()).unwrap_err(),
            Rejection::UnsupportedFormat { found: 1 }
        );
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let shown = format!("{:?}", key());
        assert!(!shown.contains("42"), "{shown}");
    }

    proptest! {
        #[test]
        fn any_single_byte_change_is_rejected(index in 0usize..(HEADER_LEN + 200), flip in 1u8..=255) {
            let (source, engine, artifact) = sample();
            let mut file = encode(&source, &engine, &key(), &artifact);
            file[index] ^= flip;
            prop_assert!(verify(&file, &source, &engine, &key()).is_err());
        }

        #[test]
        fn any_truncation_is_rejected(keep in 0usize..(HEADER_LEN + 200)) {
            let (source, engine, artifact) = sample();
            let file = encode(&source, &engine, &key(), &artifact);
            prop_assert!(verify(&file[..keep], &source, &engine, &key()).is_err());
        }
    }
}
