//! Prompts on the operator's terminal: plain lines, and secret lines typed with echo off.
//!
//! Lines are read on a thread of their own and handed over a channel, so that every prompt can
//! give up after the ceremony's idle timeout. Secrets are read only from a terminal, with echo
//! turned off through termios and turned back on before the prompt returns, also on a timeout.

use std::io::{BufRead, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use rustix::termios::{self, LocalModes, OptionalActions};
use zeroize::Zeroizing;

/// Reasons a prompt returned no line.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// No line was typed within the timeout.
    #[error("no input for {0} seconds")]
    TimedOut(u64),
    /// Standard input was closed.
    #[error("standard input was closed")]
    Closed,
    /// A secret was requested, but standard input is not a terminal that can hide it.
    #[error(
        "standard input is not a terminal, so a secret cannot be typed without echo; run the command at a terminal"
    )]
    NotATerminal,
    /// The terminal could not be configured or written.
    #[error("terminal error: {0}")]
    Io(String),
}

/// The operator's terminal: standard input and output.
pub struct Terminal {
    lines: Receiver<Zeroizing<String>>,
}

impl Terminal {
    /// Starts the thread that reads standard input.
    pub fn open() -> Self {
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut handle = stdin.lock();
            loop {
                let mut line = Zeroizing::new(String::new());
                match handle.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let trimmed =
                            Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
                        if sender.send(trimmed).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Self { lines }
    }

    /// Prints `text` without a line end.
    pub fn print(&self, text: &str) -> Result<(), PromptError> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|error| PromptError::Io(error.to_string()))
    }

    /// Prints `prompt` and returns the line typed, echoed as usual.
    pub fn line(&self, prompt: &str, timeout: Duration) -> Result<String, PromptError> {
        self.print(prompt)?;
        let line = self.receive(timeout)?;
        Ok(line.trim().to_owned())
    }

    /// Prints `prompt` and returns the line typed with echo off.
    pub fn secret(
        &self,
        prompt: &str,
        timeout: Duration,
    ) -> Result<Zeroizing<String>, PromptError> {
        let stdin = std::io::stdin();
        if !termios::isatty(&stdin) {
            return Err(PromptError::NotATerminal);
        }
        let saved =
            termios::tcgetattr(&stdin).map_err(|error| PromptError::Io(error.to_string()))?;
        let mut hidden = saved.clone();
        hidden.local_modes.remove(LocalModes::ECHO);
        // Keep ECHONL so the line end still shows and the next prompt starts on a new line.
        hidden.local_modes.insert(LocalModes::ECHONL);
        termios::tcsetattr(&stdin, OptionalActions::Now, &hidden)
            .map_err(|error| PromptError::Io(error.to_string()))?;
        let result = self.print(prompt).and_then(|()| self.receive(timeout));
        let restored = termios::tcsetattr(&stdin, OptionalActions::Now, &saved);
        let line = result?;
        restored.map_err(|error| PromptError::Io(error.to_string()))?;
        Ok(line)
    }

    /// Clears the screen and the scrollback, so a part shown once cannot be scrolled back to.
    pub fn clear_screen(&self) -> Result<(), PromptError> {
        self.print("\x1b[2J\x1b[3J\x1b[H")
    }

    fn receive(&self, timeout: Duration) -> Result<Zeroizing<String>, PromptError> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(PromptError::TimedOut(timeout.as_secs())),
            Err(RecvTimeoutError::Disconnected) => Err(PromptError::Closed),
        }
    }
}
