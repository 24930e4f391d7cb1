//! Integration test: key material planted through ceremonies appears nowhere the station keeps
//! or writes things: not in a dump of the database, not in the cluster's files, not in the logs
//! and not in the ceremony records, in any encoding.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use station::ceremony::{self, CeremonyScript, MASTER_KEY_LABEL};
use station::crypto::shamir::{self, KeyShare};
use station::crypto::{KeyAlgorithm, SecretKey, components};
use station::db::binaries::{DEBIAN_LIB_ROOT, locate};
use station::db::testing::TestDatabase;
use station::vault::Vault;
use zeroize::Zeroizing;

use crate::ceremony_flow::{custodians_and_carol, run_script, script};
use crate::ceremony_inputs::{ScriptedInputs, TypedPart, components_for};

/// A log writer that keeps every line in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The secrets to look for, each as raw bytes, with a name for the failure message.
#[derive(Default)]
struct Planted(Vec<(String, Zeroizing<Vec<u8>>)>);

impl Planted {
    fn key(&mut self, name: &str, key: &SecretKey) {
        self.0
            .push((name.to_owned(), Zeroizing::new(key.expose().to_vec())));
    }

    fn parts(&mut self, name: &str, parts: &[TypedPart], algorithm: KeyAlgorithm) {
        for part in parts {
            let label = format!("{name} part of {}", part.custodian);
            match SecretKey::from_hex(algorithm, &part.text) {
                Ok(component) => self.key(&label, &component),
                Err(_) => {
                    // A share: its text and its value (the fourth field) are both secret.
                    self.0.push((
                        format!("{label} (text)"),
                        Zeroizing::new(part.text.as_bytes().to_vec()),
                    ));
                    let value = part.text.split('-').nth(3).unwrap();
                    self.0.push((
                        format!("{label} (value)"),
                        Zeroizing::new(hex::decode(value).unwrap()),
                    ));
                }
            }
        }
    }

    /// Returns every encoding of every secret: raw, hex in both cases, and base64 (standard and URL
    /// alphabets) at each of the three alignments a secret can have inside a longer encoding.
    fn needles(&self) -> Vec<(String, Vec<u8>)> {
        let mut needles = Vec::new();
        for (name, bytes) in &self.0 {
            needles.push((format!("{name} raw"), bytes.to_vec()));
            needles.push((
                format!("{name} hex upper"),
                hex::encode_upper(bytes).into_bytes(),
            ));
            needles.push((format!("{name} hex lower"), hex::encode(bytes).into_bytes()));
            for offset in 0..3 {
                let mut shifted = vec![0u8; offset];
                shifted.extend_from_slice(bytes);
                for (alphabet, label) in [(STANDARD, "base64"), (URL_SAFE, "base64url")] {
                    let encoded = base64(&shifted, alphabet);
                    // Skip the characters that mix in the prefix or the unknown next byte.
                    let start = (offset * 4).div_ceil(3) + 1;
                    let end = encoded.len() - 4;
                    needles.push((
                        format!("{name} {label} at offset {offset}"),
                        encoded.as_bytes()[start..end].to_vec(),
                    ));
                }
            }
        }
        needles
    }
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes `bytes` as base64 (RFC 4648) with `alphabet`, padded.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Makes every log call site ask the subscribers again whether they want its events.
///
/// A call site caches that interest when it first runs. Run alongside the other tests, which
/// reach the same ceremony code on threads where no subscriber listens, this test once captured
/// no event at all.
///
/// NOTE: the likely cause, not confirmed, is a call site registered on another thread while
/// this test installs its subscriber, caching "never"; rebuilding the cache before each ceremony
/// undoes that.
fn refresh_log_interest() {
    tracing::callsite::rebuild_interest_cache();
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Returns the names of the needles found in `haystack`. Indexes the needles by their first
/// eight bytes, so the haystack is scanned once however many needles there are.
fn find_any(haystack: &[u8], needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut by_prefix: std::collections::HashMap<&[u8], Vec<usize>> = Default::default();
    for (index, (_, needle)) in needles.iter().enumerate() {
        assert!(needle.len() >= 8);
        by_prefix.entry(&needle[..8]).or_default().push(index);
    }
    let mut found = Vec::new();
    for start in 0..haystack.len().saturating_sub(7) {
        let Some(candidates) = by_prefix.get(&haystack[start..start + 8]) else {
            continue;
        };
        for index in candidates {
            let (name, needle) = &needles[*index];
            if haystack[start..].starts_with(needle) {
                found.push(name.clone());
            }
        }
    }
    found
}

fn pg_dump(db: &TestDatabase) -> Vec<u8> {
    let binaries = locate(
        std::env::var_os("PATH").as_deref(),
        Path::new(DEBIAN_LIB_ROOT),
    )
    .unwrap();
    // pg_dump of the server's version sits next to the real initdb, which PATH may reach
    // through a symbolic link. Another pg_dump on PATH can dump an older server as well.
    let initdb = std::fs::canonicalize(binaries.initdb()).unwrap();
    let next_to_initdb = initdb.with_file_name("pg_dump");
    let pg_dump = if next_to_initdb.exists() {
        next_to_initdb
    } else {
        std::path::PathBuf::from("pg_dump")
    };
    let options = db.connect_options();
    let socket = options
        .get_socket()
        .expect("test clusters listen on a socket");
    let output = Command::new(&pg_dump)
        .arg("--host")
        .arg(socket)
        .arg("--port")
        .arg(options.get_port().to_string())
        .arg("--username")
        .arg(options.get_username())
        .arg("--dbname")
        .arg(options.get_database().unwrap())
        .arg("--no-password")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Reads every file under `dir`: the cluster's tables, indexes and write-ahead log.
fn read_tree(dir: &Path, into: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(&path, into);
        } else if let Ok(bytes) = std::fs::read(&path) {
            into.push((path.display().to_string(), bytes));
        }
    }
}

#[tokio::test]
async fn planted_keys_are_found_nowhere() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let db = TestDatabase::new().await;
    let mut planted = Planted::default();

    // Initialise: the master key exists only as the three shares handed out.
    refresh_log_interest();
    let shares = crate::ceremony_flow::initialise(&db).await;
    let share_forms = shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob", "dave"]);
    planted.parts("master share", &share_forms, KeyAlgorithm::Aes256);
    let parsed: Vec<KeyShare> = share_forms[..2]
        .iter()
        .map(|form| KeyShare::from_text(&form.text, 1).unwrap())
        .collect();
    planted.key("master key", &shamir::combine(&parsed).unwrap());
    let people = custodians_and_carol(&["alice", "bob"]);
    let master_parts = shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]);

    // A BDK generated and handed out, a BDK and a KEK loaded from known components, and an
    // export under the KEK.
    let mut generate = ScriptedInputs::new("carol");
    generate.give(MASTER_KEY_LABEL, master_parts.clone());
    let mut vault = Vault::new(db.pool().clone());
    refresh_log_interest();
    run_script(
        &db,
        &mut vault,
        &script("generate-bdk"),
        &people,
        &mut generate,
    )
    .await
    .unwrap();
    let bdk_forms = generate.forms_of("new-bdk", &["alice", "bob"]);
    planted.parts("generated BDK", &bdk_forms, KeyAlgorithm::Aes128);
    let parts: Vec<SecretKey> = bdk_forms
        .iter()
        .map(|form| SecretKey::from_hex(KeyAlgorithm::Aes128, &form.text).unwrap())
        .collect();
    planted.key("generated BDK", &components::combine(&parts).unwrap());

    let host_bdk = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let host_parts = components_for(&host_bdk, &["alice", "bob"]);
    planted.key("host BDK", &host_bdk);
    planted.parts("host BDK", &host_parts, KeyAlgorithm::Aes128);
    let mut load = ScriptedInputs::new("carol");
    load.give(MASTER_KEY_LABEL, master_parts.clone());
    load.give("host-bdk", host_parts);
    let mut vault = Vault::new(db.pool().clone());
    refresh_log_interest();
    run_script(&db, &mut vault, &script("load-bdk"), &people, &mut load)
        .await
        .unwrap();

    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ceremony-scripts/export-bdk.toml"),
    )
    .unwrap()
    .replace("label = \"line-bdk-2\"", "label = \"line-bdk\"");
    let kek = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let kek_parts = components_for(&kek, &["alice", "bob"]);
    planted.key("KEK", &kek);
    planted.parts("KEK", &kek_parts, KeyAlgorithm::Aes256);
    let mut export = ScriptedInputs::new("carol");
    export.give(MASTER_KEY_LABEL, master_parts.clone());
    export.give("host-kek", kek_parts);
    let mut vault = Vault::new(db.pool().clone());
    refresh_log_interest();
    run_script(
        &db,
        &mut vault,
        &CeremonyScript::parse(&text).unwrap(),
        &people,
        &mut export,
    )
    .await
    .unwrap();
    assert_eq!(export.exported.len(), 1);

    // A ceremony that fails on a wrong component check value after entering real parts.
    let wrong = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let mut wrong_parts = components_for(&wrong, &["alice", "bob"]);
    planted.key("rejected key", &wrong);
    planted.parts("rejected key", &wrong_parts, KeyAlgorithm::Aes128);
    wrong_parts[1].key_kcv = "000000".to_owned();
    let mut failing = ScriptedInputs::new("carol");
    failing.give(MASTER_KEY_LABEL, master_parts);
    failing.give("transport", wrong_parts);
    let mut vault = Vault::new(db.pool().clone());
    refresh_log_interest();
    run_script(
        &db,
        &mut vault,
        &script("load-transport-key"),
        &people,
        &mut failing,
    )
    .await
    .unwrap_err();

    // Everything the station keeps or writes.
    let mut places: Vec<(String, Vec<u8>)> = vec![("pg_dump".to_owned(), pg_dump(&db))];
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM ceremonies")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(ids.len(), 5);
    for id in ids {
        let record = ceremony::record(db.pool(), id).await.unwrap();
        places.push((format!("record of {id}"), record.to_text().into_bytes()));
    }
    sqlx::query("CHECKPOINT").execute(db.pool()).await.unwrap();
    read_tree(db.data_dir(), &mut places);
    let log_bytes = logs.0.lock().unwrap().clone();
    assert!(
        find(&log_bytes, b"ceremony started"),
        "the log capture saw no ceremony"
    );
    places.push(("logs".to_owned(), log_bytes));

    let needles = planted.needles();
    assert!(needles.len() > 100, "{} needles", needles.len());
    for (place, haystack) in &places {
        let found = find_any(haystack, &needles);
        assert!(found.is_empty(), "found in {place}: {found:?}");
    }

    // The search finds what is there: the host BDK's check value is in the dump.
    let kcv = station::crypto::kcv::Kcv::compute(&host_bdk, station::crypto::kcv::KcvMethod::Cmac);
    assert!(find(&places[0].1, kcv.to_hex().as_bytes()));
}

#[test]
fn search_finds_every_encoding() {
    let mut planted = Planted::default();
    let secret =
        SecretKey::from_hex(KeyAlgorithm::Aes128, "2B7E151628AED2A6ABF7158809CF4F3C").unwrap();
    planted.key("example", &secret);
    let needles = planted.needles();
    for prefix in [&b""[..], b"x", b"xy"] {
        let mut shifted = prefix.to_vec();
        shifted.extend_from_slice(secret.expose());
        shifted.extend_from_slice(b"tail");
        let haystacks = [
            shifted.clone(),
            format!("row {} end", base64(&shifted, STANDARD)).into_bytes(),
            format!("row {} end", base64(&shifted, URL_SAFE)).into_bytes(),
            format!("\\x{}", hex::encode(&shifted)).into_bytes(),
            hex::encode_upper(&shifted).into_bytes(),
        ];
        for haystack in haystacks {
            assert!(
                !find_any(&haystack, &needles).is_empty(),
                "{}",
                String::from_utf8_lossy(&haystack)
            );
        }
    }
}
