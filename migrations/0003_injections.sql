-- Device identities and injections.
--
-- An AES DUKPT initial key ID is the BDK ID (4 bytes) followed by a derivation ID (4 bytes,
-- ANSI X9.24-3-2017). Derivation IDs are handed out per BDK ID from a counter row, in the same
-- transaction that records the injection, so two stations sharing this database never hand out
-- the same identity and a committed identity is never handed out again.

CREATE TABLE derivation_id_counter (
    bdk_id             bytea  PRIMARY KEY CHECK (length(bdk_id) = 4),
    -- The label of the BDK that owns this BDK ID. Two BDKs with one BDK ID would give devices
    -- identical initial key IDs, so a second label for the same BDK ID is rejected.
    bdk_label          text   NOT NULL CHECK (bdk_label <> ''),
    -- The last derivation ID handed out; the next one is this plus one. Zero is never used.
    last_derivation_id bigint NOT NULL CHECK (last_derivation_id BETWEEN 1 AND 4294967295)
);

-- One injection of a device's initial key: allocated, then sent, then confirmed or failed.
-- A failed injection burns its identity: the row stays and the derivation ID is never reused.
CREATE TABLE injection (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    station_id      text        NOT NULL CHECK (station_id <> ''),
    bdk_label       text        NOT NULL CHECK (bdk_label <> ''),
    bdk_id          bytea       NOT NULL CHECK (length(bdk_id) = 4),
    derivation_id   bigint      NOT NULL CHECK (derivation_id BETWEEN 1 AND 4294967295),
    device_vendor   text        NOT NULL,
    device_model    text        NOT NULL,
    device_serial   text        NOT NULL CHECK (device_serial <> ''),
    device_firmware text        NOT NULL,
    port            text        NOT NULL CHECK (port <> ''),
    state           text        NOT NULL CHECK (state IN ('allocated', 'sent', 'confirmed', 'failed')),
    -- KCV of the key the device reports it stored, as upper-case hex, and how it was computed.
    kcv_hex         text        CHECK (kcv_hex ~ '^([0-9A-F]{2}){2,5}$'),
    kcv_method      text,
    error           text,
    allocated_at    timestamptz NOT NULL,
    sent_at         timestamptz,
    finished_at     timestamptz,
    UNIQUE (bdk_id, derivation_id),
    CHECK ((state = 'confirmed') = (kcv_hex IS NOT NULL AND kcv_method IS NOT NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL)),
    CHECK ((state IN ('confirmed', 'failed')) = (finished_at IS NOT NULL)),
    CHECK (state IN ('allocated', 'failed') OR sent_at IS NOT NULL)
);

-- Reconciliation after a restart looks for a station's unfinished injections.
CREATE INDEX injection_unfinished ON injection (station_id, id) WHERE state IN ('allocated', 'sent');
CREATE INDEX injection_device_serial ON injection (device_serial);
