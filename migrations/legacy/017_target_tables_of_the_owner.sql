-- masq acts only on tables whose code cannot run with the owner's rights. Erasure, export, retention, the usage
-- check and the rotation read, delete or rewrite a registered table as the owner of schema masq (SECURITY DEFINER
-- functions, or the owner's own login): a trigger, a rule or a row-level security policy of that table would run
-- with those rights, and the owner is often a superuser. So a table masq acts on (and every table that inherits from
-- it or is a partition of it, whose rows the same statements reach) must be owned by the owner of schema masq (only
-- it, a member of it or a superuser can then add code to it) and have no user trigger, no rule and no row-level
-- security. Checked when a table is registered (masq.target_tables' trigger, and `masq migrate`, which says it in one
-- line) and again every time a definer function resolves a registered table (masq.registered_target,
-- masq.target_relations): a registration made before this migration, or a table changed since, is refused there
-- with the same line, and nothing is read, deleted or rewritten until it is fixed or unregistered.

-- Why masq will not act on p_table, in one line that says what to do; NULL when it may. Invoker's rights: it reads
-- the catalogs only.
CREATE FUNCTION masq.target_refusal(p_table regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    WITH RECURSIVE tree (rel) AS (
        SELECT p_table::oid
        UNION
        SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.rel
    ), masq_owner AS (
        SELECT nspowner FROM pg_namespace WHERE nspname = 'masq'
    ), why AS (
        SELECT c.oid, c.oid::regclass::text AS t,
            CASE
                WHEN c.relowner <> (SELECT nspowner FROM masq_owner) THEN
                    format('table %s is owned by %s, not by %s (the owner of schema masq, whose rights erasure, retention and rotation use on it): make %s its owner (ALTER TABLE %s OWNER TO %s) or register another table',
                        c.oid::regclass, c.relowner::regrole, (SELECT nspowner FROM masq_owner)::regrole,
                        (SELECT nspowner FROM masq_owner)::regrole, c.oid::regclass, (SELECT nspowner FROM masq_owner)::regrole)
                WHEN EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal) THEN
                    format('table %s has triggers (%s) that erasure, retention and rotation would run with the rights of schema masq''s owner: drop them (DROP TRIGGER ... ON %s) or register another table',
                        c.oid::regclass, (SELECT string_agg(quote_ident(g.tgname), ', ' ORDER BY g.tgname) FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal), c.oid::regclass)
                WHEN EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid) THEN
                    format('table %s has rules (%s) that erasure, retention and rotation would run with the rights of schema masq''s owner: drop them (DROP RULE ... ON %s) or register another table',
                        c.oid::regclass, (SELECT string_agg(quote_ident(r.rulename), ', ' ORDER BY r.rulename) FROM pg_rewrite r WHERE r.ev_class = c.oid), c.oid::regclass)
                WHEN c.relrowsecurity OR c.relforcerowsecurity THEN
                    format('table %s has row-level security, whose policies erasure, retention and rotation would run with the rights of schema masq''s owner: ALTER TABLE %s NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY, or register another table',
                        c.oid::regclass, c.oid::regclass)
            END AS line
        FROM tree JOIN pg_class c ON c.oid = tree.rel
    )
    SELECT line FROM why WHERE line IS NOT NULL ORDER BY oid = p_table::oid DESC, oid LIMIT 1
$$;
REVOKE ALL ON FUNCTION masq.target_refusal(regclass) FROM PUBLIC;

-- The registration refuses such a table (the owner inserts the row; `masq migrate` checks first to say it in one
-- line, this is for a registration by plain SQL).
CREATE FUNCTION masq.check_target_registration() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    why text := masq.target_refusal(NEW.relation);
BEGIN
    IF why IS NOT NULL THEN
        RAISE EXCEPTION '%', why USING ERRCODE = '55000';
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION masq.check_target_registration() FROM PUBLIC;
CREATE TRIGGER target_tables_of_the_owner BEFORE INSERT OR UPDATE ON masq.target_tables
    FOR EACH ROW EXECUTE FUNCTION masq.check_target_registration();

-- Migration 007's check, and the one above, each time a definer function resolves a table.
CREATE OR REPLACE FUNCTION masq.registered_target(p_table regclass) RETURNS regclass
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    why text;
BEGIN
    IF p_table IS NULL OR NOT EXISTS (
        SELECT 1 FROM masq.target_tables t JOIN pg_class c ON c.oid = t.relation
        WHERE t.relation = p_table AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p') THEN
        RAISE EXCEPTION 'table % is not a table masq writes (run masq migrate as the owner with MASQ_TABLE set to it)', p_table
            USING ERRCODE = '42501';
    END IF;
    why := masq.target_refusal(p_table);
    IF why IS NOT NULL THEN
        RAISE EXCEPTION '%', why USING ERRCODE = '55000';
    END IF;
    RETURN p_table;
END $$;

-- Every registered table, for the usage check (masq.values_in_use reads each), erasure and export of every table and
-- the rotation: one that fails the check stops them all with its line. Skipping it instead would let an erasure or
-- prune destroy vault values that table's rows still use.
CREATE OR REPLACE FUNCTION masq.target_relations() RETURNS SETOF regclass
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r regclass;
    why text;
BEGIN
    FOR r IN SELECT t.relation FROM masq.target_tables t JOIN pg_class c ON c.oid = t.relation
             WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' ORDER BY t.relation::oid LOOP
        why := masq.target_refusal(r);
        IF why IS NOT NULL THEN
            RAISE EXCEPTION '%', why USING ERRCODE = '55000';
        END IF;
        RETURN NEXT r;
    END LOOP;
END $$;
