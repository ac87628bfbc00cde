#!/usr/bin/env bats
# A table created in the legacy source after the earlier migration (and after
# a first sync): analyze proposes its DDL and map section; migrate
# --create-missing refuses a file that is not what analyze writes, prints and
# writes nothing in a dry run, creates the table in the target's conventions,
# fills it past the insert guard once, and the sides then validate.
# The tests run in order: each one starts from the state the one before left.

load helpers

ANALYZE="$REPO/scripts/analyze"
MIGRATE="$REPO/scripts/migrate"
VALIDATE="$REPO/scripts/validate"
FIXTURE="$REPO/scripts/shop-fixture"

setup_file() {
    scratch_setup_file || return 1
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    local fx="$BATS_FILE_TMPDIR/shop"
    "$FIXTURE" load --dir "$fx" || return 1
    # The first sync, before the source grows a table.
    "$MIGRATE" --map "$fx/shop.map" --run-dir "$BATS_FILE_TMPDIR/run0" --quiet || return 1
    # 300 coupons: more than guard_min (100) and 10% of an empty table, so a
    # normal run's insert guard would stop them. Each names a customer.
    psql_as legacy_owner legacy -c "
        CREATE TABLE public.coupons (id integer PRIMARY KEY,
            customer_id integer NOT NULL REFERENCES public.customers (id),
            code varchar(20) NOT NULL, issued_at timestamp);
        INSERT INTO public.coupons
        SELECT g, ids[1 + g % array_length(ids, 1)], 'C' || g,
               timestamp '2024-07-01 12:00' + g * interval '1 hour'
        FROM generate_series(1, 300) AS g,
             (SELECT array_agg(id ORDER BY id) AS ids FROM public.customers) AS c" || return 1
    "$ANALYZE" --out "$fx/analyzed.map" --scripts "$fx" --ddl "$fx/missing.sql" \
        --report "$fx/report.txt" --quiet || return 1
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    if [[ $BATS_TEST_DESCRIPTION != "cli: "* ]]; then
        scratch_setup
    fi
    FX="$BATS_FILE_TMPDIR/shop"
}

# target SQL: as the target's owner.
target() {
    psql_as target_owner target -c "$1"
}

# runs_count: the runs recorded in the state schema.
runs_count() {
    target "SELECT count(*) FROM driftless.runs"
}

@test "cli: --create-missing needs a file that can be read" {
    run -2 --separate-stderr "$MIGRATE" --map /dev/null --create-missing
    [[ $stderr == *"option '--create-missing' requires an argument"* ]] || fail "$stderr"
    run -0 --separate-stderr "$MIGRATE" --help
    assert_output --partial "--create-missing FILE"
}

@test "db: analyze proposes the new table's DDL and its map section" {
    run -0 grep -c '^CREATE TABLE' "$FX/missing.sql"
    assert_output 1
    run -0 cat "$FX/missing.sql"
    assert_line "CREATE TABLE public.coupons ("
    assert_line "    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    assert_line "    legacy_id integer UNIQUE,"
    assert_line "ALTER TABLE public.coupons ENABLE ROW LEVEL SECURITY;"
    assert_line "REVOKE ALL ON TABLE public.coupons FROM anon, authenticated;"
    assert_line "ALTER TABLE public.coupons ADD FOREIGN KEY (customer_id) REFERENCES public.customers (id);"
    run -0 grep -A1 -x '\[public.coupons\]' "$FX/analyzed.map"
    assert_line "# created by --create-missing"
    run -0 grep -x 'fk.customer_id *= *public.customers' "$FX/analyzed.map"
}

@test "db: a DDL file with a statement analyze does not write is refused, nothing created" {
    local before
    before=$(runs_count)
    for bad in "DROP TABLE public.orders;" \
        "GRANT SELECT ON public.coupons TO anon;" \
        "ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;" \
        "ALTER TABLE public.coupons ADD COLUMN x integer, DROP COLUMN code;"; do
        { cat "$FX/missing.sql"; printf '%s\n' "$bad"; } >"$BATS_TEST_TMPDIR/bad.sql"
        run -4 --separate-stderr "$MIGRATE" --map "$FX/analyzed.map" \
            --run-dir "$BATS_TEST_TMPDIR/run-bad" --create-missing "$BATS_TEST_TMPDIR/bad.sql"
        [[ $stderr == *"bad.sql: line "* ]] || fail "$stderr"
        [[ $stderr == *"refused"* ]] || fail "$stderr"
        [[ $stderr == *"${bad:0:20}"* ]] || fail "$stderr"
        rm -rf "$BATS_TEST_TMPDIR/run-bad"
    done
    run -0 target "SELECT to_regclass('public.coupons') IS NULL, to_regclass('public.orders') IS NOT NULL,
        (SELECT count(*) FROM driftless.created_tables)"
    assert_output "t|t|0"
    [[ $(runs_count) -eq $((before + 4)) ]]
}

@test "db: --dry-run with --create-missing prints the DDL and what it would fill, writes nothing" {
    local before
    before=$(runs_count)
    run -0 --separate-stderr "$MIGRATE" --map "$FX/analyzed.map" --run-dir "$BATS_TEST_TMPDIR/dry" \
        --create-missing "$FX/missing.sql" --dry-run
    assert_line "-- table public.coupons: would be created"
    assert_line "CREATE TABLE public.coupons ("
    assert_line "ALTER TABLE public.coupons ENABLE ROW LEVEL SECURITY;"
    assert_line "public.coupons: would be created, then filled with 300 rows (first fill: no insert guard)"
    # The other tables are computed: in sync since the first run.
    assert_line "public.customers: would insert 0, update 0, delete 0; unchanged 302"
    run -0 target "SELECT to_regclass('public.coupons') IS NULL, (SELECT count(*) FROM driftless.created_tables)"
    assert_output "t|0"
    [[ $(runs_count) -eq $before ]]
}

@test "db: migrate --create-missing creates the table in the target's conventions and fills it" {
    run -0 --separate-stderr "$MIGRATE" --map "$FX/analyzed.map" --run-dir "$BATS_FILE_TMPDIR/run1" \
        --create-missing "$FX/missing.sql"
    assert_line --regexp '^public.coupons: inserted 300, updated 0, deleted 0, unchanged 0, failed 0'
    # uuid key with a default, unique legacy key, RLS on (not forced), no grant
    # to the API roles, the foreign key on the parent's uuid, owned by the owner.
    run -0 target "
        SELECT format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid),
               EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p'
                       AND k.conkey = ARRAY[a.attnum])
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'id'
        JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE c.oid = 'public.coupons'::regclass"
    assert_output "uuid|gen_random_uuid()|t"
    run -0 target "
        SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
        WHERE i.indrelid = 'public.coupons'::regclass AND i.indisunique
          AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum AND a.attname = 'legacy_id'"
    assert_output 1
    run -0 target "
        SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner),
               has_table_privilege('anon', c.oid, 'SELECT, INSERT, UPDATE, DELETE'),
               has_table_privilege('authenticated', c.oid, 'SELECT, INSERT, UPDATE, DELETE'),
               has_any_column_privilege('anon', c.oid, 'SELECT')
        FROM pg_class c WHERE c.oid = 'public.coupons'::regclass"
    assert_output "t|f|target_owner|f|f|f"
    run -0 target "
        SELECT k.confrelid::regclass, (SELECT attname FROM pg_attribute
               WHERE attrelid = k.confrelid AND attnum = k.confkey[1]),
               format_type(a.atttypid, a.atttypmod)
        FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
        WHERE k.conrelid = 'public.coupons'::regclass AND k.contype = 'f' AND a.attname = 'customer_id'"
    assert_output "customers|id|uuid"
    # Filled: each coupon under its legacy id, pointing at the customer the
    # source names (by the customer's legacy id), a UUID each.
    local src tgt
    src=$(psql_as legacy_reader legacy -c "SELECT id, customer_id, code FROM public.coupons ORDER BY id")
    tgt=$(target "SELECT c.legacy_id, cu.legacy_id, c.code FROM public.coupons c
        JOIN public.customers cu ON cu.id = c.customer_id ORDER BY 1")
    [[ $(wc -l <<<"$src") -eq 300 ]]
    assert_equal "$tgt" "$src"
    run -0 target "SELECT count(DISTINCT id), count(*) FILTER (WHERE id IS NULL) FROM public.coupons"
    assert_output "300|0"
    # The state records that this run created it.
    run -0 target "SELECT table_name, run_id FROM driftless.created_tables"
    assert_output "public.coupons|$(cat "$BATS_FILE_TMPDIR/run1/run.id")"
    run -0 grep -x -- "-- table public.coupons: created" "$BATS_FILE_TMPDIR/run1/create-missing.sql"
    # The proof: every table of the map matches, the new one included.
    run -0 --separate-stderr "$VALIDATE" --map "$FX/analyzed.map" --run-dir "$BATS_TEST_TMPDIR/v" --quiet
    run -0 grep -c '"table":"public.coupons"\|"table": "public.coupons"' "$BATS_TEST_TMPDIR/v/validate.jsonl"
}

@test "db: a second run changes nothing; after the first fill the insert guard is back" {
    run -0 --separate-stderr "$MIGRATE" --map "$FX/analyzed.map" --run-dir "$BATS_TEST_TMPDIR/run2" \
        --create-missing "$FX/missing.sql" --quiet
    run -0 grep -x -- "-- table public.coupons: exists, skipped" "$BATS_TEST_TMPDIR/run2/create-missing.sql"
    run -1 grep -v '^--' "$BATS_TEST_TMPDIR/run2/create-missing.sql"
    run -0 awk -F'"inserted":|,"updated":|,"deleted":' '{ n += $2 + $3 + $4 } END { print n }' \
        "$BATS_TEST_TMPDIR/run2/summary.jsonl"
    assert_output 0
    run -0 target "SELECT table_name, run_id FROM driftless.created_tables"
    assert_output "public.coupons|$(cat "$BATS_FILE_TMPDIR/run1/run.id")"
    # 200 more coupons: the table is filled, so the guard applies again.
    psql_as legacy_owner legacy -c "INSERT INTO public.coupons
        SELECT g, (SELECT min(id) FROM public.customers), 'D' || g, NULL FROM generate_series(301, 500) AS g"
    run -6 --separate-stderr "$MIGRATE" --map "$FX/analyzed.map" --run-dir "$BATS_TEST_TMPDIR/run3" --quiet
    [[ $stderr == *"public.coupons"* ]] || fail "$stderr"
    run -0 target "SELECT count(*) FROM public.coupons"
    assert_output 300
}
