//! The station's database: a connection pool to PostgreSQL with the migrations applied, and with no
//! `DATABASE_URL` the private cluster that serves it.
//!
//! The private cluster is initialised once in `<data_dir>/postgres`, listens only on a Unix
//! socket, and stops when the [`Database`] is closed or dropped. See [`cluster`] for its layout.
//! Tests get throwaway clusters from the same code through [`testing::TestDatabase`].

pub mod binaries;
pub mod cluster;
pub mod pidfile;
mod process;
pub mod server_user;
mod setup;
mod socket;
pub mod testing;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres, Transaction};

pub use binaries::ServerBinaries;
pub use cluster::Cluster;

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No folder on `PATH` or under `/usr/lib/postgresql` contains both `initdb` and `pg_ctl`.
    #[error(
        "PostgreSQL server programs (initdb, pg_ctl) not found in {}; install them with \
         `apt-get install postgresql`, or set DATABASE_URL to use an existing server",
        display_paths(searched)
    )]
    ServerBinariesMissing {
        /// Folders that were searched, in order.
        searched: Vec<PathBuf>,
    },

    /// The station runs as root, which PostgreSQL refuses, and there is no account to run it as.
    #[error(
        "the station runs as root, which PostgreSQL refuses, and there is no `{name}` system account \
         to run the server as; install it with `apt-get install postgresql`, or run the station as \
         an unprivileged user"
    )]
    ServerUserMissing {
        /// The account looked up in `/etc/passwd`.
        name: &'static str,
    },

    /// The server account has user ID 0, so switching to it would still run the server as root.
    #[error(
        "the `{name}` system account has user ID 0; PostgreSQL refuses to run as root, so give it its own user ID"
    )]
    ServerUserIsRoot {
        /// The account looked up in `/etc/passwd`.
        name: &'static str,
    },

    /// The server account cannot search a folder on the way to the cluster.
    #[error(
        "the PostgreSQL server runs as `{user}`, which cannot enter {} (mode {mode:o}); choose a \
         data directory that `{user}` can reach, or grant search permission with `chmod o+x {}`",
        dir.display(), dir.display()
    )]
    DataDirUnreachable {
        /// The first folder the account cannot search.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The server account.
        user: String,
    },

    /// The cluster folder belongs to another account than the one that runs the server.
    #[error(
        "{} belongs to user ID {owner}, but the PostgreSQL server runs as `{user}` (user ID {uid}); \
         give the folder to that account with `chown -R {uid} {}`",
        dir.display(), dir.display()
    )]
    WrongOwner {
        /// The cluster folder.
        dir: PathBuf,
        /// Its owner's user ID.
        owner: u32,
        /// The server account.
        user: String,
        /// The server account's user ID.
        uid: u32,
    },

    /// Another station process holds the cluster's lock.
    #[error(
        "data directory {} is in use by another station process (PID {pid}); stop that process or \
         choose another data directory",
        data_dir.display()
    )]
    InUse {
        /// The data directory.
        data_dir: PathBuf,
        /// The PID the holder wrote into the lock file, or "unknown".
        pid: String,
    },

    /// The cluster folder is not empty but has no `PG_VERSION`, as after an interrupted `initdb`.
    #[error(
        "{} holds an incomplete PostgreSQL cluster (no PG_VERSION file), probably from an \
         interrupted first start; move the folder away and start again",
        pgdata.display()
    )]
    IncompleteCluster {
        /// The cluster's data folder.
        pgdata: PathBuf,
    },

    /// `initdb` exited with an error.
    #[error("initdb failed to create a cluster in {}: {output}", pgdata.display())]
    InitdbFailed {
        /// The cluster's data folder.
        pgdata: PathBuf,
        /// The output of initdb.
        output: String,
    },

    /// The existing cluster was made by another major version than the programs found.
    #[error(
        "the cluster in {} was created by PostgreSQL {cluster_major}, but the server programs in \
         {} are version {binaries_major}; install postgresql-{cluster_major}, or upgrade the cluster \
         with pg_upgrade",
        pgdata.display(), binaries_dir.display()
    )]
    ServerVersionMismatch {
        /// The cluster's data folder.
        pgdata: PathBuf,
        /// Major version in `PG_VERSION`.
        cluster_major: u32,
        /// Folder of the programs found.
        binaries_dir: PathBuf,
        /// Their major version.
        binaries_major: u32,
    },

    /// A version number could not be read from a program or from `PG_VERSION`.
    #[error("could not read a PostgreSQL version from {}: {output:?}", program.display())]
    UnknownServerVersion {
        /// The program or file read.
        program: PathBuf,
        /// The text that was read.
        output: String,
    },

    /// A server program could not be run at all.
    #[error("failed to run {}: {source}", program.display())]
    RunProgram {
        /// The program.
        program: PathBuf,
        /// The error from the operating system.
        source: std::io::Error,
    },

    /// The server exited during start. Its log shows the reason.
    #[error(
        "the PostgreSQL server in {} failed to start: {output}\nlast lines of its log:\n{log_tail}",
        pgdata.display()
    )]
    StartFailed {
        /// The cluster's data folder.
        pgdata: PathBuf,
        /// The output of pg_ctl.
        output: String,
        /// The end of `server.log`.
        log_tail: String,
    },

    /// The server did not accept connections in time; it has been stopped.
    #[error(
        "the PostgreSQL server in {} did not start within {timeout:?}; it was stopped\nlast lines \
         of its log:\n{log_tail}",
        pgdata.display()
    )]
    StartTimedOut {
        /// The cluster's data folder.
        pgdata: PathBuf,
        /// The start timeout.
        timeout: Duration,
        /// The end of `server.log`.
        log_tail: String,
    },

    /// A server left running by a crashed station process does not accept connections.
    #[error(
        "a PostgreSQL server (PID {pid}) is already running from {} but does not accept \
         connections: {source}; stop it with `pg_ctl stop -D {}` or end process {pid}",
        pgdata.display(), pgdata.display()
    )]
    AdoptFailed {
        /// The server's PID from `postmaster.pid`.
        pid: i32,
        /// The cluster's data folder.
        pgdata: PathBuf,
        /// The connection error.
        source: sqlx::Error,
    },

    /// `pg_ctl stop` failed.
    #[error("failed to stop the PostgreSQL server in {}: {output}", pgdata.display())]
    StopFailed {
        /// The cluster's data folder.
        pgdata: PathBuf,
        /// The output of pg_ctl.
        output: String,
    },

    /// The data directory's path has a character that pg_ctl cannot pass to its shell.
    #[error(
        "data directory {} contains {character:?}, which pg_ctl cannot pass to its shell; choose a \
         path without double quotes, `$`, backquotes, backslashes or line breaks",
        path.display()
    )]
    UnsupportedPath {
        /// The data directory.
        path: PathBuf,
        /// The first character that pg_ctl cannot handle.
        character: char,
    },

    /// Even a folder in the temporary directory gives a socket path longer than `sun_path` allows.
    #[error(
        "the socket path {}/.s.PGSQL.5432 is longer than the 107 bytes a Unix socket allows; set \
         TMPDIR to a short folder",
        path.display()
    )]
    SocketPathTooLong {
        /// The folder that was too deep.
        path: PathBuf,
    },

    /// A file operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// The failed operation, as a verb phrase.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The error from the operating system.
        source: std::io::Error,
    },

    /// `DATABASE_URL` is not a PostgreSQL URL. The message leaves out the URL, which may contain a
    /// password.
    #[error(
        "invalid DATABASE_URL: {reason}; expected postgres://USER@HOST:PORT/DATABASE or \
         postgres:///DATABASE?host=/socket/folder"
    )]
    InvalidUrl {
        /// The problem found.
        reason: String,
    },

    /// The server could not be reached or refused the connection.
    #[error("failed to connect to {target}: {source}")]
    Connect {
        /// The server, described without its password.
        target: String,
        /// The connection error.
        source: sqlx::Error,
    },

    /// A migration failed, or the database contains migrations this station does not know.
    #[error("failed to apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Every pooled connection stayed in use for the whole acquire timeout.
    #[error(
        "database busy: no pooled connection became free within {waited:?}; retry later, or raise \
         the connection pool size"
    )]
    Busy {
        /// The pool's acquire timeout.
        waited: Duration,
    },

    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Settings of [`Database::open_with`].
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing with [`DbError::Busy`].
    pub acquire_timeout: Duration,
    /// How long the private server may take to start, and to stop.
    pub start_timeout: Duration,
    /// Whether the private cluster syncs to disk. Only throwaway test clusters turn this off:
    /// a crash of the machine can then lose committed transactions.
    pub durable: bool,
    /// Folders searched for the server programs, in `PATH` syntax; `None` uses `PATH`.
    pub search_path: Option<OsString>,
    /// Folder with one `<major version>/bin` folder per installed server version.
    pub lib_root: PathBuf,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(60),
            durable: true,
            search_path: None,
            lib_root: PathBuf::from(binaries::DEBIAN_LIB_ROOT),
        }
    }
}

/// A connection pool with the station's migrations applied, and the private cluster behind it
/// when there is one.
#[derive(Debug)]
pub struct Database {
    /// The pool. Its connections fail once the database is closed.
    pub pool: PgPool,
    connect_options: PgConnectOptions,
    // Declared after the pool so that the pool is dropped before the server stops.
    cluster: Option<Cluster>,
}

impl Database {
    /// Opens the database with default [`DbOptions`].
    ///
    /// With `database_url`, connects to that server. Without, starts the private cluster in
    /// `<data_dir>/postgres`, initialising it on first use. Applies the migrations either way.
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Database, DbError> {
        Database::open_with(data_dir, database_url, &DbOptions::default()).await
    }

    /// Opens the database like [`Database::open`], with explicit options.
    pub async fn open_with(
        data_dir: &Path,
        database_url: Option<&str>,
        options: &DbOptions,
    ) -> Result<Database, DbError> {
        let (connect_options, cluster) = match database_url {
            Some(url) => (parse_database_url(url)?, None),
            None => {
                let data_dir = data_dir.to_owned();
                let cluster_options = options.clone();
                let cluster = tokio::task::spawn_blocking(move || {
                    Cluster::start(&data_dir, &cluster_options)
                })
                .await
                .map_err(|err| DbError::Io {
                    action: "start the server for",
                    path: PathBuf::from("the private cluster"),
                    source: std::io::Error::other(err.to_string()),
                })??;
                create_station_database(&cluster).await?;
                (cluster.connect_options(), Some(cluster))
            }
        };

        let target = describe(&connect_options);
        // A pool that cannot connect reports only "pool timed out", so one direct connection
        // first surfaces the real cause, such as "connection refused" or a wrong password.
        match tokio::time::timeout(
            options.acquire_timeout,
            sqlx::postgres::PgConnection::connect_with(&connect_options),
        )
        .await
        {
            Ok(Ok(connection)) => {
                if let Err(error) = sqlx::Connection::close(connection).await {
                    tracing::debug!(%error, "closing the first database connection failed");
                }
            }
            Ok(Err(source)) => return Err(DbError::Connect { target, source }),
            Err(_) => {
                return Err(DbError::Connect {
                    target,
                    source: sqlx::Error::PoolTimedOut,
                });
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect_options.clone())
            .await
            .map_err(|source| DbError::Connect { target, source })?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        tracing::info!(target = %describe(&connect_options), "database open, migrations applied");

        Ok(Database {
            pool,
            connect_options,
            cluster,
        })
    }

    /// Closes the pool, then stops the private cluster with a fast shutdown.
    pub async fn close(self) {
        let Database { pool, cluster, .. } = self;
        pool.close().await;
        if let Some(mut cluster) = cluster {
            let stopped = tokio::task::spawn_blocking(move || cluster.stop()).await;
            match stopped {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "failed to stop the private PostgreSQL server")
                }
                Err(err) => {
                    tracing::error!(error = %err, "the task stopping the private PostgreSQL server failed")
                }
            }
        }
    }

    /// Returns the options the pool connects with, for opening more connections or pools to the
    /// same database.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.connect_options
    }

    /// Returns the private cluster, or `None` when connected through a URL.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }
}

/// Parses `DATABASE_URL`, which sqlx would accept with any scheme.
fn parse_database_url(url: &str) -> Result<PgConnectOptions, DbError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        let scheme = url.split_once("://").map_or("none", |(scheme, _)| scheme);
        return Err(DbError::InvalidUrl {
            reason: format!("the scheme is {scheme:?}, not postgres"),
        });
    }
    url.parse().map_err(|err: sqlx::Error| DbError::InvalidUrl {
        reason: err.to_string(),
    })
}

/// Takes a connection from the pool; a pool that stays exhausted for its acquire timeout gives
/// [`DbError::Busy`] instead of waiting on.
pub async fn acquire(pool: &PgPool) -> Result<PoolConnection<Postgres>, DbError> {
    pool.acquire().await.map_err(|err| pool_error(pool, err))
}

/// Begins a transaction on a pooled connection, failing with [`DbError::Busy`] like [`acquire`].
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, DbError> {
    let conn = acquire(pool).await?;
    Transaction::begin(conn, None).await.map_err(DbError::Query)
}

fn pool_error(pool: &PgPool, err: sqlx::Error) -> DbError {
    match err {
        sqlx::Error::PoolTimedOut => DbError::Busy {
            waited: pool.options().get_acquire_timeout(),
        },
        other => DbError::Query(other),
    }
}

/// Creates the station's database in a new cluster. `initdb` makes only the maintenance databases.
async fn create_station_database(cluster: &Cluster) -> Result<(), DbError> {
    let options = cluster.maintenance_connect_options();
    let mut conn = options
        .connect()
        .await
        .map_err(|source| match cluster.adopted_pid() {
            Some(pid) => DbError::AdoptFailed {
                pid,
                pgdata: cluster.root().join("data"),
                source,
            },
            None => DbError::Connect {
                target: describe(&options),
                source,
            },
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(cluster::DATABASE)
            .fetch_one(&mut conn)
            .await
            .map_err(DbError::Query)?;
    if !exists {
        // The name is a constant identifier; CREATE DATABASE takes no bind parameters.
        sqlx::query(&format!("CREATE DATABASE {}", cluster::DATABASE))
            .execute(&mut conn)
            .await
            .map_err(DbError::Query)?;
        tracing::info!(database = cluster::DATABASE, "created the station database");
    }
    conn.close().await.map_err(DbError::Query)?;
    Ok(())
}

/// Describes a server for messages, without the password.
fn describe(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("(default)");
    match options.get_socket() {
        Some(socket) => format!(
            "database `{database}` over the socket in {}",
            socket.display()
        ),
        None => format!(
            "database `{database}` on {}:{}",
            options.get_host(),
            options.get_port()
        ),
    }
}
