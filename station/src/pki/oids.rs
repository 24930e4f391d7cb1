//! Object identifiers the factory PKI checks, with names for error messages.

use spki::ObjectIdentifier;

/// id-ecPublicKey (RFC 5480).
pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp384r1, the NIST P-384 curve (RFC 5480).
pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// ecdsa-with-SHA384 (RFC 5758).
pub const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// The X.520 serialNumber attribute of a name.
pub const SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");
/// The X.520 organizationalUnitName attribute, which carries the device model.
pub const ORGANIZATIONAL_UNIT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
/// The X.520 commonName attribute.
pub const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// Certificate extensions this station processes; any other critical extension is rejected.
pub const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
/// keyUsage extension.
pub const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");

const NAMES: &[(ObjectIdentifier, &str)] = &[
    (EC_PUBLIC_KEY, "id-ecPublicKey"),
    (SECP384R1, "P-384"),
    (ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"), "P-256"),
    (ObjectIdentifier::new_unwrap("1.3.132.0.35"), "P-521"),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1"),
        "RSA (rsaEncryption)",
    ),
    (ObjectIdentifier::new_unwrap("1.3.101.112"), "Ed25519"),
    (ECDSA_WITH_SHA384, "ecdsa-with-SHA384"),
    (
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
        "ecdsa-with-SHA256",
    ),
    (
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4"),
        "ecdsa-with-SHA512",
    ),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11"),
        "sha256WithRSAEncryption",
    ),
];

/// Names a known OID as "name (dotted)", or gives the dotted form alone.
pub fn describe(oid: &ObjectIdentifier) -> String {
    match NAMES.iter().find(|(known, _)| known == oid) {
        Some((_, name)) => format!("{name} ({oid})"),
        None => oid.to_string(),
    }
}
