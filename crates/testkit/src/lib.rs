//! Test-only helpers, never a dependency of production code: a real `nats-server` with
//! JetStream on a free port and a temporary store, killed on drop; a fresh PostgreSQL
//! database per test, dropped afterwards; and [`TestStores`], either store behind the same
//! ports, for the conformance suite ([`on_both_stores!`]); and [`readme`], the README's
//! walk-throughs read as tests.
//!
//! `SEMS_NATS_SERVER` names the nats-server binary (default `nats-server` on `PATH`, then
//! `/usr/sbin/nats-server`); `SEMS_TEST_DATABASE_URL` names an administrative PostgreSQL
//! connection (default `postgres://postgres@127.0.0.1:5432/postgres`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub mod readme;
mod stores;

pub use stores::{Backend, TestLog, TestReadModel, TestStores};

use anyhow::{Context as _, bail};
use sqlx::{Connection, PgConnection};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running nats-server with JetStream, its own port and store directory.
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh temporary store.
    pub fn start() -> anyhow::Result<Self> {
        let store = tempfile::tempdir()?;
        let mut server = Self {
            port: free_port(),
            store,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The store directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server with SIGKILL (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = nats_server_binary();
        let log = self.store.path().join("nats-server.log");
        let child = Command::new(&bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "start {} (install nats-server, or set SEMS_NATS_SERVER)",
                    bin.display()
                )
            })?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nats-server binary: `SEMS_NATS_SERVER`, else `nats-server` on `PATH`, else
/// `/usr/sbin/nats-server`.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SEMS_NATS_SERVER") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// Waits until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port} after {timeout:?}")
}

/// The administrative PostgreSQL URL tests create their databases through.
pub fn admin_database_url() -> String {
    std::env::var("SEMS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database, dropped when this value is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `sems_test_<random>`.
    pub async fn create() -> anyhow::Result<Self> {
        let admin = admin_database_url();
        let name = format!("sems_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .with_context(|| format!("connect to {admin} (is PostgreSQL running? see README)"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let url = match admin.rfind('/') {
            Some(i) if !admin[i + 1..].contains('@') => {
                let (base, rest) = admin.split_at(i + 1);
                let query = rest.find('?').map(|q| &rest[q..]).unwrap_or("");
                format!("{base}{name}{query}")
            }
            _ => bail!("cannot derive a database URL from {admin}"),
        };
        Ok(Self { name, url })
    }

    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_database_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A SQLite file (WAL) at `path` made by the first `count` migrations of `migrations` (a
/// crate's migrations directory), as an earlier version of the code left it: for testing the
/// migrations that follow.
pub async fn sqlite_at_migration(path: &Path, migrations: &Path, count: usize) -> sqlx::SqlitePool {
    let earlier = tempfile::tempdir().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(migrations)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".sql"))
        .collect();
    names.sort();
    assert!(
        names.len() >= count,
        "{} has fewer than {count} migrations",
        migrations.display()
    );
    for name in &names[..count] {
        std::fs::copy(migrations.join(name), earlier.path().join(name)).unwrap();
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(earlier.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

/// Checks a sweep's watermark update on a migrated embedded store: `update` binds
/// `through` and the two half-open ranges of `keyspace::two_spans`; SQLite must seek the
/// ranges (no `SCAN` in its plan: an expression of the prefix had it read all 4,096 rows),
/// and a sweep that wraps past the last range must move both pieces of `table`, nothing
/// else.
pub async fn assert_watermarks_move_by_seeks(
    conn: &mut sqlx::SqliteConnection,
    update: &'static str,
    table: &str,
) {
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {update}")))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert!(
        plan.iter().all(|row| !row.3.starts_with("SCAN")),
        "{update}: {plan:?}"
    );
    let [(a, b), (c, d)] = sems_app::keyspace::two_spans(4093, 6);
    sqlx::query(update)
        .bind(9_i64)
        .bind(a as i64)
        .bind(b as i64)
        .bind(c as i64)
        .bind(d as i64)
        .execute(&mut *conn)
        .await
        .unwrap();
    let moved: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT prefix FROM {table} WHERE through = 9 ORDER BY prefix"
    )))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(moved, [0, 1, 2, 4093, 4094, 4095], "{update}");
}
