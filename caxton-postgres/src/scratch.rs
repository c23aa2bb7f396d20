//! [`ScratchDatabase`]: a throwaway database on a server, for tests and benchmarks.

use std::fmt;
use std::future::Future;

use tokio_postgres::{Config, NoTls};

use crate::ConnectError;

/// A database made with a random name (`caxton_test_…`) on a PostgreSQL server, and
/// dropped (`WITH (FORCE)`) when this value is dropped, so that tests running at once on
/// one server never see each other's registries. For tests and benchmarks.
pub struct ScratchDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl fmt::Debug for ScratchDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScratchDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ScratchDatabase {
    /// Creates a database on the server of `server_url` (connecting as that URL says,
    /// to the database it names), with a random name.
    pub fn create(server_url: &str) -> Result<ScratchDatabase, ConnectError> {
        let name = format!("caxton_test_{:016x}", rand::random::<u64>());
        let sql = format!("CREATE DATABASE {name}");
        admin(server_url, sql)?;
        Ok(ScratchDatabase {
            url: with_database(server_url, &name),
            server_url: server_url.to_owned(),
            name,
        })
    }

    /// The URL of the database: the server's URL with its database replaced.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Best effort: a database left behind is harmless and has a telling name.
        let _ = admin(&self.server_url, sql);
    }
}

/// Runs one statement on the server, on a thread of its own (so it may be called from
/// inside any runtime, or none).
fn admin(server_url: &str, sql: String) -> Result<(), ConnectError> {
    let config: Config = server_url
        .parse()
        .map_err(|source| ConnectError::BadUrl { source })?;
    let target = crate::target(&config);
    on_own_thread(async move {
        let (client, connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|source| ConnectError::Connect {
                    target: target.clone(),
                    source,
                })?;
        let driver = tokio::spawn(connection);
        let done = client
            .batch_execute(&sql)
            .await
            .map_err(|source| ConnectError::Connect { target, source });
        drop(client);
        let _ = driver.await;
        done
    })
}

fn on_own_thread<T: Send + 'static>(
    task: impl Future<Output = Result<T, ConnectError>> + Send + 'static,
) -> Result<T, ConnectError> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ConnectError::Runtime { source })?;
        runtime.block_on(task)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `url` with its database replaced by `name`: the path of a `postgres://` URL, or a
/// `dbname` appended to a key-value connection string.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let query = tail.find('?').map_or("", |i| &tail[i..]);
            return format!("{scheme}{authority}/{name}{query}");
        }
    }
    format!("{url} dbname={name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u:pw@127.0.0.1:5432/postgres", "x"),
            "postgres://u:pw@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u@h/db?sslmode=disable", "x"),
            "postgresql://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h?connect_timeout=3", "x"),
            "postgres://u@h/x?connect_timeout=3"
        );
        assert_eq!(
            with_database("host=h user=u", "x"),
            "host=h user=u dbname=x"
        );
    }
}
