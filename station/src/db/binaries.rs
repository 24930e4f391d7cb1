//! Locating the PostgreSQL server programs (`initdb`, `pg_ctl`, `postgres`) on this machine.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::DbError;

/// Folder in which Debian and Ubuntu install the server programs, one subfolder per major version.
pub const DEBIAN_LIB_ROOT: &str = "/usr/lib/postgresql";

/// A folder holding `initdb` and `pg_ctl` of one PostgreSQL installation.
///
/// `pg_ctl` starts the `postgres` program from its own folder, after resolving symbolic links, so
/// a `PATH` entry that links to the real programs works too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBinaries {
    /// The folder the programs were found in.
    pub dir: PathBuf,
}

impl ServerBinaries {
    /// Path of `initdb`.
    pub fn initdb(&self) -> PathBuf {
        self.dir.join("initdb")
    }

    /// Path of `pg_ctl`.
    pub fn pg_ctl(&self) -> PathBuf {
        self.dir.join("pg_ctl")
    }

    /// Runs `pg_ctl --version` and returns the major version, for example 15.
    pub fn major_version(&self) -> Result<u32, DbError> {
        let program = self.pg_ctl();
        let output = Command::new(&program)
            .arg("--version")
            .output()
            .map_err(|source| DbError::RunProgram {
                program: program.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse_major_version(&text).ok_or_else(|| DbError::UnknownServerVersion {
            program,
            output: text.trim().to_owned(),
        })
    }
}

/// Finds the server programs: first in the folders of `path_var` (the `PATH` syntax), then in
/// `<lib_root>/<version>/bin`, highest major version first.
///
/// A folder counts only if it contains both `initdb` and `pg_ctl`.
pub fn locate(path_var: Option<&OsStr>, lib_root: &Path) -> Result<ServerBinaries, DbError> {
    let mut searched = Vec::new();

    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(path_var) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            if has_server_programs(&dir) {
                return Ok(ServerBinaries { dir });
            }
            searched.push(dir);
        }
    }

    for dir in versioned_dirs(lib_root) {
        if has_server_programs(&dir) {
            return Ok(ServerBinaries { dir });
        }
        searched.push(dir);
    }
    searched.push(lib_root.join("<version>/bin"));

    Err(DbError::ServerBinariesMissing { searched })
}

/// Returns `<lib_root>/<version>/bin` for a given major version, if it contains the programs.
pub fn locate_version(lib_root: &Path, major: u32) -> Option<ServerBinaries> {
    let dir = lib_root.join(major.to_string()).join("bin");
    has_server_programs(&dir).then_some(ServerBinaries { dir })
}

/// Lists `<lib_root>/<version>/bin`, highest version first. Folders whose name is not a number are
/// skipped.
fn versioned_dirs(lib_root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lib_root) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn has_server_programs(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Parses `pg_ctl (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)` into 15.
fn parse_major_version(text: &str) -> Option<u32> {
    let version = text
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_version_from_pg_ctl_output() {
        assert_eq!(
            parse_major_version("pg_ctl (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major_version("pg_ctl (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major_version("pg_ctl (PostgreSQL) 17devel"), Some(17));
        assert_eq!(parse_major_version("no version here"), None);
    }

    #[test]
    fn versioned_dirs_highest_first() {
        let root = tempfile::tempdir().expect("temporary folder");
        for name in ["9", "15", "13", "notes"] {
            std::fs::create_dir(root.path().join(name)).expect("create folder");
        }
        let dirs = versioned_dirs(root.path());
        let expected: Vec<PathBuf> = ["15", "13", "9"]
            .iter()
            .map(|v| root.path().join(v).join("bin"))
            .collect();
        assert_eq!(dirs, expected);
    }
}
