//! End to end: three real `caxton serve` processes on one PostgreSQL registry. A
//! deployment made through one is answered by the other two within seconds. Needs the
//! test server (`CAXTON_TEST_POSTGRES_URL`, from `.ci/postgres`) and `psql` to make a
//! database of the test's own: skipped without them, except in CI, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CAXTON: &str = env!("CARGO_BIN_EXE_caxton");
/// Short, so that a takeover happens within seconds; long enough for a renewal on a
/// machine busy with builds.
const LEASE_TTL: &str = "5s";

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why}, and CI is set: run .ci/postgres");
    }
    eprintln!("note: skipped: {why}");
}

/// A database of this test's own on the test server, dropped at the end.
struct Database {
    server: String,
    name: String,
    url: String,
}

impl Database {
    /// A database of the test's own on the test server; `None` (after a note, or a
    /// failure in CI) without one.
    fn for_test() -> Option<Database> {
        match std::env::var("CAXTON_TEST_POSTGRES_URL") {
            Ok(server) if !server.is_empty() => Database::create(&server),
            _ => {
                skip("CAXTON_TEST_POSTGRES_URL is not set");
                None
            }
        }
    }

    fn create(server: &str) -> Option<Database> {
        let name = format!(
            "caxton_test_fleet_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let made = Command::new("psql")
            .arg(server)
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .status();
        match made {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("psql CREATE DATABASE: {status}"),
            Err(error) => {
                skip(&format!("cannot run psql: {error}"));
                return None;
            }
        }
        let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
        Some(Database {
            server: server.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.server)
            .args(["-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .status();
    }
}

/// A running `caxton serve` on the registry, in a state directory of its own.
struct Serve {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(registry: &str) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(CAXTON)
            .args(["serve", "--listen", "127.0.0.1:0", "--registry", registry])
            .args(["--lease-ttl", LEASE_TTL])
            .current_dir(dir.path())
            .env_remove("CAXTON_TOKEN")
            .env_remove("CAXTON_REGISTRY")
            .env("CAXTON_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("caxton serve ended before listening")
                .unwrap();
            if let Some(url) = line.split("Listening on ").nth(1) {
                break url.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            url,
            _dir: dir,
        }
    }

    fn caxton(&self, args: &[&str]) -> Output {
        Command::new(CAXTON)
            .args(args)
            .env("CAXTON_SERVER", &self.url)
            .env_remove("CAXTON_TOKEN")
            .output()
            .unwrap()
    }

    /// `POST /v1/agents/{agent}/messages`: (status, `Caxton-Deployment`).
    fn message(&self, agent: &str) -> (u16, Option<String>) {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let order = br#"{"kind": "order", "id": "o-1", "items": [{"sku": "SKU-A1", "qty": 1, "price_cents": 1999}]}"#;
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/v1/agents/{agent}/messages", self.url))
            .header("content-type", "application/json")
            .body(order.to_vec())
            .unwrap();
        match http.run(request) {
            Ok(response) => (
                response.status().as_u16(),
                response
                    .headers()
                    .get("caxton-deployment")
                    .map(|v| v.to_str().unwrap().to_owned()),
            ),
            Err(_) => (0, None),
        }
    }

    /// `caxton deploy agent` of a sample as `processor`: the new deployment's id.
    fn deploy(&self, module: &str, label: &str, extra: &[&str], what: &str) -> String {
        let module = sample(module);
        let mut args = vec!["deploy", "agent", module.to_str().unwrap()];
        args.extend(["--name", "processor", "--label", label]);
        args.extend(extra);
        deployed_id(&self.caxton(&args), what)
    }

    /// `GET path` as JSON.
    fn json(&self, path: &str) -> serde_json::Value {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut response = http.get(format!("{}{path}", self.url)).call().unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// Waits until this server answers `agent` from `deployment`.
    fn answers_from(&self, name: &str, agent: &str, deployment: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, from) = self.message(agent);
            if status == 200 && from.as_deref() == Some(deployment) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server {name} does not answer from {deployment} within 10 s: {status} from {from:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deployed_id(output: &Output, what: &str) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.split("Deployment ID: ").nth(1))
        .unwrap_or_else(|| panic!("{what}: no deployment id in\n{stdout}"))
        .trim()
        .to_owned()
}

#[test]
fn three_servers_on_one_postgres_registry_answer_what_one_of_them_deployed() {
    let Some(db) = Database::for_test() else {
        return;
    };
    let servers: Vec<Serve> = (0..3).map(|_| Serve::start(&db.url)).collect();
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);

    let v1 = a.deploy(
        "processor_v1.wasm",
        "v1",
        &["--wait"],
        "deploy v1 through A",
    );
    b.answers_from("B", "processor", &v1);
    c.answers_from("C", "processor", &v1);

    let v3 = a.deploy(
        "processor_v3.wasm",
        "v3",
        &["--strategy", "direct", "--wait"],
        "deploy v3 direct through A",
    );
    a.answers_from("A", "processor", &v3);
    b.answers_from("B", "processor", &v3);
    c.answers_from("C", "processor", &v3);
}

#[test]
fn a_canary_whose_host_is_killed_is_taken_over_by_another_host_at_the_same_step() {
    let Some(db) = Database::for_test() else {
        return;
    };
    let mut servers: Vec<Serve> = (0..3).map(|_| Serve::start(&db.url)).collect();
    let v1 = servers[0].deploy(
        "processor_v1.wasm",
        "v1",
        &["--wait"],
        "deploy v1 through A",
    );
    let specs = tempfile::tempdir().unwrap();
    let spec = specs.path().join("long.yaml");
    std::fs::write(
        &spec,
        "deployment:\n  strategy: canary\n  judge: off\n  stages:\n    - canary: { weight: 10%, hold: 1h }\n    - canary: { weight: 50%, hold: 1h }\n    - full: 100%\n",
    )
    .unwrap();
    let v3 = servers[0].deploy(
        "processor_v3.wasm",
        "v3",
        &["--spec", spec.to_str().unwrap()],
        "start the canary through A",
    );
    let at_step = |serve: &Serve, step: u64, weight: f64| {
        let status = serve.json("/v1/agents/processor");
        (status["rollout"]["step"] == step
            && status["rollout"]["weight_set"].as_f64() == Some(weight))
        .then_some(status)
    };
    let wait_for = |what: &str, mut check: Box<dyn FnMut() -> Option<serde_json::Value> + '_>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(
        "A drives the canary at 10 %",
        Box::new(|| at_step(&servers[0], 1, 10.0)),
    );
    // Only A drives it. B refuses to roll the agent back meanwhile, naming A, and relays
    // an operator's promote to A.
    let refused = servers[1].caxton(&["rollback", &v1]);
    assert_ne!(refused.status.code(), Some(0));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("is driven by host"), "{said}");
    assert_eq!(
        servers[1].caxton(&["promote", &v3]).status.code(),
        Some(0),
        "promote one step through B, relayed to A"
    );
    let before = wait_for(
        "A drives the canary at 50 %",
        Box::new(|| at_step(&servers[0], 2, 50.0)),
    );
    // The stage is journaled a moment after A reports it: a takeover starts from what the
    // journal holds, so A is killed once the entry is committed.
    wait_for(
        "the journal holds step 2",
        Box::new(|| {
            let out = Command::new("psql")
                .arg(&db.url)
                .args(["-tA", "-c"])
                .arg("SELECT count(*) FROM rollout_journal WHERE kind = 'stage' AND record::jsonb ->> 'step' = '2'")
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout).trim() == "1").then_some(serde_json::Value::Null)
        }),
    );
    // B and C mirror the canary's split from the journal.
    for (name, serve) in [("B", &servers[1]), ("C", &servers[2])] {
        wait_for(
            &format!("{name} mirrors the canary at 50 %"),
            Box::new(|| {
                let status = serve.json("/v1/agents/processor");
                let mirrored = status["deployments"]
                    .as_array()?
                    .iter()
                    .any(|d| d["id"] == v3.as_str() && d["weight"].as_f64() == Some(50.0));
                (mirrored && status["rollout"].is_null() && status["driven_by"].is_string())
                    .then_some(status)
            }),
        );
    }

    let shown = servers[1].caxton(&["status", "processor"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("driven by host"), "{shown}");

    // SIGKILL of A: B or C takes the rollout over from the journal, at step 2 of 3.
    let mut a = servers.remove(0);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (driver, after) = loop {
        let statuses: Vec<serde_json::Value> = servers
            .iter()
            .map(|serve| serve.json("/v1/agents/processor"))
            .collect();
        let found = statuses.iter().position(|status| {
            status["rollout"]["step"] == 2 && status["rollout"]["weight_set"].as_f64() == Some(50.0)
        });
        if let Some(i) = found {
            break (i, statuses[i].clone());
        }
        assert!(
            Instant::now() < deadline,
            "no other host drives the canary at 50 % a minute after the SIGKILL: {statuses:#?}\n\
             history: {:#}",
            servers[0].json("/v1/agents/processor/history")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    assert_eq!(after["rollout"]["deployment"], v3.as_str(), "{after}");
    assert_eq!(
        after["rollout"]["stage"], before["rollout"]["stage"],
        "{after}"
    );
    assert_eq!(
        after["rollout"]["steps"], before["rollout"]["steps"],
        "{after}"
    );
    assert_eq!(after["production"], v1.as_str());
    eprintln!(
        "the rollout was taken over {took:?} after the SIGKILL (lease time-to-live {LEASE_TTL})"
    );
    let other = 1 - driver;
    assert!(
        servers[other].json("/v1/agents/processor")["rollout"].is_null(),
        "exactly one host drives it"
    );

    // The new driver takes commands; every host answers from v3 once it is promoted.
    assert_eq!(
        servers[driver]
            .caxton(&["promote", &v3, "--full"])
            .status
            .code(),
        Some(0),
        "promote --full through the new driver"
    );
    servers[driver].answers_from("the new driver", "processor", &v3);
    servers[other].answers_from("the other host", "processor", &v3);
}

/// A PostgreSQL server of this test's own, started by `.ci/postgres` in a state directory
/// of its own; stopped and removed at the end.
struct OwnServer {
    state: PathBuf,
    url: String,
}

impl OwnServer {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres")
    }

    fn run(state: &Path, action: &str) -> String {
        let out = Command::new("bash")
            .arg(Self::script())
            .arg(action)
            .env("CAXTON_POSTGRES_STATE", state)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            ".ci/postgres {action}: {}",
            out.status
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("CAXTON_TEST_POSTGRES_URL="))
            .unwrap_or_default()
            .to_owned()
    }

    fn start() -> OwnServer {
        // Not a private temporary directory: the server runs as an ordinary user, which
        // must reach its data directory.
        let state = std::env::temp_dir().join(format!(
            "caxton-test-restart-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        let url = Self::run(&state, "start");
        assert!(url.starts_with("postgres://"), "{url}");
        OwnServer { state, url }
    }

    fn restart(&self) {
        Self::run(&self.state, "restart");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        Self::run(&self.state, "stop");
    }
}

#[test]
fn hosts_reconnect_and_catch_up_when_the_registry_server_restarts_under_them() {
    if std::env::var("CAXTON_TEST_POSTGRES_URL").map_or(true, |url| url.is_empty()) {
        return skip(
            "CAXTON_TEST_POSTGRES_URL is not set (the PostgreSQL server is not installed)",
        );
    }
    let server = OwnServer::start();
    let (a, b) = (Serve::start(&server.url), Serve::start(&server.url));
    let v1 = a.deploy(
        "processor_v1.wasm",
        "v1",
        &["--wait"],
        "deploy v1 through A",
    );
    b.answers_from("B", "processor", &v1);

    // The registry's server restarts: every connection of both hosts is cut.
    server.restart();
    let restarted = Instant::now();
    // Both keep answering from what they loaded meanwhile.
    a.answers_from("A", "processor", &v1);
    b.answers_from("B", "processor", &v1);
    // A change made through A after the restart reaches B: A's pool reconnects, B's
    // change feed listens again and re-reads what it may have missed.
    let v3 = a.deploy(
        "processor_v3.wasm",
        "v3",
        &["--strategy", "direct", "--wait"],
        "deploy v3 through A after the restart",
    );
    b.answers_from("B", "processor", &v3);
    eprintln!(
        "B answered from v3 {:?} after the registry restarted",
        restarted.elapsed()
    );
    let history = b.json("/v1/agents/processor/history");
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["deployment"] == v3.as_str() && entry["action"] == "promoted"),
        "{history:#}"
    );
}
