"""Sample databases with everything a backup can get wrong, and fingerprints that tell whether a restore got it right.

Each engine has `shop` (several schemas, unicode text, binary values with every byte, values of a few MB, views,
functions, sequences moved away from their start, triggers; for PostgreSQL also a large object) and `crm` (a second
database for multi-database backups); PostgreSQL also has a login role with a grant, for `all`.

A fingerprint maps every object to a digest of its content: row count plus an md5 over all rows in a fixed order
for tables, the definition for views, functions and triggers, the current value for sequences, the oids and
contents of large objects. Two databases with
equal fingerprints hold the same data and objects.
"""

from __future__ import annotations

from hack.harness.databases import MariaDBServer, PostgresServer

PG_ROLE = "app_reader"
PG_ROLE_PASSWORD = "reader-Secret-42"

_PG_SHOP = r"""
CREATE SCHEMA sales;
CREATE SCHEMA "Ünïcödé Schema";
CREATE TABLE public.customers (id serial PRIMARY KEY, name text NOT NULL, note text);
INSERT INTO public.customers (name, note) VALUES
  ('Zoë Ångström', 'naïve café, 日本語, emoji 🙂'),
  ('O''Brien "quoted"', E'tab\there\nnew line and a backslash \\ end'),
  ('Ελληνικά', NULL);
INSERT INTO public.customers (name, note) SELECT 'customer ' || g, md5(g::text) FROM generate_series(1, 500) g;
CREATE TABLE sales.orders (
  id bigserial PRIMARY KEY,
  customer_id int REFERENCES public.customers (id),
  total numeric(12, 2) NOT NULL,
  placed timestamptz NOT NULL,
  payload jsonb
);
INSERT INTO sales.orders (customer_id, total, placed, payload)
  SELECT 1 + g % 500, round((g * 1.37)::numeric, 2), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour',
         jsonb_build_object('n', g, 'tag', 'ü' || g)
  FROM generate_series(1, 3000) g;
CREATE TABLE sales.blobs (id int PRIMARY KEY, data bytea NOT NULL);
INSERT INTO sales.blobs VALUES (1, (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex')
                                    FROM generate_series(0, 255) g));
INSERT INTO sales.blobs VALUES (2, (SELECT decode(string_agg(md5(g::text), ''), 'hex')
                                    FROM generate_series(1, 200000) g));
CREATE TABLE "Ünïcödé Schema"."Tåble with spaces" (key text PRIMARY KEY, big text);
INSERT INTO "Ünïcödé Schema"."Tåble with spaces" VALUES ('large', repeat('ä€', 700000)), ('small', 'ß');
CREATE VIEW sales.big_orders AS SELECT id, total FROM sales.orders WHERE total > 1000;
CREATE FUNCTION sales.order_count(customer int) RETURNS bigint LANGUAGE sql STABLE
  AS $$ SELECT count(*) FROM sales.orders WHERE customer_id = customer $$;
CREATE FUNCTION sales.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.total := NEW.total; RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON sales.orders FOR EACH ROW EXECUTE FUNCTION sales.touch();
CREATE SEQUENCE sales.invoice_numbers START 1000;
SELECT setval('sales.invoice_numbers', 4242);
SELECT lo_from_bytea(0, convert_to(repeat('a large object, in the restore''s one transaction ', 2000), 'UTF8'));
GRANT USAGE ON SCHEMA sales TO app_reader;
GRANT SELECT ON sales.orders TO app_reader;
"""

_PG_CRM = """
CREATE TABLE contacts (id int PRIMARY KEY, email text UNIQUE);
INSERT INTO contacts SELECT g, 'person' || g || '@example.org' FROM generate_series(1, 200) g;
"""


def fill_postgres(server: PostgresServer) -> None:
    server.sql(f"CREATE ROLE {PG_ROLE} LOGIN PASSWORD '{PG_ROLE_PASSWORD}'")
    for name, script in (("shop", _PG_SHOP), ("crm", _PG_CRM)):
        server.sql(f"CREATE DATABASE {name}")
        server.sql(script, name)


def pg_fingerprint(server: PostgresServer, database: str) -> dict[str, str]:
    found: dict[str, str] = {}
    tables = server.sql(
        "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        database,
    ).splitlines()
    if tables:
        script = "\n".join(
            f"SELECT '{t.replace(chr(39), chr(39) * 2)}', count(*), md5(coalesce(string_agg(r::text, E'\\n' "
            f"ORDER BY r::text), '')) FROM {t} r;"
            for t in tables
        )
        for line in server.sql(script, database).splitlines():
            name, count, digest = line.split("|")
            found[f"table {name}"] = f"{count} rows, md5 {digest}"
    queries = {
        "view": "SELECT schemaname || '.' || viewname, md5(definition) FROM pg_views "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        "function": "SELECT n.nspname || '.' || p.proname, md5(pg_get_functiondef(p.oid)) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
        "sequence": "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences",
        "trigger": "SELECT tgname, md5(pg_get_triggerdef(oid)) FROM pg_trigger WHERE NOT tgisinternal",
        "large objects": "SELECT 'all', count(*) || ' objects, md5 ' || md5(coalesce(string_agg(oid::text || ':' || "
        "md5(lo_get(oid)), ',' ORDER BY oid), '')) FROM pg_largeobject_metadata",
        "grant": "SELECT table_schema || '.' || table_name, string_agg(grantee || ':' || privilege_type, ',' "
        "ORDER BY grantee, privilege_type) FROM information_schema.role_table_grants "
        f"WHERE grantee = '{PG_ROLE}' GROUP BY 1",
    }
    for kind, sql in queries.items():
        for line in server.sql(sql, database).splitlines():
            name, value = line.split("|", 1)
            found[f"{kind} {name}"] = value
    return found


_MARIADB_SHOP = r"""
SET SESSION group_concat_max_len = 100000000;
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL, note TEXT)
  CHARSET utf8mb4 COLLATE utf8mb4_unicode_ci;
INSERT INTO customers (name, note) VALUES
  ('Zoë Ångström', 'naïve café, 日本語, emoji 🙂'),
  ('O''Brien "quoted"', 'tab\there\nnew line and a backslash \\ end'),
  ('Ελληνικά', NULL);
INSERT INTO customers (name, note) SELECT CONCAT('customer ', seq), MD5(seq) FROM seq_1_to_500;
CREATE TABLE orders (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  customer_id INT NOT NULL,
  total DECIMAL(12, 2) NOT NULL,
  placed DATETIME NOT NULL,
  FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE=InnoDB;
INSERT INTO orders (customer_id, total, placed)
  SELECT 1 + seq % 500, ROUND(seq * 1.37, 2), '2024-01-01' + INTERVAL seq HOUR FROM seq_1_to_3000;
CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB NOT NULL);
INSERT INTO blobs VALUES (1, (SELECT UNHEX(GROUP_CONCAT(LPAD(HEX(seq), 2, '0') ORDER BY seq SEPARATOR ''))
                              FROM seq_0_to_255));
INSERT INTO blobs VALUES (2, (SELECT UNHEX(GROUP_CONCAT(MD5(seq) ORDER BY seq SEPARATOR '')) FROM seq_1_to_200000));
CREATE TABLE `Tåble with spaces` (k VARCHAR(20) PRIMARY KEY, big LONGTEXT) CHARSET utf8mb4;
INSERT INTO `Tåble with spaces` VALUES ('large', REPEAT('ä€', 700000)), ('small', 'ß');
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 1000;
CREATE FUNCTION order_count(customer INT) RETURNS INT READS SQL DATA
  RETURN (SELECT COUNT(*) FROM orders WHERE customer_id = customer);
CREATE PROCEDURE raise_totals(factor DECIMAL(4, 2)) UPDATE orders SET total = total * factor;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW SET NEW.total = NEW.total;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM orders WHERE id < 0;
CREATE SEQUENCE invoice_numbers START WITH 1000 CACHE 10;
SELECT NEXTVAL(invoice_numbers), NEXTVAL(invoice_numbers), NEXTVAL(invoice_numbers);
"""

_MARIADB_CRM = """
CREATE TABLE contacts (id INT PRIMARY KEY, email VARCHAR(100) UNIQUE);
INSERT INTO contacts SELECT seq, CONCAT('person', seq, '@example.org') FROM seq_1_to_200;
"""


def fill_mariadb(server: MariaDBServer) -> None:
    for name, script in (("shop", _MARIADB_SHOP), ("crm", _MARIADB_CRM)):
        server.sql(f"CREATE DATABASE {name}")
        server.sql(script, name)


def mariadb_fingerprint(server: MariaDBServer, database: str) -> dict[str, str]:
    found: dict[str, str] = {}
    schema = f"X'{database.encode().hex()}'"
    tables = server.sql(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = {schema} "
        "AND table_type = 'BASE TABLE' ORDER BY 1"
    ).splitlines()
    for table in tables:
        quoted = "`" + table.replace("`", "``") + "`"
        columns = server.sql(
            f"SELECT CONCAT('HEX(`', REPLACE(column_name, '`', '``'), '`)') FROM information_schema.columns "
            f"WHERE table_schema = {schema} AND table_name = X'{table.encode().hex()}' ORDER BY ordinal_position"
        ).splitlines()
        row = f"CONCAT_WS('|', {', '.join(columns)})"
        digest = server.sql(
            "SET SESSION group_concat_max_len = 1000000000; "
            f"SELECT COUNT(*), MD5(COALESCE(GROUP_CONCAT({row} ORDER BY {row} SEPARATOR '\\n'), '')) FROM {quoted}",
            database,
        )
        found[f"table {table}"] = digest
    queries = {
        # A view's stored text names its database; the restored copy names its own.
        "view": f"SELECT table_name, MD5(REPLACE(view_definition, {schema}, '')) FROM information_schema.views "
        f"WHERE table_schema = {schema}",
        "routine": "SELECT CONCAT(routine_type, ' ', routine_name), MD5(routine_definition) "
        f"FROM information_schema.routines WHERE routine_schema = {schema}",
        "trigger": f"SELECT trigger_name, MD5(action_statement) FROM information_schema.triggers "
        f"WHERE trigger_schema = {schema}",
        "event": f"SELECT event_name, MD5(event_definition) FROM information_schema.events "
        f"WHERE event_schema = {schema}",
        "sequence": f"SELECT table_name, '' FROM information_schema.tables WHERE table_schema = {schema} "
        "AND table_type = 'SEQUENCE'",
    }
    for kind, sql in queries.items():
        for line in server.sql(sql).splitlines():
            name, value = line.split("\t", 1)
            found[f"{kind} {name}"] = value
    for key in [k for k in found if k.startswith("sequence ")]:
        name = key.removeprefix("sequence ")
        found[key] = server.sql(f"SELECT next_not_cached_value FROM `{name}`", database)
    return found
