//! The folder of the private server's Unix socket, and its quoting in the server configuration.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::DbError;
use super::cluster::PORT;
use super::server_user::ServerUser;

/// Maximum length of a Unix socket path on Linux: `sun_path` has 108 bytes including the final NUL.
const SOCKET_PATH_MAX: usize = 107;

/// Prefix of the short socket folders made in the temporary directory.
pub(super) const SHORT_SOCKET_PREFIX: &str = "station-pg-";

/// Returns the folder for the server's socket, which is the cluster folder when the socket path
/// fits in `sun_path`. Otherwise it creates a folder with a random name in the temporary directory,
/// with mode 0700 and owned by the server account. [`Cluster::stop`](super::Cluster::stop) removes that folder.
pub(super) fn choose_socket_dir(root: &Path, user: &ServerUser) -> Result<PathBuf, DbError> {
    if socket_path_len(root) <= SOCKET_PATH_MAX {
        return Ok(root.to_owned());
    }

    let suffix_len = SHORT_SOCKET_PREFIX.len() + 12;
    let temp = std::env::temp_dir();
    let base = if socket_path_len(&temp) + 1 + suffix_len <= SOCKET_PATH_MAX {
        temp
    } else {
        PathBuf::from("/tmp")
    };
    for _ in 0..8 {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(|err| DbError::Io {
            action: "name a socket folder in",
            path: base.clone(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let dir = base.join(format!("{SHORT_SOCKET_PREFIX}{}", hex::encode(random)));
        if socket_path_len(&dir) > SOCKET_PATH_MAX {
            return Err(DbError::SocketPathTooLong { path: dir });
        }
        // `create` fails on an existing name, symbolic links included, so another user of the
        // shared temporary directory cannot plant the folder.
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                user.take_ownership(&dir)?;
                tracing::info!(
                    socket_dir = %dir.display(),
                    "the data directory path is too long for a Unix socket, so the socket lives in a temporary folder"
                );
                return Ok(dir);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(DbError::Io {
                    action: "create the socket folder",
                    path: dir,
                    source,
                });
            }
        }
    }
    Err(DbError::SocketPathTooLong {
        path: root.to_owned(),
    })
}

fn socket_path_len(dir: &Path) -> usize {
    dir.join(format!(".s.PGSQL.{PORT}")).as_os_str().len()
}

/// Quotes a folder for `unix_socket_directories`: a list item in double quotes (doubled inside)
/// within a configuration string in single quotes (doubled inside, backslashes escaped).
pub(super) fn socket_dirs_setting(dir: &Path) -> String {
    let item = format!("\"{}\"", dir.to_string_lossy().replace('"', "\"\""));
    format!("'{}'", item.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_dir_setting_quotes_awkward_paths() {
        assert_eq!(
            socket_dirs_setting(Path::new("/srv/station")),
            "'\"/srv/station\"'"
        );
        assert_eq!(socket_dirs_setting(Path::new("/a b,c")), "'\"/a b,c\"'");
        assert_eq!(socket_dirs_setting(Path::new("/it's")), "'\"/it''s\"'");
        assert_eq!(
            socket_dirs_setting(Path::new("/say \"hi\"")),
            "'\"/say \"\"hi\"\"\"'"
        );
        assert_eq!(
            socket_dirs_setting(Path::new("/back\\slash")),
            "'\"/back\\\\slash\"'"
        );
    }

    #[test]
    fn socket_path_length_counts_file_name() {
        assert_eq!(
            socket_path_len(Path::new("/tmp")),
            "/tmp/.s.PGSQL.5432".len()
        );
    }
}
