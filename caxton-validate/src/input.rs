//! What the pipeline validates: module bytes read from `.wasm` or `.wat` input.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use caxton_core::Digest;

/// The largest module binary [`ModuleSource::from_path`] reads: the default policy's
/// `max_module_bytes`, 32 MiB. [`ModuleSource::from_path_with_limit`] takes another.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 32 * 1024 * 1024;

/// How many times the binary limit a `.wat` file may be: text spells every data byte
/// with up to three characters (`\00`) and carries names, layout and comments.
pub const WAT_TEXT_FACTOR: u64 = 4;

/// A module to validate: its name and its WebAssembly binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSource {
    name: String,
    bytes: Arc<[u8]>,
    digest: Digest,
}

/// Why a module could not be read. Each message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The path does not exist.
    #[error("{path}: no such file")]
    Missing {
        /// The path.
        path: String,
    },
    /// The path is a directory.
    #[error("{path}: is a directory, not a module file")]
    Directory {
        /// The path.
        path: String,
    },
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than the limit, found before it was read (or, for a pipe or a
    /// device, as soon as the limit was passed).
    #[error("{path}: larger than {limit} bytes, the most a {what} may be")]
    TooLarge {
        /// The path.
        path: String,
        /// The limit, in bytes.
        limit: u64,
        /// What the file was read as: `module binary` or `WebAssembly text file`.
        what: &'static str,
    },
    /// The WebAssembly text does not parse; the message has the line and column.
    #[error("{path}: invalid WebAssembly text: {message}")]
    Wat {
        /// The path.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
}

impl ModuleSource {
    /// A module from its binary.
    pub fn from_bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        ModuleSource {
            name: name.into(),
            digest: Digest::of(&bytes),
            bytes,
        }
    }

    /// A module from WebAssembly text.
    pub fn from_wat(name: impl Into<String>, text: &str) -> Result<Self, InputError> {
        let name = name.into();
        let bytes = wat::Parser::new()
            .parse_str(Some(Path::new(&name)), text)
            .map_err(|err| InputError::Wat {
                path: name.clone(),
                message: one_line(&err),
            })?;
        Ok(ModuleSource::from_bytes(name, bytes))
    }

    /// Reads a `.wasm` or `.wat` file of at most [`DEFAULT_MAX_MODULE_BYTES`] (text:
    /// [`WAT_TEXT_FACTOR`] times that). A file ending in `.wat` is parsed as WebAssembly
    /// text.
    pub fn from_path(path: &Path) -> Result<Self, InputError> {
        ModuleSource::from_path_with_limit(path, DEFAULT_MAX_MODULE_BYTES)
    }

    /// Reads a `.wasm` file of at most `max_module_bytes`, or a `.wat` file of at most
    /// [`WAT_TEXT_FACTOR`] times that, parsed as WebAssembly text. The size is checked
    /// before anything is read, and reading stops one byte past the limit, so a huge file,
    /// a device such as `/dev/zero` or an endless pipe costs no more than the limit.
    pub fn from_path_with_limit(path: &Path, max_module_bytes: u64) -> Result<Self, InputError> {
        let shown = path.display().to_string();
        let metadata = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => InputError::Missing {
                path: shown.clone(),
            },
            _ => InputError::Read {
                path: shown.clone(),
                source,
            },
        })?;
        if metadata.is_dir() {
            return Err(InputError::Directory { path: shown });
        }
        let is_wat_name = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("wat"));
        let (limit, what) = if is_wat_name {
            (
                max_module_bytes.saturating_mul(WAT_TEXT_FACTOR),
                "WebAssembly text file",
            )
        } else {
            (max_module_bytes, "module binary")
        };
        let bytes = read_at_most(path, limit)
            .map_err(|source| InputError::Read {
                path: shown.clone(),
                source,
            })?
            .ok_or_else(|| InputError::TooLarge {
                path: shown.clone(),
                limit,
                what,
            })?;
        if is_wat_name {
            let text = String::from_utf8(bytes).map_err(|e| InputError::Wat {
                path: shown.clone(),
                message: format!(
                    "the file is not UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to()
                ),
            })?;
            return ModuleSource::from_wat(shown, &text);
        }
        Ok(ModuleSource::from_bytes(shown, bytes))
    }

    /// The module's name (its path, for files).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The WebAssembly binary.
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// SHA-256 of the binary.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

/// The contents of the file at `path` if it holds at most `limit` bytes, `None` if more.
/// A regular file's size is checked before a byte is read; anything else (a pipe, a
/// device, a file that grows meanwhile) is read no further than one byte past the limit.
pub(crate) fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// The parser's message renders over several lines ("… --> path:line:col", the source
/// line, a caret); a command-line reason is one line.
fn one_line(err: &wat::Error) -> String {
    err.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wat_syntax_errors_carry_line_and_column() {
        let err = ModuleSource::from_wat(
            "bad.wat",
            "(module\n  (func (result i32)\n    i32.konst 1))",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bad.wat:3:5"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn files_directories_and_missing_paths_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("caxton-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            ModuleSource::from_path(&dir),
            Err(InputError::Directory { .. })
        ));
        assert!(matches!(
            ModuleSource::from_path(&dir.join("nope.wasm")),
            Err(InputError::Missing { .. })
        ));
        let wat = dir.join("m.wat");
        std::fs::write(&wat, "(module)").unwrap();
        let source = ModuleSource::from_path(&wat).unwrap();
        assert!(source.bytes().starts_with(b"\0asm"));
        assert_eq!(source.digest(), Digest::of(source.bytes()));
        let wasm = dir.join("m.wasm");
        std::fs::write(&wasm, b"not wasm").unwrap();
        assert_eq!(
            &**ModuleSource::from_path(&wasm).unwrap().bytes(),
            b"not wasm"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_over_the_limit_are_refused_before_they_are_read() {
        let dir = std::env::temp_dir().join(format!("caxton-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wasm = dir.join("big.wasm");
        // Sparse: a file far larger than any limit, which reading would fill memory with.
        File::create(&wasm).unwrap().set_len(1 << 40).unwrap();
        let err = ModuleSource::from_path(&wasm).unwrap_err();
        assert!(
            matches!(
                err,
                InputError::TooLarge {
                    limit: DEFAULT_MAX_MODULE_BYTES,
                    what: "module binary",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("big.wasm"), "{err}");
        assert!(err.to_string().contains("33554432 bytes"), "{err}");
        let wat = dir.join("m.wat");
        std::fs::write(&wat, "(module)").unwrap();
        assert!(
            ModuleSource::from_path_with_limit(&wat, 2).is_ok(),
            "8 bytes of text, 2 x 4 allowed"
        );
        assert!(matches!(
            ModuleSource::from_path_with_limit(&wat, 1),
            Err(InputError::TooLarge {
                limit: 4,
                what: "WebAssembly text file",
                ..
            })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn an_endless_device_is_read_no_further_than_the_limit() {
        let zero = Path::new("/dev/zero");
        assert!(matches!(
            ModuleSource::from_path_with_limit(zero, 4096),
            Err(InputError::TooLarge { limit: 4096, .. })
        ));
        assert_eq!(read_at_most(zero, 16).unwrap(), None);
        assert_eq!(
            read_at_most(Path::new("/dev/null"), 16).unwrap(),
            Some(Vec::new())
        );
    }
}
