-- The audit trail: one append-only, hash-chained sequence of events per station.
--
-- Each row carries the hash of the previous row of the same station, and its own hash is SHA-384
-- over a length-prefixed encoding of all of its fields (see station/src/audit/encoding.rs). The
-- station computes both hashes; the database only stores them, keeps the sequence numbers unique
-- and rejects every change to a stored row.

CREATE TABLE audit_event (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    station_id   text        NOT NULL CHECK (station_id <> ''),
    -- Position in the station's chain, from 1 with no gaps.
    seq          bigint      NOT NULL CHECK (seq >= 1),
    -- Stored at microsecond precision, which is what the hash covers.
    occurred_at  timestamptz NOT NULL,
    actor        text        NOT NULL CHECK (actor <> ''),
    action       text        NOT NULL CHECK (action <> ''),
    subject      text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('success', 'failure')),
    -- The canonical JSON text that the hash covers. `details` is derived from it, because jsonb
    -- reorders keys and rewrites numbers, so it cannot be hashed as read back.
    details_json text        NOT NULL,
    details      jsonb       GENERATED ALWAYS AS (details_json::jsonb) STORED,
    prev_hash    bytea       NOT NULL CHECK (length(prev_hash) = 48),
    hash         bytea       NOT NULL CHECK (length(hash) = 48),
    -- A second writer that missed the chain lock cannot fork the chain: its seq is taken.
    UNIQUE (station_id, seq)
);

CREATE INDEX audit_event_occurred_at ON audit_event (occurred_at);

CREATE FUNCTION audit_event_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only: % rejected', TG_OP
        USING HINT = 'audit events are never changed or removed; append a correcting event instead';
END;
$$;

-- Statement-level triggers fire even when the statement matches no row, so a probing UPDATE or
-- DELETE fails as loudly as a real one.
CREATE TRIGGER audit_event_reject_update_delete
    BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_reject_change();

CREATE TRIGGER audit_event_reject_truncate
    BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_reject_change();

-- NOTE: the station connects as the table's owner (a superuser in the private cluster), whom
-- grants do not restrict, so these triggers are the enforcement. A site sharing one server can run
-- its stations as a role with only INSERT and SELECT on audit_event.
