//! The station's private PostgreSQL cluster: initialised once in `<data_dir>/postgres`, started
//! with the station, reachable only over a Unix socket, and stopped with the station.
//!
//! Layout of `<data_dir>/postgres` (mode 0700, owned by the server account):
//!
//! | path | contents |
//! | --- | --- |
//! | `data/` | the cluster (`PGDATA`) made by `initdb` |
//! | `data/station.conf` | socket and durability settings, rewritten at every start |
//! | `server.log` | the server's log, appended to by every start |
//! | `station.lock` | locked by the station process that uses the cluster, contains its PID |
//! | `.s.PGSQL.5432` | the server's socket, unless the path is too long (see [`choose_socket_dir`]) |
//!
//! Authentication is `trust` for local connections and `reject` for TCP, and the server has no
//! TCP listener (`listen_addresses = ''`). The folder's mode is the access control: only the server
//! account and root can reach the socket.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::binaries::{self, ServerBinaries};
use super::pidfile::{PidState, PostmasterPid};
use super::process::{log_tail, program_output, run, server_command};
use super::server_user::ServerUser;
use super::setup::{
    binaries_for_existing_cluster, check_path_characters, create_private_dir, initialise,
    lock_cluster,
};
use super::socket::{SHORT_SOCKET_PREFIX, choose_socket_dir, socket_dirs_setting};
use super::{DbError, DbOptions};

/// Name of the superuser role that `initdb` creates and the station connects as.
pub const ROLE: &str = "station";

/// Name of the database the station's tables live in.
pub const DATABASE: &str = "station";

/// Port of the private server. It only names the socket file, because the server has no TCP
/// listener.
pub(super) const PORT: u16 = 5432;

/// A running private cluster, stopped on [`Cluster::stop`] or drop.
#[derive(Debug)]
pub struct Cluster {
    binaries: ServerBinaries,
    user: ServerUser,
    root: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    stop_timeout: Duration,
    running: bool,
    adopted_pid: Option<i32>,
    /// Held for the cluster's lifetime; other station processes fail to lock it.
    _lock: File,
}

impl Cluster {
    /// Initialises the cluster in `<data_dir>/postgres` if needed and starts its server, or adopts
    /// a server that a crashed station process left running there.
    ///
    /// Blocks while the programs run; call it from `spawn_blocking` in async code.
    pub fn start(data_dir: &Path, options: &DbOptions) -> Result<Cluster, DbError> {
        let user = ServerUser::for_current_process()?;
        let path_var: Option<OsString> = match &options.search_path {
            Some(path) => Some(path.clone()),
            None => std::env::var_os("PATH"),
        };
        let mut binaries = binaries::locate(path_var.as_deref(), &options.lib_root)?;

        std::fs::create_dir_all(data_dir).map_err(|source| DbError::Io {
            action: "create the data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        let data_dir = data_dir.canonicalize().map_err(|source| DbError::Io {
            action: "resolve the data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        check_path_characters(&data_dir)?;
        let root = data_dir.join("postgres");
        create_private_dir(&root, &user)?;
        user.check_owns(&root)?;
        user.check_can_reach(&root)?;
        let lock = lock_cluster(&root, &data_dir)?;

        let pgdata = root.join("data");
        if pgdata.join("PG_VERSION").exists() {
            binaries = binaries_for_existing_cluster(binaries, &pgdata, &options.lib_root)?;
        } else {
            initialise(&binaries, &user, &root, &pgdata, options.durable)?;
        }

        let mut cluster = Cluster {
            binaries,
            user,
            root,
            pgdata,
            socket_dir: PathBuf::new(),
            port: PORT,
            stop_timeout: options.start_timeout,
            running: false,
            adopted_pid: None,
            _lock: lock,
        };

        if let Some(previous) = cluster.read_pid_file()? {
            if previous.state() == PidState::Postgres {
                tracing::warn!(
                    pid = previous.pid,
                    pgdata = %cluster.pgdata.display(),
                    "adopting a PostgreSQL server that a previous station process left running"
                );
                cluster.socket_dir = previous.socket_dir;
                cluster.port = previous.port;
                cluster.running = true;
                cluster.adopted_pid = Some(previous.pid);
                return Ok(cluster);
            }
            cluster.remove_stale_files(&previous);
        }

        cluster.socket_dir = choose_socket_dir(&cluster.root, &cluster.user)?;
        cluster.write_settings(options.durable)?;
        cluster.run_start(options.start_timeout)?;
        Ok(cluster)
    }

    /// Connection options for the station's database over the socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connect_options_for(DATABASE)
    }

    /// Connection options for the `postgres` maintenance database, used to create the station's
    /// database on first start.
    pub fn maintenance_connect_options(&self) -> PgConnectOptions {
        self.connect_options_for("postgres")
    }

    fn connect_options_for(&self, database: &str) -> PgConnectOptions {
        // Socket, port, role, database and TLS mode are set here, so PGHOST, PGPORT, PGUSER,
        // PGDATABASE and PGSSLMODE meant for another server do not apply. PGOPTIONS still does.
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(self.port)
            .username(ROLE)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
            .application_name("station")
    }

    /// Returns the cluster folder, `<data_dir>/postgres`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the folder that contains the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Reads the postmaster's PID from `postmaster.pid`, if the server runs.
    pub fn server_pid(&self) -> Option<i32> {
        self.read_pid_file().ok().flatten().map(|entry| entry.pid)
    }

    /// Returns the PID of a server that a previous station process left running and this cluster
    /// adopted.
    pub fn adopted_pid(&self) -> Option<i32> {
        self.adopted_pid
    }

    /// Reads the last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.root.join("server.log"))
    }

    /// Stops the server with a fast shutdown (open transactions are rolled back) and removes a
    /// short socket folder. Stopping a stopped cluster does nothing.
    pub fn stop(&mut self) -> Result<(), DbError> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        // pg_ctl would wait out its whole timeout for a dead (for example zombie) postmaster.
        match self.read_pid_file() {
            Ok(Some(entry)) if entry.state() == PidState::Postgres => {}
            _ => {
                tracing::warn!(pgdata = %self.pgdata.display(), "the PostgreSQL server had already stopped");
                self.remove_short_socket_dir(&self.socket_dir.clone());
                return Ok(());
            }
        }
        let timeout = self.stop_timeout.as_secs().max(1).to_string();
        let mut command = self.command(self.binaries.pg_ctl());
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-m", "fast", "-w", "-s", "-t", &timeout]);
        let output = run(command, &self.binaries.pg_ctl())?;
        let result = if output.status.success() {
            tracing::info!(pgdata = %self.pgdata.display(), "stopped PostgreSQL server");
            Ok(())
        } else {
            Err(DbError::StopFailed {
                pgdata: self.pgdata.clone(),
                output: program_output(&output),
            })
        };
        self.remove_short_socket_dir(&self.socket_dir.clone());
        result
    }

    fn run_start(&mut self, timeout: Duration) -> Result<(), DbError> {
        let log = self.root.join("server.log");
        let seconds = timeout.as_secs().max(1).to_string();
        tracing::info!(
            pgdata = %self.pgdata.display(),
            socket_dir = %self.socket_dir.display(),
            binaries = %self.binaries.dir.display(),
            "starting PostgreSQL server"
        );
        let mut command = self.command(self.binaries.pg_ctl());
        command
            .arg("start")
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-s", "-t", &seconds]);
        let output = run(command, &self.binaries.pg_ctl())?;
        if output.status.success() {
            self.running = true;
            tracing::info!(pid = ?self.server_pid(), "started PostgreSQL server");
            return Ok(());
        }

        let text = program_output(&output);
        let log_tail = self.log_tail();
        if text.contains("did not start in time") {
            // pg_ctl leaves a slow server starting; stop it so no server outlives the error.
            self.running = true;
            if let Err(err) = self.stop() {
                tracing::error!(error = %err, "failed to stop the PostgreSQL server after its start timed out");
            }
            return Err(DbError::StartTimedOut {
                pgdata: self.pgdata.clone(),
                timeout,
                log_tail,
            });
        }
        self.remove_short_socket_dir(&self.socket_dir.clone());
        Err(DbError::StartFailed {
            pgdata: self.pgdata.clone(),
            output: text,
            log_tail,
        })
    }

    /// Writes the settings that must hold at every start. The socket folder can change between
    /// starts, so they are not part of `postgresql.conf`.
    fn write_settings(&self, durable: bool) -> Result<(), DbError> {
        let mut text =
            String::from("# Written by the station at every start; edits are overwritten.\n");
        text.push_str("listen_addresses = ''\n");
        text.push_str(&format!(
            "unix_socket_directories = {}\n",
            socket_dirs_setting(&self.socket_dir)
        ));
        text.push_str("unix_socket_permissions = 0700\n");
        text.push_str(&format!("port = {PORT}\n"));
        if !durable {
            // Commits still reach the operating system before they return, so killing the server
            // loses nothing; only a crash of the machine can.
            text.push_str("# Throwaway test cluster: a crash of the machine may lose commits.\n");
            text.push_str("fsync = off\nfull_page_writes = off\n");
        }
        let path = self.pgdata.join("station.conf");
        std::fs::write(&path, text).map_err(|source| DbError::Io {
            action: "write",
            path: path.clone(),
            source,
        })?;
        self.user.take_ownership(&path)
    }

    fn read_pid_file(&self) -> Result<Option<PostmasterPid>, DbError> {
        PostmasterPid::read(&self.pgdata).map_err(|source| DbError::Io {
            action: "read",
            path: self.pgdata.join("postmaster.pid"),
            source,
        })
    }

    /// Removes what a crashed server left behind, which PostgreSQL would otherwise take for a
    /// running server when its PID now belongs to another process.
    fn remove_stale_files(&self, previous: &PostmasterPid) {
        tracing::warn!(
            pid = previous.pid,
            pgdata = %self.pgdata.display(),
            "removing a stale postmaster.pid left by a PostgreSQL server that is no longer running"
        );
        remove_if_present(&self.pgdata.join("postmaster.pid"));
        if previous.socket_dir == self.root {
            remove_if_present(&self.root.join(format!(".s.PGSQL.{}.lock", previous.port)));
        } else {
            self.remove_short_socket_dir(&previous.socket_dir);
        }
    }

    /// Removes a socket folder made by [`choose_socket_dir`]; other folders are left alone.
    fn remove_short_socket_dir(&self, dir: &Path) {
        let ours = dir != self.root
            && dir
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(SHORT_SOCKET_PREFIX));
        if ours
            && dir.exists()
            && let Err(err) = std::fs::remove_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %err, "failed to remove the socket folder");
        }
    }

    fn command(&self, program: PathBuf) -> Command {
        server_command(program, &self.user, &self.root)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            tracing::error!(error = %err, "failed to stop the private PostgreSQL server");
        }
    }
}

fn remove_if_present(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "failed to remove a stale PostgreSQL file");
    }
}
