//! The vault's records in PostgreSQL: one row per key with its label, algorithm, usage, check
//! value, status and where the key is kept, and the inventory built from those rows, the
//! ceremonies and the audit trail.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};

use super::{KeyStatus, KeyUsage, VaultError};
use crate::crypto::KeyAlgorithm;
use crate::crypto::kcv::{Kcv, KcvMethod};

/// The place a key is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStorage {
    /// A TR-31 version D block under the station master key, in PostgreSQL.
    KeyBlock,
    /// A non-extractable object in the station's PKCS#11 token.
    TokenObject,
}

impl KeyStorage {
    /// Returns the name stored in the database.
    pub fn name(self) -> &'static str {
        match self {
            Self::KeyBlock => "key-block",
            Self::TokenObject => "token-object",
        }
    }

    /// Parses a name produced by [`KeyStorage::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::KeyBlock, Self::TokenObject]
            .into_iter()
            .find(|storage| storage.name() == name)
    }
}

impl std::fmt::Display for KeyStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A key's record in the vault, without its key block.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Unique label, lowercase letters, digits, `.`, `_` and `-`.
    pub label: String,
    /// Algorithm and length of the key.
    pub algorithm: KeyAlgorithm,
    /// Permitted use of the key.
    pub usage: KeyUsage,
    /// Check value of the key, with its method.
    pub kcv: Kcv,
    /// The 4-byte BDK ID of an AES DUKPT BDK.
    pub bdk_id: Option<[u8; 4]>,
    /// Whether the key may still be used.
    pub status: KeyStatus,
    /// The place the key is kept.
    pub storage: KeyStorage,
    /// Serial number of the token that contains a token object.
    pub token_serial: Option<String>,
}

/// The columns [`key_from_row`] reads.
pub(super) const KEY_COLUMNS: &str =
    "label, algorithm, usage, kcv, kcv_method, bdk_id, status, storage, token_serial";

/// One entry of the key inventory.
#[derive(Debug, Clone)]
pub struct InventoryEntry {
    /// The key's record.
    pub key: StoredKey,
    /// When the key entered the vault.
    pub created_at: DateTime<Utc>,
    /// The ceremony that brought the key into the vault, if one did.
    pub creation_ceremony: Option<CeremonyRef>,
    /// Every audit event whose subject is the key's label, oldest first.
    pub history: Vec<HistoryEvent>,
}

/// A ceremony, as the inventory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyRef {
    /// The ceremony's ID.
    pub id: uuid::Uuid,
    /// Name of the ceremony script.
    pub script_name: String,
    /// When the ceremony started.
    pub started_at: DateTime<Utc>,
    /// User names of the custodians who took part, in the ceremony's order.
    pub custodians: Vec<String>,
}

/// One event of a key's history, from the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who acted.
    pub actor: String,
    /// The audit action, such as `vault.key-stored`.
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
}

pub(super) fn stored_kcv(method: String, value: String) -> Result<Kcv, VaultError> {
    let method = KcvMethod::from_name(&method).ok_or_else(|| VaultError::Corrupt {
        label: "vault_master".to_owned(),
        reason: format!("unknown check value method {method:?}"),
    })?;
    Ok(Kcv::from_hex(method, &value)?)
}

/// Builds a key's record from a row with [`KEY_COLUMNS`], rejecting names this station does not
/// know as a damaged record.
pub(super) fn key_from_row(row: &sqlx::postgres::PgRow) -> Result<StoredKey, VaultError> {
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
    let storage_name: String = row.get("storage");
    let storage = KeyStorage::from_name(&storage_name)
        .ok_or_else(|| corrupt(format!("unknown storage {storage_name:?}")))?;

    let kcv = stored_kcv(row.get("kcv_method"), row.get("kcv"))?;
    let bdk_id = match row.get::<Option<String>, _>("bdk_id") {
        None => None,
        Some(text) => Some(
            super::parse_bdk_id(&text).map_err(|_| corrupt(format!("invalid BDK ID {text:?}")))?,
        ),
    };

    Ok(StoredKey {
        label,
        algorithm,
        usage,
        kcv,
        bdk_id,
        status,
        storage,
        token_serial: row.get("token_serial"),
    })
}

pub(super) async fn find_key(
    conn: &mut PgConnection,
    label: &str,
) -> Result<Option<StoredKey>, VaultError> {
    let row = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM vault_keys WHERE label = $1"
    ))
    .bind(label)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| key_from_row(&row)).transpose()
}

/// The new row of a stored key.
pub(super) struct NewKey<'a> {
    pub label: &'a str,
    pub algorithm: KeyAlgorithm,
    pub usage: KeyUsage,
    pub kcv: &'a Kcv,
    pub bdk_id: Option<[u8; 4]>,
    pub key_block: Option<&'a str>,
    pub token_serial: Option<&'a str>,
    pub ceremony_id: Option<uuid::Uuid>,
}

pub(super) async fn insert_key(conn: &mut PgConnection, key: NewKey<'_>) -> Result<(), VaultError> {
    let storage = if key.key_block.is_some() {
        KeyStorage::KeyBlock
    } else {
        KeyStorage::TokenObject
    };
    sqlx::query(
        "INSERT INTO vault_keys (label, algorithm, usage, kcv, kcv_method, bdk_id, key_block, ceremony_id, storage, token_serial)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(key.label)
    .bind(key.algorithm.name())
    .bind(key.usage.name())
    .bind(key.kcv.to_hex())
    .bind(key.kcv.method().name())
    .bind(key.bdk_id.map(hex::encode_upper))
    .bind(key.key_block)
    .bind(key.ceremony_id)
    .bind(storage.name())
    .bind(key.token_serial)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Lists every key with its creation ceremony and its history from the audit trail.
pub(super) async fn inventory(pool: &PgPool) -> Result<Vec<InventoryEntry>, VaultError> {
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS}, vault_keys.created_at, ceremonies.id AS ceremony_id,
                ceremonies.script_name, ceremonies.started_at,
                ARRAY(SELECT participant->>'name'
                      FROM jsonb_array_elements(ceremonies.participants)
                           WITH ORDINALITY AS list (participant, position)
                      WHERE participant->>'role' = 'custodian'
                      ORDER BY position) AS custodians
         FROM vault_keys LEFT JOIN ceremonies ON ceremonies.id = vault_keys.ceremony_id
         ORDER BY label"
    ))
    .fetch_all(pool)
    .await?;

    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let key = key_from_row(&row)?;
        let creation_ceremony =
            row.get::<Option<uuid::Uuid>, _>("ceremony_id")
                .map(|id| CeremonyRef {
                    id,
                    script_name: row.get("script_name"),
                    started_at: row.get("started_at"),
                    custodians: row.get("custodians"),
                });
        let history = sqlx::query(
            "SELECT occurred_at, actor, action, outcome FROM audit_event
             WHERE subject = $1 ORDER BY occurred_at, id",
        )
        .bind(&key.label)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|event| HistoryEvent {
            occurred_at: event.get("occurred_at"),
            actor: event.get("actor"),
            action: event.get("action"),
            outcome: event.get("outcome"),
        })
        .collect();
        entries.push(InventoryEntry {
            key,
            created_at: row.get("created_at"),
            creation_ceremony,
            history,
        });
    }
    Ok(entries)
}
