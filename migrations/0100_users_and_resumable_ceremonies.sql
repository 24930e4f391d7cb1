-- Users and roles, resumable ceremonies, and the key life cycle that ceremonies drive.
--
-- No column here holds a secret: users keep only an argon2id hash of their password, and a
-- ceremony keeps only its script, its progress and its participants, so a ceremony interrupted
-- by a restart resumes by asking the custodians to enter their components again.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9._-]{0,62}$'),
    role          text NOT NULL CHECK (role IN ('admin', 'custodian', 'supervisor', 'operator', 'auditor')),
    -- PHC string of an argon2id hash, salt and parameters included.
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE ceremonies DROP CONSTRAINT ceremonies_state_check;
ALTER TABLE ceremonies ADD CONSTRAINT ceremonies_state_check
    CHECK (state IN ('running', 'completed', 'aborted', 'timed-out'));

-- The exact script text, so `station ceremony resume` runs what was started.
ALTER TABLE ceremonies ADD COLUMN script_text text;
-- 1-based numbers of the steps whose effect is on record.
ALTER TABLE ceremonies ADD COLUMN completed_steps integer[] NOT NULL DEFAULT '{}';
ALTER TABLE ceremonies ADD COLUMN last_activity_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE ceremonies ADD COLUMN idle_timeout_seconds integer NOT NULL DEFAULT 900
    CHECK (idle_timeout_seconds > 0);

-- Key-encryption keys wrap exports to the payment host's HSM.
ALTER TABLE vault_keys DROP CONSTRAINT vault_keys_usage_check;
ALTER TABLE vault_keys ADD CONSTRAINT vault_keys_usage_check
    CHECK (usage IN ('bdk', 'transport-key', 'kek'));

-- A destroyed key keeps its record (label, check value, history) but loses its key block.
ALTER TABLE vault_keys ADD COLUMN status_changed_at timestamptz;
ALTER TABLE vault_keys ADD COLUMN status_ceremony_id uuid REFERENCES ceremonies (id);
ALTER TABLE vault_keys ADD CONSTRAINT vault_keys_destroyed_has_no_block
    CHECK ((status = 'destroyed') = (key_block = ''));
