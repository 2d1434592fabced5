-- Tessera's PostgreSQL schema. Every record is kept as the JSON of the same
-- serde type the embedded store writes (`body`), so both backends agree on
-- what a record is; the other columns copy the fields that queries filter,
-- order or lock on, and are kept in step with `body` by every write.
-- Times are Unix seconds (bigint), as the engine's injected clock counts them.

CREATE TABLE clients (
    id   text  PRIMARY KEY,
    body jsonb NOT NULL
);

CREATE TABLE sessions (
    id                 uuid   PRIMARY KEY,
    client_id          text   NOT NULL,
    subject            text   NOT NULL,
    -- keyed hash of a caller-chosen reference id
    reference          bytea,
    created_at         bigint NOT NULL,
    expires_at         bigint NOT NULL,
    access_cover_until bigint NOT NULL,
    delete_after       bigint NOT NULL,
    -- NULL while the session is live; the `Ended` record once it ended
    ended              jsonb,
    body               jsonb  NOT NULL
);

-- Listings are newest first; ending "every session of X" scans these too.
CREATE INDEX sessions_by_subject ON sessions (subject, created_at DESC, id DESC);
CREATE INDEX sessions_by_client ON sessions (client_id, created_at DESC, id DESC);
-- A reference names at most one live session of a client. Ending a session
-- frees its reference, so the predicate keeps only live holders.
CREATE UNIQUE INDEX sessions_live_reference ON sessions (client_id, reference)
    WHERE ended IS NULL AND reference IS NOT NULL;
CREATE INDEX sessions_delete_after ON sessions (delete_after);
-- Only live sessions: the live count is an index-only scan of this.
CREATE INDEX sessions_live_expiry ON sessions (expires_at) WHERE ended IS NULL;

CREATE TABLE refresh (
    hash       bytea  PRIMARY KEY,
    session_id uuid   NOT NULL,
    -- 'current' or 'retired', as in body.state
    state      text   NOT NULL,
    expires_at bigint NOT NULL,
    body       jsonb  NOT NULL
);
CREATE INDEX refresh_expires_at ON refresh (expires_at);

-- Ended sessions whose access tokens may still verify, until `cover_until`.
CREATE TABLE revoked (
    session_id  uuid   PRIMARY KEY,
    cover_until bigint NOT NULL
);
CREATE INDEX revoked_cover_until ON revoked (cover_until);

-- The audit trail; `id` orders records that share a second.
CREATE TABLE audit (
    id   bigserial PRIMARY KEY,
    at   bigint    NOT NULL,
    body jsonb     NOT NULL
);
CREATE INDEX audit_at ON audit (at, id);

-- OTP challenges, login challenges, authorization codes.
CREATE TABLE grants (
    kind       text   NOT NULL,
    key        bytea  NOT NULL,
    value      bytea  NOT NULL,
    version    bigint NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX grants_expires_at ON grants (expires_at);
