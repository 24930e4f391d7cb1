-- Key vault and ceremonies.
--
-- Top-level keys are stored only as TR-31 version D key blocks under the station master key; no
-- column ever holds clear key material. KCVs are stored with the method that produced them,
-- because two methods give different values for the same key.

CREATE TABLE vault_master (
    -- One row: the check value of the station master key, written when the vault is initialised,
    -- so that an unseal ceremony can tell a right master key from a wrong one.
    id          SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    kcv         TEXT NOT NULL,
    kcv_method  TEXT NOT NULL CHECK (kcv_method IN ('legacy', 'cmac')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ceremony_id UUID
);

CREATE TABLE ceremonies (
    id           UUID PRIMARY KEY,
    station_id   TEXT NOT NULL,
    script_name  TEXT NOT NULL,
    script_sha384 TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    participants JSONB NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'completed', 'aborted')),
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    outcome      TEXT
);

CREATE TABLE vault_keys (
    id          BIGSERIAL PRIMARY KEY,
    label       TEXT NOT NULL UNIQUE CHECK (label ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    algorithm   TEXT NOT NULL,
    usage       TEXT NOT NULL CHECK (usage IN ('bdk', 'transport-key')),
    kcv         TEXT NOT NULL,
    kcv_method  TEXT NOT NULL CHECK (kcv_method IN ('legacy', 'cmac')),
    -- The 4-byte BDK ID (8 hex digits) that AES DUKPT puts in every initial key ID.
    bdk_id      TEXT CHECK (bdk_id ~ '^[0-9A-F]{8}$'),
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired', 'destroyed')),
    key_block   TEXT NOT NULL,
    ceremony_id UUID REFERENCES ceremonies (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (usage <> 'bdk' OR bdk_id IS NOT NULL)
);

CREATE UNIQUE INDEX vault_keys_bdk_id ON vault_keys (bdk_id) WHERE bdk_id IS NOT NULL;
