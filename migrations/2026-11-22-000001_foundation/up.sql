-- Shared building blocks: the application role, the tenant context, the check
-- functions CHECK constraints use, and the tenants table. Functions and
-- triggers beyond these live in sql/ (see docs/sql-layout.md).

-- The role is cluster-wide, so several databases (and several test databases
-- migrating in parallel) may race to create it; losing that race is fine.
-- A migrator without CREATEROLE needs it created beforehand (docs/security.md).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loyalty_app') THEN
        BEGIN
            CREATE ROLE loyalty_app NOLOGIN NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO loyalty_app', current_schema());
END
$$;

-- The key that proves a tenant context was set by the crate's guard, not by
-- SQL sent through it. Only its owner (the migrator) can read it: neither
-- loyalty_app nor PUBLIC has USAGE on this schema. The pads are the key
-- XORed with HMAC's ipad and opad, so the check below is HMAC-SHA256 with
-- two sha256() calls and no extension.
CREATE SCHEMA loyalty_secret;
CREATE TABLE loyalty_secret.guard_key (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key        bytea NOT NULL CHECK (length(key) = 32),
    inner_pad  bytea NOT NULL CHECK (length(inner_pad) = 64),
    outer_pad  bytea NOT NULL CHECK (length(outer_pad) = 64)
);
DO $$
DECLARE
    key bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
    padded bytea := key || decode(repeat('00', 32), 'hex');
    inner_pad bytea := padded;
    outer_pad bytea := padded;
BEGIN
    FOR i IN 0..63 LOOP
        inner_pad := set_byte(inner_pad, i, get_byte(padded, i) # 54);   -- 0x36
        outer_pad := set_byte(outer_pad, i, get_byte(padded, i) # 92);   -- 0x5c
    END LOOP;
    INSERT INTO loyalty_secret.guard_key (key, inner_pad, outer_pad)
    VALUES (key, inner_pad, outer_pad);
END
$$;

-- Whether `proof` is the HMAC-SHA256 of `claim` under the guard key. Only
-- the migrator can call it (no one else has USAGE on the schema), so it is
-- no oracle; the two functions below call it as SECURITY DEFINER. Every name
-- is schema-qualified, so nothing on a caller's search path can stand in for
-- one.
CREATE FUNCTION loyalty_secret.proof_holds(claim text, proof text) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
DECLARE
    pads record;
BEGIN
    SELECT inner_pad, outer_pad INTO pads FROM loyalty_secret.guard_key;
    RETURN pg_catalog.encode(pg_catalog.sha256(pads.outer_pad OPERATOR(pg_catalog.||)
               pg_catalog.sha256(pads.inner_pad OPERATOR(pg_catalog.||)
                   pg_catalog.convert_to(claim, 'UTF8'))), 'hex') OPERATOR(pg_catalog.=) proof;
END
$$;

-- The tenant in context: app.tenant_id, but only when app.tenant_proof is
-- its HMAC under the guard key. SQL sent through a guard can set both
-- settings, but cannot compute the proof for another tenant, so a forged
-- context reads as "no tenant" and every policy fails closed. Policies call
-- it as (SELECT current_tenant_id()): once per statement.
CREATE FUNCTION current_tenant_id() RETURNS uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    AS $$
DECLARE
    claimed pg_catalog.text := pg_catalog.current_setting('app.tenant_id', true);
    proof pg_catalog.text := pg_catalog.current_setting('app.tenant_proof', true);
BEGIN
    IF claimed IS NULL OR claimed OPERATOR(pg_catalog.=) '' OR proof IS NULL
       OR NOT loyalty_secret.proof_holds(claimed, proof) THEN
        RETURN NULL;
    END IF;
    RETURN claimed::pg_catalog.uuid;
END
$$;

-- Whether the platform scope (tenant provisioning) is in context: the same
-- check over the fixed claim 'platform', which no tenant id's text equals.
CREATE FUNCTION in_platform_scope() RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    AS $$
DECLARE
    proof pg_catalog.text := pg_catalog.current_setting('app.platform_proof', true);
BEGIN
    RETURN proof IS NOT NULL AND loyalty_secret.proof_holds('platform', proof);
END
$$;

-- Active ISO 4217 codes. Keep in sync with `Currency` in src/money.rs; a test
-- compares the two lists. plpgsql rather than SQL: a CHECK calling an SQL
-- function inlines it and plans it again in every INSERT or UPDATE, while a
-- plpgsql body is planned once per session.
CREATE FUNCTION is_iso4217(code text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
BEGIN
    RETURN code = ANY ('{AED,AFN,ALL,AMD,ANG,AOA,ARS,AUD,AWG,AZN,BAM,BBD,BDT,BGN,BHD,BIF,BMD,BND,BOB,BRL,BSD,BTN,BWP,BYN,BZD,CAD,CDF,CHF,CLP,CNY,COP,CRC,CUP,CVE,CZK,DJF,DKK,DOP,DZD,EGP,ERN,ETB,EUR,FJD,FKP,GBP,GEL,GHS,GIP,GMD,GNF,GTQ,GYD,HKD,HNL,HTG,HUF,IDR,ILS,INR,IQD,IRR,ISK,JMD,JOD,JPY,KES,KGS,KHR,KMF,KPW,KRW,KWD,KYD,KZT,LAK,LBP,LKR,LRD,LSL,LYD,MAD,MDL,MGA,MKD,MMK,MNT,MOP,MRU,MUR,MVR,MWK,MXN,MYR,MZN,NAD,NGN,NIO,NOK,NPR,NZD,OMR,PAB,PEN,PGK,PHP,PKR,PLN,PYG,QAR,RON,RSD,RUB,RWF,SAR,SBD,SCR,SDG,SEK,SGD,SHP,SLE,SOS,SRD,SSP,STN,SVC,SYP,SZL,THB,TJS,TMT,TND,TOP,TRY,TTD,TWD,TZS,UAH,UGX,USD,UYU,UZS,VES,VND,VUV,WST,XAF,XCD,XOF,XPF,YER,ZAR,ZMW,ZWL}'::text[]);
END
$$;

CREATE FUNCTION is_e164(phone text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT phone ~ '^\+[1-9][0-9]{6,14}$' $$;

CREATE FUNCTION is_json_object(doc jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT jsonb_typeof(doc) = 'object' $$;

-- Every tenant-owned table gets the same treatment: RLS enabled and forced
-- (so even the table owner is isolated) and one policy for reads and writes.
CREATE FUNCTION isolate_by_tenant(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s '
                   'USING (tenant_id = (SELECT current_tenant_id())) '
                   'WITH CHECK (tenant_id = (SELECT current_tenant_id()))', tbl);
END
$$;

CREATE TABLE tenants (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    country_code text CHECK (country_code ~ '^[A-Z]{2}$'),
    default_ccy  text NOT NULL CHECK (is_iso4217(default_ccy)),
    theme        jsonb NOT NULL DEFAULT '{}' CHECK (is_json_object(theme)),
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- A guard sees only the row of the tenant it acts for; the platform scope
-- (Store::platform) sees and provisions every tenant. Both run as
-- loyalty_app, told apart by their proofs. Forced, like every table: the
-- owner is the migrator, and no service logs in as it.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_self ON tenants FOR SELECT
    USING (id = (SELECT current_tenant_id()));
CREATE POLICY platform_reads ON tenants FOR SELECT
    USING ((SELECT in_platform_scope()));
CREATE POLICY platform_creates ON tenants FOR INSERT
    WITH CHECK ((SELECT in_platform_scope()));
CREATE POLICY platform_edits ON tenants FOR UPDATE
    USING ((SELECT in_platform_scope())) WITH CHECK ((SELECT in_platform_scope()));
GRANT SELECT, INSERT (id, name, country_code, default_ccy, theme),
      UPDATE (theme, status) ON tenants TO loyalty_app;
