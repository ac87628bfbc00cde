#!/usr/bin/env bats
# scripts/doctor, the preflight: every problem named as an error (exit 6) or a
# documented fallback, on the shop fixture and on versions of it broken on
# purpose. A test that changes the fixture has the next one load it again.

load helpers

DOCTOR="$REPO/scripts/doctor"
FIXTURE="$REPO/scripts/shop-fixture"

setup_file() {
    scratch_setup_file || return 1
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    "$FIXTURE" load --dir "$BATS_FILE_TMPDIR/shop"
}

teardown_file() {
    scratch_teardown_file
}

# A test that changes a database calls dirty first; the next test then starts
# from a freshly loaded fixture (load re-creates the shop's tables only, so
# the tables tests add are dropped here).
dirty() {
    touch "$BATS_FILE_TMPDIR/dirty"
}

setup() {
    if [[ $BATS_TEST_DESCRIPTION != "cli: "* ]]; then
        scratch_setup
        FX="$BATS_FILE_TMPDIR/shop"
        if [[ -e $BATS_FILE_TMPDIR/dirty ]]; then
            psql_as legacy_owner legacy -c "SET client_min_messages = warning;
                DROP TABLE IF EXISTS public.coupons"
            psql_as target_owner target -c "SET client_min_messages = warning;
                DROP TABLE IF EXISTS public.unrelated"
            psql_super legacy -c "ALTER ROLE legacy_reader NOBYPASSRLS"
            psql_super target -c "DO \$\$ BEGIN
                IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'reader_only') THEN
                    DROP OWNED BY reader_only; DROP ROLE reader_only;
                END IF; END \$\$"
            "$FIXTURE" load --dir "$FX"
            rm -f "$BATS_FILE_TMPDIR/dirty"
        fi
        MAP="$FX/shop.map"
        cd "$BATS_TEST_TMPDIR"
    fi
}

# no_line LEVEL: fail when the output holds a finding of LEVEL.
no_line() {
    if grep -q "^doctor: $1: " <<<"$output"; then
        fail "unexpected $1 findings: $(grep "^doctor: $1: " <<<"$output")"
    fi
}

# ---- the command line ----

@test "cli: --help and --version print on stdout and exit 0" {
    run -0 --separate-stderr "$DOCTOR" --help
    assert_output --partial "Usage: doctor --map FILE"
    assert_equal "$stderr" ""
    local line
    while IFS= read -r line; do
        (( ${#line} <= 80 )) || fail "help line longer than 80 columns: $line"
    done <<<"$output"
    run -0 --separate-stderr "$DOCTOR" --version
    assert_output "doctor (driftless) 0.1.0"
    # A full standard output is an I/O error.
    run -3 --separate-stderr bash -c '"$0" --help >/dev/full' "$DOCTOR"
    [[ $stderr == *"doctor: could not write output"* ]] || fail "$stderr"
}

@test "cli: usage errors exit 2; an unreadable map 3, a malformed one 4" {
    run -2 --separate-stderr "$DOCTOR"
    assert_output ""
    [[ $stderr == *"--map is required"* ]] || fail "$stderr"
    [[ $stderr == *"Try 'doctor --help'"* ]] || fail "$stderr"
    run -2 --separate-stderr "$DOCTOR" --bogus
    [[ $stderr == *"unrecognized option '--bogus'"* ]] || fail "$stderr"
    run -2 --separate-stderr "$DOCTOR" --map x --target-env 'host=x password=sentinel-pw'
    [[ $stderr != *sentinel-pw* ]] || fail "the value was echoed: $stderr"
    run -3 --separate-stderr "$DOCTOR" --map "$BATS_TEST_TMPDIR/none.map"
    printf '[public.t]\nthis is not a key\n' >"$BATS_TEST_TMPDIR/bad.map"
    run -4 --separate-stderr "$DOCTOR" --map "$BATS_TEST_TMPDIR/bad.map"
    [[ $stderr == *"line 2"* ]] || fail "$stderr"
}

# ---- the fixture as it is ----

@test "db: the clean fixture passes, with its documented fallbacks as warnings" {
    run -0 --separate-stderr "$DOCTOR" --map "$MAP"
    no_line ERROR
    assert_line "doctor: OK: source: 8 mapped tables readable, no row security in the way"
    assert_line --partial "doctor: OK: target: role target_owner on database target"
    assert_line "doctor: OK: state: schema driftless does not exist yet: first run (migrate creates it)"
    # target_owner is no superuser and may not set session_replication_role: informational.
    assert_line --partial "doctor: INFO: target: the role may not SET session_replication_role"
    # The target computes total_cents and sets updated_at by trigger.
    assert_line "doctor: WARN: public.orders: column total_cents is generated (the target computes it): never written, left out of the comparison"
    assert_line "doctor: WARN: public.customers: user trigger customers_updated_at (moddatetime) runs on every row driftless writes"
    assert_line --partial "doctor: OK: disk: "
    assert_equal "$stderr" ""
    # --quiet: the problems only.
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    no_line OK
    no_line INFO
    assert_line --partial "doctor: WARN: public.orders: column total_cents"
}

# ---- each problem ----

@test "db: a source table with RLS, read by a role that neither owns nor bypasses it: exit 6" {
    dirty
    psql_as legacy_owner legacy -c "ALTER TABLE public.regions ENABLE ROW LEVEL SECURITY"
    run -6 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line "doctor: ERROR: public.regions: source role legacy_reader neither owns nor bypasses row level security on public.regions: it would read 0 rows, or only what policies allow"
    assert_line --partial "doctor: hint: grant the role BYPASSRLS"
    # Only that table.
    assert_equal "$(grep -c '^doctor: ERROR' <<<"$output")" 1
    # With BYPASSRLS the same role passes.
    psql_super legacy -c "ALTER ROLE legacy_reader BYPASSRLS"
    run -0 --separate-stderr "$DOCTOR" --map "$MAP"
    psql_super legacy -c "ALTER ROLE legacy_reader NOBYPASSRLS"
    no_line ERROR
}

@test "db: a target table with FORCE ROW LEVEL SECURITY: exit 6" {
    dirty
    psql_as target_owner target -c "ALTER TABLE public.orders FORCE ROW LEVEL SECURITY"
    run -6 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line "doctor: ERROR: public.orders: FORCE ROW LEVEL SECURITY is set: even its owner reads and writes only what the policies allow"
    assert_line "doctor: hint: ALTER TABLE public.orders NO FORCE ROW LEVEL SECURITY"
    assert_equal "$(grep -c '^doctor: ERROR' <<<"$output")" 1
}

@test "db: a target role that does not own the tables would see only what policies allow: exit 6" {
    dirty
    psql_super target -c "CREATE ROLE reader_only LOGIN; GRANT USAGE ON SCHEMA public TO reader_only;
        GRANT SELECT ON public.regions TO reader_only"
    TARGET_DATABASE_URL="host=$PGHOST port=$PGPORT dbname=target user=reader_only" \
        run -6 --separate-stderr "$DOCTOR" --map "$MAP"
    psql_super target -c "DROP OWNED BY reader_only; DROP ROLE reader_only"
    assert_line "doctor: ERROR: public.regions: target role reader_only neither owns it nor bypasses row level security: it would see only what the policies allow"
    assert_line "doctor: ERROR: public.regions: target role reader_only lacks DELETE, INSERT, UPDATE on it"
    assert_line "doctor: ERROR: public.customers: target role reader_only lacks DELETE, INSERT, SELECT, UPDATE on it"
}

@test "db: a DSN on port 6543 (the transaction pooler) is refused before connecting, never printed" {
    local sentinel="sentinel-pw-6543"
    TARGET_DATABASE_URL="host=$PGHOST port=6543 dbname=target user=target_owner password=$sentinel" \
        run -6 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line --partial "doctor: ERROR: target: the connection string in TARGET_DATABASE_URL asks for port 6543, Supabase's transaction pooler"
    assert_line --partial "doctor: hint: use the direct connection (port 5432) or the session-mode pooler on port 5432"
    [[ $output != *"$sentinel"* && $stderr != *"$sentinel"* ]] || fail "the password was printed"
    # The source is still checked.
    assert_line "doctor: OK: source: 8 mapped tables readable, no row security in the way"
    # The URI form, with the port among several hosts or as a parameter.
    local dsn
    for dsn in "postgresql://target_owner:$sentinel@db.example.supabase.co:6543/postgres" \
        "postgres://u:$sentinel@h1:5432,h2:6543/db" "postgres://u:$sentinel@h/db?sslmode=require&port=6543"; do
        TARGET_DATABASE_URL="$dsn" run -6 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
        assert_line --partial "asks for port 6543"
        [[ $output != *"$sentinel"* && $stderr != *"$sentinel"* ]] || fail "the password was printed"
    done
    # A password that contains the digits is not a port.
    TARGET_DATABASE_URL="host=$PGHOST port=$PGPORT dbname=target user=target_owner password=x:6543" \
        run -0 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    refute_output --partial "6543"
}

@test "db: a legacy key without a unique index: exit 6" {
    dirty
    psql_as target_owner target -c "ALTER TABLE public.events DROP CONSTRAINT events_legacy_id_key"
    run -6 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line "doctor: ERROR: public.events: the legacy key (legacy_id) has no unique index: two target rows could claim one source row, and an upsert on it is impossible"
    assert_line "doctor: hint: CREATE UNIQUE INDEX ON public.events (legacy_id)"
    # A partial unique index does not count; a full one does.
    psql_as target_owner target -c "CREATE UNIQUE INDEX ON public.events (legacy_id) WHERE legacy_id > 0"
    run -6 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    assert_line --partial "doctor: ERROR: public.events: the legacy key (legacy_id) has no unique index"
    psql_as target_owner target -c "CREATE UNIQUE INDEX ON public.events (legacy_id)"
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
}

@test "db: the map asks to write a generated column, or one a trigger sets: exit 6" {
    sed -e 's/^columns     = customer_id, placed_at, total, note$/&, total_cents/' \
        -e 's/^columns     = region_id, name, email, doc, created_at, score, nickname$/&, updated_at/' \
        "$MAP" >"$FX/bad.map"
    run -6 --separate-stderr "$DOCTOR" --map "$FX/bad.map" --quiet
    assert_line "doctor: ERROR: public.orders: column total_cents is generated (the target computes it) but the map lists it in columns: it cannot be written"
    assert_line "doctor: ERROR: public.customers: user trigger customers_updated_at (moddatetime) runs on every row driftless writes and sets updated_at, which the map lists in columns: the table would differ after every sync"
}

@test "db: an identity column and a table without a primary key are warnings" {
    dirty
    psql_as target_owner target -c "
        ALTER TABLE public.product_tags DROP CONSTRAINT product_tags_pkey;
        CREATE UNIQUE INDEX ON public.product_tags (product_sku, tag);
        ALTER TABLE public.events ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY"
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    assert_line "doctor: WARN: public.product_tags: no primary key: driftless finds rows by the legacy key, but Supabase's API and logical replication need a primary key"
    assert_line "doctor: WARN: public.events: column seq is an identity column (GENERATED ALWAYS AS IDENTITY): filled by the target, left out of the comparison"
    # A source table without one: its key is checked while it is dumped.
    psql_as legacy_owner legacy -c "ALTER TABLE public.regions DROP CONSTRAINT regions_pkey CASCADE"
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    assert_line --partial "doctor: WARN: public.regions: source table public.regions has no primary key"
}

@test "db: a missing table is an error, unless the map says --create-missing makes it" {
    dirty
    printf '\n[public.coupons]\nlegacy_key = legacy_id\nsource_key = id\nuuid_column = id\ncolumns = code\n' >>"$MAP"
    run -6 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    assert_line "doctor: ERROR: public.coupons: source table public.coupons does not exist (or the role cannot see it)"
    assert_line "doctor: ERROR: public.coupons: does not exist in the target (or the role cannot see it)"
    psql_as legacy_owner legacy -c "CREATE TABLE public.coupons (id integer PRIMARY KEY, code text)"
    printf '# created by --create-missing\n' >>"$MAP"
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    assert_line "doctor: WARN: public.coupons: does not exist yet: the map says migrate --create-missing creates it"
}

@test "db: grants to the API roles on the state schema: exit 6" {
    dirty
    run -0 --separate-stderr pgapply --dsn-env TARGET_DATABASE_URL --install-state
    run -0 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line "doctor: OK: state: schema driftless: no privilege for PUBLIC, anon, authenticated or service_role"
    psql_super target -c "GRANT USAGE ON SCHEMA driftless TO anon;
        GRANT SELECT ON driftless.crosswalk TO authenticated; GRANT SELECT ON driftless.runs TO PUBLIC"
    run -6 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    assert_line "doctor: ERROR: state: anon holds USAGE on schema driftless: the state schema must not be reachable through the API"
    assert_line "doctor: ERROR: state: authenticated holds SELECT on table driftless.crosswalk: the state schema must not be reachable through the API"
    assert_line "doctor: ERROR: state: PUBLIC holds SELECT on table driftless.runs: the state schema must not be reachable through the API"
    assert_equal "$(grep -c '^doctor: ERROR' <<<"$output")" 3
}

@test "db: schema drift since the last run is a warning naming the side" {
    dirty
    run -0 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line "doctor: OK: state: schema driftless does not exist yet: first run (migrate creates it)"
    local id
    id=$(pgapply --dsn-env TARGET_DATABASE_URL --begin-run --source-dsn-env SOURCE_DATABASE_URL)
    pgapply --dsn-env TARGET_DATABASE_URL --end-run "$id" --status ok --exit-code 0
    run -0 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line --regexp "^doctor: OK: drift: source catalog unchanged since run $id "
    assert_line --regexp "^doctor: OK: drift: target catalog unchanged since run $id "
    psql_as legacy_owner legacy -c "ALTER TABLE public.customers ADD COLUMN vip boolean"
    run -0 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line --regexp "^doctor: WARN: drift: the source catalog changed since run $id "
    assert_line --regexp "^doctor: OK: drift: target catalog unchanged since run $id "
    assert_line --partial "doctor: hint: pgverify --schema names the difference"
}

@test "db: --fingerprint prints both sides' catalog fingerprints; a column changes one" {
    dirty
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --fingerprint
    assert_equal "${#lines[@]}" 2
    assert_line --index 0 --regexp '^source [0-9a-f]{32}$'
    assert_line --index 1 --regexp '^target [0-9a-f]{32}$'
    local before=$output
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --fingerprint
    assert_equal "$output" "$before"
    psql_as target_owner target -c "ALTER TABLE public.events ADD COLUMN note text"
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --fingerprint
    assert_line --index 0 "${before%%$'\n'*}"
    [[ ${lines[1]} != "${before#*$'\n'}" ]] || fail "the target's fingerprint did not change"
    # A table outside the map does not count.
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --fingerprint
    before=$output
    psql_as target_owner target -c "CREATE TABLE public.unrelated (x int)"
    run -0 --separate-stderr "$DOCTOR" --map "$MAP" --fingerprint
    assert_equal "$output" "$before"
}

@test "db: an .env readable by group or others is an error; a private one is read" {
    local env="$BATS_TEST_TMPDIR/.env"
    printf 'SOURCE_DATABASE_URL="%s"\nexport TARGET_DATABASE_URL=%s\n' "$SOURCE_DATABASE_URL" \
        "$TARGET_DATABASE_URL" >"$env"
    chmod 0644 "$env"
    run -6 --separate-stderr "$DOCTOR" --map "$MAP" --env-file "$env"
    assert_line "doctor: ERROR: env-file: $env is readable or writable by group or others (mode 0644, an ACL counts): it holds the passwords"
    assert_line --partial "doctor: hint: chmod 600"
    chmod 0600 "$env"
    # The connection strings come from the file.
    env -u SOURCE_DATABASE_URL -u TARGET_DATABASE_URL \
        "$DOCTOR" --map "$MAP" --env-file "$env" >"$BATS_TEST_TMPDIR/out" ||
        fail "exit $?: $(cat "$BATS_TEST_TMPDIR/out")"
    grep -q "^doctor: OK: env-file: $env: readable by its owner only$" "$BATS_TEST_TMPDIR/out" ||
        fail "$(cat "$BATS_TEST_TMPDIR/out")"
    grep -q "^doctor: OK: source: 8 mapped tables readable" "$BATS_TEST_TMPDIR/out" ||
        fail "$(cat "$BATS_TEST_TMPDIR/out")"
    # A malformed line is named by its number only: it may hold a password.
    printf 'TARGET_DATABASE_URL="host=x password=sentinel-pw\n' >"$env"
    run -6 --separate-stderr "$DOCTOR" --map "$MAP" --env-file "$env" --quiet
    assert_line "doctor: ERROR: env-file: $env: line 1: unterminated quote"
    [[ $output != *sentinel-pw* && $stderr != *sentinel-pw* ]] || fail "the password was printed"
}

@test "db: a superuser connection is a warning" {
    SOURCE_DATABASE_URL="host=$PGHOST port=$PGPORT dbname=legacy user=$PGSCRATCH_SUPERUSER" \
        run -0 --separate-stderr "$DOCTOR" --map "$MAP" --quiet
    assert_line --partial "doctor: WARN: source: role $PGSCRATCH_SUPERUSER is a superuser: it bypasses row security and every privilege"
}

@test "db: a database that cannot be reached: exit 5, the checks of the other side still run" {
    TARGET_DATABASE_URL="host=$BATS_TEST_TMPDIR port=5432 dbname=target password=sentinel-pw" \
        run -5 --separate-stderr "$DOCTOR" --map "$MAP"
    assert_line "doctor: ERROR: target: could not be read; its checks are skipped (pgdump-rows exit 5, see above)"
    assert_line "doctor: OK: source: 8 mapped tables readable, no row security in the way"
    [[ $output != *sentinel-pw* && $stderr != *sentinel-pw* ]] || fail "the password was printed"
}
