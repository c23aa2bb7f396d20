//! The schema, as an append-only list of migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied; `PRAGMA application_id`
//! marks the file as a Caxton registry. A new table is a new migration appended to
//! [`MIGRATIONS`] (as the rollout journal was); a released migration is never edited, and
//! a test pins their text.

/// Marks a file as a Caxton registry (`PRAGMA application_id`): "CXTN".
pub(crate) const APPLICATION_ID: i32 = 0x4358_544E;

/// One step of the schema.
#[derive(Debug)]
pub(crate) struct Migration {
    /// The `user_version` after this step; steps are numbered 1, 2, … in order.
    pub(crate) version: i64,
    /// What the step adds, for error messages.
    pub(crate) name: &'static str,
    /// The statements, run in the transaction that opens the file.
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first. Append only.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "deployments, audit and artifacts",
        sql: V1,
    },
    Migration {
        version: 2,
        name: "the rollout journal",
        sql: V2,
    },
];

/// The schema version this crate writes: the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const V1: &str = r#"
CREATE TABLE deployments (
    -- Creation order: listings are newest first, and list cursors are positions in it.
    created_seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    agent_id      TEXT    NOT NULL,
    version       TEXT    NOT NULL CHECK (json_valid(version)),
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'validating', 'deploying',
                      'running', 'draining', 'retired', 'failed', 'rolled_back')),
    is_production INTEGER NOT NULL DEFAULT 0 CHECK (is_production IN (0, 1)),
    strategy      TEXT    NOT NULL,
    metadata      TEXT    NOT NULL CHECK (json_valid(metadata)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    promoted_at   INTEGER,
    expires_at    INTEGER,
    -- Incremented by every change, each of which has its audit entry: a conflict token.
    revision      INTEGER NOT NULL DEFAULT 1 CHECK (revision >= 1),
    -- The production is running and not deleted; the database refuses anything else.
    CHECK (NOT is_production OR (state = 'running' AND expires_at IS NULL))
) STRICT;

-- At most one production per agent: the rule is the database's.
CREATE UNIQUE INDEX deployments_one_production ON deployments (agent_id) WHERE is_production;
CREATE INDEX deployments_by_agent ON deployments (agent_id, created_seq);

CREATE TABLE audit (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    agent_id      TEXT    NOT NULL,
    deployment_id TEXT    NOT NULL REFERENCES deployments (id),
    -- The action's tag, for queries; `action` holds the whole action as JSON.
    kind          TEXT    NOT NULL,
    action        TEXT    NOT NULL CHECK (json_valid(action)),
    reason        TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_by_deployment ON audit (deployment_id, seq);
-- Rollback to the previous production looks for the latest promotion or restore.
CREATE INDEX audit_promotions ON audit (agent_id, seq)
    WHERE kind IN ('promoted', 'restored_by_rollback');

-- Content-addressed: the digest is the SHA-256 of the bytes, checked on every read.
CREATE TABLE artifacts (
    digest     TEXT    PRIMARY KEY NOT NULL,
    kind       TEXT    NOT NULL,
    size       INTEGER NOT NULL CHECK (size >= 0),
    bytes      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
"#;

const V2: &str = r#"
-- One row per rollout: opened by its `started` entry, closed by its `finished` one.
CREATE TABLE rollouts (
    -- Begin order: open rollouts are listed oldest first.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id      TEXT    NOT NULL CHECK (agent_id <> ''),
    deployment_id TEXT    NOT NULL CHECK (deployment_id <> ''),
    -- The `at` of its `started` entry, and of its `finished` one: NULL while it is open.
    started_at    INTEGER NOT NULL CHECK (started_at >= 0),
    finished_at   INTEGER CHECK (finished_at >= 0),
    -- What the journal's foreign key refers to: an entry's agent and deployment are its
    -- rollout's.
    UNIQUE (id, agent_id, deployment_id)
) STRICT;

-- At most one open rollout per agent: the rule is the database's.
CREATE UNIQUE INDEX rollouts_one_open ON rollouts (agent_id) WHERE finished_at IS NULL;

CREATE TABLE rollout_journal (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id    INTEGER NOT NULL,
    -- On the host's clock, as the entry says.
    at            INTEGER NOT NULL CHECK (at >= 0),
    agent_id      TEXT    NOT NULL,
    deployment_id TEXT    NOT NULL,
    -- The record's tag, for queries; `record` holds the whole record as JSON.
    kind          TEXT    NOT NULL CHECK (kind IN ('started', 'stage', 'split', 'finished')),
    record        TEXT    NOT NULL
                  CHECK (json_valid(record) AND json_extract(record, '$.kind') IS kind),
    FOREIGN KEY (rollout_id, agent_id, deployment_id)
        REFERENCES rollouts (id, agent_id, deployment_id)
) STRICT;

CREATE INDEX rollout_journal_by_rollout ON rollout_journal (rollout_id, seq);
CREATE INDEX rollout_journal_by_deployment ON rollout_journal (agent_id, deployment_id, seq);

-- A rollout's first entry is `started`, and no other is; a finished rollout takes none.
CREATE TRIGGER rollout_journal_in_order BEFORE INSERT ON rollout_journal
BEGIN
    SELECT RAISE(ABORT, 'rollout journal: the rollout is finished')
    WHERE (SELECT finished_at FROM rollouts WHERE id = NEW.rollout_id) IS NOT NULL;
    SELECT RAISE(ABORT, 'rollout journal: `started` is the first entry of a rollout, and only it')
    WHERE (NEW.kind = 'started')
        = EXISTS (SELECT 1 FROM rollout_journal WHERE rollout_id = NEW.rollout_id);
END;

-- A `finished` entry closes its rollout, in the statement that records it.
CREATE TRIGGER rollout_journal_finish AFTER INSERT ON rollout_journal
WHEN NEW.kind = 'finished'
BEGIN
    UPDATE rollouts SET finished_at = NEW.at WHERE id = NEW.rollout_id;
END;

-- A finished rollout is never reopened or changed.
CREATE TRIGGER rollouts_stay_finished BEFORE UPDATE ON rollouts
WHEN OLD.finished_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'rollout journal: a finished rollout does not change');
END;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i as i64 + 1, "{}", migration.name);
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    /// A released migration runs on files already in the field: editing it would give
    /// two files of the same version different schemas. Append a migration instead.
    #[test]
    fn released_migrations_are_never_edited() {
        let released = [
            (
                1,
                "sha256:462d05db1bf642723c88aa8c39b7a0a360294a680584bfc2d23c254664139be5",
            ),
            (
                2,
                "sha256:28fe662c99fd28f1fc3d6770348eda941d53605e705cf15ab7142f0d20c44e45",
            ),
        ];
        for (version, digest) in released {
            let migration = &MIGRATIONS[version - 1];
            assert_eq!(
                caxton_core::Digest::of(migration.sql.as_bytes()).to_string(),
                digest,
                "migration {version} ({}) was edited",
                migration.name
            );
        }
    }
}
