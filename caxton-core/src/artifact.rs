//! Content-addressed artifacts: module bytes and layer payloads, kept by their SHA-256.
//!
//! A registry keeps the bytes of every version it ever ran, so a known-good version can be
//! brought back long after it was retired. Artifacts are immutable: the same bytes always
//! have the same digest, storing them twice stores them once, and a reader always gets
//! back exactly what was written (an implementation checks the digest of what it reads).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;

use crate::store::BackendError;
use crate::version::Digest;

/// What a stored artifact is, for listings and for people. The digest alone identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ArtifactKind {
    /// A WebAssembly module.
    Module,
    /// A layer payload or a deployment's load spec (text or JSON).
    Document,
}

impl ArtifactKind {
    /// `module` or `document`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Module => "module",
            ArtifactKind::Document => "document",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`ArtifactStore::put`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredArtifact {
    /// The SHA-256 of the bytes.
    pub digest: Digest,
    /// Their length.
    pub size: u64,
    /// Whether these bytes were new to the store (`false`: they were already there).
    pub created: bool,
}

/// Why an artifact could not be stored or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// No artifact has this digest.
    #[error("artifact {digest} not found")]
    NotFound {
        /// The digest asked for.
        digest: Digest,
    },
    /// The stored bytes no longer hash to their digest: the store was damaged.
    #[error("artifact {digest} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        /// The digest asked for.
        digest: Digest,
        /// What the stored bytes hash to.
        actual: Digest,
    },
    /// The artifact is larger than the store accepts.
    #[error("artifact of {size} bytes is over the store's {limit}-byte limit")]
    TooLarge {
        /// The size given.
        size: u64,
        /// The store's limit.
        limit: u64,
    },
    /// The store failed.
    #[error("artifact store failed: {0}")]
    Backend(#[source] BackendError),
}

/// Module bytes and layer payloads by digest. Implementations must make `put` idempotent
/// and durable before it returns, and `get` must return exactly the bytes put.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Stores `bytes` under their SHA-256; storing the same bytes again changes nothing.
    async fn put(&self, kind: ArtifactKind, bytes: &[u8]) -> Result<StoredArtifact, ArtifactError>;

    /// The bytes stored under `digest`.
    async fn get(&self, digest: &Digest) -> Result<Arc<[u8]>, ArtifactError>;

    /// Whether `digest` is stored.
    async fn contains(&self, digest: &Digest) -> Result<bool, ArtifactError>;
}

/// An [`ArtifactStore`] in memory, for tests and for hosts that need no durability.
#[derive(Debug, Default, Clone)]
pub struct MemoryArtifactStore {
    inner: Arc<RwLock<HashMap<Digest, Arc<[u8]>>>>,
    limit: Option<u64>,
}

impl MemoryArtifactStore {
    /// An empty store without a size limit.
    pub fn new() -> Self {
        MemoryArtifactStore::default()
    }

    /// Refuses artifacts larger than `bytes`.
    pub fn with_limit(mut self, bytes: u64) -> Self {
        self.limit = Some(bytes);
        self
    }

    /// How many artifacts are stored.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ArtifactStore for MemoryArtifactStore {
    async fn put(
        &self,
        _kind: ArtifactKind,
        bytes: &[u8],
    ) -> Result<StoredArtifact, ArtifactError> {
        let size = bytes.len() as u64;
        if let Some(limit) = self.limit
            && size > limit
        {
            return Err(ArtifactError::TooLarge { size, limit });
        }
        let digest = Digest::of(bytes);
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let created = !map.contains_key(&digest);
        if created {
            map.insert(digest, Arc::from(bytes));
        }
        Ok(StoredArtifact {
            digest,
            size,
            created,
        })
    }

    async fn get(&self, digest: &Digest) -> Result<Arc<[u8]>, ArtifactError> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned()
            .ok_or(ArtifactError::NotFound { digest: *digest })
    }

    async fn contains(&self, digest: &Digest) -> Result<bool, ArtifactError> {
        Ok(self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(digest))
    }
}

/// The conformance suite every [`ArtifactStore`] passes unchanged.
#[cfg(any(test, feature = "test-util"))]
pub mod conformance {
    use super::*;

    /// Runs every check on `store`, which must be empty. Panics with the failed check.
    pub async fn run(store: &dyn ArtifactStore) {
        put_returns_the_digest_and_get_the_same_bytes(store).await;
        put_is_idempotent(store).await;
        unknown_digest_is_not_found(store).await;
        empty_artifact_is_an_artifact(store).await;
    }

    async fn put_returns_the_digest_and_get_the_same_bytes(store: &dyn ArtifactStore) {
        let bytes = b"\0asm\x01\0\0\0 conformance module".to_vec();
        let stored = store.put(ArtifactKind::Module, &bytes).await.unwrap();
        assert_eq!(stored.digest, Digest::of(&bytes), "put returns the SHA-256");
        assert_eq!(stored.size, bytes.len() as u64);
        assert!(stored.created, "first put creates");
        let read = store.get(&stored.digest).await.unwrap();
        assert_eq!(&read[..], &bytes[..], "get returns the bytes put");
        assert!(store.contains(&stored.digest).await.unwrap());
    }

    async fn put_is_idempotent(store: &dyn ArtifactStore) {
        let bytes = br#"{"prompt": "conformance"}"#;
        let first = store.put(ArtifactKind::Document, bytes).await.unwrap();
        let second = store.put(ArtifactKind::Document, bytes).await.unwrap();
        assert_eq!(first.digest, second.digest);
        assert!(
            !second.created,
            "the second put of the same bytes creates nothing"
        );
        assert_eq!(&store.get(&first.digest).await.unwrap()[..], &bytes[..]);
    }

    async fn unknown_digest_is_not_found(store: &dyn ArtifactStore) {
        let digest = Digest::of(b"never stored");
        assert!(!store.contains(&digest).await.unwrap());
        match store.get(&digest).await {
            Err(ArtifactError::NotFound { digest: missing }) => assert_eq!(missing, digest),
            other => panic!("get of an unknown digest: {other:?}"),
        }
    }

    async fn empty_artifact_is_an_artifact(store: &dyn ArtifactStore) {
        let stored = store.put(ArtifactKind::Document, b"").await.unwrap();
        assert_eq!(stored.size, 0);
        assert!(store.get(&stored.digest).await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_passes_the_conformance_suite() {
        futures::executor::block_on(conformance::run(&MemoryArtifactStore::new()));
    }

    #[test]
    fn memory_store_refuses_artifacts_over_its_limit_and_stores_nothing() {
        futures::executor::block_on(async {
            let store = MemoryArtifactStore::new().with_limit(4);
            let err = store.put(ArtifactKind::Module, b"12345").await.unwrap_err();
            assert_eq!(err, ArtifactError::TooLarge { size: 5, limit: 4 });
            assert!(store.is_empty());
        });
    }
}
