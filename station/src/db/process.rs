//! Running the PostgreSQL server programs as the server account, and reading their output.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::DbError;
use super::server_user::ServerUser;

/// Builds a command that runs as the server account, in the cluster folder, with a fixed
/// environment: PG* variables meant for another server must not reach the programs, and `LC_ALL=C`
/// keeps the log in English for the error messages that quote it.
pub(super) fn server_command(program: PathBuf, user: &ServerUser, root: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .current_dir(root);
    if let Some(tz) = std::env::var_os("TZ") {
        command.env("TZ", tz);
    }
    user.apply(&mut command);
    command
}

pub(super) fn run(mut command: Command, program: &Path) -> Result<Output, DbError> {
    command.output().map_err(|source| DbError::RunProgram {
        program: program.to_owned(),
        source,
    })
}

pub(super) fn program_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr.trim());
    }
    if text.is_empty() {
        text = format!("no output, {}", output.status);
    }
    text
}

/// Returns the last 20 lines of a log file, or a note saying it could not be read.
pub(super) fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 8192;
    const MAX_LINES: usize = 20;
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) => return format!("({} could not be read: {err})", path.display()),
    };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(MAX_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("server.log");
        let text: String = (1..=50).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, text).expect("write log");
        let tail = log_tail(&path);
        assert!(tail.starts_with("line 31\n"), "{tail}");
        assert!(tail.ends_with("line 50"), "{tail}");
    }
}
