-- Key vault backends: a key is either a TR-31 version D block under the station master key in
-- this table (the software backend, and keys that a PKCS#11 token cannot use itself), or an
-- object in the station's PKCS#11 token, which this table names by label but never holds.

ALTER TABLE vault_keys ADD COLUMN storage text NOT NULL DEFAULT 'key-block'
    CHECK (storage IN ('key-block', 'token-object'));
ALTER TABLE vault_keys ALTER COLUMN key_block DROP NOT NULL;
-- Serial number of the token that holds a token object, so a station configured with another
-- token reports the key as missing rather than using a different key with the same label.
ALTER TABLE vault_keys ADD COLUMN token_serial text;
ALTER TABLE vault_keys ADD CONSTRAINT vault_keys_storage_consistent CHECK (
    (storage = 'key-block' AND key_block IS NOT NULL AND token_serial IS NULL)
    OR (storage = 'token-object' AND key_block IS NULL AND token_serial IS NOT NULL)
);
