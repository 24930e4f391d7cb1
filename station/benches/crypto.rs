//! Throughput of the operations a provisioning line repeats for every device: AES DUKPT initial
//! key derivation, TR-31 version D wrap and unwrap, and TDES DUKPT IPEK derivation.
//!
//! `scripts/bench` runs these and `station/benches/psec_tr31.py` in the same run and prints the
//! ratios; `docs/benchmarks.md` records them. The inputs are the published test keys also used in
//! the known-answer tests, and the TR-31 header matches the one the Python script uses.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use station::crypto::dukpt::{aes, tdes};
use station::crypto::tr31::{self, KeyBlockHeader};
use station::crypto::{KeyAlgorithm, SecretKey};

/// AES-128 BDK of the X9.24-3-2017 test vectors.
const AES_BDK: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1";
/// Double-length TDES BDK of the X9.24-1-2009 test vectors.
const TDES_BDK: &str = "0123456789ABCDEFFEDCBA9876543210";
/// AES-256 key block protection key; any fixed value serves for timing.
const KBPK: &str = "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6";
/// Header of a version D block carrying an AES-128 initial DUKPT key, as the line sends it.
const HEADER: &str = "D0000B1AX00N0000";

fn key(algorithm: KeyAlgorithm, hex: &str) -> SecretKey {
    SecretKey::from_hex(algorithm, hex).expect("benchmark keys are valid hex of the right length")
}

fn benchmarks(c: &mut Criterion) {
    let aes_bdk = key(KeyAlgorithm::Aes128, AES_BDK);
    let tdes_bdk = key(KeyAlgorithm::Tdes2, TDES_BDK);
    let kbpk = key(KeyAlgorithm::Aes256, KBPK);
    let header: KeyBlockHeader = HEADER.parse().expect("the benchmark header is valid");
    let initial_key_id = aes::InitialKeyId::from_hex("1234567890123456").expect("valid ID");
    let ksn = tdes::Ksn::from_hex("FFFF9876543210E00000").expect("valid KSN");
    let device_key = aes::initial_key(&aes_bdk, &initial_key_id, KeyAlgorithm::Aes128)
        .expect("derivation of the benchmark key");
    let block = tr31::wrap(&kbpk, &header, &device_key).expect("wrap of the benchmark key");

    c.bench_function("aes_dukpt_initial_key", |b| {
        b.iter(|| {
            aes::initial_key(
                black_box(&aes_bdk),
                black_box(&initial_key_id),
                KeyAlgorithm::Aes128,
            )
        })
    });
    c.bench_function("aes_dukpt_initial_key_and_tr31_d_wrap", |b| {
        b.iter(|| {
            let device_key = aes::initial_key(
                black_box(&aes_bdk),
                black_box(&initial_key_id),
                KeyAlgorithm::Aes128,
            )
            .expect("derivation");
            tr31::wrap(black_box(&kbpk), black_box(&header), &device_key)
        })
    });
    c.bench_function("tr31_d_wrap", |b| {
        b.iter(|| tr31::wrap(black_box(&kbpk), black_box(&header), black_box(&device_key)))
    });
    c.bench_function("tr31_d_unwrap", |b| {
        b.iter(|| tr31::unwrap(black_box(&kbpk), black_box(&block)))
    });
    c.bench_function("tdes_dukpt_ipek", |b| {
        b.iter(|| tdes::ipek(black_box(&tdes_bdk), black_box(&ksn)))
    });
}

criterion_group!(crypto, benchmarks);
criterion_main!(crypto);
