//! Throwaway databases for tests: a private cluster in a new temporary folder, started by the
//! same code as the station's own and removed on drop.
//!
//! Public rather than `cfg(test)` so that integration tests and other crates' tests can use it.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use super::{Database, DbOptions};

/// A private cluster in its own temporary data directory, with the migrations applied.
///
/// Dropping it stops the server and removes the folder.
#[derive(Debug)]
pub struct TestDatabase {
    database: Option<Database>,
    data_dir: PathBuf,
}

impl TestDatabase {
    /// Starts a throwaway cluster with the default test options.
    ///
    /// # Panics
    ///
    /// Panics with the error when the cluster cannot be started, which fails the calling test.
    pub async fn new() -> TestDatabase {
        TestDatabase::with_options(&TestDatabase::options()).await
    }

    /// Starts a throwaway cluster with `options`, best built from [`TestDatabase::options`].
    ///
    /// # Panics
    ///
    /// Panics with the error when the cluster cannot be started.
    pub async fn with_options(options: &DbOptions) -> TestDatabase {
        let data_dir = make_data_dir();
        match Database::open_with(&data_dir, None, options).await {
            Ok(database) => TestDatabase {
                database: Some(database),
                data_dir,
            },
            Err(err) => {
                let _ = std::fs::remove_dir_all(&data_dir);
                panic!(
                    "failed to start a test database in {}: {err}",
                    data_dir.display()
                );
            }
        }
    }

    /// Returns the options for test clusters: no syncing to disk, which a throwaway cluster does
    /// not need.
    pub fn options() -> DbOptions {
        DbOptions {
            durable: false,
            ..DbOptions::default()
        }
    }

    /// Returns the pool.
    pub fn pool(&self) -> &PgPool {
        &self.database().pool
    }

    /// Returns the database.
    pub fn database(&self) -> &Database {
        self.database
            .as_ref()
            .expect("the database is only taken out in drop")
    }

    /// Returns options for opening more connections or pools to the same database.
    pub fn connect_options(&self) -> &PgConnectOptions {
        self.database().connect_options()
    }

    /// Returns the temporary data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // The server must stop before its files are removed.
        drop(self.database.take());
        if let Err(err) = std::fs::remove_dir_all(&self.data_dir) {
            tracing::warn!(dir = %self.data_dir.display(), error = %err, "failed to remove a test data directory");
        }
    }
}

/// Creates `<temp>/station-test-<random>` with mode 0711, so that the `postgres` account can pass
/// through it to the cluster folder when the tests run as root.
fn make_data_dir() -> PathBuf {
    let temp = std::env::temp_dir();
    loop {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the operating system provides random bytes");
        let dir = temp.join(format!("station-test-{}", hex::encode(random)));
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {
                // The umask may have removed the search bits.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                    .expect("a new folder's owner can change its mode");
                return dir;
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => panic!(
                "failed to create a test data directory in {}: {err}",
                temp.display()
            ),
        }
    }
}
