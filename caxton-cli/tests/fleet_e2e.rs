//! End to end: three real `caxton serve` processes on one PostgreSQL registry. A
//! deployment made through one is answered by the other two within seconds. Needs the
//! test server (`CAXTON_TEST_POSTGRES_URL`, from `.ci/postgres`) and `psql` to make a
//! database of the test's own: skipped without them, except in CI, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CAXTON: &str = env!("CARGO_BIN_EXE_caxton");

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
    let server = match std::env::var("CAXTON_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => return skip("CAXTON_TEST_POSTGRES_URL is not set"),
    };
    let Some(db) = Database::create(&server) else {
        return;
    };
    let servers: Vec<Serve> = (0..3).map(|_| Serve::start(&db.url)).collect();
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);

    let v1 = deployed_id(
        &a.caxton(&[
            "deploy",
            "agent",
            sample("processor_v1.wasm").to_str().unwrap(),
            "--name",
            "processor",
            "--label",
            "v1",
            "--wait",
        ]),
        "deploy v1 through A",
    );
    b.answers_from("B", "processor", &v1);
    c.answers_from("C", "processor", &v1);

    let v3 = deployed_id(
        &a.caxton(&[
            "deploy",
            "agent",
            sample("processor_v3.wasm").to_str().unwrap(),
            "--name",
            "processor",
            "--label",
            "v3",
            "--strategy",
            "direct",
            "--wait",
        ]),
        "deploy v3 direct through A",
    );
    a.answers_from("A", "processor", &v3);
    b.answers_from("B", "processor", &v3);
    c.answers_from("C", "processor", &v3);
}
