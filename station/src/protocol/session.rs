//! The station's side of a protocol session: requests, retries, NAK, the key exchange and
//! typed outcomes.
//!
//! Every request gets a fresh sequence number. If no response with that number arrives before
//! the response timeout, the same frame, with the same sequence number, is sent again, up to
//! [`SessionConfig::attempts`] times in all. A terminal that receives a request it has already
//! responded to (same sequence number and same payload) resends its earlier response instead of
//! acting twice, so a retried LOAD_KEY never stores a key twice. Responses whose sequence number
//! does not match the outstanding request are late answers to an earlier attempt and are
//! dropped. A response that arrives damaged is answered with NAK, so the terminal sends it again
//! at once; a NAK from the terminal makes the station send its request again at once. Both count
//! as attempts, so a line that damages every frame ends the request after
//! [`SessionConfig::attempts`].

use std::ops::DerefMut;
use std::time::{Duration, Instant};

use tracing::{debug, info, info_span, warn};

use super::handshake::{
    self, EphemeralKeyPair, HandshakeError, SessionKeys, Transcript, random_nonce,
};
use super::{
    CertificateInstall, CsrRequest, ErrorCode, ErrorMessage, Hello, HelloRequest, KeyConfirm,
    KeyExchangeRequest, LoadKey, LoadResult, MIN_PROTOCOL_VERSION, Message, MessageType, Nak,
    NakReason, PROTOCOL_VERSION, ProtocolError,
};
use crate::crypto::SecretKey;
use crate::crypto::dukpt::aes::InitialKeyId;
use crate::link::{FrameError, Link, LinkError, Received};
use crate::pki::{P384PrivateKey, P384PublicKey};

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
    /// Every attempt of a request ended in a damaged frame or a NAK: the line corrupts data.
    #[error(
        "the line to the terminal on {peer} damaged {request} or its response in all {attempts} \
         attempts ({damaged} damaged frames, {naks} NAKs from the terminal); check the cable, its \
         shielding and grounding, and that both ends use the same baud rate"
    )]
    DamagedFrames {
        /// Device path or network address.
        peer: String,
        /// Request that failed.
        request: MessageType,
        /// Attempts made.
        attempts: u32,
        /// Damaged frames the station received.
        damaged: u32,
        /// NAKs the terminal sent.
        naks: u32,
    },
    /// The terminal speaks a protocol version this station does not.
    #[error(
        "terminal on {peer} speaks protocol version {version}, but this station speaks versions \
         {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; update the station or use a terminal \
         firmware that speaks one of them"
    )]
    UnsupportedProtocolVersion {
        /// Device path or network address.
        peer: String,
        /// Version the terminal reported.
        version: u8,
    },
    /// The terminal's ephemeral key is not a valid P-384 point: the device's fault, or the line
    /// altered it.
    #[error("key exchange with the terminal on {peer} failed: {source}")]
    Handshake {
        /// Device path or network address.
        peer: String,
        /// What was wrong.
        #[source]
        source: HandshakeError,
    },
    /// The terminal's signature over the key exchange transcript does not verify under its
    /// certificate key: the messages were altered or replayed, or the terminal does not hold the
    /// key of the certificate it presented.
    #[error(
        "the terminal on {peer} signed the key exchange with a key that does not match its \
         certificate {certificate_fingerprint}, or the exchange was altered or replayed; no key \
         was sent. Set the terminal aside if this repeats"
    )]
    TerminalSignatureInvalid {
        /// Device path or network address.
        peer: String,
        /// SHA-256 fingerprint of the terminal's certificate.
        certificate_fingerprint: String,
    },
    /// The terminal's key confirmation tag does not verify: it derived other session keys.
    #[error(
        "the terminal on {peer} sent a key confirmation that does not match the station's session \
         keys; the exchange was altered or the terminal is faulty, and no key was sent"
    )]
    KeyConfirmationFailed {
        /// Device path or network address.
        peer: String,
    },
    /// A LOAD_RESULT in an authenticated session carries no MAC: the device's fault.
    #[error(
        "the terminal on {peer} sent LOAD_RESULT without the MAC an authenticated session \
         requires; the load is not confirmed"
    )]
    LoadResultMacMissing {
        /// Device path or network address.
        peer: String,
    },
    /// The LOAD_RESULT MAC does not verify: the confirmation was forged or altered.
    #[error(
        "the LOAD_RESULT MAC from the terminal on {peer} does not verify under the session key; \
         the confirmation was altered on the line or forged, so the load is not confirmed"
    )]
    LoadResultMacInvalid {
        /// Device path or network address.
        peer: String,
    },
    /// A step was called before the step it depends on: a bug in the caller.
    #[error("{step} needs {needs} first (a bug in the station)")]
    OutOfOrder {
        /// The step called.
        step: &'static str,
        /// The step that must come before it.
        needs: &'static str,
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

/// What the station keeps of one session: the HELLO exchange for the transcript, and the session
/// keys once the key exchange has completed.
#[derive(Debug, Default)]
struct SessionState {
    hello_request_payload: Vec<u8>,
    hello_payload: Vec<u8>,
    hello: Option<Hello>,
    keys: Option<SessionKeys>,
}

/// Credentials the station proves itself with in a key exchange.
#[derive(Debug)]
pub struct StationCredentials {
    /// The station's certificate key.
    pub key: P384PrivateKey,
    /// DER certificates: the station's, then the factory CA's.
    pub certificate_chain: Vec<Vec<u8>>,
}

/// The terminal's certificate the station validated, and its key.
#[derive(Debug, Clone)]
pub struct DeviceCredentials {
    /// DER of the terminal's certificate.
    pub certificate_der: Vec<u8>,
    /// SHA-256 fingerprint of the certificate, for errors and audit events.
    pub certificate_fingerprint: String,
    /// The certificate's public key.
    pub public_key: P384PublicKey,
}

/// Proof that a key exchange completed: the transcript hash that names the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedSession {
    /// SHA-384 transcript hash, as uppercase hex.
    pub transcript_hash: String,
}

/// A blocking session with one terminal over a [`Link`]: `L` is a `&mut` link or an owned
/// `Box<dyn Link>`.
pub struct StationSession<L> {
    link: L,
    config: SessionConfig,
    next_sequence: u8,
    span: tracing::Span,
    state: SessionState,
}

impl<L> StationSession<L>
where
    L: DerefMut,
    L::Target: Link,
{
    /// Starts a session on `link`. No bytes are sent until the first request.
    pub fn new(link: L, config: SessionConfig) -> Self {
        let span = info_span!("terminal_session", peer = link.peer());
        Self {
            link,
            config,
            next_sequence: initial_sequence(),
            span,
            state: SessionState::default(),
        }
    }

    /// Sets the sequence number of the next request, which is otherwise random. The worked
    /// example of the protocol documentation uses it to make its frames reproducible.
    pub fn with_first_sequence(mut self, sequence: u8) -> Self {
        self.next_sequence = sequence;
        self
    }

    /// Device path or network address of the terminal.
    pub fn peer(&self) -> &str {
        self.link.peer()
    }

    /// Asks the terminal for its identity and checks that it speaks protocol version 1 or 2.
    pub fn hello(&mut self) -> Result<Hello, SessionError> {
        let request = Message::HelloRequest(HelloRequest {
            protocol_version: PROTOCOL_VERSION,
        });
        let (response, payload) = self.exchange_with_payload(&request)?;
        match response {
            Message::Hello(hello)
                if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version) =>
            {
                debug!(
                    parent: &self.span,
                    vendor = %hello.vendor,
                    model = %hello.model,
                    serial_number = %hello.serial_number,
                    firmware_version = %hello.firmware_version,
                    protocol_version = hello.protocol_version,
                    key_exchange = hello.capabilities.key_exchange,
                    certificates = hello.certificate_chain.len(),
                    "terminal identified"
                );
                self.state = SessionState {
                    hello_request_payload: request.encode_payload().map_err(|source| {
                        SessionError::Encode {
                            request: MessageType::HelloRequest,
                            source,
                        }
                    })?,
                    hello_payload: payload,
                    hello: Some(hello.clone()),
                    keys: None,
                };
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

    /// Asks the terminal for a certificate signing request and returns its DER.
    pub fn request_csr(&mut self) -> Result<Vec<u8>, SessionError> {
        match self.exchange(&Message::CsrRequest(CsrRequest))? {
            Message::Csr(csr) => Ok(csr.der),
            other => Err(self.not_an_answer(MessageType::CsrRequest, other)),
        }
    }

    /// Sends the terminal its new certificate and the factory CA's certificate.
    pub fn install_certificate(&mut self, chain: &[Vec<u8>]) -> Result<(), SessionError> {
        let request = Message::Certificate(CertificateInstall {
            chain: chain.to_vec(),
        });
        match self.exchange(&request)? {
            Message::CertificateStored(_) => Ok(()),
            other => Err(self.not_an_answer(MessageType::Certificate, other)),
        }
    }

    /// Runs the authenticated key exchange: ephemeral ECDH, the terminal's signature and key
    /// confirmation checked by the station, then the station's sent and accepted by the
    /// terminal. Afterwards [`StationSession::session_kbpk`] returns the session's KBPK.
    pub fn key_exchange(
        &mut self,
        station: &StationCredentials,
        device: &DeviceCredentials,
    ) -> Result<AuthenticatedSession, SessionError> {
        if self.state.hello.is_none() {
            return Err(SessionError::OutOfOrder {
                step: "the key exchange",
                needs: "HELLO",
            });
        }
        let peer = self.link.peer().to_owned();
        let handshake_error = |source| SessionError::Handshake {
            peer: peer.clone(),
            source,
        };
        let ephemeral = EphemeralKeyPair::generate().map_err(handshake_error)?;
        let station_nonce = random_nonce().map_err(handshake_error)?;
        self.key_exchange_with(station, device, &ephemeral, station_nonce)
    }

    /// [`StationSession::key_exchange`] with a given ephemeral key pair and nonce, for the worked
    /// example of the protocol documentation and for tests. Production code calls
    /// `key_exchange`, which draws both fresh.
    pub fn key_exchange_with(
        &mut self,
        station: &StationCredentials,
        device: &DeviceCredentials,
        ephemeral: &EphemeralKeyPair,
        station_nonce: [u8; handshake::NONCE_LEN],
    ) -> Result<AuthenticatedSession, SessionError> {
        let peer = self.link.peer().to_owned();
        let request = KeyExchangeRequest {
            station_nonce,
            station_ephemeral_key: ephemeral.public_key(),
            station_certificate_chain: station.certificate_chain.clone(),
        };
        let request_payload = request.encode().map_err(|source| SessionError::Encode {
            request: MessageType::KeyExchange,
            source,
        })?;
        let response = match self.exchange(&Message::KeyExchange(request))? {
            Message::KeyExchangeResponse(response) => response,
            other => return Err(self.not_an_answer(MessageType::KeyExchange, other)),
        };

        let shared_secret = ephemeral
            .shared_secret(&response.terminal_ephemeral_key, "terminal")
            .map_err(|source| SessionError::Handshake {
                peer: peer.clone(),
                source,
            })?;
        let transcript_hash = Transcript {
            hello_request: &self.state.hello_request_payload,
            hello: &self.state.hello_payload,
            terminal_certificate: &device.certificate_der,
            key_exchange_request: &request_payload,
            terminal_nonce: &response.terminal_nonce,
            terminal_ephemeral: &response.terminal_ephemeral_key,
        }
        .hash();
        if !handshake::verify_terminal_signature(
            device.public_key.verifying_key(),
            &transcript_hash,
            &response.terminal_signature,
        ) {
            warn!(parent: &self.span, certificate = %device.certificate_fingerprint, "terminal signature over the key exchange does not verify");
            return Err(SessionError::TerminalSignatureInvalid {
                peer,
                certificate_fingerprint: device.certificate_fingerprint.clone(),
            });
        }
        let keys = SessionKeys::derive(
            &shared_secret,
            &station_nonce,
            &response.terminal_nonce,
            transcript_hash,
        );
        drop(shared_secret);
        if !keys.verify_terminal_confirmation(&response.terminal_confirmation) {
            warn!(parent: &self.span, "terminal key confirmation does not verify");
            return Err(SessionError::KeyConfirmationFailed { peer });
        }

        let confirm = Message::KeyConfirm(KeyConfirm {
            station_signature: handshake::sign_as_station(
                station.key.signing_key(),
                &transcript_hash,
            ),
            station_confirmation: keys.station_confirmation(),
        });
        match self.exchange(&confirm)? {
            Message::KeyConfirmed(_) => {}
            other => return Err(self.not_an_answer(MessageType::KeyConfirm, other)),
        }
        let session = AuthenticatedSession {
            transcript_hash: hex::encode_upper(transcript_hash),
        };
        info!(parent: &self.span, transcript_hash = %session.transcript_hash, "key exchange complete; both sides confirmed the session keys");
        self.state.keys = Some(keys);
        Ok(session)
    }

    /// The KBPK of the completed key exchange, or `None` before it.
    pub fn session_kbpk(&self) -> Option<&SecretKey> {
        self.state.keys.as_ref().map(SessionKeys::kbpk)
    }

    /// Sends a TR-31 key block for `slot` and returns the terminal's confirmation, whose check
    /// value the caller compares with the key it wrapped. After a key exchange, the LOAD_RESULT
    /// must carry a MAC that verifies under the session's result MAC key.
    pub fn load_key(
        &mut self,
        key_block: &str,
        slot: u8,
        initial_key_id: &InitialKeyId,
    ) -> Result<LoadResult, SessionError> {
        let load = LoadKey {
            slot,
            initial_key_id: *initial_key_id,
            key_block: key_block.to_owned(),
        };
        let load_payload = load.encode().map_err(|source| SessionError::Encode {
            request: MessageType::LoadKey,
            source,
        })?;
        let result = match self.exchange(&Message::LoadKey(load))? {
            Message::LoadResult(result) => result,
            other => return Err(self.not_an_answer(MessageType::LoadKey, other)),
        };
        if let Some(keys) = &self.state.keys {
            let peer = self.link.peer().to_owned();
            let Some(mac) = &result.mac else {
                warn!(parent: &self.span, "LOAD_RESULT carries no MAC in an authenticated session");
                return Err(SessionError::LoadResultMacMissing { peer });
            };
            let fields = result.authenticated_fields().map_err(|source| {
                SessionError::MalformedResponse {
                    peer: peer.clone(),
                    request: MessageType::LoadKey,
                    source,
                }
            })?;
            if !keys.verify_load_result_mac(&load_payload, &fields, mac) {
                warn!(parent: &self.span, "LOAD_RESULT MAC does not verify");
                return Err(SessionError::LoadResultMacInvalid { peer });
            }
        }
        debug!(
            parent: &self.span,
            slot,
            initial_key_id = %initial_key_id.to_hex(),
            status = result.status.name(),
            kcv = %result.kcv,
            authenticated = result.mac.is_some(),
            "terminal confirmed the key load"
        );
        Ok(result)
    }

    fn exchange(&mut self, request: &Message) -> Result<Message, SessionError> {
        self.exchange_with_payload(request)
            .map(|(message, _)| message)
    }

    /// Sends `request` and returns the response with its payload bytes, retrying on timeout,
    /// on a damaged response (after NAK) and on the terminal's NAK.
    fn exchange_with_payload(
        &mut self,
        request: &Message,
    ) -> Result<(Message, Vec<u8>), SessionError> {
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
        let mut damaged = 0u32;
        let mut naks = 0u32;
        let mut attempt = 0u32;
        // Each pass sends the request once; a NAK from the terminal starts the next pass at once.
        'attempts: while attempt < attempts {
            attempt += 1;
            if attempt > 1 {
                warn!(parent: &self.span, request = %request_type, sequence, attempt, "sending the request again");
            }
            self.link.send(&frame)?;
            let deadline = Instant::now() + self.config.response_timeout;

            loop {
                let reply = match self.link.receive_or_damaged(deadline) {
                    Ok(Received::Frame(reply)) => reply,
                    Ok(Received::Damaged(damage)) => {
                        damaged += 1;
                        if attempt >= attempts {
                            break 'attempts;
                        }
                        attempt += 1;
                        warn!(parent: &self.span, request = %request_type, sequence, error = %damage.error, "response damaged on the line; sending NAK");
                        self.send_nak(damage.sequence, &damage.error)?;
                        continue;
                    }
                    Err(LinkError::Timeout { .. }) => break,
                    Err(error) => return Err(error.into()),
                };
                if reply.message_type() == MessageType::Nak.code() {
                    naks += 1;
                    warn!(parent: &self.span, request = %request_type, sequence, "terminal sent NAK: it received the request damaged");
                    continue 'attempts;
                }
                if reply.sequence() != sequence {
                    warn!(
                        parent: &self.span,
                        expected = sequence,
                        received = reply.sequence(),
                        "dropping a response whose sequence number does not match the request"
                    );
                    continue;
                }
                let message = Message::from_frame(&reply).map_err(|source| {
                    warn!(parent: &self.span, request = %request_type, error = %source, "terminal sent a malformed response");
                    SessionError::MalformedResponse {
                        peer: self.link.peer().to_owned(),
                        request: request_type,
                        source,
                    }
                })?;
                return Ok((message, reply.into_payload()));
            }
        }

        let peer = self.link.peer().to_owned();
        if damaged + naks > 0 {
            warn!(parent: &self.span, request = %request_type, attempts, damaged, naks, "the line damaged every attempt");
            return Err(SessionError::DamagedFrames {
                peer,
                request: request_type,
                attempts,
                damaged,
                naks,
            });
        }
        warn!(parent: &self.span, request = %request_type, attempts, "terminal did not respond");
        Err(SessionError::NoResponse {
            peer,
            request: request_type,
            attempts,
            timeout: self.config.response_timeout,
        })
    }

    fn send_nak(&mut self, sequence: u8, error: &FrameError) -> Result<(), SessionError> {
        let reason = match error {
            FrameError::MissingEnd { .. } => NakReason::MissingEnd,
            _ => NakReason::CrcMismatch,
        };
        let frame = Message::Nak(Nak { reason })
            .to_frame(sequence)
            .map_err(|source| SessionError::Encode {
                request: MessageType::Nak,
                source,
            })?;
        self.link.send(&frame)?;
        Ok(())
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
