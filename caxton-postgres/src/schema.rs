//! The schema, as an append-only list of migrations.
//!
//! The one row of `caxton_schema` holds the number of migrations applied. A new table is
//! a new migration appended to [`MIGRATIONS`]; a released migration is never edited, and
//! a test pins its text.

/// One step of the schema.
#[derive(Debug)]
pub(crate) struct Migration {
    /// The schema version after this step; steps are numbered 1, 2, … in order.
    pub(crate) version: i64,
    /// What the step adds, for error messages.
    pub(crate) name: &'static str,
    /// The statements, run in the transaction that migrates the database.
    pub(crate) sql: &'static str,
}

/// Every step, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "deployments, audit, artifacts and the rollout journal",
        sql: V1,
    },
    Migration {
        version: 2,
        name: "rollout leases and relayed commands",
        sql: V2,
    },
];

/// The newest schema version this crate knows: the number of its migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The key of the advisory lock that serializes migrations of one database ("CXTN").
pub(crate) const MIGRATION_LOCK: i64 = 0x4358_544E;

/// Creates the version table when missing; the rest of the migration reads and writes it.
pub(crate) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS caxton_schema (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version   BIGINT  NOT NULL CHECK (version >= 0)
)";

const V1: &str = r#"
-- One row per agent that ever had a deployment or a rollout: every write of an agent
-- locks its row first (SELECT ... FOR UPDATE), so the writes of one agent take turns.
CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY CHECK (agent_id <> '')
);

CREATE TABLE deployments (
    -- Creation order, for listings; never reused.
    created_seq   BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    id            TEXT    PRIMARY KEY,
    agent_id      TEXT    NOT NULL REFERENCES agents (agent_id),
    version       TEXT    NOT NULL CHECK (version::jsonb IS NOT NULL),
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'validating', 'deploying',
                      'running', 'draining', 'retired', 'failed', 'rolled_back')),
    is_production BOOLEAN NOT NULL DEFAULT FALSE,
    strategy      TEXT    NOT NULL,
    metadata      TEXT    NOT NULL CHECK (metadata::jsonb IS NOT NULL),
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    promoted_at   BIGINT,
    expires_at    BIGINT,
    -- Incremented by every change, each of which has its audit entry: a conflict token.
    revision      BIGINT  NOT NULL DEFAULT 1 CHECK (revision >= 1),
    -- The production is running and not deleted; the database refuses anything else.
    CHECK (NOT is_production OR (state = 'running' AND expires_at IS NULL))
);

-- At most one production per agent: the rule is the database's.
CREATE UNIQUE INDEX deployments_one_production ON deployments (agent_id) WHERE is_production;
CREATE INDEX deployments_by_agent ON deployments (agent_id, created_seq);

CREATE TABLE audit (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            BIGINT NOT NULL,
    agent_id      TEXT   NOT NULL,
    deployment_id TEXT   NOT NULL REFERENCES deployments (id),
    -- The action's tag, for queries; `action` holds the whole action as JSON.
    kind          TEXT   NOT NULL,
    action        TEXT   NOT NULL CHECK (action::jsonb IS NOT NULL),
    reason        TEXT   NOT NULL
);

CREATE INDEX audit_by_deployment ON audit (deployment_id, seq);
-- The last time stamped for an agent: times never go back.
CREATE INDEX audit_by_agent_time ON audit (agent_id, at);
-- Rollback to the previous production looks for the latest promotion or restore.
CREATE INDEX audit_promotions ON audit (agent_id, seq)
    WHERE kind IN ('promoted', 'restored_by_rollback');

-- Content-addressed: the digest is the SHA-256 of the bytes, checked on every read.
CREATE TABLE artifacts (
    digest     TEXT   PRIMARY KEY,
    kind       TEXT   NOT NULL,
    size       BIGINT NOT NULL CHECK (size = octet_length(bytes)),
    bytes      BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);

-- One row per rollout: opened by its `started` entry, closed by its `finished` one.
CREATE TABLE rollouts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id      TEXT   NOT NULL CHECK (agent_id <> ''),
    deployment_id TEXT   NOT NULL CHECK (deployment_id <> ''),
    started_at    BIGINT NOT NULL CHECK (started_at >= 0),
    finished_at   BIGINT CHECK (finished_at >= 0),
    UNIQUE (id, agent_id, deployment_id)
);

-- At most one open rollout per agent: the rule is the database's.
CREATE UNIQUE INDEX rollouts_one_open ON rollouts (agent_id) WHERE finished_at IS NULL;

CREATE TABLE rollout_journal (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id    BIGINT NOT NULL,
    at            BIGINT NOT NULL CHECK (at >= 0),
    agent_id      TEXT   NOT NULL,
    deployment_id TEXT   NOT NULL,
    kind          TEXT   NOT NULL CHECK (kind IN ('started', 'stage', 'split', 'finished')),
    record        TEXT   NOT NULL CHECK ((record::jsonb ->> 'kind') IS NOT DISTINCT FROM kind),
    FOREIGN KEY (rollout_id, agent_id, deployment_id)
        REFERENCES rollouts (id, agent_id, deployment_id)
);

CREATE INDEX rollout_journal_by_rollout ON rollout_journal (rollout_id, seq);
CREATE INDEX rollout_journal_by_deployment ON rollout_journal (agent_id, deployment_id, seq);

-- A rollout's first entry is `started`, and no other is; a finished rollout takes none.
CREATE FUNCTION caxton_rollout_journal_in_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT finished_at FROM rollouts WHERE id = NEW.rollout_id) IS NOT NULL THEN
        RAISE EXCEPTION 'rollout journal: the rollout is finished';
    END IF;
    IF (NEW.kind = 'started')
        = EXISTS (SELECT 1 FROM rollout_journal WHERE rollout_id = NEW.rollout_id) THEN
        RAISE EXCEPTION 'rollout journal: `started` is the first entry of a rollout, and only it';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER rollout_journal_in_order BEFORE INSERT ON rollout_journal
    FOR EACH ROW EXECUTE FUNCTION caxton_rollout_journal_in_order();

-- A `finished` entry closes its rollout, in the statement that records it.
CREATE FUNCTION caxton_rollout_journal_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rollouts SET finished_at = NEW.at WHERE id = NEW.rollout_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER rollout_journal_finish AFTER INSERT ON rollout_journal
    FOR EACH ROW WHEN (NEW.kind = 'finished') EXECUTE FUNCTION caxton_rollout_journal_finish();

-- A finished rollout is never reopened or changed.
CREATE FUNCTION caxton_rollouts_stay_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rollout journal: a finished rollout does not change';
END
$$;
CREATE TRIGGER rollouts_stay_finished BEFORE UPDATE ON rollouts
    FOR EACH ROW WHEN (OLD.finished_at IS NOT NULL)
    EXECUTE FUNCTION caxton_rollouts_stay_finished();
"#;

const V2: &str = r#"
-- Who drives each agent's rollout: one lease per agent, expiring on the database's clock
-- so that hosts whose clocks disagree still agree on who holds it.
CREATE TABLE rollout_leases (
    agent_id      TEXT        PRIMARY KEY CHECK (agent_id <> ''),
    deployment_id TEXT        NOT NULL CHECK (deployment_id <> ''),
    holder        TEXT        NOT NULL CHECK (holder <> ''),
    expires_at    TIMESTAMPTZ NOT NULL
);

-- Operator commands that a host which does not drive a rollout leaves for the one that
-- does; the holder takes them, oldest first.
CREATE TABLE rollout_commands (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id      TEXT   NOT NULL CHECK (agent_id <> ''),
    deployment_id TEXT   NOT NULL CHECK (deployment_id <> ''),
    command       TEXT   NOT NULL CHECK (command::jsonb IS NOT NULL)
);
CREATE INDEX rollout_commands_of_rollout ON rollout_commands (agent_id, deployment_id, seq);
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
}
