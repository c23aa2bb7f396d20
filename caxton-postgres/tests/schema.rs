//! The schema: versioned migrations (a newer database is refused, clearly), and the rules
//! that are the database's own (one production per agent, one open rollout per agent).

mod common;

use caxton_core::{DeploymentStore, JournalEntry, JournalRecord, RolloutJournal, Timestamp};
use caxton_postgres::{ConnectError, PostgresStore, SCHEMA_VERSION};
use common::{agent, dep, running, sql};
use futures::executor::block_on;

#[test]
fn a_database_written_by_a_newer_schema_is_refused_and_left_untouched() {
    let Some(db) = common::scratch() else {
        return;
    };
    drop(PostgresStore::connect(db.url()).unwrap());
    let newer = SCHEMA_VERSION + 1;
    sql(
        db.url(),
        &format!("UPDATE caxton_schema SET version = {newer}"),
    )
    .unwrap();
    let err = PostgresStore::connect(db.url()).unwrap_err();
    assert!(
        matches!(err, ConnectError::NewerSchema { found, supported, .. }
            if found == newer && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("schema version {newer}")), "{text}");
    assert!(text.contains("use a newer Caxton"), "{text}");
    assert_eq!(
        sql(db.url(), "SELECT version FROM caxton_schema").unwrap(),
        vec![Some(newer.to_string())],
        "left as it was"
    );
}

#[test]
fn connecting_again_migrates_nothing_and_keeps_the_contents() {
    let Some(db) = common::scratch() else {
        return;
    };
    let a = agent("processor");
    let store = PostgresStore::connect(db.url()).unwrap();
    let v1 = block_on(running(&store, &a, "v1"));
    block_on(store.promote(&a, &v1.id, "first")).unwrap();
    drop(store);
    // Several hosts starting at once: the advisory lock makes one of them migrate.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url().to_owned();
            std::thread::spawn(move || PostgresStore::connect(&url).unwrap())
        })
        .collect();
    for thread in threads {
        let store = thread.join().unwrap();
        let production = block_on(store.production(&a)).unwrap().unwrap();
        assert_eq!(production.id, v1.id);
    }
    assert_eq!(
        sql(db.url(), "SELECT version FROM caxton_schema").unwrap(),
        vec![Some(SCHEMA_VERSION.to_string())]
    );
}

#[test]
fn one_production_per_agent_is_the_databases_rule() {
    let Some(db) = common::scratch() else {
        return;
    };
    let store = PostgresStore::connect(db.url()).unwrap();
    let a = agent("processor");
    block_on(async {
        let v1 = running(&store, &a, "v1").await;
        running(&store, &a, "v2").await;
        store.promote(&a, &v1.id, "first").await.unwrap();
    });
    // Straight SQL, past the store: the partial unique index refuses a second production.
    let err = sql(
        db.url(),
        "UPDATE deployments SET is_production = TRUE WHERE id = 'v2'",
    )
    .unwrap_err();
    let db_error = err.as_db_error().expect("a database error");
    assert_eq!(db_error.constraint(), Some("deployments_one_production"));
    // A production that is not running is refused by a CHECK.
    let err = sql(
        db.url(),
        "UPDATE deployments SET state = 'retired' WHERE id = 'v1'",
    )
    .unwrap_err();
    assert!(err.as_db_error().is_some(), "{err}");
    let productions = sql(
        db.url(),
        "SELECT id FROM deployments WHERE agent_id = 'processor' AND is_production",
    )
    .unwrap();
    assert_eq!(productions, vec![Some("v1".to_owned())]);
}

#[test]
fn one_open_rollout_per_agent_and_journal_order_are_the_databases_rules() {
    let Some(db) = common::scratch() else {
        return;
    };
    let store = PostgresStore::connect(db.url()).unwrap();
    let started = JournalRecord::Started {
        strategy: "canary".into(),
        spec: serde_json::json!({}),
        baseline: None,
    };
    let entry = |deployment: &str, record: JournalRecord| JournalEntry {
        seq: 0,
        at: Timestamp::from_millis(1_000),
        agent: agent("processor"),
        deployment: dep(deployment),
        record,
    };
    block_on(store.append(entry("v2", started))).unwrap();
    let second = sql(
        db.url(),
        "INSERT INTO rollouts (agent_id, deployment_id, started_at) VALUES ('processor', 'v3', 1)",
    )
    .unwrap_err();
    assert_eq!(
        second.as_db_error().and_then(|e| e.constraint()),
        Some("rollouts_one_open")
    );
    // A second `started` in the same rollout is refused by the trigger.
    let again = sql(
        db.url(),
        "INSERT INTO rollout_journal (rollout_id, at, agent_id, deployment_id, kind, record) \
         SELECT id, 2, agent_id, deployment_id, 'started', '{\"kind\": \"started\"}' \
         FROM rollouts",
    )
    .unwrap_err();
    assert!(
        again.to_string().contains("`started` is the first entry")
            || again
                .as_db_error()
                .is_some_and(|e| e.message().contains("`started` is the first entry")),
        "{again}"
    );
}

#[test]
fn a_password_is_never_printed() {
    let err = PostgresStore::builder("postgres://caxton:hunter2@127.0.0.1:1/caxton")
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    assert!(
        err.to_string().contains("caxton@127.0.0.1:1/caxton"),
        "{err}"
    );
    let builder = PostgresStore::builder("postgres://caxton:hunter2@db/caxton");
    assert!(!format!("{builder:?}").contains("hunter2"));
    let bad = PostgresStore::connect("postgres://caxton:hunter2@db:notaport/x").unwrap_err();
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
    assert!(!format!("{bad:?}").contains("hunter2"), "{bad:?}");
}

#[test]
fn a_store_connected_with_a_password_never_prints_it() {
    let Some(db) = common::scratch() else {
        return;
    };
    // The test server trusts loopback, so any password connects; it must show nowhere.
    let with_password = db.url().split_once("://").and_then(|(scheme, rest)| {
        let (user, host) = rest.split_once('@')?;
        (!user.contains(':')).then(|| format!("{scheme}://{user}:hunter2@{host}"))
    });
    let Some(url) = with_password else {
        return eprintln!("note: skipped: the test server's URL names no user");
    };
    let store = PostgresStore::builder(&url).connect().unwrap();
    assert!(!format!("{store:?}").contains("hunter2"), "{store:?}");
    assert!(!store.target().contains("hunter2"));
    assert!(
        store.target().ends_with(&format!("/{}", db.name())),
        "{}",
        store.target()
    );
    let feed = block_on(store.follow()).unwrap();
    assert!(!format!("{feed:?}").contains("hunter2"), "{feed:?}");
}
