//! The two stores of the conformance suite: every event-log, projector and end-to-end test
//! runs once against NATS JetStream with PostgreSQL and once against the embedded SQLite
//! store, through the same ports.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use async_trait::async_trait;
use sems_app::{AppError, CommitFeed, EventLog};
use sems_eventlog::{
    JetStreamConfig, JetStreamFeed, JetStreamLog, SqliteFeed, SqliteLog, SqliteLogConfig,
};
use sems_readmodel::{
    IncidentReadModel, PgReadModel, PgReadModelConfig, ProjectionStore, SqliteReadModel,
    SqliteReadModelConfig,
};

use crate::{NatsServer, TestDatabase};

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nats-server (started on a free port) and a fresh PostgreSQL database.
    JetStream,
    /// SQLite files in a temporary data directory.
    Embedded,
}

/// Declares each listed `async fn name(backend: Backend)` as two tests, `jetstream::name`
/// and `embedded::name`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod jetstream {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::Backend::JetStream).await
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::Backend::Embedded).await
                }
            )*
        }
    };
}

/// A read model of either store.
#[derive(Clone)]
pub enum TestReadModel {
    /// PostgreSQL, one schema per generation.
    Pg(Arc<PgReadModel>),
    /// SQLite, one file per generation.
    Sqlite(Arc<SqliteReadModel>),
}

impl TestReadModel {
    /// As the projector's store.
    pub fn store(&self) -> Arc<dyn ProjectionStore> {
        match self {
            Self::Pg(m) => m.clone(),
            Self::Sqlite(m) => m.clone(),
        }
    }

    /// As the queries' store.
    pub fn reads(&self) -> Arc<dyn IncidentReadModel> {
        match self {
            Self::Pg(m) => m.clone(),
            Self::Sqlite(m) => m.clone(),
        }
    }

    /// Every row, in key order.
    pub async fn dump(&self) -> Result<Vec<String>, AppError> {
        match self {
            Self::Pg(m) => m.dump().await,
            Self::Sqlite(m) => m.dump().await,
        }
    }
}

#[async_trait]
impl IncidentReadModel for TestReadModel {
    async fn wait_for(&self, position: u64, deadline: std::time::Instant) -> Result<(), AppError> {
        self.reads().wait_for(position, deadline).await
    }

    async fn get_incident(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<sems_readmodel::IncidentDetail>, AppError> {
        self.reads().get_incident(id).await
    }

    async fn list_incidents(
        &self,
        query: &sems_readmodel::IncidentQuery,
    ) -> Result<sems_readmodel::Page<sems_readmodel::IncidentSummary>, AppError> {
        self.reads().list_incidents(query).await
    }

    async fn list_alerts(
        &self,
        query: &sems_readmodel::AlertQuery,
    ) -> Result<sems_readmodel::Page<sems_readmodel::AlertRow>, AppError> {
        self.reads().list_alerts(query).await
    }

    async fn incidents_per_risk(&self) -> Result<Vec<sems_readmodel::RiskIncidents>, AppError> {
        self.reads().incidents_per_risk().await
    }

    async fn alerts_awaiting_incident(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<sems_readmodel::AlertRow>, AppError> {
        self.reads()
            .alerts_awaiting_incident(older_than, limit)
            .await
    }
}

/// An event log of either store.
#[derive(Clone)]
pub enum TestLog {
    /// A JetStream stream.
    JetStream(Box<JetStreamLog>),
    /// A SQLite file.
    Sqlite(SqliteLog),
}

impl TestLog {
    /// As the port.
    pub fn port(&self) -> Arc<dyn EventLog> {
        match self {
            Self::JetStream(l) => Arc::new(JetStreamLog::clone(l)),
            Self::Sqlite(l) => Arc::new(l.clone()),
        }
    }

    /// Commits stored and the last position.
    pub async fn state(&self) -> anyhow::Result<(u64, u64)> {
        Ok(match self {
            Self::JetStream(l) => l.state().await?,
            Self::Sqlite(l) => l.state().await?,
        })
    }

    /// A projector's feed named `name`.
    pub fn feed(&self, name: &str) -> Box<dyn CommitFeed> {
        match self {
            Self::JetStream(l) => Box::new(JetStreamFeed::new(
                JetStreamLog::clone(l),
                name,
                Duration::from_secs(1),
            )),
            Self::Sqlite(l) => Box::new(SqliteFeed::new(l.clone())),
        }
    }
}

/// The running stores of one test: a nats-server and a database, or a data directory.
pub struct TestStores {
    /// Which.
    pub backend: Backend,
    nats: Option<NatsServer>,
    db: Option<TestDatabase>,
    dir: tempfile::TempDir,
}

impl TestStores {
    /// Starts them.
    pub async fn start(backend: Backend) -> anyhow::Result<Self> {
        let (nats, db) = match backend {
            Backend::JetStream => (
                Some(NatsServer::start()?),
                Some(TestDatabase::create().await?),
            ),
            Backend::Embedded => (None, None),
        };
        Ok(Self {
            backend,
            nats,
            db,
            dir: tempfile::tempdir()?,
        })
    }

    /// The nats-server, for JetStream.
    pub fn nats(&mut self) -> Option<&mut NatsServer> {
        self.nats.as_mut()
    }

    /// `SEMS_NATS_URL`, for JetStream.
    pub fn nats_url(&self) -> Option<String> {
        self.nats.as_ref().map(NatsServer::url)
    }

    /// `SEMS_DATABASE_URL`, for JetStream.
    pub fn database_url(&self) -> Option<String> {
        self.db.as_ref().map(|d| d.url().to_owned())
    }

    /// `SEMS_DATA_DIR`, for the embedded store (a temporary directory).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("sems-data")
    }

    /// The environment a `semsd` process needs to run on these stores.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match (self.nats_url(), self.database_url()) {
            (Some(nats), Some(db)) => vec![("SEMS_NATS_URL", nats), ("SEMS_DATABASE_URL", db)],
            _ => vec![("SEMS_DATA_DIR", self.data_dir().display().to_string())],
        }
    }

    /// Opens the event log (a new connection each call; for the embedded store, a second
    /// handle on the same file, as semsd opens it).
    pub async fn log(&self) -> anyhow::Result<TestLog> {
        Ok(match &self.nats {
            Some(nats) => {
                let client = async_nats::connect(nats.url()).await?;
                TestLog::JetStream(Box::new(
                    JetStreamLog::open(client, JetStreamConfig::default()).await?,
                ))
            }
            // A sweep of the aggregate index every 16 commits (65,536 in semsd), so the
            // conformance tests run with entries moving from the writer's memory into the
            // index table all the time.
            None => TestLog::Sqlite(
                SqliteLog::open(SqliteLogConfig {
                    index_sweep_commits: 16,
                    ..SqliteLogConfig::new(self.data_dir().join("events.db"))
                })
                .await?,
            ),
        })
    }

    /// Opens read-model generation `generation` (a PostgreSQL schema, or a SQLite file
    /// named as semsd names it).
    pub async fn read_model(&self, generation: &str) -> anyhow::Result<TestReadModel> {
        Ok(match &self.db {
            Some(db) => {
                let mut config = PgReadModelConfig::new(db.url());
                config.schema = generation.into();
                TestReadModel::Pg(Arc::new(PgReadModel::connect(&config).await?))
            }
            None => {
                let path = self.data_dir().join(format!("readmodel-{generation}.db"));
                // A sweep of the alert keys every 16 rows (65,536 in semsd), so the
                // conformance tests run with keys moving from memory into their table.
                let config = SqliteReadModelConfig {
                    key_sweep_rows: 16,
                    ..SqliteReadModelConfig::new(path)
                };
                TestReadModel::Sqlite(Arc::new(
                    SqliteReadModel::connect(&config)
                        .await
                        .context("open the SQLite read model")?,
                ))
            }
        })
    }
}
