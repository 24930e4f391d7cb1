//! The key vault: top-level keys (BDKs, terminal transport keys, KEKs) behind one interface that
//! works on labels and returns key blocks and check values, never clear keys. Clear top-level
//! keys enter the vault only from a ceremony.
//!
//! Two backends keep the keys:
//!
//! - software ([`Vault::new`]): keys are TR-31 version D blocks in PostgreSQL under the station
//!   master key (SMK, AES-256), which exists only in memory after an unseal ceremony and is
//!   zeroized when the vault is sealed or dropped;
//! - PKCS#11 ([`Vault::open_pkcs11`]): keys are non-extractable token objects, found by label.
//!   The unseal ceremony's SMK becomes a token object too, and protects the key blocks of keys
//!   that the token cannot use itself.
//!
//! [`Vault::wrap_initial_key`] derives a device's AES DUKPT initial key and returns it in a
//! TR-31 version D block under the device's transport key. With a token that offers
//! encrypt-data derivation, the work splits as follows:
//!
//! | step | where | why |
//! | --- | --- | --- |
//! | initial key = AES(BDK, derivation data) | token (`C_DeriveKey`) | the BDK never leaves the token |
//! | KBEK and KBAK = CMAC(transport key, KDF input) | token (`C_Sign`, `CKM_AES_CMAC`) | the transport key never leaves the token |
//! | MAC over header and clear payload, CBC encryption | station memory, zeroized | no PKCS#11 mechanism builds a TR-31 block or MACs a key object's value |
//!
//! So the device key, KBEK and KBAK exist in station memory while one block is built, as
//! `SecretKey` values that zeroize on drop. Without encrypt-data derivation (or with
//! `derive_in_token = false`), BDKs are stored as key blocks under the token's SMK. The token
//! then computes the block's KBEK and KBAK, and the station opens the block and derives the
//! initial key in memory. TDES DUKPT would always need this path, because SoftHSM2 and many
//! tokens have no XOR derivation for the IPEK's right half.

mod error;
mod lifecycle;
pub mod pkcs11;
mod records;
mod usage;

pub use error::VaultError;
pub use records::{CeremonyRef, HistoryEvent, InventoryEntry, KeyStorage, StoredKey};
pub use usage::{KeyStatus, KeyUsage};

use std::path::Path;

use cryptoki::object::ObjectHandle;
use sqlx::{PgConnection, PgPool, Row};
use zeroize::Zeroizing;

use self::pkcs11::{Pkcs11Config, Token, TokenKbpk, TokenKeyUse, TokenReport};
use self::records::{KEY_COLUMNS, NewKey, key_from_row, stored_kcv};
use crate::crypto::dukpt::aes::{InitialKeyId, initial_key};
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::crypto::tr31::{self, KeyBlockHeader};
use crate::crypto::{KeyAlgorithm, SecretKey};

/// Proprietary TR-31 optional block that binds a stored key block to its vault label, so a block
/// copied into another row fails to unwrap under that row's label. X9.143 reserves optional block
/// IDs that start with a digit for proprietary use.
const LABEL_BLOCK_ID: &str = "10";

/// Name of the PKCS#11 configuration file in the station's data folder ([`Vault::open`]).
pub const HSM_CONFIG_FILE: &str = "hsm.toml";

/// Label of the station master key's object in a PKCS#11 token.
pub const MASTER_KEY_TOKEN_LABEL: &str = "station-master-key";

/// The method of every check value the vault computes and stores.
pub const VAULT_KCV_METHOD: KcvMethod = KcvMethod::Cmac;

/// Result of [`Vault::unseal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsealOutcome {
    /// No master key existed yet: this one is now the station's master key.
    Initialised,
    /// The master key matched the stored check value.
    Unsealed,
}

/// Result of [`Vault::store_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// The key is new and was stored.
    Stored,
    /// A key with the same label, usage and check value was already stored; nothing changed.
    AlreadyPresent,
}

/// A device's initial key, wrapped for the device, with the values needed to check its load.
pub struct WrappedInitialKey {
    /// TR-31 version D key block under the device's transport key.
    pub key_block: String,
    /// The initial key ID (BDK ID and derivation ID) the key was derived for.
    pub initial_key_id: InitialKeyId,
    /// Check value of the derived initial key, to compare with the one the device reports.
    pub kcv: Kcv,
}

/// A key that arrives wrapped under a KEK in the token, for [`Vault::import_wrapped_key`].
pub struct WrappedImport<'a> {
    /// Label for the new key.
    pub label: &'a str,
    /// Usage of the new key.
    pub usage: KeyUsage,
    /// Algorithm and length of the new key.
    pub algorithm: KeyAlgorithm,
    /// The BDK ID, for a BDK.
    pub bdk_id: Option<[u8; 4]>,
    /// Label of the KEK in the token that the key is wrapped under.
    pub kek_label: &'a str,
    /// The key wrapped with AES key wrap (RFC 3394) under the KEK.
    pub wrapped: &'a [u8],
    /// The check value the sender gave, which the imported key must match.
    pub expected_kcv: Option<Kcv>,
    /// The ceremony that imports the key.
    pub ceremony_id: Option<uuid::Uuid>,
}

/// The key store of a vault, with the master key while the vault is unsealed.
enum Backend {
    Software {
        master: Option<SecretKey>,
    },
    Pkcs11 {
        token: Token,
        master: Option<ObjectHandle>,
    },
}

/// A top-level key ready for use, with the key itself or its token handle.
enum UsableKey {
    Clear(SecretKey),
    Token(ObjectHandle, KeyAlgorithm),
}

/// The station's key vault. See the module documentation for its backends.
pub struct Vault {
    pool: PgPool,
    backend: Backend,
}

impl Vault {
    /// Opens the software vault, sealed.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            backend: Backend::Software { master: None },
        }
    }

    /// Opens the PKCS#11 vault, sealed: loads the module, finds the token by label or serial
    /// and logs in with the configured PIN.
    pub fn open_pkcs11(pool: PgPool, config: &Pkcs11Config) -> Result<Self, VaultError> {
        let token = Token::open(config)?;
        Ok(Self {
            pool,
            backend: Backend::Pkcs11 {
                token,
                master: None,
            },
        })
    }

    /// Opens the vault the station in `data_dir` is configured with: the PKCS#11 vault when
    /// the folder contains [`HSM_CONFIG_FILE`], the software vault otherwise. Either starts
    /// sealed.
    pub fn open(pool: PgPool, data_dir: &Path) -> Result<Self, VaultError> {
        let path = data_dir.join(HSM_CONFIG_FILE);
        if !path.exists() {
            return Ok(Self::new(pool));
        }
        let config = Pkcs11Config::load(&path)?;
        Self::open_pkcs11(pool, &config)
    }

    /// Model, firmware version and capabilities of the token, for a PKCS#11 vault.
    pub fn token_report(&self) -> Option<&TokenReport> {
        match &self.backend {
            Backend::Software { .. } => None,
            Backend::Pkcs11 { token, .. } => Some(token.report()),
        }
    }

    /// Returns true until an unseal ceremony has given the vault its master key.
    pub fn is_sealed(&self) -> bool {
        match &self.backend {
            Backend::Software { master } => master.is_none(),
            Backend::Pkcs11 { master, .. } => master.is_none(),
        }
    }

    /// Seals the vault: the software backend zeroizes the master key, and the PKCS#11 backend
    /// drops the master key's handle, so no key can be used until the next unseal ceremony.
    ///
    /// NOTE: the PKCS#11 session stays logged in, because the token's login state belongs to the
    /// whole process and other vaults of the process may share it.
    pub fn seal(&mut self) {
        match &mut self.backend {
            Backend::Software { master } => *master = None,
            Backend::Pkcs11 { master, .. } => *master = None,
        }
    }

    /// Returns true if the vault has been initialised with a master key.
    pub async fn is_initialised(&self) -> Result<bool, VaultError> {
        let row = sqlx::query("SELECT 1 FROM vault_master")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Takes `master` as the station master key. The first unseal of a new vault initialises it
    /// and records the key's check value; every later unseal must match that check value.
    ///
    /// The PKCS#11 backend keeps the master key as a token object labelled
    /// [`MASTER_KEY_TOKEN_LABEL`], created at the first unseal with this token, and drops the
    /// clear key when this returns. Later unseals check the token object's check value, computed
    /// by the token, against the stored one.
    pub async fn unseal(
        &mut self,
        conn: &mut PgConnection,
        master: SecretKey,
        ceremony_id: Option<uuid::Uuid>,
    ) -> Result<UnsealOutcome, VaultError> {
        if master.algorithm() != KeyAlgorithm::Aes256 {
            return Err(VaultError::MasterKeyAlgorithm(master.algorithm()));
        }
        let kcv = Kcv::compute(&master, VAULT_KCV_METHOD);
        let stored = sqlx::query("SELECT kcv, kcv_method FROM vault_master WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await?;
        let outcome = match stored {
            None => UnsealOutcome::Initialised,
            Some(row) => {
                let expected = stored_kcv(row.get("kcv_method"), row.get("kcv"))?;
                if !expected.matches(&kcv)? {
                    return Err(VaultError::WrongMasterKey {
                        expected: expected.to_string(),
                        actual: kcv.to_string(),
                    });
                }
                UnsealOutcome::Unsealed
            }
        };

        let token_master = match &self.backend {
            Backend::Pkcs11 { token, .. } => Some(master_key_object(token, &master, &kcv)?),
            Backend::Software { .. } => None,
        };
        if outcome == UnsealOutcome::Initialised {
            sqlx::query(
                "INSERT INTO vault_master (id, kcv, kcv_method, ceremony_id) VALUES (1, $1, $2, $3)",
            )
            .bind(kcv.to_hex())
            .bind(kcv.method().name())
            .bind(ceremony_id)
            .execute(&mut *conn)
            .await?;
        }
        // The vault counts as unsealed only once everything above succeeded.
        match &mut self.backend {
            Backend::Software { master: slot } => *slot = Some(master),
            Backend::Pkcs11 { master: slot, .. } => *slot = token_master,
        }
        Ok(outcome)
    }

    /// Stores `key` under `label`. Storing the same key again under the same label is a no-op;
    /// a different key under a used label is an error.
    ///
    /// The software backend stores a key block under the master key. The PKCS#11 backend
    /// creates a token object (`C_CreateObject`), except for a BDK when the token cannot derive
    /// inside itself: that BDK becomes a key block under the token's master key.
    pub async fn store_key(
        &self,
        conn: &mut PgConnection,
        label: &str,
        usage: KeyUsage,
        key: &SecretKey,
        bdk_id: Option<[u8; 4]>,
        ceremony_id: Option<uuid::Uuid>,
    ) -> Result<StoreOutcome, VaultError> {
        validate_label(label)?;
        usage.check_algorithm(key.algorithm())?;
        if usage == KeyUsage::Bdk && bdk_id.is_none() {
            return Err(VaultError::MissingBdkId(label.to_owned()));
        }
        self.require_unsealed()?;
        let kcv = Kcv::compute(key, VAULT_KCV_METHOD);
        if let Some(outcome) = check_existing(conn, label, usage, key.algorithm(), &kcv).await? {
            return Ok(outcome);
        }

        let token_object = match &self.backend {
            Backend::Software { .. } => None,
            Backend::Pkcs11 { token, .. } => {
                let in_token = usage != KeyUsage::Bdk || token.report().derives_in_token;
                in_token.then_some(token)
            }
        };
        let key_block;
        let mut new = NewKey {
            label,
            algorithm: key.algorithm(),
            usage,
            kcv: &kcv,
            bdk_id,
            key_block: None,
            token_serial: None,
            ceremony_id,
        };
        match token_object {
            Some(token) => {
                let handle = match token.find_key(label)? {
                    // A token object left by an earlier attempt whose transaction rolled back
                    // is adopted when it is the same key.
                    Some(handle) => handle,
                    None => token.create_key(label, token_key_use(usage), key)?,
                };
                check_token_key(token, label, handle, usage, key.algorithm(), &kcv)?;
                new.token_serial = Some(&token.report().serial);
            }
            None => {
                let header = storage_header(label, usage, key.algorithm())?;
                key_block = self.wrap_under_master(&header, key)?;
                new.key_block = Some(&key_block);
            }
        }
        records::insert_key(conn, new).await?;
        Ok(StoreOutcome::Stored)
    }

    /// Imports a key that arrives wrapped under a KEK in the token (`C_UnwrapKey` with AES key
    /// wrap), for a PKCS#11 vault. The token returns no check value for an unwrapped key, so the
    /// vault computes it through the token and, when the sender gave one, compares it. A key
    /// that fails the comparison is destroyed again.
    pub async fn import_wrapped_key(
        &self,
        conn: &mut PgConnection,
        import: WrappedImport<'_>,
    ) -> Result<(StoreOutcome, Kcv), VaultError> {
        let label = import.label;
        validate_label(label)?;
        import.usage.check_algorithm(import.algorithm)?;
        if import.usage == KeyUsage::Bdk && import.bdk_id.is_none() {
            return Err(VaultError::MissingBdkId(label.to_owned()));
        }
        let Backend::Pkcs11 { token, .. } = &self.backend else {
            return Err(VaultError::NeedsToken {
                operation: "importing a wrapped key",
            });
        };
        self.require_unsealed()?;
        if import.usage == KeyUsage::Bdk && !token.report().derives_in_token {
            return Err(VaultError::NeedsToken {
                operation: "importing a wrapped BDK into a token without encrypt-data derivation",
            });
        }
        // AES key wrap (RFC 3394) adds one 8-byte integrity block to the key.
        let expected_len = import.algorithm.key_len() + 8;
        if import.wrapped.len() != expected_len {
            return Err(VaultError::WrappedKeyLength {
                label: label.to_owned(),
                algorithm: import.algorithm,
                expected: expected_len,
                actual: import.wrapped.len(),
            });
        }
        let (_, kek) = self.load_key(import.kek_label, KeyUsage::Kek).await?;
        let UsableKey::Token(kek, _) = kek else {
            return Err(VaultError::NeedsToken {
                operation: "unwrapping under a KEK that is not a token object",
            });
        };
        if let Some(existing) = records::find_key(conn, label).await? {
            return Err(VaultError::LabelTaken {
                label: label.to_owned(),
                existing_kcv: existing.kcv.to_string(),
            });
        }

        let handle = token.unwrap_key(
            label,
            token_key_use(import.usage),
            import.algorithm,
            kek,
            import.wrapped,
        )?;
        let kcv = match check_import(token, &import, handle) {
            Ok(kcv) => kcv,
            Err(error) => {
                // A key that failed its checks must not stay in the token under its label.
                token.destroy(handle)?;
                return Err(error);
            }
        };
        records::insert_key(
            conn,
            NewKey {
                label,
                algorithm: import.algorithm,
                usage: import.usage,
                kcv: &kcv,
                bdk_id: import.bdk_id,
                key_block: None,
                token_serial: Some(&token.report().serial),
                ceremony_id: import.ceremony_id,
            },
        )
        .await?;
        Ok((StoreOutcome::Stored, kcv))
    }

    /// Looks up a key's record by label.
    pub async fn key_info(&self, label: &str) -> Result<StoredKey, VaultError> {
        let mut conn = self.pool.acquire().await?;
        records::find_key(&mut conn, label)
            .await?
            .ok_or_else(|| VaultError::KeyNotFound(label.to_owned()))
    }

    /// Lists every key in the vault, by label.
    pub async fn list_keys(&self) -> Result<Vec<StoredKey>, VaultError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM vault_keys ORDER BY label"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| key_from_row(&row)).collect()
    }

    /// Lists every key with its creation ceremony and its history from the audit trail.
    pub async fn inventory(&self) -> Result<Vec<InventoryEntry>, VaultError> {
        records::inventory(&self.pool).await
    }

    /// Derives the AES DUKPT initial key of one device from BDK `bdk_label` and wraps it in a TR-31
    /// version D block under transport key `transport_label`.
    ///
    /// The block has usage B1 (initial DUKPT key), mode of use X (key derivation), is not
    /// exportable, and carries the initial key ID in an `IK` optional block, because X9.143 uses
    /// IK, never KS, for AES DUKPT.
    pub async fn wrap_initial_key(
        &self,
        bdk_label: &str,
        derivation_id: [u8; 4],
        transport_label: &str,
    ) -> Result<WrappedInitialKey, VaultError> {
        self.require_unsealed()?;
        let (initial_key_id, device_key) =
            self.derive_initial_key(bdk_label, derivation_id).await?;
        let (_, transport_key) = self
            .load_key(transport_label, KeyUsage::TransportKey)
            .await?;
        let kcv = Kcv::compute(&device_key, VAULT_KCV_METHOD);

        let header = initial_key_header(&initial_key_id)?;
        let key_block = match &transport_key {
            UsableKey::Clear(transport_key) => tr31::wrap(transport_key, &header, &device_key)?,
            UsableKey::Token(handle, algorithm) => {
                let kbpk = TokenKbpk {
                    token: self.token()?,
                    handle: *handle,
                    algorithm: *algorithm,
                };
                tr31::wrap_external(&kbpk, &header, &device_key)?
            }
        };
        Ok(WrappedInitialKey {
            key_block,
            initial_key_id,
            kcv,
        })
    }

    /// Derives a device's AES DUKPT initial key like [`Vault::wrap_initial_key`], but wraps it
    /// under `session_kbpk`, the AES-256 KBPK of an authenticated key exchange with the device,
    /// which exists only in memory for that session.
    pub async fn wrap_initial_key_for_session(
        &self,
        bdk_label: &str,
        derivation_id: [u8; 4],
        session_kbpk: &SecretKey,
    ) -> Result<WrappedInitialKey, VaultError> {
        self.require_unsealed()?;
        let (initial_key_id, device_key) =
            self.derive_initial_key(bdk_label, derivation_id).await?;
        let kcv = Kcv::compute(&device_key, VAULT_KCV_METHOD);
        let header = initial_key_header(&initial_key_id)?;
        let key_block = tr31::wrap(session_kbpk, &header, &device_key)?;
        Ok(WrappedInitialKey {
            key_block,
            initial_key_id,
            kcv,
        })
    }

    /// Derives the AES-128 initial key of device `derivation_id` from BDK `bdk_label`: inside
    /// the token for a token object, in station memory for a key block.
    async fn derive_initial_key(
        &self,
        bdk_label: &str,
        derivation_id: [u8; 4],
    ) -> Result<(InitialKeyId, SecretKey), VaultError> {
        let (bdk_info, bdk) = self.load_key(bdk_label, KeyUsage::Bdk).await?;
        let bdk_id = bdk_info
            .bdk_id
            .ok_or_else(|| VaultError::MissingBdkId(bdk_label.to_owned()))?;
        let initial_key_id = InitialKeyId {
            bdk_id,
            derivation_id,
        };
        let device_key = match &bdk {
            UsableKey::Clear(bdk) => initial_key(bdk, &initial_key_id, KeyAlgorithm::Aes128)?,
            UsableKey::Token(handle, _) => self
                .token()?
                .derive_aes128(*handle, &initial_key_derivation_data(&initial_key_id))?,
        };
        Ok((initial_key_id, device_key))
    }

    /// Computes the AES-CMAC of `data` under the station master key: in memory for the
    /// software vault, inside the token for the PKCS#11 vault. Other modules derive keys for
    /// secrets that are not TR-31 keys (the factory CA's key wrap) with it, so the master key
    /// itself never leaves the vault.
    pub fn master_cmac(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        match &self.backend {
            Backend::Software { master } => {
                let master = master.as_ref().ok_or(VaultError::Sealed)?;
                Ok(Zeroizing::new(crate::crypto::mac::cmac(master, data)))
            }
            Backend::Pkcs11 { token, master } => {
                Ok(token.cmac(master.ok_or(VaultError::Sealed)?, data)?)
            }
        }
    }

    fn require_unsealed(&self) -> Result<(), VaultError> {
        if self.is_sealed() {
            Err(VaultError::Sealed)
        } else {
            Ok(())
        }
    }

    fn token(&self) -> Result<&Token, VaultError> {
        match &self.backend {
            Backend::Pkcs11 { token, .. } => Ok(token),
            Backend::Software { .. } => Err(VaultError::NeedsToken {
                operation: "using a token key",
            }),
        }
    }

    fn wrap_under_master(
        &self,
        header: &KeyBlockHeader,
        key: &SecretKey,
    ) -> Result<String, VaultError> {
        match &self.backend {
            Backend::Software { master } => Ok(tr31::wrap(
                master.as_ref().ok_or(VaultError::Sealed)?,
                header,
                key,
            )?),
            Backend::Pkcs11 { token, master } => {
                let kbpk = TokenKbpk {
                    token,
                    handle: master.ok_or(VaultError::Sealed)?,
                    algorithm: KeyAlgorithm::Aes256,
                };
                Ok(tr31::wrap_external(&kbpk, header, key)?)
            }
        }
    }

    fn unwrap_under_master(
        &self,
        block: &str,
    ) -> Result<(KeyBlockHeader, SecretKey), tr31::Tr31Error> {
        match &self.backend {
            Backend::Software { master } => {
                let master = master.as_ref().ok_or_else(|| {
                    tr31::Tr31Error::ExternalKbpk("the vault is sealed".to_owned())
                })?;
                tr31::unwrap(master, block)
            }
            Backend::Pkcs11 { token, master } => {
                let handle = master.ok_or_else(|| {
                    tr31::Tr31Error::ExternalKbpk("the vault is sealed".to_owned())
                })?;
                let kbpk = TokenKbpk {
                    token,
                    handle,
                    algorithm: KeyAlgorithm::Aes256,
                };
                tr31::unwrap_external(&kbpk, block)
            }
        }
    }

    /// Finds an active key of `usage` and makes it usable: opens its key block, checking the
    /// label binding and check value, or finds its token object, checking its template and
    /// check value.
    async fn load_key(
        &self,
        label: &str,
        usage: KeyUsage,
    ) -> Result<(StoredKey, UsableKey), VaultError> {
        self.require_unsealed()?;
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, key_block FROM vault_keys WHERE label = $1"
        ))
        .bind(label)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| VaultError::KeyNotFound(label.to_owned()))?;
        let info = key_from_row(&row)?;
        if info.usage != usage {
            return Err(VaultError::WrongUsage {
                label: label.to_owned(),
                actual: info.usage,
                expected: usage,
            });
        }
        if info.status != KeyStatus::Active {
            return Err(VaultError::NotActive {
                label: label.to_owned(),
                status: info.status,
            });
        }

        let corrupt = |reason: String| VaultError::Corrupt {
            label: label.to_owned(),
            reason,
        };
        match info.storage {
            KeyStorage::KeyBlock => {
                let key_block: Option<String> = row.get("key_block");
                let key_block =
                    key_block.ok_or_else(|| corrupt("the key block is missing".to_owned()))?;
                let (header, key) = self
                    .unwrap_under_master(&key_block)
                    .map_err(|source| corrupt(source.to_string()))?;
                if header.optional_block(LABEL_BLOCK_ID) != Some(label) {
                    return Err(corrupt(
                        "the key block is bound to another label".to_owned(),
                    ));
                }
                if key.algorithm() != info.algorithm
                    || !info.kcv.matches(&Kcv::compute(&key, info.kcv.method()))?
                {
                    return Err(corrupt(
                        "the key block does not match the stored algorithm and check value"
                            .to_owned(),
                    ));
                }
                Ok((info, UsableKey::Clear(key)))
            }
            KeyStorage::TokenObject => {
                let token = self.token()?;
                let serial = &token.report().serial;
                if info.token_serial.as_deref() != Some(serial.as_str()) {
                    return Err(VaultError::KeyInOtherToken {
                        label: label.to_owned(),
                        expected: info.token_serial.clone().unwrap_or_default(),
                        actual: serial.clone(),
                    });
                }
                let handle = token.find_key(label)?.ok_or_else(|| {
                    corrupt(format!(
                        "token {:?} has no object with this label",
                        token.report().label
                    ))
                })?;
                check_token_key(token, label, handle, usage, info.algorithm, &info.kcv)?;
                let algorithm = info.algorithm;
                Ok((info, UsableKey::Token(handle, algorithm)))
            }
        }
    }
}

/// Returns the outcome for a label already in use: the same key again is a no-op, another key is
/// an error. Returns `None` for a free label.
async fn check_existing(
    conn: &mut PgConnection,
    label: &str,
    usage: KeyUsage,
    algorithm: KeyAlgorithm,
    kcv: &Kcv,
) -> Result<Option<StoreOutcome>, VaultError> {
    let Some(existing) = records::find_key(conn, label).await? else {
        return Ok(None);
    };
    let same_key =
        existing.usage == usage && existing.algorithm == algorithm && existing.kcv.matches(kcv)?;
    if same_key {
        Ok(Some(StoreOutcome::AlreadyPresent))
    } else {
        Err(VaultError::LabelTaken {
            label: label.to_owned(),
            existing_kcv: existing.kcv.to_string(),
        })
    }
}

/// Checks a newly unwrapped key: its template and length, and its check value, computed by the
/// token, against the one the sender gave. Returns the check value.
fn check_import(
    token: &Token,
    import: &WrappedImport<'_>,
    handle: ObjectHandle,
) -> Result<Kcv, VaultError> {
    let kcv = token.kcv(handle)?;
    if let Some(expected) = &import.expected_kcv {
        let matches = expected.method() == kcv.method() && expected.matches(&kcv)?;
        if !matches {
            return Err(VaultError::ImportKcvMismatch {
                label: import.label.to_owned(),
                expected: expected.to_string(),
                actual: kcv.to_string(),
            });
        }
    }
    check_token_key(
        token,
        import.label,
        handle,
        import.usage,
        import.algorithm,
        &kcv,
    )?;
    Ok(kcv)
}

/// Returns the token use flags of a vault usage.
fn token_key_use(usage: KeyUsage) -> TokenKeyUse {
    match usage {
        KeyUsage::Bdk => TokenKeyUse::Derive,
        KeyUsage::TransportKey => TokenKeyUse::ProtectKeyBlocks,
        KeyUsage::Kek => TokenKeyUse::Unwrap,
    }
}

/// Checks a token key's template, algorithm and check value, computed by the token.
fn check_token_key(
    token: &Token,
    label: &str,
    handle: ObjectHandle,
    usage: KeyUsage,
    algorithm: KeyAlgorithm,
    expected_kcv: &Kcv,
) -> Result<(), VaultError> {
    let actual_algorithm = token.check_template(label, handle, token_key_use(usage))?;
    let kcv = token.kcv(handle)?;
    let same_algorithm = actual_algorithm.is_none_or(|actual| actual == algorithm);
    if !same_algorithm || !expected_kcv.matches(&kcv)? {
        let actual_algorithm =
            actual_algorithm.map_or("unreported length".to_owned(), |actual| actual.to_string());
        return Err(VaultError::TokenKeyMismatch {
            label: label.to_owned(),
            expected: format!("{algorithm}, check value {expected_kcv}"),
            actual: format!("{actual_algorithm}, check value {kcv}"),
        });
    }
    Ok(())
}

/// Finds or creates the master key's token object and checks it against `kcv`.
fn master_key_object(
    token: &Token,
    master: &SecretKey,
    kcv: &Kcv,
) -> Result<ObjectHandle, VaultError> {
    let handle = match token.find_key(MASTER_KEY_TOKEN_LABEL)? {
        Some(handle) => handle,
        None => token.create_key(
            MASTER_KEY_TOKEN_LABEL,
            TokenKeyUse::ProtectKeyBlocks,
            master,
        )?,
    };
    let algorithm = token.check_template(
        MASTER_KEY_TOKEN_LABEL,
        handle,
        TokenKeyUse::ProtectKeyBlocks,
    )?;
    let token_kcv = token.kcv(handle)?;
    let is_aes256 = algorithm.is_none_or(|algorithm| algorithm == KeyAlgorithm::Aes256);
    if !is_aes256 || !kcv.matches(&token_kcv)? {
        return Err(VaultError::TokenKeyMismatch {
            label: MASTER_KEY_TOKEN_LABEL.to_owned(),
            expected: format!("aes256, check value {kcv}"),
            actual: format!("{algorithm:?}, check value {token_kcv}"),
        });
    }
    Ok(handle)
}

/// Builds the header of a device's initial key block: usage B1 (initial DUKPT key), mode of use
/// X (key derivation), not exportable, and the initial key ID in an `IK` optional block, because
/// X9.143 uses IK, never KS, for AES DUKPT.
fn initial_key_header(id: &InitialKeyId) -> Result<KeyBlockHeader, VaultError> {
    let mut header: KeyBlockHeader = "D0000B1AX00N0000".parse()?;
    header.add_optional_block("IK", &id.to_hex())?;
    Ok(header)
}

/// The derivation data of an AES-128 initial key, ANSI X9.24-3-2017 section 6.3.2: version
/// `01`, key block counter `01`, usage `8001` (initial key), algorithm `0002` (AES-128), length
/// `0080` (128 bits), then the initial key ID.
fn initial_key_derivation_data(id: &InitialKeyId) -> [u8; 16] {
    let mut data = [0u8; 16];
    data[..8].copy_from_slice(&[0x01, 0x01, 0x80, 0x01, 0x00, 0x02, 0x00, 0x80]);
    data[8..].copy_from_slice(&id.to_bytes());
    data
}

/// Builds the header of a key block stored under the master key: its usage, algorithm, mode of
/// use, sensitive exportability (only under a key-encryption key) and the label binding.
fn storage_header(
    label: &str,
    usage: KeyUsage,
    algorithm: KeyAlgorithm,
) -> Result<KeyBlockHeader, VaultError> {
    let algorithm_code = if algorithm.is_aes() { 'A' } else { 'T' };
    let text = match usage {
        KeyUsage::Bdk => format!("D0000B0{algorithm_code}X00S0000"),
        KeyUsage::TransportKey => format!("D0000K1{algorithm_code}B00S0000"),
        KeyUsage::Kek => format!("D0000K0{algorithm_code}B00S0000"),
    };
    let mut header: KeyBlockHeader = text.parse()?;
    header.add_optional_block(LABEL_BLOCK_ID, label)?;
    Ok(header)
}

/// Checks a key label: 1 to 63 characters, lowercase letters, digits, `.`, `_` and `-`, starting
/// with a letter or digit.
pub fn validate_label(label: &str) -> Result<(), VaultError> {
    let mut chars = label.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if first_ok && rest_ok && label.len() <= 63 {
        Ok(())
    } else {
        Err(VaultError::InvalidLabel(label.to_owned()))
    }
}

/// Parses a 4-byte BDK ID from 8 hex digits.
pub fn parse_bdk_id(text: &str) -> Result<[u8; 4], VaultError> {
    let bytes = hex::decode(text).map_err(|_| VaultError::InvalidBdkId(text.to_owned()))?;
    bytes
        .try_into()
        .map_err(|_| VaultError::InvalidBdkId(text.to_owned()))
}
