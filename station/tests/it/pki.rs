//! Integration tests: the factory PKI, checked against OpenSSL's command line and PostgreSQL.
//!
//! Every certificate the station issues is verified with `openssl verify` and read back with
//! `openssl x509 -text`. Makers' chains and foreign CSRs are made with `openssl req` and
//! `openssl x509`, so the station's code is never the only judge of its own output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use chrono::{TimeZone, Utc};
use station::audit;
use station::crypto::{KeyAlgorithm, SecretKey};
use station::db::{self, testing::TestDatabase};
use station::pki::store::{self, AuditActor};
use station::pki::{
    DeviceIdentity, FactoryCa, NotAfter, P384PrivateKey, ParsedCertificate, PkiError, TrustedRoots,
    ValidityPeriod, build_csr, check_csr, validate_chain,
};
use station::vault::Vault;
use tempfile::TempDir;

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const ONE_DAY: Duration = Duration::from_secs(24 * 3600);

fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pki")
        .join(name)
}

/// Runs `openssl` in `dir` and returns its stdout; panics with stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = openssl_status(dir, args, None);
    assert!(ok, "openssl {args:?} failed: {stderr}");
    stdout
}

/// Runs `openssl` in `dir` with optional stdin; returns success, stdout and stderr.
fn openssl_status(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let output = openssl_raw(dir, args, stdin);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn openssl_raw(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (scripts/test installs it)");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin is piped");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write openssl stdin");
        }
    }
    child.wait_with_output().expect("openssl runs")
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), contents).expect("write test file");
}

fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> SystemTime {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, second)
        .single()
        .expect("valid date")
        .into()
}

fn test_ca() -> FactoryCa {
    FactoryCa::create(
        "CN=Test Factory CA,O=Example Devices",
        ValidityPeriod::from_now(TEN_YEARS),
    )
    .expect("create CA")
}

/// Checks `certificate` with `openssl verify` against `ca` and returns `openssl x509 -text`.
fn openssl_accepts(ca: &FactoryCa, certificate: &ParsedCertificate) -> String {
    let dir = TempDir::new().expect("temp dir");
    write(dir.path(), "ca.pem", ca.certificate().to_pem());
    write(dir.path(), "cert.pem", certificate.to_pem());
    let verified = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "cert.pem"]);
    assert_eq!(verified.trim(), "cert.pem: OK");
    openssl(dir.path(), &["x509", "-in", "cert.pem", "-noout", "-text"])
}

fn identity(serial_number: &str, model: &str) -> DeviceIdentity {
    DeviceIdentity {
        serial_number: serial_number.to_owned(),
        model: model.to_owned(),
    }
}

/// Makes a P-384 key and CSR with OpenSSL; returns the PEM CSR.
fn openssl_csr(dir: &Path, name: &str, curve: &str, subject: &str) -> Vec<u8> {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-sha384",
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::read(dir.join(format!("{name}.csr"))).expect("read CSR")
}

#[test]
fn factory_ca_passes_openssl_checks() {
    let dir = TempDir::new().expect("temp dir");
    let ca = test_ca();
    write(dir.path(), "ca.pem", ca.certificate().to_pem());

    let verified = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "ca.pem"]);
    assert_eq!(verified.trim(), "ca.pem: OK");
    let text = openssl(dir.path(), &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(
        text.contains("Signature Algorithm: ecdsa-with-SHA384"),
        "{text}"
    );
    assert!(text.contains("NIST CURVE: P-384"), "{text}");
    assert!(
        text.contains("Subject: O = Example Devices, CN = Test Factory CA"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign"),
        "{text}"
    );
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
}

#[test]
fn station_certificate_passes_openssl_checks() {
    let dir = TempDir::new().expect("temp dir");
    let ca = test_ca();
    let station_key = P384PrivateKey::generate().expect("station key");
    let certificate = ca
        .issue_station_certificate(
            "line-1",
            &station_key.public_key(),
            ValidityPeriod::from_now(TEN_YEARS),
        )
        .expect("issue station certificate");
    write(dir.path(), "ca.pem", ca.certificate().to_pem());
    write(dir.path(), "station.pem", certificate.to_pem());

    let verified = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "station.pem"]);
    assert_eq!(verified.trim(), "station.pem: OK");
    let text = openssl(
        dir.path(),
        &["x509", "-in", "station.pem", "-noout", "-text"],
    );
    assert!(text.contains("Subject: CN = line-1"), "{text}");
    assert!(
        text.contains("Issuer: O = Example Devices, CN = Test Factory CA"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                CA:FALSE"),
        "{text}"
    );
    assert!(
        text.contains(
            "X509v3 Key Usage: critical\n                Digital Signature, Key Agreement"
        ),
        "{text}"
    );
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    assert!(!text.contains("Extended Key Usage"), "{text}");
    assert_eq!(
        certificate.public_key().expect("P-384 key"),
        station_key.public_key()
    );
}

#[test]
fn device_certificate_from_openssl_csr() {
    let dir = TempDir::new().expect("temp dir");
    let ca = test_ca();
    let csr = openssl_csr(
        dir.path(),
        "device",
        "P-384",
        "/serialNumber=SN-000123/OU=PP-9000, rev B",
    );

    let checked = check_csr(&csr, &identity("SN-000123", "PP-9000, rev B")).expect("CSR accepted");
    let certificate = ca
        .issue_device_certificate(&checked, ValidityPeriod::from_now(TEN_YEARS))
        .expect("issue device certificate");
    write(dir.path(), "ca.pem", ca.certificate().to_pem());
    write(dir.path(), "device.pem", certificate.to_pem());

    let verified = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "device.pem"]);
    assert_eq!(verified.trim(), "device.pem: OK");
    let text = openssl(
        dir.path(),
        &["x509", "-in", "device.pem", "-noout", "-text"],
    );
    assert!(
        text.contains("Subject: OU = \"PP-9000, rev B\", serialNumber = SN-000123"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                CA:FALSE"),
        "{text}"
    );
    assert!(text.contains("Digital Signature, Key Agreement"), "{text}");
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");

    let csr_key = openssl(
        dir.path(),
        &["req", "-in", "device.csr", "-noout", "-pubkey"],
    );
    let certified_key = openssl(
        dir.path(),
        &["x509", "-in", "device.pem", "-noout", "-pubkey"],
    );
    assert_eq!(csr_key, certified_key);

    let mut roots = TrustedRoots::new();
    roots.add(ca.certificate().clone()).expect("add root");
    let chain = validate_chain(&[certificate.der().to_vec()], &roots, SystemTime::now())
        .expect("the station's own device certificate validates");
    assert_eq!(
        chain.device_certificate.subject_serial_numbers(),
        vec![Some("SN-000123".to_owned())]
    );
    assert_eq!(
        chain.device_certificate.subject_organizational_units(),
        vec![Some("PP-9000, rev B".to_owned())]
    );
}

#[test]
fn built_csr_passes_openssl_verify() {
    let dir = TempDir::new().expect("temp dir");
    let device_key = P384PrivateKey::generate().expect("device key");
    let device = identity("SN-42", "PP-9000");
    let csr = build_csr(&device_key, &device).expect("build CSR");
    write(dir.path(), "device.csr", &csr);

    let (ok, _, stderr) = openssl_status(
        dir.path(),
        &[
            "req",
            "-inform",
            "DER",
            "-in",
            "device.csr",
            "-noout",
            "-verify",
        ],
        None,
    );
    assert!(ok, "{stderr}");
    let subject = openssl(
        dir.path(),
        &[
            "req",
            "-inform",
            "DER",
            "-in",
            "device.csr",
            "-noout",
            "-subject",
        ],
    );
    assert_eq!(subject.trim(), "subject=OU = PP-9000, serialNumber = SN-42");

    let checked = check_csr(&csr, &device).expect("CSR accepted");
    assert_eq!(checked.public_key(), &device_key.public_key());
}

#[test]
fn csr_with_p256_key_rejected() {
    let dir = TempDir::new().expect("temp dir");
    let csr = openssl_csr(
        dir.path(),
        "device",
        "P-256",
        "/serialNumber=SN-1/OU=PP-9000",
    );
    let error = check_csr(&csr, &identity("SN-1", "PP-9000")).unwrap_err();
    assert!(
        matches!(error, PkiError::UnsupportedKey { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the CSR has key type EC P-256 (1.2.840.10045.3.1.7); this station accepts only EC P-384 (secp384r1) keys"
    );
}

#[test]
fn csr_with_mismatched_serial_rejected() {
    let dir = TempDir::new().expect("temp dir");
    let csr = openssl_csr(
        dir.path(),
        "device",
        "P-384",
        "/serialNumber=SN-1/OU=PP-9000",
    );
    let error = check_csr(&csr, &identity("SN-2", "PP-9000")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the device's CSR has serial number \"SN-1\", but the device reported \"SN-2\" in HELLO; the device must request a certificate for its own identity"
    );
}

#[test]
fn csr_with_mismatched_or_missing_model_rejected() {
    let dir = TempDir::new().expect("temp dir");
    let csr = openssl_csr(
        dir.path(),
        "other",
        "P-384",
        "/serialNumber=SN-1/OU=PP-8000",
    );
    let error = check_csr(&csr, &identity("SN-1", "PP-9000")).unwrap_err();
    assert!(
        matches!(error, PkiError::CsrSubjectMismatch { field: "model", .. }),
        "{error:?}"
    );

    let csr = openssl_csr(dir.path(), "bare", "P-384", "/serialNumber=SN-1/CN=PP-9000");
    let error = check_csr(&csr, &identity("SN-1", "PP-9000")).unwrap_err();
    assert!(error.to_string().contains("has model none"), "{error}");
}

#[test]
fn csr_with_two_serial_numbers_rejected() {
    let dir = TempDir::new().expect("temp dir");
    let csr = openssl_csr(
        dir.path(),
        "device",
        "P-384",
        "/serialNumber=SN-1/serialNumber=SN-2/OU=PP-9000",
    );
    let error = check_csr(&csr, &identity("SN-1", "PP-9000")).unwrap_err();
    assert!(
        error.to_string().contains("has serial number 2 values"),
        "{error}"
    );
}

#[test]
fn csr_signed_with_sha256_rejected() {
    let dir = TempDir::new().expect("temp dir");
    openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            "device.key",
            "-sha256",
            "-subj",
            "/serialNumber=SN-1/OU=PP-9000",
            "-out",
            "device.csr",
        ],
    );
    let csr = std::fs::read(dir.path().join("device.csr")).expect("read CSR");
    let error = check_csr(&csr, &identity("SN-1", "PP-9000")).unwrap_err();
    assert!(
        matches!(error, PkiError::UnsupportedSignatureAlgorithm { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the CSR is signed with ecdsa-with-SHA256 (1.2.840.10045.4.3.2); this station accepts only ecdsa-with-SHA384"
    );
}

#[test]
fn tampered_csr_signature_rejected() {
    let device_key = P384PrivateKey::generate().expect("device key");
    let csr = build_csr(&device_key, &identity("SN-000123", "PP-9000")).expect("build CSR");

    // The subject altered after signing: SN-000123 becomes SN-000124.
    let position = csr
        .windows(9)
        .position(|window| window == b"SN-000123")
        .expect("serial in CSR");
    let mut altered_subject = csr.clone();
    altered_subject[position + 8] = b'4';
    let error = check_csr(&altered_subject, &identity("SN-000124", "PP-9000")).unwrap_err();
    assert!(matches!(error, PkiError::CsrSignatureInvalid), "{error:?}");

    // A byte of the signature value altered (the last byte lies inside the INTEGER s).
    let mut altered_signature = csr.clone();
    *altered_signature.last_mut().expect("non-empty") ^= 0x01;
    let error = check_csr(&altered_signature, &identity("SN-000123", "PP-9000")).unwrap_err();
    assert!(matches!(error, PkiError::CsrSignatureInvalid), "{error:?}");
    assert!(error.to_string().contains("invalid signature"), "{error}");
}

#[test]
fn malformed_csr_rejected() {
    let error = check_csr(b"not a CSR", &identity("SN-1", "PP-9000")).unwrap_err();
    assert!(matches!(error, PkiError::MalformedCsr(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("the device sent a malformed certificate signing request")
    );
}

#[test]
fn identity_outside_printable_string_rejected() {
    let device_key = P384PrivateKey::generate().expect("device key");
    let error = build_csr(&device_key, &identity("SN_1", "PP-9000")).unwrap_err();
    assert!(
        matches!(
            error,
            PkiError::UnsupportedIdentity {
                field: "serial number",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("\"SN_1\""), "{error}");
}

/// RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, 99991231235959Z for no
/// expiry.
#[test]
fn not_after_encoding_follows_rfc5280() {
    let dir = TempDir::new().expect("temp dir");
    let ca = FactoryCa::create(
        "CN=Long-lived Test CA",
        ValidityPeriod::until(NotAfter::NoExpiry),
    )
    .expect("create CA");
    write(dir.path(), "ca.pem", ca.certificate().to_pem());
    let cases = [
        (
            NotAfter::At(utc(2049, 12, 31, 23, 59, 59)),
            "UTCTIME",
            "491231235959Z",
            "Dec 31 23:59:59 2049 GMT",
        ),
        (
            NotAfter::At(utc(2050, 1, 1, 0, 0, 0)),
            "GENERALIZEDTIME",
            "20500101000000Z",
            "Jan  1 00:00:00 2050 GMT",
        ),
        (
            NotAfter::NoExpiry,
            "GENERALIZEDTIME",
            "99991231235959Z",
            "Dec 31 23:59:59 9999 GMT",
        ),
    ];
    for (not_after, asn1_type, encoded, printed) in cases {
        let key = P384PrivateKey::generate().expect("key");
        let certificate = ca
            .issue_station_certificate(
                "line-1",
                &key.public_key(),
                ValidityPeriod::until(not_after),
            )
            .expect("issue");
        write(dir.path(), "cert.pem", certificate.to_pem());

        let verified = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "cert.pem"]);
        assert_eq!(verified.trim(), "cert.pem: OK");
        let end_date = openssl(
            dir.path(),
            &["x509", "-in", "cert.pem", "-noout", "-enddate"],
        );
        assert_eq!(end_date.trim(), format!("notAfter={printed}"));
        let text = openssl_accepts(&ca, &certificate);
        assert!(text.contains(&format!("Not After : {printed}")), "{text}");
        // Offset 4 is the tbsCertificate, whose validity SEQUENCE contains notBefore and notAfter.
        let parsed = openssl(
            dir.path(),
            &["asn1parse", "-in", "cert.pem", "-strparse", "4"],
        );
        let times: Vec<&str> = parsed
            .lines()
            .filter(|line| line.contains("UTCTIME") || line.contains("GENERALIZEDTIME"))
            .collect();
        assert_eq!(times.len(), 2, "{parsed}");
        assert!(
            times[0].contains("UTCTIME"),
            "notBefore is a current date: {}",
            times[0]
        );
        assert!(times[1].contains(asn1_type), "{}", times[1]);
        assert!(times[1].ends_with(&format!(":{encoded}")), "{}", times[1]);
    }
}

/// RFC 5280 4.1.2.2: random serial numbers are positive, at most 20 octets and distinct.
#[test]
fn issued_serials_positive_and_short() {
    let dir = TempDir::new().expect("temp dir");
    let ca = test_ca();
    let key = P384PrivateKey::generate().expect("key");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..64 {
        let certificate = ca
            .issue_station_certificate(
                "line-1",
                &key.public_key(),
                ValidityPeriod::from_now(ONE_DAY),
            )
            .expect("issue");
        let serial = certificate.serial_number();
        assert!(!serial.is_negative(), "{serial}");
        assert!(serial.octets().len() <= 20, "{serial}");
        assert!(serial.octets()[0] != 0, "no leading zero octet: {serial}");
        assert!(seen.insert(serial.to_string()), "repeated serial {serial}");
        let text = openssl_accepts(&ca, &certificate);
        assert!(text.contains("Serial Number:"), "{text}");
    }
    let last = ca
        .issue_station_certificate(
            "line-1",
            &key.public_key(),
            ValidityPeriod::from_now(ONE_DAY),
        )
        .expect("issue");
    write(dir.path(), "cert.pem", last.to_pem());
    let printed = openssl(
        dir.path(),
        &["x509", "-in", "cert.pem", "-noout", "-serial"],
    );
    assert_eq!(printed.trim(), format!("serial={}", last.serial_number()));
}

/// A negative serial (issued by some CAs, as a public bug report shows) is read as negative,
/// kept byte for byte, and rejected by chain validation with a message that names it.
#[test]
fn negative_serial_parsed_and_refused() {
    let pem = std::fs::read_to_string(data_path("x1_negative_serial.pem")).expect("test data");
    let ca_pem =
        std::fs::read_to_string(data_path("x1_negative_serial_ca.pem")).expect("test data");
    let certificate = ParsedCertificate::from_pem(&pem, 1).expect("parses");
    let serial = certificate.serial_number();

    assert!(serial.is_negative());
    assert_eq!(
        hex::encode_upper(serial.octets()),
        "EE2B5A7C91D04F3386A1B2C3D4E5C401"
    );
    assert_eq!(serial.to_string(), "-11D4A5836E2FB0CC795E4D3C2B1A3BFF");
    assert_eq!(
        certificate.to_pem(),
        pem,
        "the certificate is kept as received"
    );

    let mut roots = TrustedRoots::new();
    roots.add_pem_bundle(&ca_pem).expect("add root");
    let now = utc(2030, 1, 1, 0, 0, 0);
    let error = validate_chain(&[certificate.der().to_vec()], &roots, now).unwrap_err();
    assert!(
        matches!(error, PkiError::NegativeSerial { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "certificate \"OU=PP-9000,SERIALNUMBER=X1-0001\" has the negative serial number -11D4A5836E2FB0CC795E4D3C2B1A3BFF; RFC 5280 requires a positive serial, so the maker must reissue it"
    );
}

/// A maker's PKI made with OpenSSL: root, intermediate and device certificates.
struct MakerPki {
    dir: TempDir,
}

impl MakerPki {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path();
        write(
            path,
            "ca.ext",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        );

        // A minimal `openssl ca` setup, for certificates with chosen validity dates.
        write(
            path,
            "ca.cnf",
            "[ca]\ndefault_ca = maker\n[maker]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial.txt\ndefault_md = sha384\npolicy = any_subject\nunique_subject = no\n[any_subject]\nserialNumber = optional\norganizationalUnitName = optional\n",
        );
        write(path, "index.txt", "");
        write(path, "serial.txt", "1000\n");
        write(
            path,
            "not-ca.ext",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        write(
            path,
            "device.ext",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n",
        );
        write(
            path,
            "no-signature.ext",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyAgreement\n",
        );

        openssl(
            path,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-nodes",
                "-keyout",
                "root.key",
                "-sha384",
                "-days",
                "3650",
                "-subj",
                "/O=Maker/CN=Maker Root CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "root.pem",
            ],
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `name`.pem for a fresh key on `curve`, signed by `issuer` with `digest`.
    fn issue(
        &self,
        name: &str,
        subject: &str,
        issuer: &str,
        extensions: &str,
        (curve, digest): (&str, &str),
        days: &str,
    ) {
        openssl_csr(self.path(), name, curve, subject);
        openssl(
            self.path(),
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{issuer}.pem"),
                "-CAkey",
                &format!("{issuer}.key"),
                "-set_serial",
                "0x1234",
                &format!("-{digest}"),
                "-days",
                days,
                "-extfile",
                extensions,
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// Issues device certificate `name`.pem, signed by `issuer`, valid from `start` to `end`
    /// (`YYYYMMDDHHMMSSZ`).
    fn issue_dated(&self, name: &str, issuer: &str, start: &str, end: &str) {
        openssl_csr(self.path(), name, "P-384", "/serialNumber=SN-77/OU=PP-9000");
        openssl(
            self.path(),
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-cert",
                &format!("{issuer}.pem"),
                "-keyfile",
                &format!("{issuer}.key"),
                "-in",
                &format!("{name}.csr"),
                "-out",
                &format!("{name}.pem"),
                "-startdate",
                start,
                "-enddate",
                end,
                "-extfile",
                "device.ext",
                "-notext",
                "-preserveDN",
            ],
        );
    }

    fn der(&self, name: &str) -> Vec<u8> {
        let pem =
            std::fs::read_to_string(self.path().join(format!("{name}.pem"))).expect("read PEM");
        ParsedCertificate::from_pem(&pem, 1)
            .expect("PEM certificate")
            .der()
            .to_vec()
    }

    fn roots(&self) -> TrustedRoots {
        let mut roots = TrustedRoots::new();
        let pem = std::fs::read_to_string(self.path().join("root.pem")).expect("read root");
        assert_eq!(roots.add_pem_bundle(&pem).expect("add root"), 1);
        roots
    }

    /// Makes the standard chain: intermediate valid 5 years, device 2 years.
    fn standard() -> Self {
        let pki = Self::new();
        pki.issue(
            "intermediate",
            "/O=Maker/CN=Maker Line CA",
            "root",
            "ca.ext",
            ("P-384", "sha384"),
            "1825",
        );
        pki.issue(
            "device",
            "/serialNumber=SN-77/OU=PP-9000",
            "intermediate",
            "device.ext",
            ("P-384", "sha384"),
            "730",
        );
        pki
    }
}

#[test]
fn maker_chain_accepted() {
    let pki = MakerPki::standard();
    let roots = pki.roots();
    let chain = [pki.der("device"), pki.der("intermediate")];
    let validated = validate_chain(&chain, &roots, SystemTime::now()).expect("valid chain");
    assert_eq!(
        validated.device_certificate.subject_serial_numbers(),
        vec![Some("SN-77".to_owned())]
    );
    assert_eq!(validated.root.subject(), "CN=Maker Root CA,O=Maker");

    let with_root = [pki.der("device"), pki.der("intermediate"), pki.der("root")];
    validate_chain(&with_root, &roots, SystemTime::now()).expect("a chain that includes the root");

    let verified = openssl(
        pki.path(),
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "device.pem",
        ],
    );
    assert_eq!(verified.trim(), "device.pem: OK");
}

#[test]
fn expired_and_not_yet_valid_chains_rejected() {
    let pki = MakerPki::standard();
    let roots = pki.roots();
    let chain = [pki.der("device"), pki.der("intermediate")];
    let device = ParsedCertificate::from_der(&chain[0], 1).expect("parse");
    let not_after = device.not_after().to_system_time();
    let not_before = device.not_before().to_system_time();

    validate_chain(&chain, &roots, not_after).expect("valid through the last second of notAfter");
    let error = validate_chain(&chain, &roots, not_after + Duration::from_secs(1)).unwrap_err();
    assert!(matches!(error, PkiError::Expired { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("certificate \"OU=PP-9000,SERIALNUMBER=SN-77\" expired at "),
        "{error}"
    );

    let error = validate_chain(&chain, &roots, not_before - Duration::from_secs(1)).unwrap_err();
    assert!(matches!(error, PkiError::NotYetValid { .. }), "{error:?}");
    assert!(
        error.to_string().ends_with("check the station's clock"),
        "{error}"
    );

    // The intermediate expires before the device certificate here.
    let short = MakerPki::new();
    short.issue(
        "intermediate",
        "/O=Maker/CN=Maker Line CA",
        "root",
        "ca.ext",
        ("P-384", "sha384"),
        "30",
    );
    short.issue(
        "device",
        "/serialNumber=SN-77/OU=PP-9000",
        "intermediate",
        "device.ext",
        ("P-384", "sha384"),
        "730",
    );
    let chain = [short.der("device"), short.der("intermediate")];
    let error =
        validate_chain(&chain, &short.roots(), SystemTime::now() + 60 * ONE_DAY).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("certificate \"CN=Maker Line CA,O=Maker\" expired at "),
        "{error}"
    );
}

#[test]
fn expired_and_future_certificates_rejected_now() {
    let pki = MakerPki::standard();
    let roots = pki.roots();
    pki.issue_dated(
        "expired",
        "intermediate",
        "20200101000000Z",
        "20210101000000Z",
    );
    pki.issue_dated(
        "future",
        "intermediate",
        "20990101000000Z",
        "21000101000000Z",
    );

    let chain = [pki.der("expired"), pki.der("intermediate")];
    let error = validate_chain(&chain, &roots, SystemTime::now()).unwrap_err();
    assert!(matches!(error, PkiError::Expired { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("expired at 2021-01-01T00:00:00Z"),
        "{error}"
    );

    let chain = [pki.der("future"), pki.der("intermediate")];
    let error = validate_chain(&chain, &roots, SystemTime::now()).unwrap_err();
    assert!(matches!(error, PkiError::NotYetValid { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("is not valid before 2099-01-01T00:00:00Z"),
        "{error}"
    );

    for name in ["expired.pem", "future.pem"] {
        let (ok, stdout, _) = openssl_status(
            pki.path(),
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "intermediate.pem",
                name,
            ],
            None,
        );
        assert!(!ok, "OpenSSL rejects {name} too: {stdout}");
    }
}

#[test]
fn device_certificate_must_match_reported_serial() {
    let pki = MakerPki::standard();
    let chain = [pki.der("device"), pki.der("intermediate")];
    let validated = validate_chain(&chain, &pki.roots(), SystemTime::now()).expect("valid chain");

    validated.check_serial_number("SN-77").expect("same device");
    let error = validated.check_serial_number("SN-78").unwrap_err();
    assert!(
        matches!(error, PkiError::CertificateIdentityMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "device certificate \"OU=PP-9000,SERIALNUMBER=SN-77\" has \"SN-77\", but the device reported serial number \"SN-78\" in HELLO; the device presented another device's certificate"
    );
}

#[test]
fn roots_sharing_a_name_are_each_tried() {
    let pki = MakerPki::standard();
    let previous = MakerPki::new();
    let mut roots = previous.roots();
    let current = std::fs::read_to_string(pki.path().join("root.pem")).expect("read root");
    roots.add_pem_bundle(&current).expect("add root");

    let chain = [pki.der("device"), pki.der("intermediate")];
    let validated = validate_chain(&chain, &roots, SystemTime::now()).expect("valid chain");
    assert_eq!(validated.root.der(), pki.der("root"));
}

#[test]
fn intermediate_without_ca_true_rejected() {
    let pki = MakerPki::new();
    pki.issue(
        "intermediate",
        "/O=Maker/CN=Maker Line CA",
        "root",
        "not-ca.ext",
        ("P-384", "sha384"),
        "1825",
    );
    pki.issue(
        "device",
        "/serialNumber=SN-77/OU=PP-9000",
        "intermediate",
        "device.ext",
        ("P-384", "sha384"),
        "730",
    );
    let chain = [pki.der("device"), pki.der("intermediate")];
    let error = validate_chain(&chain, &pki.roots(), SystemTime::now()).unwrap_err();
    assert!(matches!(error, PkiError::NotACa { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "certificate \"CN=Maker Line CA,O=Maker\" issued another certificate but is not a CA: its basicConstraints has CA:false"
    );
    let (ok, _, _) = openssl_status(
        pki.path(),
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "device.pem",
        ],
        None,
    );
    assert!(!ok, "OpenSSL rejects the chain too");
}

#[test]
fn path_length_constraint_enforced() {
    let pki = MakerPki::new();
    openssl(
        pki.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            "root.key",
            "-sha384",
            "-days",
            "3650",
            "-subj",
            "/O=Maker/CN=Maker Root CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root.pem",
        ],
    );
    pki.issue(
        "intermediate",
        "/O=Maker/CN=Maker Line CA",
        "root",
        "ca.ext",
        ("P-384", "sha384"),
        "1825",
    );
    pki.issue(
        "device",
        "/serialNumber=SN-77/OU=PP-9000",
        "intermediate",
        "device.ext",
        ("P-384", "sha384"),
        "730",
    );
    let chain = [pki.der("device"), pki.der("intermediate")];
    let error = validate_chain(&chain, &pki.roots(), SystemTime::now()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "certificate \"CN=Maker Root CA,O=Maker\" issued another certificate but is not a CA: its pathLenConstraint allows 0 CA certificates below it, but the chain has 1"
    );
}

#[test]
fn overlong_chain_rejected() {
    let pki = MakerPki::standard();
    let chain = vec![pki.der("device"); 6];
    let error = validate_chain(&chain, &pki.roots(), SystemTime::now()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the certificate chain has 6 certificates; this station follows at most 5"
    );
}

#[test]
fn chain_from_unknown_root_rejected() {
    let pki = MakerPki::standard();
    let other = MakerPki::new();
    let chain = [pki.der("device"), pki.der("intermediate")];
    let error = validate_chain(&chain, &other.roots(), SystemTime::now()).unwrap_err();
    // Both roots have the same name, so only the signature distinguishes them.
    assert!(
        matches!(error, PkiError::SignatureInvalid { .. }),
        "{error:?}"
    );

    let error = validate_chain(&chain, &TrustedRoots::new(), SystemTime::now()).unwrap_err();
    assert!(
        matches!(error, PkiError::UntrustedIssuer { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("add the maker's root certificate"),
        "{error}"
    );
}

#[test]
fn chain_with_wrong_algorithms_rejected() {
    let pki = MakerPki::new();
    pki.issue(
        "intermediate",
        "/O=Maker/CN=Maker Line CA",
        "root",
        "ca.ext",
        ("P-384", "sha256"),
        "1825",
    );
    pki.issue(
        "device",
        "/serialNumber=SN-77/OU=PP-9000",
        "intermediate",
        "device.ext",
        ("P-384", "sha384"),
        "730",
    );
    let chain = [pki.der("device"), pki.der("intermediate")];
    let error = validate_chain(&chain, &pki.roots(), SystemTime::now()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is signed with ecdsa-with-SHA256"),
        "{error}"
    );

    let pki = MakerPki::standard();
    pki.issue(
        "device",
        "/serialNumber=SN-77/OU=PP-9000",
        "intermediate",
        "device.ext",
        ("P-256", "sha384"),
        "730",
    );
    let chain = [pki.der("device"), pki.der("intermediate")];
    let error = validate_chain(&chain, &pki.roots(), SystemTime::now()).unwrap_err();
    assert!(
        matches!(error, PkiError::UnsupportedKey { .. }),
        "{error:?}"
    );
}

#[test]
fn device_certificate_without_digital_signature_rejected() {
    let pki = MakerPki::standard();
    pki.issue(
        "device",
        "/serialNumber=SN-77/OU=PP-9000",
        "intermediate",
        "no-signature.ext",
        ("P-384", "sha384"),
        "730",
    );
    let chain = [pki.der("device"), pki.der("intermediate")];
    let error = validate_chain(&chain, &pki.roots(), SystemTime::now()).unwrap_err();
    assert!(matches!(error, PkiError::UnusableLeaf { .. }), "{error:?}");
}

#[test]
fn tampered_certificate_signature_rejected() {
    let pki = MakerPki::standard();
    let mut device = pki.der("device");
    *device.last_mut().expect("non-empty") ^= 0x01;
    let chain = [device, pki.der("intermediate")];
    let error = validate_chain(&chain, &pki.roots(), SystemTime::now()).unwrap_err();
    assert!(
        matches!(error, PkiError::SignatureInvalid { .. }),
        "{error:?}"
    );
}

#[test]
fn out_of_order_chain_rejected() {
    let pki = MakerPki::standard();
    let chain = [pki.der("intermediate"), pki.der("device")];
    let error = validate_chain(&chain, &pki.roots(), SystemTime::now()).unwrap_err();
    assert!(
        matches!(
            error,
            PkiError::UnusableLeaf { .. } | PkiError::IssuerMismatch { .. }
        ),
        "{error:?}"
    );
    assert!(matches!(
        validate_chain(&[], &pki.roots(), SystemTime::now()),
        Err(PkiError::EmptyChain)
    ));
}

async fn unsealed_vault(db: &TestDatabase) -> (Vault, SecretKey) {
    let master = SecretKey::generate(KeyAlgorithm::Aes256).expect("master key");
    let mut vault = Vault::new(db.pool().clone());
    let mut conn = db.pool().acquire().await.expect("connection");
    vault
        .unseal(&mut conn, master.duplicate(), None)
        .await
        .expect("unseal");
    (vault, master)
}

const ACTOR: AuditActor<'static> = AuditActor {
    station_id: "line-1",
    actor: "operator:test",
};

#[tokio::test]
async fn factory_ca_key_round_trips_through_vault() {
    let db = TestDatabase::new().await;
    let (vault, master) = unsealed_vault(&db).await;
    let ca = test_ca();

    let mut tx = db::begin(db.pool()).await.expect("begin");
    store::save_ca(&mut tx, &vault, "factory-ca", &ca, None, &ACTOR)
        .await
        .expect("save CA");
    tx.commit().await.expect("commit");

    let mut conn = db.pool().acquire().await.expect("connection");
    let loaded = store::load_ca(&mut conn, &vault, "factory-ca")
        .await
        .expect("load CA");
    assert_eq!(loaded.certificate().der(), ca.certificate().der());
    assert_eq!(
        loaded.private_key().public_key(),
        ca.private_key().public_key()
    );

    let (wrapped, wrapping): (Vec<u8>, String) =
        sqlx::query_as("SELECT wrapped_key, wrapping FROM factory_ca WHERE label = 'factory-ca'")
            .fetch_one(&mut *conn)
            .await
            .expect("row");
    assert_eq!(wrapped.len(), store::WRAPPED_KEY_LEN);
    assert_eq!(wrapping, "smk-kdf-cmac-aes256-kwp-v1");

    // OpenSSL derives the wrapping key (SP 800-108 KBKDF, CMAC) and unwraps the blob (RFC 5649).
    let dir = TempDir::new().expect("temp dir");
    let derived = openssl(
        dir.path(),
        &[
            "kdf",
            "-keylen",
            "32",
            "-kdfopt",
            "mac:CMAC",
            "-kdfopt",
            "cipher:AES-256-CBC",
            "-kdfopt",
            &format!("hexkey:{}", hex::encode(master.expose())),
            "-kdfopt",
            "salt:station factory CA key wrap",
            "-kdfopt",
            "info:factory-ca",
            "KBKDF",
        ],
    );
    let derived = derived.trim().replace(':', "");
    let unwrapped = openssl_raw(
        dir.path(),
        &[
            "enc",
            "-d",
            "-id-aes256-wrap-pad",
            "-K",
            &derived,
            "-iv",
            "A65959A6",
        ],
        Some(&wrapped),
    );
    assert!(
        unwrapped.status.success(),
        "{}",
        String::from_utf8_lossy(&unwrapped.stderr)
    );
    let key = P384PrivateKey::from_scalar(&unwrapped.stdout).expect("a P-384 scalar");
    assert_eq!(key.public_key(), ca.private_key().public_key());
}

#[tokio::test]
async fn factory_ca_actions_are_audited_and_recorded() {
    let db = TestDatabase::new().await;
    let (vault, _master) = unsealed_vault(&db).await;
    let ca = test_ca();
    let mut tx = db::begin(db.pool()).await.expect("begin");
    store::save_ca(&mut tx, &vault, "factory-ca", &ca, None, &ACTOR)
        .await
        .expect("save CA");
    let device_key = P384PrivateKey::generate().expect("device key");
    let device = identity("SN-9", "PP-9000");
    let checked =
        check_csr(&build_csr(&device_key, &device).expect("CSR"), &device).expect("checked");
    let certificate = store::issue_device_certificate(
        &mut tx,
        "factory-ca",
        &ca,
        &checked,
        ValidityPeriod::from_now(TEN_YEARS),
        &ACTOR,
    )
    .await
    .expect("issue");
    tx.commit().await.expect("commit");
    let text = openssl_accepts(&ca, &certificate);
    assert!(
        text.contains("Subject: OU = PP-9000, serialNumber = SN-9"),
        "{text}"
    );

    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT action, details_json FROM audit_event ORDER BY seq")
            .fetch_all(db.pool())
            .await
            .expect("audit events");
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0].0, "pki.ca.created");
    assert!(
        actions[0].1.contains(&ca.certificate().fingerprint()),
        "{}",
        actions[0].1
    );
    assert_eq!(actions[1].0, "pki.certificate.issued");
    assert!(
        actions[1].1.contains("\"device_serial\":\"SN-9\""),
        "{}",
        actions[1].1
    );

    let (serial, fingerprint, model): (String, String, Option<String>) =
        sqlx::query_as("SELECT serial_number, fingerprint, device_model FROM issued_certificate")
            .fetch_one(db.pool())
            .await
            .expect("recorded certificate");
    assert_eq!(serial, certificate.serial_number().to_string());
    assert_eq!(fingerprint, certificate.fingerprint());
    assert_eq!(model.as_deref(), Some("PP-9000"));
    assert!(audit::verify(db.pool()).await.expect("verify").is_intact());
}

#[tokio::test]
async fn rejected_csr_is_audited() {
    let db = TestDatabase::new().await;
    let dir = TempDir::new().expect("temp dir");
    let csr = openssl_csr(
        dir.path(),
        "device",
        "P-256",
        "/serialNumber=SN-1/OU=PP-9000",
    );
    let device = identity("SN-1", "PP-9000");
    let error = check_csr(&csr, &device).unwrap_err();

    let mut tx = db::begin(db.pool()).await.expect("begin");
    store::record_rejection(&mut tx, store::Rejected::Csr, &device, &error, &ACTOR)
        .await
        .expect("record");
    tx.commit().await.expect("commit");

    let (action, outcome, subject, details): (String, String, String, String) =
        sqlx::query_as("SELECT action, outcome, subject, details_json FROM audit_event")
            .fetch_one(db.pool())
            .await
            .expect("audit event");
    assert_eq!(action, "pki.csr.rejected");
    assert_eq!(outcome, "failure");
    assert_eq!(subject, "device:SN-1");
    assert!(details.contains("EC P-256"), "{details}");
    assert!(
        details.contains("\"device_model\":\"PP-9000\""),
        "{details}"
    );
}

#[tokio::test]
async fn factory_ca_store_rejects_bad_states() {
    let db = TestDatabase::new().await;
    let (mut vault, _master) = unsealed_vault(&db).await;
    let ca = test_ca();
    let mut tx = db::begin(db.pool()).await.expect("begin");
    store::save_ca(&mut tx, &vault, "factory-ca", &ca, None, &ACTOR)
        .await
        .expect("save CA");
    store::save_ca(&mut tx, &vault, "factory-ca-2", &test_ca(), None, &ACTOR)
        .await
        .expect("save second CA");
    let error = store::save_ca(&mut tx, &vault, "factory-ca", &test_ca(), None, &ACTOR)
        .await
        .unwrap_err();
    assert!(matches!(error, PkiError::CaLabelTaken(_)), "{error:?}");
    tx.rollback().await.expect("rollback");

    let mut tx = db::begin(db.pool()).await.expect("begin");
    store::save_ca(&mut tx, &vault, "factory-ca", &ca, None, &ACTOR)
        .await
        .expect("save CA");
    store::save_ca(&mut tx, &vault, "factory-ca-2", &test_ca(), None, &ACTOR)
        .await
        .expect("save second CA");
    tx.commit().await.expect("commit");

    // A wrapped key copied into another CA's row does not unwrap there: the label is bound.
    sqlx::query(
        "UPDATE factory_ca SET wrapped_key = (SELECT wrapped_key FROM factory_ca WHERE label = 'factory-ca') \
         WHERE label = 'factory-ca-2'",
    )
    .execute(db.pool())
    .await
    .expect("update");
    let mut conn = db.pool().acquire().await.expect("connection");
    let error = store::load_ca(&mut conn, &vault, "factory-ca-2")
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "stored factory CA \"factory-ca-2\" is damaged or was altered: the wrapped key fails its integrity check under this master key and label"
    );

    let error = store::load_ca(&mut conn, &vault, "missing")
        .await
        .unwrap_err();
    assert!(matches!(error, PkiError::CaNotFound(_)), "{error:?}");

    vault.seal();
    let error = store::load_ca(&mut conn, &vault, "factory-ca")
        .await
        .unwrap_err();
    assert!(matches!(error, PkiError::VaultSealed), "{error:?}");
}

#[test]
fn ca_subject_and_validity_errors_name_the_value() {
    let error = FactoryCa::create("not a name", ValidityPeriod::from_now(ONE_DAY)).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid CA subject \"not a name\""),
        "{error}"
    );

    let backwards = ValidityPeriod {
        not_before: utc(2030, 1, 1, 0, 0, 0),
        not_after: NotAfter::At(utc(2029, 1, 1, 0, 0, 0)),
    };
    let error = FactoryCa::create("CN=Test", backwards).unwrap_err();
    assert!(matches!(error, PkiError::InvalidValidity(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "invalid certificate validity: notAfter 2029-01-01T00:00:00Z is not after notBefore 2030-01-01T00:00:00Z"
    );

    let endless = ValidityPeriod::from_now(Duration::MAX);
    let error = FactoryCa::create("CN=Test", endless).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid certificate validity: notAfter must lie between 1970 and 9999-12-31T23:59:59Z"
    );
}

#[test]
fn station_id_with_control_characters_rejected() {
    let ca = test_ca();
    let key = P384PrivateKey::generate().expect("key");
    let error = ca
        .issue_station_certificate(
            "line\n1",
            &key.public_key(),
            ValidityPeriod::from_now(ONE_DAY),
        )
        .unwrap_err();
    assert!(matches!(error, PkiError::InvalidStationId(_)), "{error:?}");
}

#[test]
fn private_key_debug_hides_scalar() {
    let key = P384PrivateKey::generate().expect("key");
    let debug_output = format!("{key:?}");
    let scalar = hex::encode(&key.expose_scalar()[..]);
    assert!(
        !debug_output.to_lowercase().contains(&scalar[..16]),
        "{debug_output}"
    );
    assert!(
        debug_output.starts_with("P384PrivateKey(public key "),
        "{debug_output}"
    );
}
