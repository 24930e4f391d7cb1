//! The software key vault.
//!
//! Top-level keys (BDKs, terminal transport keys) are stored in PostgreSQL only as TR-31 version
//! D key blocks under the station master key (SMK, AES-256). The SMK exists only in memory, after
//! an unseal ceremony has formed it from custodian components, and is zeroized when the vault is
//! sealed or dropped. Outside a ceremony, the vault hands out key blocks and check values, never
//! clear keys: [`Vault::wrap_initial_key`] derives a device's initial key and returns it wrapped.

mod error;
mod lifecycle;
mod usage;

pub use error::VaultError;
pub use usage::{KeyStatus, KeyUsage};

use sqlx::{PgConnection, PgPool, Row};

use crate::crypto::dukpt::aes::{InitialKeyId, initial_key};
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::crypto::tr31::{self, KeyBlockHeader};
use crate::crypto::{KeyAlgorithm, SecretKey};

/// Proprietary TR-31 optional block that binds a stored key block to its vault label, so a block
/// copied into another row fails to unwrap under that row's label. X9.143 reserves optional block
/// IDs that start with a digit for proprietary use.
const LABEL_BLOCK_ID: &str = "10";

/// The method of every check value the vault computes and stores.
pub const VAULT_KCV_METHOD: KcvMethod = KcvMethod::Cmac;

/// A key's record in the vault, without its key block.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Unique label, lowercase letters, digits, `.`, `_` and `-`.
    pub label: String,
    /// Algorithm and length of the key.
    pub algorithm: KeyAlgorithm,
    /// What the key may be used for.
    pub usage: KeyUsage,
    /// Check value of the key, with its method.
    pub kcv: Kcv,
    /// The 4-byte BDK ID of an AES DUKPT BDK.
    pub bdk_id: Option<[u8; 4]>,
    /// Whether the key may still be used.
    pub status: KeyStatus,
}

/// What [`Vault::unseal`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsealOutcome {
    /// No master key existed yet: this one is now the station's master key.
    Initialised,
    /// The master key matched the stored check value.
    Unsealed,
}

/// What [`Vault::store_key`] did.
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

/// The software vault: key blocks in PostgreSQL, the master key in memory while unsealed.
pub struct Vault {
    pool: PgPool,
    master: Option<SecretKey>,
}

impl Vault {
    /// Opens the vault sealed.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, master: None }
    }

    /// Returns true until an unseal ceremony has given the vault its master key.
    pub fn is_sealed(&self) -> bool {
        self.master.is_none()
    }

    /// Drops the master key from memory (zeroizing it).
    pub fn seal(&mut self) {
        self.master = None;
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
            None => {
                sqlx::query(
                    "INSERT INTO vault_master (id, kcv, kcv_method, ceremony_id) VALUES (1, $1, $2, $3)",
                )
                .bind(kcv.to_hex())
                .bind(kcv.method().name())
                .bind(ceremony_id)
                .execute(&mut *conn)
                .await?;
                UnsealOutcome::Initialised
            }
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
        self.master = Some(master);
        Ok(outcome)
    }

    pub(crate) fn master(&self) -> Result<&SecretKey, VaultError> {
        self.master.as_ref().ok_or(VaultError::Sealed)
    }

    /// Stores `key` under `label` as a key block under the master key. Storing the same key again
    /// under the same label is a no-op; a different key under a used label is an error.
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
        let kcv = Kcv::compute(key, VAULT_KCV_METHOD);
        if let Some(existing) = self.find_key(&mut *conn, label).await? {
            let same_key = existing.usage == usage
                && existing.algorithm == key.algorithm()
                && existing.kcv.matches(&kcv)?;
            return if same_key {
                Ok(StoreOutcome::AlreadyPresent)
            } else {
                Err(VaultError::LabelTaken {
                    label: label.to_owned(),
                    existing_kcv: existing.kcv.to_string(),
                })
            };
        }

        let header = storage_header(label, usage, key.algorithm())?;
        let key_block = tr31::wrap(self.master()?, &header, key)?;
        sqlx::query(
            "INSERT INTO vault_keys (label, algorithm, usage, kcv, kcv_method, bdk_id, key_block, ceremony_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(label)
        .bind(key.algorithm().name())
        .bind(usage.name())
        .bind(kcv.to_hex())
        .bind(kcv.method().name())
        .bind(bdk_id.map(hex::encode_upper))
        .bind(&key_block)
        .bind(ceremony_id)
        .execute(&mut *conn)
        .await?;
        Ok(StoreOutcome::Stored)
    }

    /// Looks up a key's record by label.
    pub async fn key_info(&self, label: &str) -> Result<StoredKey, VaultError> {
        let mut conn = self.pool.acquire().await?;
        self.find_key(&mut conn, label)
            .await?
            .ok_or_else(|| VaultError::KeyNotFound(label.to_owned()))
    }

    /// Lists every key in the vault, by label.
    pub async fn list_keys(&self) -> Result<Vec<StoredKey>, VaultError> {
        let rows = sqlx::query(
            "SELECT label, algorithm, usage, kcv, kcv_method, bdk_id, status FROM vault_keys ORDER BY label",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| key_from_row(&row)).collect()
    }

    async fn find_key(
        &self,
        conn: &mut PgConnection,
        label: &str,
    ) -> Result<Option<StoredKey>, VaultError> {
        let row = sqlx::query(
            "SELECT label, algorithm, usage, kcv, kcv_method, bdk_id, status FROM vault_keys WHERE label = $1",
        )
        .bind(label)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|row| key_from_row(&row)).transpose()
    }

    /// Unwraps an active key of `usage` and checks its label binding and check value.
    async fn load_key(
        &self,
        label: &str,
        usage: KeyUsage,
    ) -> Result<(StoredKey, SecretKey), VaultError> {
        let master = self.master()?;
        let row = sqlx::query(
            "SELECT label, algorithm, usage, kcv, kcv_method, bdk_id, status, key_block FROM vault_keys WHERE label = $1",
        )
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

        let key_block: String = row.get("key_block");
        let (header, key) =
            tr31::unwrap(master, &key_block).map_err(|source| VaultError::Corrupt {
                label: label.to_owned(),
                reason: source.to_string(),
            })?;
        if header.optional_block(LABEL_BLOCK_ID) != Some(label) {
            return Err(VaultError::Corrupt {
                label: label.to_owned(),
                reason: "the key block is bound to another label".to_owned(),
            });
        }
        if key.algorithm() != info.algorithm
            || !info.kcv.matches(&Kcv::compute(&key, info.kcv.method()))?
        {
            return Err(VaultError::Corrupt {
                label: label.to_owned(),
                reason: "the key block does not match the stored algorithm and check value"
                    .to_owned(),
            });
        }
        Ok((info, key))
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
        let (bdk_info, bdk) = self.load_key(bdk_label, KeyUsage::Bdk).await?;
        let (_, transport_key) = self
            .load_key(transport_label, KeyUsage::TransportKey)
            .await?;
        let bdk_id = bdk_info
            .bdk_id
            .ok_or_else(|| VaultError::MissingBdkId(bdk_label.to_owned()))?;
        let initial_key_id = InitialKeyId {
            bdk_id,
            derivation_id,
        };
        let device_key = initial_key(&bdk, &initial_key_id, KeyAlgorithm::Aes128)?;
        let kcv = Kcv::compute(&device_key, VAULT_KCV_METHOD);

        let mut header: KeyBlockHeader = "D0000B1AX00N0000".parse()?;
        header.add_optional_block("IK", &initial_key_id.to_hex())?;
        let key_block = tr31::wrap(&transport_key, &header, &device_key)?;
        Ok(WrappedInitialKey {
            key_block,
            initial_key_id,
            kcv,
        })
    }
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

fn stored_kcv(method: String, value: String) -> Result<Kcv, VaultError> {
    let method = KcvMethod::from_name(&method).ok_or_else(|| VaultError::Corrupt {
        label: "vault_master".to_owned(),
        reason: format!("unknown check value method {method:?}"),
    })?;
    Ok(Kcv::from_hex(method, &value)?)
}

fn key_from_row(row: &sqlx::postgres::PgRow) -> Result<StoredKey, VaultError> {
    let label: String = row.get("label");
    let corrupt = |reason: String| VaultError::Corrupt {
        label: label.clone(),
        reason,
    };
    let algorithm_name: String = row.get("algorithm");
    let algorithm = KeyAlgorithm::from_name(&algorithm_name)
        .ok_or_else(|| corrupt(format!("unknown algorithm {algorithm_name:?}")))?;
    let usage_name: String = row.get("usage");
    let usage = KeyUsage::from_name(&usage_name)
        .ok_or_else(|| corrupt(format!("unknown usage {usage_name:?}")))?;
    let status_name: String = row.get("status");
    let status = KeyStatus::from_name(&status_name)
        .ok_or_else(|| corrupt(format!("unknown status {status_name:?}")))?;
    let kcv = stored_kcv(row.get("kcv_method"), row.get("kcv"))?;
    let bdk_id = match row.get::<Option<String>, _>("bdk_id") {
        None => None,
        Some(text) => {
            Some(parse_bdk_id(&text).map_err(|_| corrupt(format!("invalid BDK ID {text:?}")))?)
        }
    };
    Ok(StoredKey {
        label,
        algorithm,
        usage,
        kcv,
        bdk_id,
        status,
    })
}

/// Parses a 4-byte BDK ID from 8 hex digits.
pub fn parse_bdk_id(text: &str) -> Result<[u8; 4], VaultError> {
    let bytes = hex::decode(text).map_err(|_| VaultError::InvalidBdkId(text.to_owned()))?;
    bytes
        .try_into()
        .map_err(|_| VaultError::InvalidBdkId(text.to_owned()))
}
