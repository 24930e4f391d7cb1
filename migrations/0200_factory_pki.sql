-- Factory PKI: the factory CA and every certificate it issues.
--
-- The CA's P-384 private key is stored only wrapped under a key derived from the station master
-- key (AES key wrap with padding, RFC 5649); no column ever holds it in the clear.

CREATE TABLE factory_ca (
    label           text        PRIMARY KEY CHECK (label ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    -- The CA's self-signed certificate, DER.
    certificate     bytea       NOT NULL,
    -- SHA-256 of the certificate, uppercase hex.
    fingerprint     text        NOT NULL UNIQUE CHECK (fingerprint ~ '^[0-9A-F]{64}$'),
    -- The 48-byte private scalar wrapped by AES-256 key wrap with padding: 56 bytes.
    wrapped_key     bytea       NOT NULL CHECK (length(wrapped_key) = 56),
    -- How wrapped_key was made; see station/src/pki/store.rs.
    wrapping        text        NOT NULL CHECK (wrapping IN ('smk-kdf-cmac-aes256-kwp-v1')),
    ceremony_id     uuid        REFERENCES ceremonies (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Every certificate a factory CA issued. RFC 5280 requires serial numbers unique per CA; the
-- unique constraint turns a repeated random serial into an error instead of a duplicate.
CREATE TABLE issued_certificate (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ca_label        text        NOT NULL REFERENCES factory_ca (label),
    serial_number   text        NOT NULL CHECK (serial_number ~ '^[0-9A-F]{2,40}$'),
    role            text        NOT NULL CHECK (role IN ('station', 'device')),
    subject         text        NOT NULL,
    device_serial   text,
    device_model    text,
    fingerprint     text        NOT NULL UNIQUE CHECK (fingerprint ~ '^[0-9A-F]{64}$'),
    certificate     bytea       NOT NULL,
    not_before      timestamptz NOT NULL,
    not_after       timestamptz NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (ca_label, serial_number),
    CHECK (role <> 'device' OR (device_serial IS NOT NULL AND device_model IS NOT NULL))
);

CREATE INDEX issued_certificate_device ON issued_certificate (device_serial, device_model);
