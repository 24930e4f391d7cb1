//! The end of a key's life, and its one way out: export under a key-encryption key for the
//! payment host's HSM, retirement, and destruction. Ceremonies call these, each inside the
//! transaction of its audit event.

use sqlx::PgConnection;

use super::records::find_key;
use super::{KeyStatus, KeyStorage, KeyUsage, StoredKey, UsableKey, Vault, VaultError};
use crate::crypto::tr31::{self, KeyBlockHeader};

impl Vault {
    /// Exports active key `label` as a TR-31 version D block under key-encryption key
    /// `kek_label`, for the payment host's HSM to import. The block may not be exported again
    /// (exportability N), and `tr31::wrap` rejects a KEK weaker than the key (X9.24-1).
    ///
    /// NOTE: only keys held as key blocks can be exported. A key that is a token object would
    /// need `C_WrapKey` in the token, which this does not do yet.
    pub async fn export_key(&self, label: &str, kek_label: &str) -> Result<String, VaultError> {
        let mut conn = self.pool.acquire().await?;
        let info = find_key(&mut conn, label)
            .await?
            .ok_or_else(|| VaultError::KeyNotFound(label.to_owned()))?;
        drop(conn);
        let (_, key) = self.load_key(label, info.usage).await?;
        let (_, kek) = self.load_key(kek_label, KeyUsage::Kek).await?;
        let (UsableKey::Clear(key), UsableKey::Clear(kek)) = (key, kek) else {
            return Err(VaultError::NeedsToken {
                operation: "exporting a token object (C_WrapKey)",
            });
        };
        let algorithm_code = if info.algorithm.is_aes() { 'A' } else { 'T' };
        let text = match info.usage {
            KeyUsage::Bdk => format!("D0000B0{algorithm_code}X00N0000"),
            KeyUsage::TransportKey => format!("D0000K1{algorithm_code}B00N0000"),
            KeyUsage::Kek => format!("D0000K0{algorithm_code}B00N0000"),
        };
        let header: KeyBlockHeader = text.parse()?;
        Ok(tr31::wrap(&kek, &header, &key)?)
    }

    /// Retires an active key: it stays on record, with its key block, but no longer derives,
    /// wraps or exports.
    pub async fn retire_key(
        &self,
        conn: &mut PgConnection,
        label: &str,
        ceremony_id: Option<uuid::Uuid>,
    ) -> Result<StoredKey, VaultError> {
        self.change_status(conn, label, KeyStatus::Retired, ceremony_id)
            .await
    }

    /// Destroys an active or retired key: erases its key block (or its token object) and marks
    /// it destroyed. The record (label, check value, history) stays.
    pub async fn destroy_key(
        &self,
        conn: &mut PgConnection,
        label: &str,
        ceremony_id: Option<uuid::Uuid>,
    ) -> Result<StoredKey, VaultError> {
        self.change_status(conn, label, KeyStatus::Destroyed, ceremony_id)
            .await
    }

    async fn change_status(
        &self,
        conn: &mut PgConnection,
        label: &str,
        status: KeyStatus,
        ceremony_id: Option<uuid::Uuid>,
    ) -> Result<StoredKey, VaultError> {
        let info = find_key(&mut *conn, label)
            .await?
            .ok_or_else(|| VaultError::KeyNotFound(label.to_owned()))?;
        let allowed = match status {
            KeyStatus::Retired => info.status == KeyStatus::Active,
            KeyStatus::Destroyed => info.status != KeyStatus::Destroyed,
            KeyStatus::Active => false,
        };
        if !allowed {
            return Err(VaultError::NotActive {
                label: label.to_owned(),
                status: info.status,
            });
        }
        sqlx::query(
            "UPDATE vault_keys SET status = $2, status_changed_at = now(), status_ceremony_id = $3,
                 key_block = CASE WHEN $2 = 'destroyed' AND key_block IS NOT NULL THEN ''
                                  ELSE key_block END
             WHERE label = $1",
        )
        .bind(label)
        .bind(status.name())
        .bind(ceremony_id)
        .execute(&mut *conn)
        .await?;
        if status == KeyStatus::Destroyed && info.storage == KeyStorage::TokenObject {
            let token = self.token()?;
            if let Some(handle) = token.find_key(label)? {
                token.destroy(handle)?;
            }
        }
        Ok(StoredKey { status, ..info })
    }
}
