//! [`ArtifactStore`] on the `artifacts` table: content-addressed, deduplicated bytes.

use std::sync::Arc;

use async_trait::async_trait;
use caxton_core::{ArtifactError, ArtifactKind, ArtifactStore, Digest, StoredArtifact};

use crate::PostgresStore;
use crate::deployments::millis;

#[async_trait]
impl ArtifactStore for PostgresStore {
    /// Stores `bytes` in one transaction, committed before it returns. Bytes already
    /// stored are found by a read and cost no write; two hosts storing the same bytes at
    /// once store them once (`ON CONFLICT DO NOTHING`).
    async fn put(&self, kind: ArtifactKind, bytes: &[u8]) -> Result<StoredArtifact, ArtifactError> {
        let size = bytes.len() as u64;
        if size > self.max_artifact_size {
            return Err(ArtifactError::TooLarge {
                size,
                limit: self.max_artifact_size,
            });
        }
        let digest = Digest::of(bytes);
        let stored = move |created| StoredArtifact {
            digest,
            size,
            created,
        };
        if self.contains(&digest).await? {
            return Ok(stored(false));
        }
        let bytes = bytes.to_vec();
        self.db
            .unscoped(
                || format!("storing {kind} artifact {digest}"),
                move |client, at| {
                    Box::pin(async move {
                        let inserted = client
                            .execute(
                                "INSERT INTO artifacts (digest, kind, size, bytes, created_at) \
                                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (digest) DO NOTHING",
                                &[
                                    &digest.to_string(),
                                    &kind.as_str(),
                                    &(size as i64),
                                    &bytes,
                                    &millis(at),
                                ],
                            )
                            .await?;
                        Ok(stored(inserted == 1))
                    })
                },
            )
            .await
    }

    /// The bytes stored under `digest`, checked against it: bytes that do not hash to it
    /// are [`ArtifactError::Corrupt`].
    async fn get(&self, digest: &Digest) -> Result<Arc<[u8]>, ArtifactError> {
        let d = *digest;
        let bytes: Option<Vec<u8>> = self
            .db
            .read(
                || format!("reading artifact {digest}"),
                move |client| {
                    Box::pin(async move {
                        let row = client
                            .query_opt(
                                "SELECT bytes FROM artifacts WHERE digest = $1",
                                &[&d.to_string()],
                            )
                            .await?;
                        Ok(row.map(|row| row.get(0)))
                    })
                },
            )
            .await?;
        let bytes = bytes.ok_or(ArtifactError::NotFound { digest: *digest })?;
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
        let d = *digest;
        self.db
            .read(
                || format!("looking up artifact {digest}"),
                move |client| {
                    Box::pin(async move {
                        let row = client
                            .query_opt(
                                "SELECT 1 FROM artifacts WHERE digest = $1",
                                &[&d.to_string()],
                            )
                            .await?;
                        Ok(row.is_some())
                    })
                },
            )
            .await
    }
}
