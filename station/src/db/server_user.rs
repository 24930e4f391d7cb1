//! The operating-system account that runs the private PostgreSQL server.
//!
//! `initdb`, `pg_ctl` and `postgres` exit with "cannot be run as root". When the station runs as
//! root it runs them as the `postgres` system account that Debian's `postgresql` package creates;
//! otherwise it runs them as itself.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::DbError;

/// Name of the system account used when the station runs as root.
pub const SYSTEM_ACCOUNT: &str = "postgres";

/// An account by number, with the name for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    /// Account name, or the number as text when the account has no `/etc/passwd` entry.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// True when the station runs as root and so must switch to this account for every server
    /// program.
    pub switch: bool,
}

impl ServerUser {
    /// Chooses the account: `postgres` from `/etc/passwd` when running as root, else the current
    /// user.
    ///
    /// NOTE: the test suite runs as root, so the branch for an unprivileged station is not run by
    /// it.
    pub fn for_current_process() -> Result<ServerUser, DbError> {
        let euid = rustix::process::geteuid().as_raw();
        if euid != 0 {
            let gid = rustix::process::getegid().as_raw();
            return Ok(ServerUser {
                name: euid.to_string(),
                uid: euid,
                gid,
                switch: false,
            });
        }
        let passwd = Path::new("/etc/passwd");
        let text = std::fs::read_to_string(passwd).map_err(|source| DbError::Io {
            action: "read",
            path: passwd.to_owned(),
            source,
        })?;
        let (uid, gid) = find_account(&text, SYSTEM_ACCOUNT).ok_or(DbError::ServerUserMissing {
            name: SYSTEM_ACCOUNT,
        })?;
        if uid == 0 {
            return Err(DbError::ServerUserIsRoot {
                name: SYSTEM_ACCOUNT,
            });
        }
        Ok(ServerUser {
            name: SYSTEM_ACCOUNT.to_owned(),
            uid,
            gid,
            switch: true,
        })
    }

    /// Makes `command` run as this account. Without a switch the command runs as the station.
    ///
    /// When std sets the user ID of a child of root, it also clears the supplementary groups.
    pub fn apply(&self, command: &mut Command) {
        if self.switch {
            command.uid(self.uid).gid(self.gid);
        }
    }

    /// Gives `path` to this account, when the station runs as root.
    pub fn take_ownership(&self, path: &Path) -> Result<(), DbError> {
        if !self.switch {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| {
            DbError::Io {
                action: "change the owner of",
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Checks that this account can search every folder from the root down to `path`, so that the
    /// server can reach its data directory.
    ///
    /// NOTE: this reads only the mode bits and the primary group. Supplementary groups and ACLs
    /// that would grant access are not seen, so such a setup is reported as unreachable.
    pub fn check_can_reach(&self, path: &Path) -> Result<(), DbError> {
        if !self.switch {
            return Ok(());
        }
        for dir in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            let meta = std::fs::metadata(dir).map_err(|source| DbError::Io {
                action: "inspect",
                path: dir.to_owned(),
                source,
            })?;
            let mode = meta.mode();
            let searchable = if meta.uid() == self.uid {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !searchable {
                return Err(DbError::DataDirUnreachable {
                    dir: dir.to_owned(),
                    mode: mode & 0o7777,
                    user: self.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Rejects `dir` when it exists but belongs to another account, which would make initdb or
    /// the server fail with a less clear message.
    pub fn check_owns(&self, dir: &Path) -> Result<(), DbError> {
        let meta = std::fs::metadata(dir).map_err(|source| DbError::Io {
            action: "inspect",
            path: dir.to_owned(),
            source,
        })?;
        if meta.uid() != self.uid {
            return Err(DbError::WrongOwner {
                dir: PathBuf::from(dir),
                owner: meta.uid(),
                user: self.name.clone(),
                uid: self.uid,
            });
        }
        Ok(())
    }
}

/// Returns the user and group ID of `name` from `/etc/passwd` text.
fn find_account(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_found_by_exact_name() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgresql:x:7:7::/:/bin/false\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(find_account(passwd, "postgres"), Some((101, 104)));
        assert_eq!(find_account(passwd, "nobody"), None);
    }

    #[test]
    fn malformed_passwd_line_skipped() {
        assert_eq!(
            find_account("postgres:x:abc:104::/:/bin/sh\n", "postgres"),
            None
        );
        assert_eq!(find_account("postgres\n", "postgres"), None);
    }
}
