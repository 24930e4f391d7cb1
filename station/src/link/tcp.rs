//! TCP transport: networked terminals and simulators.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use tracing::info;

use super::error::LinkError;
use super::serial::is_disconnect;
use super::stream::{ByteStream, FramedLink, LinkTimeouts, ReadOutcome};

/// A framed link over a TCP connection.
pub type TcpLink = FramedLink<TcpByteStream>;

/// A connected TCP socket with its peer address.
#[derive(Debug)]
pub struct TcpByteStream {
    socket: TcpStream,
    peer: String,
}

impl TcpByteStream {
    /// Wraps a connected socket, for example one accepted by a listening simulator.
    pub fn from_socket(socket: TcpStream) -> Result<Self, LinkError> {
        let peer = socket
            .peer_addr()
            .map(|address| address.to_string())
            .unwrap_or_else(|_| "tcp (unknown peer)".to_owned());
        socket.set_nodelay(true).map_err(|source| LinkError::Io {
            peer: peer.clone(),
            source,
        })?;
        Ok(Self { socket, peer })
    }
}

impl FramedLink<TcpByteStream> {
    /// Connects to a terminal at `address` (host:port), waiting at most `connect_timeout` per
    /// resolved address.
    pub fn connect(
        address: &str,
        connect_timeout: Duration,
        timeouts: LinkTimeouts,
    ) -> Result<Self, LinkError> {
        let connect_error = |source: io::Error| LinkError::Connect {
            address: address.to_owned(),
            source,
        };
        let mut last_error =
            io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing");
        for resolved in address.to_socket_addrs().map_err(connect_error)? {
            match TcpStream::connect_timeout(&resolved, connect_timeout) {
                Ok(socket) => {
                    info!(address, "connected to terminal over tcp");
                    let stream = TcpByteStream::from_socket(socket)?;
                    return Ok(Self::new(stream, timeouts));
                }
                Err(error) => last_error = error,
            }
        }
        Err(connect_error(last_error))
    }
}

impl ByteStream for TcpByteStream {
    fn read_some(
        &mut self,
        buffer: &mut [u8],
        timeout: Duration,
    ) -> Result<ReadOutcome, LinkError> {
        self.socket
            .set_read_timeout(Some(timeout))
            .map_err(|source| LinkError::Io {
                peer: self.peer.clone(),
                source,
            })?;
        loop {
            return match self.socket.read(buffer) {
                Ok(0) => Err(LinkError::Disconnected {
                    peer: self.peer.clone(),
                }),
                Ok(count) => Ok(ReadOutcome::Data(count)),
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(ReadOutcome::TimedOut)
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => Err(self.error(error)),
            };
        }
    }

    fn write_all_within(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), LinkError> {
        self.socket
            .set_write_timeout(Some(timeout))
            .map_err(|source| LinkError::Io {
                peer: self.peer.clone(),
                source,
            })?;
        self.socket.write_all(bytes).map_err(|error| {
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                LinkError::WriteTimeout {
                    peer: self.peer.clone(),
                    waited: timeout,
                }
            } else {
                self.error(error)
            }
        })
    }

    fn peer(&self) -> &str {
        &self.peer
    }
}

impl TcpByteStream {
    fn error(&self, error: io::Error) -> LinkError {
        if is_disconnect(&error) {
            LinkError::Disconnected {
                peer: self.peer.clone(),
            }
        } else {
            LinkError::Io {
                peer: self.peer.clone(),
                source: error,
            }
        }
    }
}
