//! The agent ABI v1: what a module must export, what it may import, and how replies are
//! found in its memory.
//!
//! | export | signature | required |
//! |---|---|---|
//! | `memory` | 32-bit, unshared memory | yes |
//! | `caxton_alloc` | `(len: i32) -> i32` | yes |
//! | `caxton_handle` | `(ptr: i32, len: i32) -> i64` | yes |
//! | `caxton_init` | `() -> i32` | no |
//!
//! Imports may come only from the module `caxton`: `log (i32, i32, i32)`,
//! `config (i32, i32, i32, i32) -> i32` and `now_ms () -> i64`.

use std::fmt;
use std::ops::Range;

use wasmtime::{ExternType, FuncType, Module, ValType};

/// The ABI version this crate implements.
pub const ABI_VERSION: u32 = 1;
/// The module every import must come from.
pub const IMPORT_MODULE: &str = "caxton";
/// The exported linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// The exported allocator: `(len: i32) -> i32`.
pub const EXPORT_ALLOC: &str = "caxton_alloc";
/// The exported message handler: `(ptr: i32, len: i32) -> i64`.
pub const EXPORT_HANDLE: &str = "caxton_handle";
/// The optional exported initialiser: `() -> i32`, `0` meaning ready.
pub const EXPORT_INIT: &str = "caxton_init";
/// The logging import: `(level: i32, ptr: i32, len: i32)`.
pub const IMPORT_LOG: &str = "log";
/// The configuration import: `(key_ptr: i32, key_len: i32, out_ptr: i32, out_cap: i32) -> i32`.
pub const IMPORT_CONFIG: &str = "config";
/// The clock import: `() -> i64`.
pub const IMPORT_NOW_MS: &str = "now_ms";

/// A value type of the ABI, for signatures in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    I32,
    I64,
}

/// One function signature of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    params: &'static [Ty],
    results: &'static [Ty],
}

const ALLOC_SIG: Signature = Signature {
    params: &[Ty::I32],
    results: &[Ty::I32],
};
const HANDLE_SIG: Signature = Signature {
    params: &[Ty::I32, Ty::I32],
    results: &[Ty::I64],
};
const INIT_SIG: Signature = Signature {
    params: &[],
    results: &[Ty::I32],
};
const LOG_SIG: Signature = Signature {
    params: &[Ty::I32, Ty::I32, Ty::I32],
    results: &[],
};
const CONFIG_SIG: Signature = Signature {
    params: &[Ty::I32, Ty::I32, Ty::I32, Ty::I32],
    results: &[Ty::I32],
};
const NOW_MS_SIG: Signature = Signature {
    params: &[],
    results: &[Ty::I64],
};

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, tys: &[Ty]) -> fmt::Result {
            f.write_str("(")?;
            for (i, ty) in tys.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(match ty {
                    Ty::I32 => "i32",
                    Ty::I64 => "i64",
                })?;
            }
            f.write_str(")")
        }
        list(f, self.params)?;
        f.write_str(" -> ")?;
        list(f, self.results)
    }
}

impl Signature {
    fn matches(&self, ty: &FuncType) -> bool {
        fn same(expected: &[Ty], found: impl ExactSizeIterator<Item = ValType>) -> bool {
            found.len() == expected.len()
                && found.zip(expected).all(|(found, expected)| match expected {
                    Ty::I32 => matches!(found, ValType::I32),
                    Ty::I64 => matches!(found, ValType::I64),
                })
        }
        same(self.params, ty.params()) && same(self.results, ty.results())
    }
}

fn describe_func(ty: &FuncType) -> String {
    let join = |tys: &mut dyn Iterator<Item = ValType>| {
        tys.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "({}) -> ({})",
        join(&mut ty.params()),
        join(&mut ty.results())
    )
}

fn describe_extern(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!("function {}", describe_func(f)),
        ExternType::Global(_) => "global".to_owned(),
        ExternType::Table(_) => "table".to_owned(),
        ExternType::Memory(m) if m.is_64() => "64-bit memory".to_owned(),
        ExternType::Memory(m) if m.is_shared() => "shared memory".to_owned(),
        ExternType::Memory(_) => "memory".to_owned(),
        ExternType::Tag(_) => "tag".to_owned(),
    }
}

/// One way a module breaks the agent ABI v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AbiViolation {
    /// A required export is missing.
    #[error("required export `{name}` ({expected}) is missing")]
    MissingExport {
        /// The export's name.
        name: &'static str,
        /// What it should be.
        expected: String,
    },
    /// An export of the ABI has the wrong kind or signature.
    #[error("export `{name}` must be {expected}, but is {found}")]
    WrongExport {
        /// The export's name.
        name: &'static str,
        /// What it should be.
        expected: String,
        /// What it is.
        found: String,
    },
    /// An import from a module other than `caxton`, or of a name `caxton` does not offer.
    #[error(
        "import `{module}.{name}` ({found}) is not offered; agents may import only \
         `caxton.log`, `caxton.config` and `caxton.now_ms`"
    )]
    UnknownImport {
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
        /// What it is.
        found: String,
    },
    /// An import of the ABI with the wrong kind or signature.
    #[error("import `caxton.{name}` must be {expected}, but is {found}")]
    WrongImport {
        /// The import's name.
        name: &'static str,
        /// What it should be.
        expected: String,
        /// What it is.
        found: String,
    },
}

impl AbiViolation {
    /// A stable snake_case name of the violation, for findings.
    pub fn code(&self) -> &'static str {
        match self {
            AbiViolation::MissingExport { .. } => "missing_export",
            AbiViolation::WrongExport { .. } => "wrong_export",
            AbiViolation::UnknownImport { .. } => "unknown_import",
            AbiViolation::WrongImport { .. } => "wrong_import",
        }
    }
}

/// Every way `module` breaks the agent ABI v1, in the order exports then imports; empty when
/// it conforms.
pub fn check(module: &Module) -> Vec<AbiViolation> {
    let mut violations = Vec::new();
    let export = |name: &str| module.exports().find(|e| e.name() == name).map(|e| e.ty());

    match export(EXPORT_MEMORY) {
        None => violations.push(AbiViolation::MissingExport {
            name: EXPORT_MEMORY,
            expected: "a 32-bit memory".to_owned(),
        }),
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(other) => violations.push(AbiViolation::WrongExport {
            name: EXPORT_MEMORY,
            expected: "a 32-bit, unshared memory".to_owned(),
            found: describe_extern(&other),
        }),
    }
    for (name, sig, required) in [
        (EXPORT_ALLOC, ALLOC_SIG, true),
        (EXPORT_HANDLE, HANDLE_SIG, true),
        (EXPORT_INIT, INIT_SIG, false),
    ] {
        match export(name) {
            None if required => violations.push(AbiViolation::MissingExport {
                name,
                expected: format!("function {sig}"),
            }),
            None => {}
            Some(ExternType::Func(f)) if sig.matches(&f) => {}
            Some(other) => violations.push(AbiViolation::WrongExport {
                name,
                expected: format!("function {sig}"),
                found: describe_extern(&other),
            }),
        }
    }

    for import in module.imports() {
        let ty = import.ty();
        let known = (import.module() == IMPORT_MODULE)
            .then(|| import_signature(import.name()))
            .flatten();
        match (known, &ty) {
            (None, _) => violations.push(AbiViolation::UnknownImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
                found: describe_extern(&ty),
            }),
            (Some((_, sig)), ExternType::Func(f)) if sig.matches(f) => {}
            (Some((name, sig)), _) => violations.push(AbiViolation::WrongImport {
                name,
                expected: format!("function {sig}"),
                found: describe_extern(&ty),
            }),
        }
    }
    violations
}

fn import_signature(name: &str) -> Option<(&'static str, Signature)> {
    match name {
        IMPORT_LOG => Some((IMPORT_LOG, LOG_SIG)),
        IMPORT_CONFIG => Some((IMPORT_CONFIG, CONFIG_SIG)),
        IMPORT_NOW_MS => Some((IMPORT_NOW_MS, NOW_MS_SIG)),
        _ => None,
    }
}

/// Splits the value `caxton_handle` returns into the reply's pointer and length.
pub fn unpack_reply(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// Packs a reply pointer and length the way `caxton_handle` returns them.
pub fn pack_reply(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

/// The byte range `[ptr, ptr + len)` when it lies inside a memory of `memory_len` bytes.
pub fn guest_range(ptr: u32, len: u32, memory_len: usize) -> Option<Range<usize>> {
    let start = usize::try_from(ptr).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= memory_len).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signatures_display_like_the_design() {
        assert_eq!(HANDLE_SIG.to_string(), "(i32, i32) -> (i64)");
        assert_eq!(INIT_SIG.to_string(), "() -> (i32)");
    }

    proptest! {
        #[test]
        fn packing_and_unpacking_replies_round_trips(ptr: u32, len: u32) {
            prop_assert_eq!(unpack_reply(pack_reply(ptr, len)), (ptr, len));
        }

        #[test]
        fn guest_range_is_inside_memory_or_none(ptr: u32, len: u32, memory_len in 0usize..1 << 33) {
            match guest_range(ptr, len, memory_len) {
                Some(range) => {
                    prop_assert!(range.end <= memory_len);
                    prop_assert_eq!(range.start, ptr as usize);
                    prop_assert_eq!(range.len(), len as usize);
                }
                None => prop_assert!(ptr as u64 + len as u64 > memory_len as u64),
            }
        }
    }
}
