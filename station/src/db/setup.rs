//! One-time preparation of the private cluster folder: path and owner checks, the lock that keeps
//! out a second station process, `initdb`, and choosing programs that match an existing cluster.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::DbError;
use super::binaries::{self, ServerBinaries};
use super::cluster::ROLE;
use super::process::{program_output, run, server_command};
use super::server_user::ServerUser;

/// Rejects paths that pg_ctl cannot handle: it passes the data and log paths to `/bin/sh` inside
/// double quotes without escaping them, and `postmaster.pid` stores one value per line.
pub(super) fn check_path_characters(data_dir: &Path) -> Result<(), DbError> {
    let text = data_dir.to_string_lossy();
    match text
        .chars()
        .find(|c| matches!(c, '"' | '$' | '`' | '\\' | '\n' | '\r'))
    {
        Some(character) => Err(DbError::UnsupportedPath {
            path: data_dir.to_owned(),
            character,
        }),
        None => Ok(()),
    }
}

pub(super) fn create_private_dir(dir: &Path, user: &ServerUser) -> Result<(), DbError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => user.take_ownership(dir),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(DbError::Io {
            action: "create",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Locks `<root>/station.lock` so that one station process at a time uses the cluster, and writes
/// this process's PID into it for the error the next one gets.
pub(super) fn lock_cluster(root: &Path, data_dir: &Path) -> Result<File, DbError> {
    let path = root.join("station.lock");
    let io_error = |action: &'static str| {
        let path = path.clone();
        move |source| DbError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error("open"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // The holder may be writing its PID at this moment; an empty result is still useful.
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(DbError::InUse {
                data_dir: data_dir.to_owned(),
                pid: if holder.is_empty() {
                    "unknown".to_owned()
                } else {
                    holder.to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(io_error("lock")(source)),
    }
    file.set_len(0).map_err(io_error("truncate"))?;
    file.seek(SeekFrom::Start(0)).map_err(io_error("seek in"))?;
    writeln!(file, "{}", std::process::id()).map_err(io_error("write"))?;
    Ok(file)
}

/// Runs `initdb` into `pgdata` and makes `postgresql.conf` include the station's settings.
pub(super) fn initialise(
    binaries: &ServerBinaries,
    user: &ServerUser,
    root: &Path,
    pgdata: &Path,
    durable: bool,
) -> Result<(), DbError> {
    if std::fs::read_dir(pgdata).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(DbError::IncompleteCluster {
            pgdata: pgdata.to_owned(),
        });
    }
    tracing::info!(pgdata = %pgdata.display(), binaries = %binaries.dir.display(), "initialising PostgreSQL cluster");
    let mut command = server_command(binaries.initdb(), user, root);
    command.arg("-D").arg(pgdata).args([
        "-U",
        ROLE,
        "--auth-local=trust",
        "--auth-host=reject",
        "--encoding=UTF8",
        "--no-locale",
    ]);
    if !durable {
        command.arg("--no-sync");
    }
    let output = run(command, &binaries.initdb())?;
    if !output.status.success() {
        return Err(DbError::InitdbFailed {
            pgdata: pgdata.to_owned(),
            output: program_output(&output),
        });
    }

    let conf = pgdata.join("postgresql.conf");
    let mut file = OpenOptions::new()
        .append(true)
        .open(&conf)
        .map_err(|source| DbError::Io {
            action: "open",
            path: conf.clone(),
            source,
        })?;
    file.write_all(b"\n# Socket and durability settings of the key-injection station.\ninclude_if_exists = 'station.conf'\n")
        .map_err(|source| DbError::Io {
            action: "append to",
            path: conf.clone(),
            source,
        })?;
    Ok(())
}

/// Picks the server programs matching the major version of an existing cluster, which a newer
/// server cannot open without `pg_upgrade`.
pub(super) fn binaries_for_existing_cluster(
    found: ServerBinaries,
    pgdata: &Path,
    lib_root: &Path,
) -> Result<ServerBinaries, DbError> {
    let version_file = pgdata.join("PG_VERSION");
    let text = std::fs::read_to_string(&version_file).map_err(|source| DbError::Io {
        action: "read",
        path: version_file.clone(),
        source,
    })?;
    let cluster_major: u32 = text
        .trim()
        .parse()
        .map_err(|_| DbError::UnknownServerVersion {
            program: version_file.clone(),
            output: text.trim().to_owned(),
        })?;
    let found_major = found.major_version()?;
    if found_major == cluster_major {
        return Ok(found);
    }
    binaries::locate_version(lib_root, cluster_major).ok_or(DbError::ServerVersionMismatch {
        pgdata: pgdata.to_owned(),
        cluster_major,
        binaries_dir: found.dir,
        binaries_major: found_major,
    })
}
