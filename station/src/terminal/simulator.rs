//! The device side of the protocol: responds to every request as a terminal would, and
//! injects line and device faults for tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::config::SimulatorConfig;
use super::error::SimulatorError;
use super::handshake::TerminalSession;
use super::state::{DeviceState, StoredKey};
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::crypto::tr31::{self, KeyUsage, Tr31Error};
use crate::link::{ByteStream, Frame, FrameError, FramedLink, Link, LinkError, Received};
use crate::pki::P384PrivateKey;
use crate::protocol::{
    ErrorCode, ErrorMessage, Hello, LoadKey, LoadResult, LoadStatus, Message, MessageType, Nak,
    NakReason, PROTOCOL_VERSION, ProtocolError,
};

/// How often the serving loop checks its stop flag while the line is idle.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Pause between bytes when [`super::SimulatorFaults::split_responses`] is set.
const SPLIT_BYTE_PAUSE: Duration = Duration::from_millis(2);

/// The last request and its response frame, for responding to a retried request again.
struct LastExchange {
    request: Frame,
    response: Frame,
}

/// A simulated terminal: identity, keys, secure storage and the protocol logic.
pub struct Simulator {
    pub(super) config: SimulatorConfig,
    pub(super) state: DeviceState,
    last_exchange: Option<LastExchange>,
    responses_sent: u64,
    requests_seen: u64,
    /// Protocol version agreed in the last HELLO; 0 before it.
    pub(super) version: u8,
    /// HELLO_REQUEST and HELLO payloads of this session, for the key exchange transcript.
    pub(super) hello_payloads: Option<(Vec<u8>, Vec<u8>)>,
    pub(super) session: Option<TerminalSession>,
}

impl Simulator {
    /// Builds a simulator, loading the device state from `config.state_path` if it exists. A
    /// version 2 terminal without a key pair generates one and saves it.
    pub fn new(config: SimulatorConfig) -> Result<Self, SimulatorError> {
        if let Some(transport_key) = &config.transport_key
            && !transport_key.algorithm().is_aes()
        {
            return Err(SimulatorError::Config(format!(
                "the transport key is {}, but version D key blocks need an AES transport key",
                transport_key.algorithm()
            )));
        }
        if config.transport_key.is_none() && config.ecc.is_none() {
            return Err(SimulatorError::Config(
                "a terminal needs a pre-shared transport key, ECC support, or both".to_owned(),
            ));
        }
        let identity = &config.identity;
        Hello::version_1(
            &identity.vendor,
            &identity.model,
            &identity.serial_number,
            &identity.firmware_version,
        )
        .encode()
        .map_err(|error| {
            SimulatorError::Config(format!(
                "the terminal identity cannot be sent in HELLO: {error}"
            ))
        })?;

        let mut state = DeviceState::load(&config.state_path)?;
        if let Some(owner) = &state.serial_number
            && *owner != identity.serial_number
        {
            return Err(SimulatorError::StateFile {
                path: config.state_path.clone(),
                reason: format!(
                    "the file belongs to terminal {owner}, not {}; give each terminal its own file",
                    identity.serial_number
                ),
            });
        }
        if config.ecc.is_some() && state.certificate_key.is_none() {
            state.certificate_key = Some(
                P384PrivateKey::generate()
                    .map_err(|error| SimulatorError::Config(error.to_string()))?,
            );
            state.serial_number = Some(identity.serial_number.clone());
            state.save(&config.state_path)?;
            info!(serial_number = %identity.serial_number, "simulated terminal generated its certificate key pair");
        }
        Ok(Self {
            config,
            state,
            last_exchange: None,
            responses_sent: 0,
            requests_seen: 0,
            version: 0,
            hello_payloads: None,
            session: None,
        })
    }

    /// Returns the simulated device's storage.
    pub fn state(&self) -> &DeviceState {
        &self.state
    }

    /// Handles one request frame and returns the response frame, with the request's sequence
    /// number.
    ///
    /// A request equal to the last one handled (same sequence number, type and payload) is a
    /// retry: it gets the earlier response again and changes nothing.
    pub fn handle_frame(&mut self, request: &Frame) -> Frame {
        if let Some(last) = &self.last_exchange
            && last.request == *request
        {
            debug!(
                sequence = request.sequence(),
                "request repeated; sending the earlier response again"
            );
            return last.response.clone();
        }

        let response = self.respond(request);
        let frame = match response.to_frame(request.sequence()) {
            Ok(frame) => frame,
            Err(error) => {
                warn!(%error, "failed to encode the response; sending ERROR instead");
                let fallback = Message::Error(ErrorMessage {
                    code: ErrorCode::InternalError,
                    text: "the terminal failed to encode its response".to_owned(),
                });
                fallback
                    .to_frame(request.sequence())
                    .expect("a short ERROR message always fits in a frame")
            }
        };
        self.last_exchange = Some(LastExchange {
            request: request.clone(),
            response: frame.clone(),
        });
        frame
    }

    /// Serves requests on `link` until `stop` is set or the station side disconnects.
    pub fn serve<S: ByteStream>(
        &mut self,
        link: &mut FramedLink<S>,
        stop: &AtomicBool,
    ) -> Result<(), SimulatorError> {
        info!(
            serial_number = %self.config.identity.serial_number,
            peer = link.peer(),
            "simulated terminal ready"
        );
        while !stop.load(Ordering::Relaxed) {
            let request = match link.receive_or_damaged(Instant::now() + STOP_POLL_INTERVAL) {
                Ok(Received::Frame(frame)) => frame,
                Ok(Received::Damaged(damage)) => {
                    warn!(sequence = damage.sequence, error = %damage.error, "request damaged on the line; sending NAK");
                    let reason = match damage.error {
                        FrameError::MissingEnd { .. } => NakReason::MissingEnd,
                        _ => NakReason::CrcMismatch,
                    };
                    let nak = Message::Nak(Nak { reason })
                        .to_frame(damage.sequence)
                        .expect("a NAK always fits in a frame");
                    link.send(&nak)?;
                    continue;
                }
                Err(LinkError::Timeout { .. }) => continue,
                Err(LinkError::Disconnected { .. } | LinkError::DisconnectedMidFrame { .. }) => {
                    info!("station side disconnected; simulated terminal stopping");
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            };

            if request.message_type() == MessageType::Nak.code() {
                match &self.last_exchange {
                    Some(last) if last.response.sequence() == request.sequence() => {
                        debug!(
                            sequence = request.sequence(),
                            "station sent NAK; sending the last response again"
                        );
                        let response = last.response.clone();
                        self.send_response(link, &response)?;
                    }
                    _ => debug!(
                        sequence = request.sequence(),
                        "ignoring a NAK for no response of ours"
                    ),
                }
                continue;
            }

            self.requests_seen += 1;
            if self.requests_seen <= u64::from(self.config.faults.ignore_requests) {
                debug!(
                    sequence = request.sequence(),
                    "ignoring the request, as if it were lost"
                );
                continue;
            }
            let is_load = request.message_type() == MessageType::LoadKey.code();
            let response = self.handle_frame(&request);
            if is_load && self.config.faults.disconnect_mid_load_result {
                let bytes = response.encode();
                link.write_raw(&bytes[..bytes.len() / 2])?;
                warn!("hanging up the line in the middle of LOAD_RESULT, as an unplugged terminal");
                return Ok(());
            }
            self.send_response(link, &response)?;
        }
        Ok(())
    }

    fn send_response<S: ByteStream>(
        &mut self,
        link: &mut FramedLink<S>,
        response: &Frame,
    ) -> Result<(), SimulatorError> {
        let faults = &self.config.faults;
        if !faults.garbage_before_responses.is_empty() {
            link.write_raw(&faults.garbage_before_responses)?;
        }
        let mut bytes = response.encode();
        // Both faults count every transmission, resent ones included, so a count above the
        // station's attempts makes a line that damages everything.
        self.responses_sent += 1;
        if self.responses_sent <= u64::from(faults.corrupt_responses) {
            let crc_position = bytes.len() - 2;
            bytes[crc_position] ^= 0xFF;
            debug!(
                sequence = response.sequence(),
                "injecting a CRC error into the response"
            );
        } else if self.responses_sent
            <= u64::from(faults.corrupt_responses) + u64::from(faults.noise_inside_responses)
        {
            let middle = bytes.len() / 2;
            bytes.insert(middle, 0x5A);
            debug!(
                sequence = response.sequence(),
                "injecting a noise byte inside the response"
            );
        }
        if faults.split_responses {
            for byte in &bytes {
                link.write_raw(std::slice::from_ref(byte))?;
                std::thread::sleep(SPLIT_BYTE_PAUSE);
            }
        } else {
            link.write_raw(&bytes)?;
        }
        Ok(())
    }

    fn respond(&mut self, request: &Frame) -> Message {
        let message = match Message::from_frame(request) {
            Ok(message) => message,
            Err(error @ ProtocolError::UnknownMessageType { .. }) => {
                warn!(%error, "rejecting a request of unknown type");
                return error_response(ErrorCode::UnsupportedMessageType, error.to_string());
            }
            Err(error) => {
                warn!(%error, "rejecting a malformed request");
                return error_response(ErrorCode::MalformedMessage, error.to_string());
            }
        };

        let result = match message {
            Message::HelloRequest(hello_request) => {
                self.hello(hello_request.protocol_version, request.payload())
            }
            Message::LoadKey(load) => self
                .load_key(&load)
                .map(|result| self.authenticate_result(request.payload(), result))
                .and_then(|result| result.map(Message::LoadResult)),
            Message::CsrRequest(_) => self.csr().map(Message::Csr),
            Message::Certificate(install) => self
                .install_certificate(&install.chain)
                .map(Message::CertificateStored),
            Message::KeyExchange(exchange) => self
                .key_exchange(request.payload(), &exchange)
                .map(Message::KeyExchangeResponse),
            Message::KeyConfirm(confirm) => self.key_confirm(&confirm).map(Message::KeyConfirmed),
            other => Err((
                ErrorCode::UnsupportedMessageType,
                format!("{} is sent by terminals, not to them", other.message_type()),
            )),
        };
        match result {
            Ok(message) => message,
            Err((code, text)) => {
                warn!(%code, %text, request = request.message_type(), "rejecting the request");
                error_response(code, text)
            }
        }
    }

    /// Builds the HELLO for a station that offers `offered`, and starts a new session.
    fn hello(
        &mut self,
        offered: u8,
        request_payload: &[u8],
    ) -> Result<Message, (ErrorCode, String)> {
        let highest = if self.config.ecc.is_some() {
            PROTOCOL_VERSION
        } else {
            1
        };
        if offered < 1 {
            return Err((
                ErrorCode::UnsupportedProtocolVersion,
                format!(
                    "the station offers protocol version {offered} but this terminal needs version 1 or later"
                ),
            ));
        }
        let version = offered.min(highest);
        let identity = &self.config.identity;
        let mut hello = Hello::version_1(
            &identity.vendor,
            &identity.model,
            &identity.serial_number,
            &identity.firmware_version,
        );
        hello.protocol_version = version;
        if version >= 2 {
            let ecc = self
                .config
                .ecc
                .as_ref()
                .expect("version 2 is offered only with ECC settings");
            hello.capabilities.key_exchange = true;
            hello.capabilities.csr = ecc.on_board_key_generation;
            hello.certificate_chain = self.presented_chain()?;
        }
        let payload = hello
            .encode()
            .map_err(|error| (ErrorCode::InternalError, error.to_string()))?;
        self.version = version;
        self.session = None;
        self.hello_payloads = Some((request_payload.to_vec(), payload));
        Ok(Message::Hello(hello))
    }

    /// Computes the MAC of a LOAD_RESULT in an authenticated session.
    fn authenticate_result(
        &self,
        load_payload: &[u8],
        mut result: LoadResult,
    ) -> Result<LoadResult, (ErrorCode, String)> {
        if let Some(session) = &self.session
            && session.confirmed
        {
            let fields = result
                .authenticated_fields()
                .map_err(|error| (ErrorCode::InternalError, error.to_string()))?;
            result.mac = Some(session.keys.load_result_mac(load_payload, &fields));
        }
        Ok(result)
    }

    /// Checks and stores the key of a LOAD_KEY request.
    fn load_key(&mut self, load: &LoadKey) -> Result<LoadResult, (ErrorCode, String)> {
        if self.config.faults.storage_full {
            return Err((
                ErrorCode::StorageFull,
                "the key storage is full; no key can be stored".to_owned(),
            ));
        }
        let kbpk = match (&self.session, self.version, &self.config.transport_key) {
            (Some(session), _, _) if session.confirmed => session.keys.kbpk().duplicate(),
            (_, 2, _) => {
                return Err((
                    ErrorCode::NoSession,
                    "LOAD_KEY needs a completed KEY_EXCHANGE and KEY_CONFIRM in protocol version 2"
                        .to_owned(),
                ));
            }
            (_, _, Some(transport_key)) => transport_key.duplicate(),
            (_, _, None) => {
                return Err((
                    ErrorCode::NoSession,
                    "this terminal has no pre-shared transport key; run the key exchange first"
                        .to_owned(),
                ));
            }
        };
        if load.slot >= self.config.slot_count {
            return Err((
                ErrorCode::SlotInvalid,
                format!(
                    "slot {} does not exist; this terminal has slots 0 to {}",
                    load.slot,
                    self.config.slot_count.saturating_sub(1)
                ),
            ));
        }

        let (header, key) = tr31::unwrap(&kbpk, &load.key_block).map_err(|error| {
            let code = match error {
                Tr31Error::MacMismatch => ErrorCode::KeyBlockMacInvalid,
                _ => ErrorCode::KeyBlockInvalid,
            };
            (code, error.to_string())
        })?;

        // ANSI X9.143 key usage B1 is the initial DUKPT key, the only usage a terminal accepts
        // in LOAD_KEY.
        if header.key_usage() != KeyUsage::InitialDukptKey {
            return Err((
                ErrorCode::KeyUsageNotAllowed,
                format!(
                    "key usage is {}; this terminal loads only B1 (initial DUKPT key)",
                    header.key_usage()
                ),
            ));
        }

        // An AES DUKPT initial key carries its initial key ID in the IK optional block (ANSI
        // X9.143), which must match the ID the station sent beside the block.
        let expected = load.initial_key_id.to_hex();
        match header.optional_block("IK") {
            None => {
                return Err((
                    ErrorCode::InitialKeyIdMismatch,
                    "the key block has no IK optional block".to_owned(),
                ));
            }
            Some(found) if !found.eq_ignore_ascii_case(&expected) => {
                return Err((
                    ErrorCode::InitialKeyIdMismatch,
                    format!("the key block's IK is {found} but the message says {expected}"),
                ));
            }
            Some(_) => {}
        }

        if !key.algorithm().is_aes() {
            return Err((
                ErrorCode::KeyAlgorithmUnsupported,
                format!(
                    "the key is {}; this terminal runs AES DUKPT only",
                    key.algorithm()
                ),
            ));
        }

        let kcv = Kcv::compute(&key, KcvMethod::Cmac);
        let replaced = self.state.insert(StoredKey {
            slot: load.slot,
            initial_key_id: load.initial_key_id,
            key,
        });
        if let Err(error) = self.state.save(&self.config.state_path) {
            warn!(%error, "failed to write the simulated secure storage");
            self.state.remove(load.slot);
            if let Some(previous) = replaced {
                self.state.insert(previous);
            }
            return Err((
                ErrorCode::StorageFailed,
                "the terminal failed to write its key storage".to_owned(),
            ));
        }

        let status = if replaced.is_some() {
            LoadStatus::Replaced
        } else {
            LoadStatus::Stored
        };
        info!(
            slot = load.slot,
            initial_key_id = %expected,
            %kcv,
            status = status.name(),
            "simulated terminal stored a key"
        );
        Ok(LoadResult {
            status,
            kcv,
            mac: None,
        })
    }
}

fn error_response(code: ErrorCode, text: String) -> Message {
    Message::Error(ErrorMessage { code, text })
}
