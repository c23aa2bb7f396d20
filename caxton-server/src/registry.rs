//! Where `caxton serve` keeps its deployments, and the host it builds over them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use caxton_core::{ArtifactStore, DeploymentStore, RolloutJournal, RolloutLeases};
use caxton_host::{ConfigSource, DiskCacheKey, EngineConfig, Host};
use caxton_postgres::PostgresStore;
use caxton_sqlite::SqliteStore;

use crate::fleet::Follower;

/// The default registry: a SQLite file under `./.caxton/`.
pub const DEFAULT_REGISTRY: &str = "sqlite:.caxton/registry.db";

/// Environment variables named `CAXTON_SECRET_<NAME>` hold the host's secrets; the secret's
/// name is `<NAME>` in lower case with `_` read as `-` (`CAXTON_SECRET_OPENAI_API_KEY` is
/// `openai-api-key`). An agent reads only the secrets its deployment was granted.
pub const SECRET_ENV_PREFIX: &str = "CAXTON_SECRET_";

/// A registry URL: `sqlite:PATH` or `postgres://…`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Registry {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server shared by a fleet of hosts.
    Postgres(String),
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Registry::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            // A PostgreSQL URL may carry a password.
            Registry::Postgres(_) => f.write_str("Postgres(<redacted>)"),
        }
    }
}

/// Why a registry could not be named or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The URL has no scheme Caxton knows.
    #[error("registry `{url}` is not `sqlite:PATH` or `postgres://…`")]
    UnknownScheme {
        /// What was given (a PostgreSQL URL is not echoed: it may hold a password).
        url: String,
    },
    /// `sqlite:` with no path.
    #[error("registry `sqlite:` names no file")]
    EmptyPath,
    /// The registry's directory could not be made.
    #[error("cannot create the registry directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite file could not be opened.
    #[error("cannot open the registry {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<caxton_sqlite::OpenError>,
    },
    /// The PostgreSQL registry could not be connected to or migrated (the text names the
    /// server as `user@host:port/database`, never with the password).
    #[error("cannot open the PostgreSQL registry: {source}")]
    Postgres {
        /// Why.
        #[source]
        source: Box<caxton_postgres::ConnectError>,
    },
    /// The compiled-module cache's key could not be read or made.
    #[error("cannot use the compiled-module cache key {path}: {source}")]
    CacheKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: caxton_host::DiskCacheError,
    },
    /// The host could not start.
    #[error("the host could not start: {0}")]
    Host(#[from] caxton_host::BuildError),
}

impl FromStr for Registry {
    type Err = RegistryError;

    fn from_str(url: &str) -> Result<Self, RegistryError> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(RegistryError::EmptyPath);
            }
            Ok(Registry::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Registry::Postgres(url.to_owned()))
        } else {
            let shown = if url.contains('@') {
                "<a URL with credentials>".to_owned()
            } else {
                url.to_owned()
            };
            Err(RegistryError::UnknownScheme { url: shown })
        }
    }
}

impl Registry {
    /// Opens the registry and builds a host over it: deployments, audit, artifacts and the
    /// rollout journal in the registry; compiled modules cached in `cache/` beside a SQLite
    /// file, authenticated with the key in `cache.key` (made `0600` on first use). Call
    /// [`Host::recover`] next to pick up where the last process stopped.
    pub fn open_host(&self, secrets: ConfigSource) -> Result<Host, RegistryError> {
        self.open_host_with(secrets, caxton_host::DEFAULT_LEASE_TTL)
    }

    /// [`open_host`](Registry::open_host) with the time-to-live of the host's rollout
    /// leases: on a PostgreSQL registry the leases are in the database, and another host
    /// takes a rollout over about `lease_ttl` after the host driving it died. A SQLite
    /// registry has one host, whose leases stay in memory.
    pub fn open_host_with(
        &self,
        secrets: ConfigSource,
        lease_ttl: Duration,
    ) -> Result<Host, RegistryError> {
        match self {
            Registry::Sqlite(path) => open_sqlite_host(path, secrets, lease_ttl),
            Registry::Postgres(url) => {
                open_postgres_host(url, Path::new(".caxton"), secrets, lease_ttl)
            }
        }
    }
}

impl Registry {
    /// For a PostgreSQL registry, a [`Follower`] that keeps `host` in line with the changes
    /// the other hosts on the registry commit (run it beside the server); `None` for a
    /// SQLite registry, which has one host. Opens a connection pool of its own.
    pub fn follower(&self, host: Arc<Host>) -> Result<Option<Follower>, RegistryError> {
        match self {
            Registry::Sqlite(_) => Ok(None),
            Registry::Postgres(url) => {
                let store = PostgresStore::builder(url.as_str())
                    .pool_size(2)
                    .connect()
                    .map_err(|source| RegistryError::Postgres {
                        source: Box::new(source),
                    })?;
                Ok(Some(Follower::new(store, host)))
            }
        }
    }
}

fn open_sqlite_host(
    path: &Path,
    secrets: ConfigSource,
    lease_ttl: Duration,
) -> Result<Host, RegistryError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    let store = SqliteStore::open(path).map_err(|source| RegistryError::Sqlite {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    host_over(store, &dir, secrets, None, lease_ttl)
}

/// A host over the PostgreSQL registry at `url`: deployments, audit, artifacts and the
/// journal in the database (shared by every host on it); compiled modules cached in
/// `state/cache`, a local directory of this host's, with the key `state/cache.key`.
fn open_postgres_host(
    url: &str,
    state: &Path,
    secrets: ConfigSource,
    lease_ttl: Duration,
) -> Result<Host, RegistryError> {
    create_private_dir(state)?;
    let store = PostgresStore::connect(url).map_err(|source| RegistryError::Postgres {
        source: Box::new(source),
    })?;
    let leases: Arc<dyn RolloutLeases> = Arc::new(store.clone());
    host_over(store, state, secrets, Some(leases), lease_ttl)
}

/// A host whose registry, artifact store and journal are all `store`, with its compiled
/// modules cached in `dir/cache` under the key in `dir/cache.key` (made `0600` on first
/// use).
fn host_over<S>(
    store: S,
    dir: &Path,
    secrets: ConfigSource,
    leases: Option<Arc<dyn RolloutLeases>>,
    lease_ttl: Duration,
) -> Result<Host, RegistryError>
where
    S: DeploymentStore + ArtifactStore + RolloutJournal + Clone + 'static,
{
    let key_path = dir.join("cache.key");
    let key =
        DiskCacheKey::load_or_create(&key_path).map_err(|source| RegistryError::CacheKey {
            path: key_path,
            source,
        })?;
    let cache = dir.join("cache");
    create_private_dir(&cache)?;
    let mut builder = Host::builder().lease_ttl(lease_ttl);
    if let Some(leases) = leases {
        builder = builder.leases(leases);
    }
    let host = builder
        .store(Arc::new(store.clone()))
        .artifacts(Arc::new(store.clone()))
        .journal(Arc::new(store))
        .engine(EngineConfig::default().disk_cache(cache, key))
        .secrets(Arc::new(secrets))
        .build()?;
    Ok(host)
}

fn create_private_dir(dir: &Path) -> Result<(), RegistryError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|source| RegistryError::Directory {
            path: dir.to_path_buf(),
            source,
        })
}

/// The host's secrets from `CAXTON_SECRET_*` variables among `vars` (see
/// [`SECRET_ENV_PREFIX`]).
pub fn secrets_from_env(vars: impl IntoIterator<Item = (String, String)>) -> ConfigSource {
    let secrets: BTreeMap<String, String> = vars
        .into_iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(SECRET_ENV_PREFIX)?;
            (!name.is_empty()).then(|| (name.to_ascii_lowercase().replace('_', "-"), value))
        })
        .collect();
    ConfigSource::from_map(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls_parse() {
        assert_eq!(
            "sqlite:.caxton/registry.db".parse::<Registry>().unwrap(),
            Registry::Sqlite(PathBuf::from(".caxton/registry.db"))
        );
        assert_eq!(
            "sqlite:///var/lib/caxton.db".parse::<Registry>().unwrap(),
            Registry::Sqlite(PathBuf::from("/var/lib/caxton.db"))
        );
        assert!(matches!(
            "postgres://caxton:pw@db/caxton"
                .parse::<Registry>()
                .unwrap(),
            Registry::Postgres(_)
        ));
        assert!(matches!(
            "sqlite:".parse::<Registry>(),
            Err(RegistryError::EmptyPath)
        ));
        let error = "mysql://user:pw@db".parse::<Registry>().unwrap_err();
        assert!(!error.to_string().contains("pw"), "{error}");
    }

    #[test]
    fn a_postgres_url_is_never_printed() {
        let registry: Registry = "postgres://caxton:hunter2@db/caxton".parse().unwrap();
        assert!(!format!("{registry:?}").contains("hunter2"));
    }

    #[test]
    fn secrets_come_from_prefixed_variables_only() {
        let secrets = secrets_from_env([
            ("CAXTON_SECRET_OPENAI_API_KEY".to_owned(), "sk-1".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
            ("CAXTON_SECRET_".to_owned(), "empty name".to_owned()),
        ]);
        assert_eq!(secrets.get("openai-api-key").as_deref(), Some("sk-1"));
        assert_eq!(secrets.get("home"), None);
        assert_eq!(secrets.get(""), None);
    }

    #[test]
    fn a_sqlite_registry_opens_and_makes_its_directory_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("registry.db");
        let host = Registry::Sqlite(path.clone())
            .open_host(ConfigSource::new())
            .unwrap();
        drop(host);
        assert!(path.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }

    /// A host on a PostgreSQL registry deploys; a new host on the same database (a
    /// restart) recovers and routes to the same production. Needs the test server
    /// (`CAXTON_TEST_POSTGRES_URL`, from `.ci/postgres`): skipped without it, except in
    /// CI, where it fails.
    #[test]
    fn a_postgres_registry_keeps_the_production_across_a_restart() {
        use caxton_host::{DeployRequest, ModuleSource};

        let server = match std::env::var("CAXTON_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var_os("CI").is_some() => {
                panic!("CAXTON_TEST_POSTGRES_URL is not set, and CI is: run .ci/postgres")
            }
            _ => {
                eprintln!("note: skipped: CAXTON_TEST_POSTGRES_URL is not set");
                return;
            }
        };
        let db = caxton_postgres::ScratchDatabase::create(&server).unwrap();
        let registry: Registry = db.url().parse().unwrap();
        let Registry::Postgres(url) = &registry else {
            panic!("{registry:?}")
        };
        let state = tempfile::tempdir().unwrap();
        let agent = caxton_core::AgentId::new("processor").unwrap();
        let module = ModuleSource::Bytes(caxton_wasm::fixtures::tagged_echo("v1:").into());
        let v1 = {
            let host = open_postgres_host(
                url,
                state.path(),
                ConfigSource::new(),
                caxton_host::DEFAULT_LEASE_TTL,
            )
            .unwrap();
            let v1 = futures::executor::block_on(async {
                let deployed = host
                    .deploy(
                        DeployRequest::builder(agent.clone(), module)
                            .label("v1")
                            .build(),
                    )
                    .await
                    .unwrap();
                deployed.rollout.wait().await.unwrap();
                deployed.deployment.id
            });
            assert_eq!(host.send(&agent, None, b"x").unwrap().deployment, v1);
            v1
        };
        // The restart: a new host on the same database and a fresh cache directory.
        let state = tempfile::tempdir().unwrap();
        let host = open_postgres_host(
            url,
            state.path(),
            ConfigSource::new(),
            caxton_host::DEFAULT_LEASE_TTL,
        )
        .unwrap();
        let recovery = futures::executor::block_on(host.recover()).unwrap();
        assert_eq!(recovery.agents, 1, "{recovery:?}");
        let delivery = host.send(&agent, None, b"x").unwrap();
        assert_eq!(delivery.deployment, v1);
        assert_eq!(delivery.reply, b"v1:x");
    }
}
