//! The [`TerminalDriver`] trait: what provisioning needs from a terminal, whatever its wire
//! protocol. [`ReferenceDriver`] implements it with this crate's reference protocol; a vendor's
//! protocol gets a driver of its own beside it.

use super::session::{AuthenticatedSession, SessionConfig, SessionError, StationSession};
use super::{Hello, LoadResult};
use crate::crypto::SecretKey;
use crate::crypto::dukpt::aes::InitialKeyId;
use crate::link::Link;

pub use super::session::{DeviceCredentials, StationCredentials};

/// The steps of provisioning one terminal, independent of its wire protocol. Every method
/// blocks on the link.
pub trait TerminalDriver: Send {
    /// Device path or network address of the terminal.
    fn peer(&self) -> &str;

    /// Reads the terminal's identity, capabilities and certificate chain.
    fn identify(&mut self) -> Result<Hello, SessionError>;

    /// Asks a terminal with an on-board key pair for its certificate signing request (DER).
    fn request_csr(&mut self) -> Result<Vec<u8>, SessionError>;

    /// Gives the terminal its certificate, followed by the factory CA's certificate.
    fn install_certificate(&mut self, chain: &[Vec<u8>]) -> Result<(), SessionError>;

    /// Runs the authenticated key exchange with the terminal whose certificate the station
    /// validated.
    fn key_exchange(
        &mut self,
        station: &StationCredentials,
        device: &DeviceCredentials,
    ) -> Result<AuthenticatedSession, SessionError>;

    /// The KBPK agreed by [`TerminalDriver::key_exchange`], or `None` before it.
    fn session_kbpk(&self) -> Option<&SecretKey>;

    /// Loads a key block and returns the terminal's confirmation, authenticated when a key
    /// exchange has completed.
    fn load_key(
        &mut self,
        key_block: &str,
        slot: u8,
        initial_key_id: &InitialKeyId,
    ) -> Result<LoadResult, SessionError>;
}

/// The reference protocol of `docs/protocol.md` over an owned link.
pub type ReferenceDriver = StationSession<Box<dyn Link>>;

impl ReferenceDriver {
    /// Wraps a link with the default session timing.
    pub fn over(link: Box<dyn Link>) -> Self {
        StationSession::new(link, SessionConfig::default())
    }
}

impl TerminalDriver for ReferenceDriver {
    fn peer(&self) -> &str {
        StationSession::peer(self)
    }

    fn identify(&mut self) -> Result<Hello, SessionError> {
        self.hello()
    }

    fn request_csr(&mut self) -> Result<Vec<u8>, SessionError> {
        StationSession::request_csr(self)
    }

    fn install_certificate(&mut self, chain: &[Vec<u8>]) -> Result<(), SessionError> {
        StationSession::install_certificate(self, chain)
    }

    fn key_exchange(
        &mut self,
        station: &StationCredentials,
        device: &DeviceCredentials,
    ) -> Result<AuthenticatedSession, SessionError> {
        StationSession::key_exchange(self, station, device)
    }

    fn session_kbpk(&self) -> Option<&SecretKey> {
        StationSession::session_kbpk(self)
    }

    fn load_key(
        &mut self,
        key_block: &str,
        slot: u8,
        initial_key_id: &InitialKeyId,
    ) -> Result<LoadResult, SessionError> {
        StationSession::load_key(self, key_block, slot, initial_key_id)
    }
}
