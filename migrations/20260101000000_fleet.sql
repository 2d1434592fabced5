-- What every node of a fleet must share: the signing keys of access tokens
-- and a few named secrets (the token-hashing key, the admin token). Whoever
-- can read this database can read them: protect it as the data directory
-- of a single node is protected.

-- One row per signing key. `retire_at` is NULL for the current key; a
-- rotated-out key keeps verifying (and stays in the JWKS) until then.
CREATE TABLE signing_keys (
    kid           text   PRIMARY KEY,
    alg           text   NOT NULL,
    created_at    bigint NOT NULL,
    retire_at     bigint,
    -- PKCS#8 DER, standard base64
    private_pkcs8 text   NOT NULL
);

-- Named values set once by the first node to start and read by the others.
CREATE TABLE fleet_meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- The NOTIFY channel of this database and schema: nodes that share both
-- hear each other, and a fleet in another schema of the same database does
-- not. (A channel name is at most 63 bytes; this one is 28.)
CREATE FUNCTION tessera_channel() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT 'tessera_' || left(md5(current_database() || '/' || current_schema()), 20) $$;
