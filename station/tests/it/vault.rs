//! Integration tests of the software vault against PostgreSQL: sealing, key usage, the key
//! inventory, and the records of token keys that a software vault cannot use.

use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::{KeyAlgorithm, SecretKey};
use station::db::testing::TestDatabase;
use station::vault::{KeyStatus, KeyStorage, KeyUsage, Vault, VaultError, WrappedImport};

use crate::ceremony::{Envelopes, line_participants, run_line_ceremony};

async fn loaded_vault(db: &TestDatabase) -> (Vault, Envelopes) {
    let envelopes = Envelopes::new();
    let mut vault = Vault::new(db.pool().clone());
    run_line_ceremony(db, &mut vault, &envelopes.all_paths(), &line_participants())
        .await
        .unwrap();
    if vault.is_sealed() {
        let mut tx = db.pool().begin().await.unwrap();
        vault
            .unseal(&mut tx, envelopes.master.duplicate(), None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    (vault, envelopes)
}

#[tokio::test]
async fn inventory_names_ceremony_and_history() {
    let db = TestDatabase::new().await;
    let (vault, envelopes) = loaded_vault(&db).await;

    let inventory = vault.inventory().await.unwrap();

    let labels: Vec<&str> = inventory
        .iter()
        .map(|entry| entry.key.label.as_str())
        .collect();
    assert_eq!(labels, ["line-bdk", "line-transport"]);
    let bdk = &inventory[0];
    assert_eq!(bdk.key.algorithm, KeyAlgorithm::Aes128);
    assert_eq!(bdk.key.usage, KeyUsage::Bdk);
    assert_eq!(bdk.key.status, KeyStatus::Active);
    assert_eq!(bdk.key.storage, KeyStorage::KeyBlock);
    assert_eq!(bdk.key.token_serial, None);
    assert_eq!(bdk.key.bdk_id, Some([0x5A, 0x1E, 0x00, 0x01]));
    assert_eq!(
        bdk.key.kcv.to_string(),
        Kcv::compute(&envelopes.bdk, KcvMethod::Cmac).to_string()
    );
    assert!(bdk.key.kcv.to_string().ends_with("(cmac)"));
    let ceremony = bdk.creation_ceremony.as_ref().expect("creation ceremony");
    assert!(!ceremony.script_name.is_empty());
    assert_eq!(ceremony.custodians, ["alice", "bob"]);
    assert!(
        bdk.history
            .iter()
            .any(|event| event.action == "vault.key-stored" && event.outcome == "success"),
        "{:?}",
        bdk.history
    );
    assert!(bdk.created_at <= chrono::Utc::now());
}

#[tokio::test]
async fn sealed_vault_refuses_keys() {
    let db = TestDatabase::new().await;
    let (mut vault, _) = loaded_vault(&db).await;

    vault.seal();

    let error = vault
        .wrap_initial_key("line-bdk", [0, 0, 0, 1], "line-transport")
        .await
        .err()
        .unwrap();
    assert!(matches!(error, VaultError::Sealed), "{error}");
    assert!(error.to_string().contains("unseal"), "{error}");
    let mut tx = db.pool().begin().await.unwrap();
    let key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let error = vault
        .store_key(&mut tx, "new-key", KeyUsage::TransportKey, &key, None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, VaultError::Sealed), "{error}");
}

#[tokio::test]
async fn key_usage_is_enforced() {
    let db = TestDatabase::new().await;
    let (vault, _) = loaded_vault(&db).await;

    let swapped = vault
        .wrap_initial_key("line-transport", [0, 0, 0, 1], "line-bdk")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            swapped,
            VaultError::WrongUsage {
                actual: KeyUsage::TransportKey,
                expected: KeyUsage::Bdk,
                ..
            }
        ),
        "{swapped}"
    );
    assert_eq!(
        swapped.to_string(),
        "key \"line-transport\" is a transport-key key and cannot be used as a bdk key"
    );

    let bdk_as_transport = vault
        .wrap_initial_key("line-bdk", [0, 0, 0, 1], "line-bdk")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            bdk_as_transport,
            VaultError::WrongUsage {
                expected: KeyUsage::TransportKey,
                ..
            }
        ),
        "{bdk_as_transport}"
    );

    let mut tx = db.pool().begin().await.unwrap();
    let import = vault
        .import_wrapped_key(
            &mut tx,
            WrappedImport {
                label: "imported",
                usage: KeyUsage::TransportKey,
                algorithm: KeyAlgorithm::Aes128,
                bdk_id: None,
                kek_label: "line-transport",
                wrapped: &[0u8; 24],
                expected_kcv: None,
                ceremony_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(import, VaultError::NeedsToken { .. }), "{import}");
}

#[tokio::test]
async fn kek_is_stored_as_key_block() {
    let db = TestDatabase::new().await;
    let (vault, _) = loaded_vault(&db).await;
    let kek = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();

    let mut tx = db.pool().begin().await.unwrap();
    vault
        .store_key(&mut tx, "host-kek", KeyUsage::Kek, &kek, None, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let info = vault.key_info("host-kek").await.unwrap();
    assert_eq!(info.usage, KeyUsage::Kek);
    assert_eq!(info.storage, KeyStorage::KeyBlock);
    let error = vault
        .wrap_initial_key("line-bdk", [0, 0, 0, 1], "host-kek")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            VaultError::WrongUsage {
                actual: KeyUsage::Kek,
                ..
            }
        ),
        "{error}"
    );
}

/// A record of a token key cannot be used without the token, and the database rejects a
/// record that claims both storages.
#[tokio::test]
async fn token_record_needs_token() {
    let db = TestDatabase::new().await;
    let (vault, _) = loaded_vault(&db).await;
    sqlx::query(
        "INSERT INTO vault_keys (label, algorithm, usage, kcv, kcv_method, storage, token_serial)
         VALUES ('hsm-transport', 'aes128', 'transport-key', '7AD386', 'cmac', 'token-object', 'serial-1')",
    )
    .execute(db.pool())
    .await
    .unwrap();

    let error = vault
        .wrap_initial_key("line-bdk", [0, 0, 0, 1], "hsm-transport")
        .await
        .err()
        .unwrap();
    assert!(matches!(error, VaultError::NeedsToken { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("configure the station with its HSM"),
        "{error}"
    );

    let both = sqlx::query(
        "INSERT INTO vault_keys (label, algorithm, usage, kcv, kcv_method, storage, token_serial, key_block)
         VALUES ('both', 'aes128', 'transport-key', '7AD386', 'cmac', 'token-object', 'serial-1', 'D0000')",
    )
    .execute(db.pool())
    .await
    .unwrap_err();
    assert!(
        both.to_string().contains("vault_keys_storage_consistent"),
        "{both}"
    );
}
