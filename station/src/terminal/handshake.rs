//! The terminal side of protocol version 2: the CSR, storing the issued certificate, and the
//! key exchange and key confirmation.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::simulator::Simulator;
use crate::pki::{
    DeviceIdentity, FactoryCa, P384PrivateKey, ParsedCertificate, TrustedRoots, ValidityPeriod,
    build_csr, validate_chain,
};
use crate::protocol::handshake::{
    self, EphemeralKeyPair, NONCE_LEN, SessionKeys, Transcript, random_nonce,
};
use crate::protocol::{
    CertificateStored, Csr, ErrorCode, KeyConfirm, KeyConfirmed, KeyExchangeRequest,
    KeyExchangeResponse,
};

/// A failed request: the ERROR code and text to send.
type Rejection = (ErrorCode, String);

/// The terminal's side of one key exchange.
pub(super) struct TerminalSession {
    /// Keys derived from the exchange.
    pub(super) keys: SessionKeys,
    /// The station's certificate key, to check its KEY_CONFIRM signature.
    station_key: crate::pki::P384PublicKey,
    /// True once the station's signature and confirmation verified.
    pub(super) confirmed: bool,
}

impl Simulator {
    /// The chain HELLO presents: the stored one, or with the bad certificate fault a
    /// self-signed certificate for the same key.
    pub(super) fn presented_chain(&self) -> Result<Vec<Vec<u8>>, Rejection> {
        if !self.config.faults.bad_certificate || self.state.certificate_chain.is_empty() {
            return Ok(self.state.certificate_chain.clone());
        }
        let internal = |error: crate::pki::PkiError| (ErrorCode::InternalError, error.to_string());
        let impostor = FactoryCa::create(
            "CN=Impostor CA,O=Not The Factory",
            ValidityPeriod::from_now(Duration::from_secs(3600)),
        )
        .map_err(internal)?;
        let identity = self.device_identity();
        let key = self.certificate_key()?;
        let csr = build_csr(key, &identity).map_err(internal)?;
        let checked = crate::pki::check_csr(&csr, &identity).map_err(internal)?;
        let certificate = impostor
            .issue_device_certificate(
                &checked,
                ValidityPeriod::from_now(Duration::from_secs(3600)),
            )
            .map_err(internal)?;
        Ok(vec![certificate.der().to_vec()])
    }

    pub(super) fn csr(&mut self) -> Result<Csr, Rejection> {
        let on_board = self
            .config
            .ecc
            .as_ref()
            .is_some_and(|ecc| ecc.on_board_key_generation);
        if !on_board {
            return Err((
                ErrorCode::KeyPairUnavailable,
                "this terminal does not generate key pairs on board".to_owned(),
            ));
        }
        let identity = self.device_identity();
        let der = build_csr(self.certificate_key()?, &identity)
            .map_err(|error| (ErrorCode::InternalError, error.to_string()))?;
        Ok(Csr { der })
    }

    pub(super) fn install_certificate(
        &mut self,
        chain: &[Vec<u8>],
    ) -> Result<CertificateStored, Rejection> {
        let mismatch = |text: String| (ErrorCode::CertificateMismatch, text);
        let certificate = ParsedCertificate::from_der(&chain[0], 1)
            .map_err(|error| mismatch(error.to_string()))?;
        let certified = certificate
            .public_key()
            .map_err(|error| mismatch(error.to_string()))?;
        if certified != self.certificate_key()?.public_key() {
            return Err(mismatch(
                "the certificate does not certify this terminal's key".to_owned(),
            ));
        }
        self.state.certificate_chain = vec![chain[0].clone()];
        // NOTE: a terminal takes the factory CA root from the station that certifies it at the
        // factory and keeps the first one. Replacing it needs the maker's service procedure.
        if self.state.trusted_root.is_none() {
            self.state.trusted_root = chain.get(1).cloned();
        }
        self.state
            .save(&self.config.state_path)
            .map_err(|error| (ErrorCode::StorageFailed, error.to_string()))?;
        info!(fingerprint = %certificate.fingerprint(), "simulated terminal stored its certificate");
        Ok(CertificateStored)
    }

    pub(super) fn key_exchange(
        &mut self,
        request_payload: &[u8],
        request: &KeyExchangeRequest,
    ) -> Result<KeyExchangeResponse, Rejection> {
        self.session = None;
        let Some((hello_request, hello)) =
            self.hello_payloads.clone().filter(|_| self.version >= 2)
        else {
            return Err((
                ErrorCode::NoSession,
                "KEY_EXCHANGE needs HELLO in protocol version 2 first".to_owned(),
            ));
        };
        let own_certificate = self.state.certificate_chain.first().cloned().ok_or((
            ErrorCode::NoSession,
            "this terminal has no certificate yet; send CSR_REQUEST and CERTIFICATE first"
                .to_owned(),
        ))?;

        let station_key = self.validate_station_chain(&request.station_certificate_chain)?;
        let (ephemeral, terminal_nonce) = self.fresh_ephemeral()?;
        let shared_secret = ephemeral
            .shared_secret(&request.station_ephemeral_key, "station")
            .map_err(|error| (ErrorCode::MalformedMessage, error.to_string()))?;
        let terminal_ephemeral = ephemeral.public_key();
        let transcript_hash = Transcript {
            hello_request: &hello_request,
            hello: &hello,
            terminal_certificate: &own_certificate,
            key_exchange_request: request_payload,
            terminal_nonce: &terminal_nonce,
            terminal_ephemeral: &terminal_ephemeral,
        }
        .hash();
        let keys = SessionKeys::derive(
            &shared_secret,
            &request.station_nonce,
            &terminal_nonce,
            transcript_hash,
        );

        let signature = if self.config.faults.wrong_signature {
            let other = P384PrivateKey::generate()
                .map_err(|error| (ErrorCode::InternalError, error.to_string()))?;
            handshake::sign_as_terminal(other.signing_key(), &transcript_hash)
        } else {
            handshake::sign_as_terminal(self.certificate_key()?.signing_key(), &transcript_hash)
        };
        let response = KeyExchangeResponse {
            terminal_nonce,
            terminal_ephemeral_key: terminal_ephemeral,
            terminal_signature: signature,
            terminal_confirmation: keys.terminal_confirmation(),
        };
        self.session = Some(TerminalSession {
            keys,
            station_key,
            confirmed: false,
        });
        Ok(response)
    }

    pub(super) fn key_confirm(&mut self, confirm: &KeyConfirm) -> Result<KeyConfirmed, Rejection> {
        let Some(session) = self.session.as_mut() else {
            return Err((
                ErrorCode::NoSession,
                "KEY_CONFIRM needs KEY_EXCHANGE first".to_owned(),
            ));
        };
        let transcript_hash = *session.keys.transcript_hash();
        if !handshake::verify_station_signature(
            session.station_key.verifying_key(),
            &transcript_hash,
            &confirm.station_signature,
        ) {
            warn!("station signature over the key exchange does not verify");
            self.session = None;
            return Err((
                ErrorCode::SignatureInvalid,
                "the station's signature over the key exchange does not verify".to_owned(),
            ));
        }
        if !session
            .keys
            .verify_station_confirmation(&confirm.station_confirmation)
        {
            warn!("station key confirmation does not verify");
            self.session = None;
            return Err((
                ErrorCode::KeyConfirmationFailed,
                "the station's key confirmation does not match this terminal's session keys"
                    .to_owned(),
            ));
        }
        session.confirmed = true;
        info!(transcript_hash = %hex::encode_upper(transcript_hash), "simulated terminal confirmed the session keys");
        Ok(KeyConfirmed)
    }

    fn validate_station_chain(
        &self,
        chain: &[Vec<u8>],
    ) -> Result<crate::pki::P384PublicKey, Rejection> {
        let invalid = |text: String| (ErrorCode::CertificateInvalid, text);
        let root_der = self.state.trusted_root.as_ref().ok_or_else(|| {
            invalid(
                "this terminal holds no factory CA root to check the station against".to_owned(),
            )
        })?;
        let root = ParsedCertificate::from_der(root_der, 1)
            .map_err(|error| invalid(format!("the stored root is damaged: {error}")))?;
        let mut roots = TrustedRoots::new();
        roots
            .add(root)
            .map_err(|error| invalid(format!("the stored root is unusable: {error}")))?;
        let validated = validate_chain(chain, &roots, SystemTime::now()).map_err(|error| {
            invalid(format!(
                "the station's certificate chain is invalid: {error}"
            ))
        })?;
        Ok(validated.device_key)
    }

    fn fresh_ephemeral(&self) -> Result<(EphemeralKeyPair, [u8; NONCE_LEN]), Rejection> {
        let internal =
            |error: handshake::HandshakeError| (ErrorCode::InternalError, error.to_string());
        match self.config.ecc.as_ref().and_then(|ecc| ecc.fixed_handshake) {
            Some((scalar, nonce)) => Ok((
                EphemeralKeyPair::from_scalar(&scalar).map_err(internal)?,
                nonce,
            )),
            None => Ok((
                EphemeralKeyPair::generate().map_err(internal)?,
                random_nonce().map_err(internal)?,
            )),
        }
    }

    fn certificate_key(&self) -> Result<&P384PrivateKey, Rejection> {
        self.state.certificate_key.as_ref().ok_or((
            ErrorCode::KeyPairUnavailable,
            "this terminal has no certificate key pair".to_owned(),
        ))
    }

    fn device_identity(&self) -> DeviceIdentity {
        DeviceIdentity {
            serial_number: self.config.identity.serial_number.clone(),
            model: self.config.identity.model.clone(),
        }
    }
}
