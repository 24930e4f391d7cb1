//! Reading `postmaster.pid`, the lock file a running PostgreSQL server keeps in its data
//! directory, to tell a running server from one that crashed.

use std::path::{Path, PathBuf};

/// The fields of `postmaster.pid` the station uses. PostgreSQL 10 and later write one value per
/// line: PID, data directory, start time, port, first socket directory, first listen address,
/// shared memory key, status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterPid {
    /// Process ID of the postmaster.
    pub pid: i32,
    /// Port, which names the socket file `.s.PGSQL.<port>`.
    pub port: u16,
    /// First directory holding the server's Unix socket; empty when it has none.
    pub socket_dir: PathBuf,
}

/// Status of the process whose PID `postmaster.pid` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidState {
    /// A process named `postgres` has this PID: the server still runs.
    Postgres,
    /// No process has this PID, or a process that is not PostgreSQL reused it: the file is stale.
    Stale,
}

impl PostmasterPid {
    /// Reads `<pgdata>/postmaster.pid`; `Ok(None)` when there is no such file.
    pub fn read(pgdata: &Path) -> std::io::Result<Option<PostmasterPid>> {
        match std::fs::read_to_string(pgdata.join("postmaster.pid")) {
            Ok(text) => Ok(Some(parse(&text).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "postmaster.pid has no valid PID and port",
                )
            })?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Checks whether the PID still belongs to a PostgreSQL process.
    ///
    /// After a crash and a reboot the PID can belong to an unrelated process. PostgreSQL then
    /// refuses to start, because it only checks that the PID exists, so the station looks at the
    /// process name as well.
    ///
    /// A dead postmaster whose parent has not reaped it yet (a zombie) counts as stale: after
    /// `pg_ctl` exits, the server's parent is PID 1, which in some containers never reaps.
    pub fn state(&self) -> PidState {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return PidState::Stale;
        };
        match parse_stat(&stat) {
            Some(("postgres", state)) if state != 'Z' && state != 'X' => PidState::Postgres,
            _ => PidState::Stale,
        }
    }
}

/// Splits `/proc/<pid>/stat` into the command name and the one-letter state. The name is in
/// parentheses and may itself contain `)` or spaces, so the state follows the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, char)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let state = stat.get(close + 1..)?.trim_start().chars().next()?;
    Some((name, state))
}

fn parse(text: &str) -> Option<PostmasterPid> {
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines
        .first()?
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)?;
    let port = lines.get(3)?.trim().parse().ok()?;
    let socket_dir = PathBuf::from(lines.get(4).map(|line| line.trim_end()).unwrap_or(""));
    Some(PostmasterPid {
        pid,
        port,
        socket_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postmaster_pid_of_running_server() {
        let text = "4242\n/work/station-data/postgres/data\n1733340000\n5432\n/work/station-data/postgres\n\n  5432001         3\nready   \n";
        let parsed = parse(text).expect("valid file");
        assert_eq!(parsed.pid, 4242);
        assert_eq!(parsed.port, 5432);
        assert_eq!(
            parsed.socket_dir,
            PathBuf::from("/work/station-data/postgres")
        );
    }

    #[test]
    fn postmaster_pid_truncated_by_crash() {
        assert_eq!(parse("4242\n/data\n"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("-1\n/data\n0\n5432\n/s\n"), None);
    }

    #[test]
    fn proc_stat_name_and_state() {
        assert_eq!(
            parse_stat("4242 (postgres) S 1 4242 4242 0 -1"),
            Some(("postgres", 'S'))
        );
        assert_eq!(
            parse_stat("4242 (postgres) Z 1 4242"),
            Some(("postgres", 'Z'))
        );
        assert_eq!(parse_stat("77 (odd) name) R 1"), Some(("odd) name", 'R')));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_not_postgres() {
        let entry = PostmasterPid {
            pid: i32::try_from(std::process::id()).expect("PID fits in i32"),
            port: 5432,
            socket_dir: PathBuf::new(),
        };
        assert_eq!(entry.state(), PidState::Stale);
    }
}
