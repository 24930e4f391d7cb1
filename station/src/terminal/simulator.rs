//! The device side of the protocol: responds to HELLO_REQUEST and LOAD_KEY as a terminal would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::config::SimulatorConfig;
use super::error::SimulatorError;
use super::state::{DeviceState, StoredKey};
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::crypto::tr31::{self, KeyUsage, Tr31Error};
use crate::link::{ByteStream, Frame, FramedLink, LinkError};
use crate::protocol::{
    ErrorCode, ErrorMessage, Hello, LoadKey, LoadResult, LoadStatus, Message, PROTOCOL_VERSION,
    ProtocolError,
};

/// How often the serving loop checks its stop flag while the line is idle.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The last request and its response frame, for responding to a retried request again.
struct LastExchange {
    request: Frame,
    response: Frame,
}

/// A simulated terminal: identity, transport key, secure storage and the protocol logic.
pub struct Simulator {
    config: SimulatorConfig,
    state: DeviceState,
    last_exchange: Option<LastExchange>,
    responses_sent: u64,
}

impl Simulator {
    /// Builds a simulator, loading the device state from `config.state_path` if it exists.
    pub fn new(config: SimulatorConfig) -> Result<Self, SimulatorError> {
        if !config.transport_key.algorithm().is_aes() {
            return Err(SimulatorError::Config(format!(
                "the transport key is {}, but version D key blocks need an AES transport key",
                config.transport_key.algorithm()
            )));
        }
        let identity = &config.identity;
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            vendor: identity.vendor.clone(),
            model: identity.model.clone(),
            serial_number: identity.serial_number.clone(),
            firmware_version: identity.firmware_version.clone(),
        };
        hello.encode().map_err(|error| {
            SimulatorError::Config(format!(
                "the terminal identity cannot be sent in HELLO: {error}"
            ))
        })?;
        let state = DeviceState::load(&config.state_path)?;
        Ok(Self {
            config,
            state,
            last_exchange: None,
            responses_sent: 0,
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
        use crate::link::Link;

        info!(
            serial_number = %self.config.identity.serial_number,
            peer = link.peer(),
            "simulated terminal ready"
        );
        while !stop.load(Ordering::Relaxed) {
            let request = match link.receive(Instant::now() + STOP_POLL_INTERVAL) {
                Ok(frame) => frame,
                Err(LinkError::Timeout { .. }) => continue,
                Err(LinkError::Disconnected { .. }) => {
                    info!("station side disconnected; simulated terminal stopping");
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            };
            let response = self.handle_frame(&request);
            self.send_response(link, &response)?;
        }
        Ok(())
    }

    fn send_response<S: ByteStream>(
        &mut self,
        link: &mut FramedLink<S>,
        response: &Frame,
    ) -> Result<(), SimulatorError> {
        use crate::link::Link;

        let faults = &self.config.faults;
        if !faults.garbage_before_responses.is_empty() {
            link.write_raw(&faults.garbage_before_responses)?;
        }
        self.responses_sent += 1;
        if self.responses_sent <= u64::from(faults.corrupt_responses) {
            let mut bytes = response.encode();
            let crc_position = bytes.len() - 2;
            bytes[crc_position] ^= 0xFF;
            debug!(
                sequence = response.sequence(),
                "injecting a CRC error into the response"
            );
            link.write_raw(&bytes)?;
        } else {
            link.send(response)?;
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

        match message {
            Message::HelloRequest(hello) if hello.protocol_version < PROTOCOL_VERSION => {
                error_response(
                    ErrorCode::UnsupportedProtocolVersion,
                    format!(
                        "the station offers protocol version {} but this terminal needs version {}",
                        hello.protocol_version, PROTOCOL_VERSION
                    ),
                )
            }
            Message::HelloRequest(_) => {
                let identity = &self.config.identity;
                Message::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    vendor: identity.vendor.clone(),
                    model: identity.model.clone(),
                    serial_number: identity.serial_number.clone(),
                    firmware_version: identity.firmware_version.clone(),
                })
            }
            Message::LoadKey(load) => match self.load_key(&load) {
                Ok(result) => Message::LoadResult(result),
                Err((code, text)) => {
                    warn!(slot = load.slot, %code, %text, "rejecting LOAD_KEY");
                    error_response(code, text)
                }
            },
            other => error_response(
                ErrorCode::UnsupportedMessageType,
                format!("{} is sent by terminals, not to them", other.message_type()),
            ),
        }
    }

    /// Checks and stores the key of a LOAD_KEY request.
    fn load_key(&mut self, load: &LoadKey) -> Result<LoadResult, (ErrorCode, String)> {
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

        let (header, key) =
            tr31::unwrap(&self.config.transport_key, &load.key_block).map_err(|error| {
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
        Ok(LoadResult { status, kcv })
    }
}

fn error_response(code: ErrorCode, text: String) -> Message {
    Message::Error(ErrorMessage { code, text })
}
