//! The station's side of a protocol session: requests, retries and typed outcomes.
//!
//! Every request gets a fresh sequence number. If no response with that number arrives before
//! the response timeout, the same frame, with the same sequence number, is sent again, up to
//! [`SessionConfig::attempts`] times in all. A terminal that receives a request it has already
//! responded to (same sequence number and same payload) resends its earlier response instead of
//! acting twice, so a retried LOAD_KEY never stores a key twice. Responses whose sequence number
//! does not match the outstanding request are late answers to an earlier attempt and are
//! dropped.

use std::time::{Duration, Instant};

use tracing::{debug, info_span, warn};

use super::{
    ErrorCode, ErrorMessage, Hello, HelloRequest, LoadKey, LoadResult, Message, MessageType,
    PROTOCOL_VERSION, ProtocolError,
};
use crate::crypto::dukpt::aes::InitialKeyId;
use crate::link::{Link, LinkError};

/// Timing of requests in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Deadline for one attempt: from sending the request to receiving the whole response.
    pub response_timeout: Duration,
    /// Attempts per request, the first included. At least 1.
    pub attempts: u32,
}

impl Default for SessionConfig {
    /// 3 s per attempt leaves room for a terminal that unwraps a key block and writes its secure
    /// storage before it responds; 3 attempts ride out two lost or corrupted frames.
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_secs(3),
            attempts: 3,
        }
    }
}

/// Errors in a session with a terminal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The link failed: the port, the line or the connection.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The terminal sent no valid response with the request's sequence number in any attempt.
    #[error(
        "terminal on {peer} did not answer {request} after {attempts} attempts of {} ms each; \
         check that the terminal is powered, in loading mode and speaks protocol version 1",
        timeout.as_millis()
    )]
    NoResponse {
        /// Device path or network address.
        peer: String,
        /// Request that went unanswered.
        request: MessageType,
        /// Attempts made.
        attempts: u32,
        /// Deadline of each attempt.
        timeout: Duration,
    },
    /// The terminal's response is not a valid message: the device's fault.
    #[error("terminal on {peer} sent a malformed response to {request}: {source}")]
    MalformedResponse {
        /// Device path or network address.
        peer: String,
        /// Request the response belongs to.
        request: MessageType,
        /// Decoding error of the response.
        #[source]
        source: ProtocolError,
    },
    /// The terminal answered with a message type that does not answer the request: the device's
    /// fault.
    #[error(
        "terminal on {peer} answered {request} with {response}, which protocol version 1 does not allow"
    )]
    UnexpectedResponse {
        /// Device path or network address.
        peer: String,
        /// Request the response belongs to.
        request: MessageType,
        /// Type of the response received.
        response: MessageType,
    },
    /// The terminal reported that it could not carry out the request.
    #[error("terminal on {peer} rejected {request} with error {code}: {text:?}; {}", code.remedy())]
    DeviceReported {
        /// Device path or network address.
        peer: String,
        /// Request that failed.
        request: MessageType,
        /// The terminal's error code.
        code: ErrorCode,
        /// The terminal's description.
        text: String,
    },
    /// The terminal speaks a protocol version this station does not.
    #[error(
        "terminal on {peer} speaks protocol version {version}, but this station speaks only \
         version {PROTOCOL_VERSION}; update the station or use a terminal firmware that speaks \
         version {PROTOCOL_VERSION}"
    )]
    UnsupportedProtocolVersion {
        /// Device path or network address.
        peer: String,
        /// Version the terminal reported.
        version: u8,
    },
    /// The station could not encode its own request: a bug in the station, or a caller passing
    /// a key block that is not printable ASCII.
    #[error("failed to encode the {request} request: {source}")]
    Encode {
        /// Request being encoded.
        request: MessageType,
        /// Encoding error.
        #[source]
        source: ProtocolError,
    },
}

/// A blocking session with one terminal over a [`Link`].
pub struct StationSession<'a> {
    link: &'a mut dyn Link,
    config: SessionConfig,
    next_sequence: u8,
    span: tracing::Span,
}

impl<'a> StationSession<'a> {
    /// Starts a session on `link`. No bytes are sent until the first request.
    pub fn new(link: &'a mut dyn Link, config: SessionConfig) -> Self {
        let span = info_span!("terminal_session", peer = link.peer());
        Self {
            link,
            config,
            next_sequence: initial_sequence(),
            span,
        }
    }

    /// Asks the terminal for its identity and checks that it speaks protocol version 1.
    pub fn hello(&mut self) -> Result<Hello, SessionError> {
        let request = Message::HelloRequest(HelloRequest {
            protocol_version: PROTOCOL_VERSION,
        });
        match self.exchange(&request)? {
            Message::Hello(hello) if hello.protocol_version == PROTOCOL_VERSION => {
                debug!(
                    parent: &self.span,
                    vendor = %hello.vendor,
                    model = %hello.model,
                    serial_number = %hello.serial_number,
                    firmware_version = %hello.firmware_version,
                    "terminal identified"
                );
                Ok(hello)
            }
            Message::Hello(hello) => {
                warn!(parent: &self.span, version = hello.protocol_version, "terminal speaks another protocol version");
                Err(SessionError::UnsupportedProtocolVersion {
                    peer: self.link.peer().to_owned(),
                    version: hello.protocol_version,
                })
            }
            other => Err(self.not_an_answer(MessageType::HelloRequest, other)),
        }
    }

    /// Sends a TR-31 key block for `slot` and returns the terminal's confirmation, whose check
    /// value the caller compares with the key it wrapped.
    pub fn load_key(
        &mut self,
        key_block: &str,
        slot: u8,
        initial_key_id: &InitialKeyId,
    ) -> Result<LoadResult, SessionError> {
        let request = Message::LoadKey(LoadKey {
            slot,
            initial_key_id: *initial_key_id,
            key_block: key_block.to_owned(),
        });
        match self.exchange(&request)? {
            Message::LoadResult(result) => {
                debug!(
                    parent: &self.span,
                    slot,
                    initial_key_id = %initial_key_id.to_hex(),
                    status = result.status.name(),
                    kcv = %result.kcv,
                    "terminal confirmed the key load"
                );
                Ok(result)
            }
            other => Err(self.not_an_answer(MessageType::LoadKey, other)),
        }
    }

    /// Sends `request` and returns the response with its sequence number, retrying on timeout.
    fn exchange(&mut self, request: &Message) -> Result<Message, SessionError> {
        let request_type = request.message_type();
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let frame = request
            .to_frame(sequence)
            .map_err(|source| SessionError::Encode {
                request: request_type,
                source,
            })?;

        let attempts = self.config.attempts.max(1);
        for attempt in 1..=attempts {
            if attempt > 1 {
                warn!(parent: &self.span, request = %request_type, sequence, attempt, "no response from the terminal; sending the request again");
            }
            self.link.send(&frame)?;
            let deadline = Instant::now() + self.config.response_timeout;

            loop {
                let reply = match self.link.receive(deadline) {
                    Ok(reply) => reply,
                    Err(LinkError::Timeout { .. }) => break,
                    Err(error) => return Err(error.into()),
                };
                if reply.sequence() != sequence {
                    warn!(
                        parent: &self.span,
                        expected = sequence,
                        received = reply.sequence(),
                        "dropping a response whose sequence number does not match the request"
                    );
                    continue;
                }
                return Message::from_frame(&reply).map_err(|source| {
                    warn!(parent: &self.span, request = %request_type, error = %source, "terminal sent a malformed response");
                    SessionError::MalformedResponse {
                        peer: self.link.peer().to_owned(),
                        request: request_type,
                        source,
                    }
                });
            }
        }

        warn!(parent: &self.span, request = %request_type, attempts, "terminal did not respond");
        Err(SessionError::NoResponse {
            peer: self.link.peer().to_owned(),
            request: request_type,
            attempts,
            timeout: self.config.response_timeout,
        })
    }

    /// Turns a response that does not answer `request` into the matching error.
    fn not_an_answer(&self, request: MessageType, response: Message) -> SessionError {
        let peer = self.link.peer().to_owned();
        match response {
            Message::Error(ErrorMessage { code, text }) => {
                warn!(parent: &self.span, request = %request, %code, text = %text, "terminal reported an error");
                SessionError::DeviceReported {
                    peer,
                    request,
                    code,
                    text,
                }
            }
            other => {
                warn!(parent: &self.span, request = %request, response = %other.message_type(), "terminal responded with the wrong message type");
                SessionError::UnexpectedResponse {
                    peer,
                    request,
                    response: other.message_type(),
                }
            }
        }
    }
}

/// Picks a random first sequence number, so that a terminal that cached its last response
/// before the station restarted is unlikely to see the same sequence number again.
fn initial_sequence() -> u8 {
    let mut byte = [0u8; 1];
    match getrandom::fill(&mut byte) {
        Ok(()) => byte[0],
        Err(_) => 1,
    }
}
