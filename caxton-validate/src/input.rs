//! What the pipeline validates: module bytes read from `.wasm` or `.wat` input.

use std::path::Path;
use std::sync::Arc;

use caxton_core::Digest;

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

    /// Reads a `.wasm` or `.wat` file. A file ending in `.wat` (or starting with text
    /// rather than the binary magic) is parsed as WebAssembly text.
    pub fn from_path(path: &Path) -> Result<Self, InputError> {
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
        let bytes = std::fs::read(path).map_err(|source| InputError::Read {
            path: shown.clone(),
            source,
        })?;
        let is_wat_name = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("wat"));
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
}
