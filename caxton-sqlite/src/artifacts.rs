//! [`ArtifactStore`] on the `artifacts` table: content-addressed, deduplicated bytes.

use std::sync::Arc;

use async_trait::async_trait;
use caxton_core::{ArtifactError, ArtifactKind, ArtifactStore, Digest, StoredArtifact};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::SqliteStore;
use crate::connection::Outcome;

fn find(tx: &Transaction<'_>, digest: &Digest) -> Result<bool, rusqlite::Error> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM artifacts WHERE digest = ?1")?
        .query_row(params![digest.to_string()], |_| Ok(()))
        .optional()?
        .is_some())
}

#[async_trait]
impl ArtifactStore for SqliteStore {
    /// Stores `bytes` in one transaction, committed (and so on disk) before it returns.
    /// Bytes already stored are found by a read and cost no write.
    async fn put(&self, kind: ArtifactKind, bytes: &[u8]) -> Result<StoredArtifact, ArtifactError> {
        let size = bytes.len() as u64;
        if size > self.max_artifact_size {
            return Err(ArtifactError::TooLarge {
                size,
                limit: self.max_artifact_size,
            });
        }
        let digest = Digest::of(bytes);
        let stored = |created| StoredArtifact {
            digest,
            size,
            created,
        };
        if self.contains(&digest).await? {
            return Ok(stored(false));
        }
        self.db.write(
            || format!("storing {kind} artifact {digest}"),
            |tx, at| {
                let inserted = tx
                    .prepare_cached(
                        "INSERT INTO artifacts (digest, kind, size, bytes, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (digest) DO NOTHING",
                    )?
                    .execute(params![
                        digest.to_string(),
                        kind.as_str(),
                        size as i64,
                        bytes,
                        i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
                    ])?;
                Ok::<_, Outcome<ArtifactError>>(stored(inserted == 1))
            },
        )
    }

    /// The bytes under `digest`, after checking that they hash to it.
    async fn get(&self, digest: &Digest) -> Result<Arc<[u8]>, ArtifactError> {
        let bytes: Vec<u8> = self.db.read(
            || format!("reading artifact {digest}"),
            |tx| {
                tx.prepare_cached("SELECT bytes FROM artifacts WHERE digest = ?1")?
                    .query_row(params![digest.to_string()], |row| row.get(0))
                    .optional()?
                    .ok_or(Outcome::Refused(ArtifactError::NotFound {
                        digest: *digest,
                    }))
            },
        )?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(ArtifactError::Corrupt {
                digest: *digest,
                actual,
            });
        }
        Ok(Arc::from(bytes))
    }

    async fn contains(&self, digest: &Digest) -> Result<bool, ArtifactError> {
        self.db.read(
            || format!("looking up artifact {digest}"),
            |tx| Ok::<_, Outcome<ArtifactError>>(find(tx, digest)?),
        )
    }
}
