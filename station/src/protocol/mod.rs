//! The terminal protocol, versions 1 and 2: its messages and the station's side of a session.
//!
//! Each message type lives in its own file and encodes and decodes its own payload; the frame
//! around it belongs to [`crate::link`]. Requests have type codes below 0x80, and the response
//! to a request has the request's code with the high bit set. ERROR (0xFF) is a valid response
//! to any request, and NAK (0x15) requests the other side to send its last frame again. Version 2
//! adds certificates, the authenticated key exchange of [`handshake`] and a MAC on LOAD_RESULT.
//! `docs/protocol.md` specifies every byte for terminal implementers.

mod certificate;
mod codec;
mod csr;
mod driver;
mod error;
mod error_message;
pub mod handshake;
mod hello;
mod hello_request;
mod key_confirm;
mod key_exchange;
mod load_key;
mod load_result;
mod nak;
mod session;

use std::fmt;

pub use certificate::{CertificateInstall, CertificateStored};
pub use csr::{Csr, CsrRequest};
pub use driver::{DeviceCredentials, ReferenceDriver, StationCredentials, TerminalDriver};
pub use error::ProtocolError;
pub use error_message::{ErrorCode, ErrorMessage};
pub use hello::{Capabilities, Hello};
pub use hello_request::HelloRequest;
pub use key_confirm::{KeyConfirm, KeyConfirmed};
pub use key_exchange::{KeyExchangeRequest, KeyExchangeResponse};
pub use load_key::LoadKey;
pub use load_result::{LoadResult, LoadStatus, kcv_method_code, kcv_method_from_code};
pub use nak::{Nak, NakReason};
pub use session::{AuthenticatedSession, SessionConfig, SessionError, StationSession};

use crate::link::Frame;

/// The highest protocol version this station and its simulator speak.
pub const PROTOCOL_VERSION: u8 = 2;
/// The lowest protocol version the station accepts: version 1 terminals load keys under a
/// pre-shared transport key.
pub const MIN_PROTOCOL_VERSION: u8 = 1;

/// Message type codes of protocol versions 1 and 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    /// `0x01`, station to terminal.
    HelloRequest,
    /// `0x81`, terminal to station.
    Hello,
    /// `0x02`, station to terminal.
    LoadKey,
    /// `0x82`, terminal to station.
    LoadResult,
    /// `0x03`, station to terminal (version 2).
    CsrRequest,
    /// `0x83`, terminal to station (version 2).
    Csr,
    /// `0x04`, station to terminal (version 2).
    Certificate,
    /// `0x84`, terminal to station (version 2).
    CertificateStored,
    /// `0x05`, station to terminal (version 2).
    KeyExchange,
    /// `0x85`, terminal to station (version 2).
    KeyExchangeResponse,
    /// `0x06`, station to terminal (version 2).
    KeyConfirm,
    /// `0x86`, terminal to station (version 2).
    KeyConfirmed,
    /// `0x15`, either direction (version 2).
    Nak,
    /// `0xFF`, terminal to station.
    Error,
}

impl MessageType {
    /// Every message type.
    pub const ALL: [Self; 14] = [
        Self::HelloRequest,
        Self::Hello,
        Self::LoadKey,
        Self::LoadResult,
        Self::CsrRequest,
        Self::Csr,
        Self::Certificate,
        Self::CertificateStored,
        Self::KeyExchange,
        Self::KeyExchangeResponse,
        Self::KeyConfirm,
        Self::KeyConfirmed,
        Self::Nak,
        Self::Error,
    ];

    /// Type byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::HelloRequest => 0x01,
            Self::Hello => 0x81,
            Self::LoadKey => 0x02,
            Self::LoadResult => 0x82,
            Self::CsrRequest => 0x03,
            Self::Csr => 0x83,
            Self::Certificate => 0x04,
            Self::CertificateStored => 0x84,
            Self::KeyExchange => 0x05,
            Self::KeyExchangeResponse => 0x85,
            Self::KeyConfirm => 0x06,
            Self::KeyConfirmed => 0x86,
            Self::Nak => 0x15,
            Self::Error => 0xFF,
        }
    }

    /// Parses a type byte.
    pub fn from_code(code: u8) -> Result<Self, ProtocolError> {
        Self::ALL
            .into_iter()
            .find(|message_type| message_type.code() == code)
            .ok_or(ProtocolError::UnknownMessageType { type_byte: code })
    }

    /// Name as written in the protocol specification.
    pub fn name(self) -> &'static str {
        match self {
            Self::HelloRequest => "HELLO_REQUEST",
            Self::Hello => "HELLO",
            Self::LoadKey => "LOAD_KEY",
            Self::LoadResult => "LOAD_RESULT",
            Self::CsrRequest => "CSR_REQUEST",
            Self::Csr => "CSR",
            Self::Certificate => "CERTIFICATE",
            Self::CertificateStored => "CERTIFICATE_STORED",
            Self::KeyExchange => "KEY_EXCHANGE",
            Self::KeyExchangeResponse => "KEY_EXCHANGE response",
            Self::KeyConfirm => "KEY_CONFIRM",
            Self::KeyConfirmed => "KEY_CONFIRMED",
            Self::Nak => "NAK",
            Self::Error => "ERROR",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Any message of protocol versions 1 and 2.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Message {
    /// See [`HelloRequest`].
    HelloRequest(HelloRequest),
    /// See [`Hello`].
    Hello(Hello),
    /// See [`LoadKey`].
    LoadKey(LoadKey),
    /// See [`LoadResult`].
    LoadResult(LoadResult),
    /// See [`CsrRequest`].
    CsrRequest(CsrRequest),
    /// See [`Csr`].
    Csr(Csr),
    /// See [`CertificateInstall`].
    Certificate(CertificateInstall),
    /// See [`CertificateStored`].
    CertificateStored(CertificateStored),
    /// See [`KeyExchangeRequest`].
    KeyExchange(KeyExchangeRequest),
    /// See [`KeyExchangeResponse`].
    KeyExchangeResponse(KeyExchangeResponse),
    /// See [`KeyConfirm`].
    KeyConfirm(KeyConfirm),
    /// See [`KeyConfirmed`].
    KeyConfirmed(KeyConfirmed),
    /// See [`Nak`].
    Nak(Nak),
    /// See [`ErrorMessage`].
    Error(ErrorMessage),
}

impl Message {
    /// Returns the message's type code.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::HelloRequest(_) => MessageType::HelloRequest,
            Self::Hello(_) => MessageType::Hello,
            Self::LoadKey(_) => MessageType::LoadKey,
            Self::LoadResult(_) => MessageType::LoadResult,
            Self::CsrRequest(_) => MessageType::CsrRequest,
            Self::Csr(_) => MessageType::Csr,
            Self::Certificate(_) => MessageType::Certificate,
            Self::CertificateStored(_) => MessageType::CertificateStored,
            Self::KeyExchange(_) => MessageType::KeyExchange,
            Self::KeyExchangeResponse(_) => MessageType::KeyExchangeResponse,
            Self::KeyConfirm(_) => MessageType::KeyConfirm,
            Self::KeyConfirmed(_) => MessageType::KeyConfirmed,
            Self::Nak(_) => MessageType::Nak,
            Self::Error(_) => MessageType::Error,
        }
    }

    /// Encodes the message's payload.
    pub fn encode_payload(&self) -> Result<Vec<u8>, ProtocolError> {
        match self {
            Self::HelloRequest(message) => message.encode(),
            Self::Hello(message) => message.encode(),
            Self::LoadKey(message) => message.encode(),
            Self::LoadResult(message) => message.encode(),
            Self::CsrRequest(message) => message.encode(),
            Self::Csr(message) => message.encode(),
            Self::Certificate(message) => message.encode(),
            Self::CertificateStored(message) => message.encode(),
            Self::KeyExchange(message) => message.encode(),
            Self::KeyExchangeResponse(message) => message.encode(),
            Self::KeyConfirm(message) => message.encode(),
            Self::KeyConfirmed(message) => message.encode(),
            Self::Nak(message) => message.encode(),
            Self::Error(message) => message.encode(),
        }
    }

    /// Decodes a payload of the given type byte.
    pub fn decode(type_byte: u8, payload: &[u8]) -> Result<Self, ProtocolError> {
        Ok(match MessageType::from_code(type_byte)? {
            MessageType::HelloRequest => Self::HelloRequest(HelloRequest::decode(payload)?),
            MessageType::Hello => Self::Hello(Hello::decode(payload)?),
            MessageType::LoadKey => Self::LoadKey(LoadKey::decode(payload)?),
            MessageType::LoadResult => Self::LoadResult(LoadResult::decode(payload)?),
            MessageType::CsrRequest => Self::CsrRequest(CsrRequest::decode(payload)?),
            MessageType::Csr => Self::Csr(Csr::decode(payload)?),
            MessageType::Certificate => Self::Certificate(CertificateInstall::decode(payload)?),
            MessageType::CertificateStored => {
                Self::CertificateStored(CertificateStored::decode(payload)?)
            }
            MessageType::KeyExchange => Self::KeyExchange(KeyExchangeRequest::decode(payload)?),
            MessageType::KeyExchangeResponse => {
                Self::KeyExchangeResponse(KeyExchangeResponse::decode(payload)?)
            }
            MessageType::KeyConfirm => Self::KeyConfirm(KeyConfirm::decode(payload)?),
            MessageType::KeyConfirmed => Self::KeyConfirmed(KeyConfirmed::decode(payload)?),
            MessageType::Nak => Self::Nak(Nak::decode(payload)?),
            MessageType::Error => Self::Error(ErrorMessage::decode(payload)?),
        })
    }

    /// Encodes the message into a frame with the given sequence number.
    pub fn to_frame(&self, sequence: u8) -> Result<Frame, ProtocolError> {
        let message_type = self.message_type();
        let payload = self.encode_payload()?;
        Frame::new(sequence, message_type.code(), payload).map_err(|source| ProtocolError::Frame {
            message: message_type,
            source,
        })
    }

    /// Decodes the message a frame carries.
    pub fn from_frame(frame: &Frame) -> Result<Self, ProtocolError> {
        Self::decode(frame.message_type(), frame.payload())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::dukpt::aes::InitialKeyId;
    use crate::crypto::kcv::{Kcv, KcvMethod};

    fn round_trip(message: &Message) -> Message {
        let frame = message.to_frame(0x42).expect("encodes");
        assert_eq!(frame.message_type(), message.message_type().code());
        let bytes = frame.encode();
        let decoded_frame = Frame::decode(&bytes).expect("frame decodes");
        Message::from_frame(&decoded_frame).expect("message decodes")
    }

    fn hello() -> Hello {
        Hello::version_1("Example Payments", "SIM-1", "SN-0001", "1.0.0")
    }

    #[test]
    fn hello_request_round_trips() {
        let message = Message::HelloRequest(HelloRequest {
            protocol_version: 1,
        });
        assert!(matches!(
            round_trip(&message),
            Message::HelloRequest(HelloRequest {
                protocol_version: 1
            })
        ));
    }

    #[test]
    fn hello_round_trips() {
        let Message::Hello(decoded) = round_trip(&Message::Hello(hello())) else {
            panic!("not a HELLO");
        };
        assert_eq!(decoded, hello());
    }

    #[test]
    fn hello_payload_layout() {
        let payload = hello().encode().expect("encodes");
        let mut expected = vec![0x01, 16];
        expected.extend_from_slice(b"Example Payments");
        expected.push(5);
        expected.extend_from_slice(b"SIM-1");
        expected.push(7);
        expected.extend_from_slice(b"SN-0001");
        expected.push(5);
        expected.extend_from_slice(b"1.0.0");
        assert_eq!(payload, expected);
    }

    #[test]
    fn load_key_round_trips() {
        let load = LoadKey {
            slot: 3,
            initial_key_id: InitialKeyId::from_hex("0123456789ABCDEF").expect("valid ID"),
            key_block: "D0144B1AX00N0100IK1401234567".to_owned(),
        };
        let Message::LoadKey(decoded) = round_trip(&Message::LoadKey(load.clone())) else {
            panic!("not a LOAD_KEY");
        };
        assert_eq!(decoded, load);
    }

    #[test]
    fn load_result_round_trips() {
        let kcv = Kcv::from_hex(KcvMethod::Cmac, "7AD386").expect("valid KCV");
        let message = Message::LoadResult(LoadResult {
            status: LoadStatus::Replaced,
            kcv,
            mac: None,
        });
        let payload = message.encode_payload().expect("encodes");
        assert_eq!(payload, [0x01, 0x02, 0x03, 0x7A, 0xD3, 0x86]);
        let Message::LoadResult(decoded) = round_trip(&message) else {
            panic!("not a LOAD_RESULT");
        };
        assert_eq!(decoded.status, LoadStatus::Replaced);
        assert_eq!(decoded.kcv.method(), KcvMethod::Cmac);
        assert_eq!(decoded.kcv.to_hex(), "7AD386");
    }

    #[test]
    fn error_round_trips() {
        let message = ErrorMessage {
            code: ErrorCode::KeyBlockMacInvalid,
            text: "MAC does not verify".to_owned(),
        };
        let Message::Error(decoded) = round_trip(&Message::Error(message.clone())) else {
            panic!("not an ERROR");
        };
        assert_eq!(decoded, message);
    }

    #[test]
    fn unknown_message_type_is_rejected() {
        let error = Message::decode(0x42, &[]).unwrap_err();
        assert_eq!(error, ProtocolError::UnknownMessageType { type_byte: 0x42 });
        assert_eq!(
            error.to_string(),
            "message type 0x42 is not defined by protocol versions 1 and 2"
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut payload = hello().encode().expect("encodes");
        payload.push(0);
        let error = Hello::decode(&payload).unwrap_err();
        assert_eq!(
            error,
            ProtocolError::TrailingBytes {
                message: MessageType::Hello,
                count: 1
            }
        );
        assert_eq!(
            error.to_string(),
            "HELLO message has 1 unexpected bytes after its last field"
        );
    }

    #[test]
    fn truncated_field_names_the_field() {
        let payload = hello().encode().expect("encodes");
        let error = Hello::decode(&payload[..10]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "HELLO message is truncated: field vendor needs 16 bytes but only 8 remain"
        );
    }

    #[test]
    fn control_character_in_identity_is_rejected() {
        let mut payload = hello().encode().expect("encodes");
        payload[2] = 0x1B;
        let error = Hello::decode(&payload).unwrap_err();
        assert_eq!(
            error.to_string(),
            "HELLO message field vendor is invalid: byte 0x1B at offset 0 is not printable ASCII"
        );
    }

    #[test]
    fn control_character_in_error_text_is_replaced() {
        let mut payload = vec![0x01, 0x01, 0x00, 0x03];
        payload.extend_from_slice(b"a\nb");
        let decoded = ErrorMessage::decode(&payload).expect("decodes");
        assert_eq!(decoded.code, ErrorCode::KeyBlockMacInvalid);
        assert_eq!(decoded.text, "a\u{FFFD}b");
    }

    #[test]
    fn undefined_error_code_is_kept() {
        let decoded = ErrorMessage::decode(&[0x7E, 0x57, 0x00, 0x00]).expect("decodes");
        assert_eq!(decoded.code, ErrorCode::Other(0x7E57));
        assert_eq!(decoded.code.to_string(), "0x7E57 (undefined error code)");
    }

    #[test]
    fn undefined_load_status_is_rejected() {
        let error = LoadResult::decode(&[0x09, 0x02, 0x03, 1, 2, 3]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "LOAD_RESULT message field status has undefined value 0x09"
        );
    }

    #[test]
    fn kcv_of_invalid_length_is_rejected() {
        let error = LoadResult::decode(&[0x00, 0x02, 0x01, 0xAA]).unwrap_err();
        assert!(
            matches!(error, ProtocolError::InvalidField { field: "kcv", .. }),
            "{error:?}"
        );
    }

    #[test]
    fn oversized_key_block_does_not_fit_a_frame() {
        let load = Message::LoadKey(LoadKey {
            slot: 0,
            initial_key_id: InitialKeyId::from_bytes([0; 8]),
            key_block: "A".repeat(crate::link::MAX_PAYLOAD_LEN),
        });
        let error = load.to_frame(1).unwrap_err();
        assert!(
            matches!(
                error,
                ProtocolError::Frame {
                    message: MessageType::LoadKey,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn message_type_codes_are_distinct() {
        for message_type in MessageType::ALL {
            assert_eq!(
                MessageType::from_code(message_type.code()),
                Ok(message_type)
            );
        }
    }

    #[test]
    fn hello_version_2_round_trips() {
        let mut hello = hello();
        hello.protocol_version = 2;
        hello.capabilities = Capabilities {
            key_exchange: true,
            csr: false,
        };
        hello.certificate_chain = vec![vec![0x30, 0x03, 0x02, 0x01, 0x05]];
        let payload = hello.encode().expect("encodes");
        assert_eq!(
            payload[payload.len() - 9..],
            [0x01, 0x01, 0x00, 0x05, 0x30, 0x03, 0x02, 0x01, 0x05]
        );
        let Message::Hello(decoded) = round_trip(&Message::Hello(hello.clone())) else {
            panic!("not a HELLO");
        };
        assert_eq!(decoded, hello);
    }

    #[test]
    fn undefined_capability_bit_is_rejected() {
        let mut hello = hello();
        hello.protocol_version = 2;
        let mut payload = hello.encode().expect("encodes");
        let capabilities = payload.len() - 2;
        payload[capabilities] = 0x04;
        let error = Hello::decode(&payload).unwrap_err();
        assert_eq!(
            error.to_string(),
            "HELLO message field capabilities has undefined value 0x04"
        );
    }

    #[test]
    fn key_exchange_messages_round_trip() {
        let request = KeyExchangeRequest {
            station_nonce: [0xA5; 32],
            station_ephemeral_key: [0x04; 97],
            station_certificate_chain: vec![vec![1, 2, 3], vec![4]],
        };
        let payload = request.encode().expect("encodes");
        assert_eq!(payload.len(), 32 + 97 + 1 + 2 + 3 + 2 + 1);
        let Message::KeyExchange(decoded) = round_trip(&Message::KeyExchange(request.clone()))
        else {
            panic!("not a KEY_EXCHANGE");
        };
        assert_eq!(decoded, request);

        let response = KeyExchangeResponse {
            terminal_nonce: [0x5A; 32],
            terminal_ephemeral_key: [0x04; 97],
            terminal_signature: vec![0x30; 70],
            terminal_confirmation: [0x11; 16],
        };
        let Message::KeyExchangeResponse(decoded) =
            round_trip(&Message::KeyExchangeResponse(response.clone()))
        else {
            panic!("not a KEY_EXCHANGE response");
        };
        assert_eq!(decoded, response);

        let confirm = KeyConfirm {
            station_signature: vec![0x30; 71],
            station_confirmation: [0x22; 16],
        };
        let Message::KeyConfirm(decoded) = round_trip(&Message::KeyConfirm(confirm.clone())) else {
            panic!("not a KEY_CONFIRM");
        };
        assert_eq!(decoded, confirm);
    }

    #[test]
    fn truncated_ephemeral_key_names_field() {
        let error = KeyExchangeRequest::decode(&[0u8; 40]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "KEY_EXCHANGE message is truncated: field station_ephemeral_key needs 97 bytes but only 8 remain"
        );
    }

    #[test]
    fn nak_round_trips() {
        let message = Message::Nak(Nak {
            reason: NakReason::MissingEnd,
        });
        assert_eq!(message.encode_payload().expect("encodes"), [0x02]);
        let Message::Nak(decoded) = round_trip(&message) else {
            panic!("not a NAK");
        };
        assert_eq!(decoded.reason, NakReason::MissingEnd);
        assert!(Nak::decode(&[0x07]).is_err());
    }

    #[test]
    fn load_result_mac_round_trips() {
        let result = LoadResult {
            status: LoadStatus::Stored,
            kcv: Kcv::from_hex(KcvMethod::Cmac, "05EF45").expect("valid KCV"),
            mac: Some([0xEE; 16]),
        };
        let payload = result.encode().expect("encodes");
        assert_eq!(payload[..6], [0x00, 0x02, 0x03, 0x05, 0xEF, 0x45]);
        assert_eq!(payload[6], 16);
        assert_eq!(
            result.authenticated_fields().expect("encodes"),
            payload[..6]
        );
        let decoded = LoadResult::decode(&payload).expect("decodes");
        assert_eq!(decoded.mac, Some([0xEE; 16]));
    }

    #[test]
    fn short_load_result_mac_is_rejected() {
        let error = LoadResult::decode(&[0x00, 0x02, 0x03, 1, 2, 3, 0x02, 0xAA, 0xBB]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "LOAD_RESULT message field mac is invalid: the MAC is 2 bytes; it must be 16"
        );
    }

    #[test]
    fn empty_certificate_chain_is_rejected() {
        let error = CertificateInstall::decode(&[0x00]).unwrap_err();
        assert!(error.to_string().contains("the chain is empty"), "{error}");
        let error = CertificateInstall::decode(&[0x01, 0x00, 0x00]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("certificate 1 of the chain is empty"),
            "{error}"
        );
    }

    /// Frames of the worked exchange in `docs/protocol.md`, byte for byte.
    #[test]
    fn worked_example_frames_match_documentation() {
        let hello_request = Message::HelloRequest(HelloRequest {
            protocol_version: 1,
        });
        assert_eq!(
            hex::encode_upper(hello_request.to_frame(0x2A).expect("encodes").encode()),
            "0200012A01012558529903"
        );

        let hello_frame = Message::Hello(hello()).to_frame(0x2A).expect("encodes");
        assert_eq!(
            hex::encode_upper(hello_frame.encode()),
            "0200262A8101104578616D706C65205061796D656E747305\
             53494D2D3107534E2D303030310531\
             2E302E309C95750803"
        );

        let key_block = "D0176B1AX00N0200IK141234567890123456PB0C000000003183586DC6EF67542E07\
                         0B0FDF9C6E6DDB285450AB82E601F39464143A21AF2F9B4C1EFB9F3573158A99A10441E8\
                         0FD5EF6420939FE3FD23BA0DE360EE419CEC";
        let load_key = Message::LoadKey(LoadKey {
            slot: 0,
            initial_key_id: InitialKeyId::from_hex("1234567890123456").expect("valid ID"),
            key_block: key_block.to_owned(),
        });
        let load_key_bytes = load_key.to_frame(0x2B).expect("encodes").encode();
        assert_eq!(load_key_bytes.len(), 197);
        assert_eq!(
            hex::encode_upper(&load_key_bytes[..16]),
            "0200BB2B0200123456789012345600B0"
        );
        assert_eq!(hex::encode_upper(&load_key_bytes[192..]), "25DA497403");

        let load_result = Message::LoadResult(LoadResult {
            status: LoadStatus::Stored,
            kcv: Kcv::from_hex(KcvMethod::Cmac, "05EF45").expect("valid KCV"),
            mac: None,
        });
        assert_eq!(
            hex::encode_upper(load_result.to_frame(0x2B).expect("encodes").encode()),
            "0200062B8200020305EF459AEBF07E03"
        );

        let error = Message::Error(ErrorMessage {
            code: ErrorCode::KeyBlockMacInvalid,
            text: "key block MAC does not verify: the block was altered or the KBPK is wrong"
                .to_owned(),
        });
        let error_bytes = error.to_frame(0x2B).expect("encodes").encode();
        assert_eq!(error_bytes.len(), 87);
        assert_eq!(hex::encode_upper(&error_bytes[..9]), "02004D2BFF01010049");
        assert_eq!(hex::encode_upper(&error_bytes[82..]), "121B344B03");
    }
}
