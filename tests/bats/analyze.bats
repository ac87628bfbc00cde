#!/usr/bin/env bats
# scripts/analyze on the shop fixture: the map it writes is the fixture's own
# shop.map (compared key by key, not byte for byte), the time zone comes from
# matched rows, the earlier migration's files are read, and what the target
# lacks gets reviewable DDL. A test that changes the fixture has the next one
# load it again.

load helpers

ANALYZE="$REPO/scripts/analyze"
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
                DROP TABLE IF EXISTS public.coupons, public.audit_log"
            psql_as target_owner target -c "SET client_min_messages = warning;
                DROP TABLE IF EXISTS public.coupons, public.regions_map"
            "$FIXTURE" load --dir "$FX"
            rm -f "$BATS_FILE_TMPDIR/dirty"
        fi
        rm -f "$FX/analyzed.map"
    fi
}

# map_equiv EXPECTED ACTUAL: the same tables; per table the same source, keys,
# UUID column, columns (as a set), exprs, foreign keys and their policies, and
# the same mapping (a CSV resolved against each map's directory: the same
# contents).
map_equiv() {
    (
        # shellcheck source=scripts/lib.sh
        . "$REPO/scripts/lib.sh"
        local e=$1 a=$2 t k ve va diffs=""
        get() {
            local v
            case $3 in
            columns) map_get "$1" "$2" columns | tr ',' '\n' | sed 's/^ *//; s/ *$//' | sort | paste -sd, - ;;
            source) map_get "$1" "$2" source || printf '%s' "$2" ;;
            mapping)
                v=$(map_get "$1" "$2" mapping || echo column)
                case $v in
                "csv "*) v=${v#csv }; [[ $v == /* ]] || v=$(dirname "$1")/$v
                    printf 'csv %s' "$(cksum <"$v")" ;;
                *) printf '%s' "$v" ;;
                esac
                ;;
            prefixed) map_prefixed "$1" "$2" "$4" | sort ;;
            policies)
                local c
                for c in $(map_prefixed "$1" "$2" fk. | cut -d= -f1 | sort); do
                    printf '%s=%s\n' "$c" "$(map_get "$1" "$2" "fk_policy.$c" ||
                        map_get "$1" "$2" dangling || echo error)"
                done
                ;;
            app_rows) map_get "$1" "$2" app_rows || echo keys-only-in-target ;;
            *) map_get "$1" "$2" "$3" || true ;;
            esac
        }
        ve=$(map_tables "$e" | sort)
        va=$(map_tables "$a" | sort)
        [[ $ve == "$va" ]] || { echo "tables: expected [$ve], got [$va]"; exit 1; }
        for t in $ve; do
            for k in source legacy_key source_key uuid_column columns mapping policies app_rows \
                "prefixed expr." "prefixed fk."; do
                # shellcheck disable=SC2086 # "prefixed PREFIX" is two words
                ve=$(get "$e" "$t" $k)
                # shellcheck disable=SC2086
                va=$(get "$a" "$t" $k)
                [[ $ve == "$va" ]] || diffs+="$t $k: expected [$ve], got [$va]"$'\n'
            done
        done
        [[ -z $diffs ]] || { printf '%s' "$diffs"; exit 1; }
    )
}

# ---- the command line ----

@test "cli: --help and --version print on stdout and exit 0" {
    run -0 --separate-stderr "$ANALYZE" --help
    assert_output --partial "Usage: analyze --out MAP"
    assert_equal "$stderr" ""
    local line
    while IFS= read -r line; do
        (( ${#line} <= 80 )) || fail "help line longer than 80 columns: $line"
    done <<<"$output"
    run -0 --separate-stderr "$ANALYZE" --version
    assert_output "analyze (driftless) 0.1.0"
    # A full standard output is an I/O error.
    run -3 --separate-stderr bash -c '"$0" --help >/dev/full' "$ANALYZE"
    [[ $stderr == *"analyze: could not write output"* ]] || fail "$stderr"
}

@test "cli: usage errors exit 2 and name the problem" {
    run -2 --separate-stderr "$ANALYZE"
    assert_output ""
    [[ $stderr == *"--out is required"* ]] || fail "$stderr"
    [[ $stderr == *"Try 'analyze --help'"* ]] || fail "$stderr"
    run -2 --separate-stderr "$ANALYZE" --bogus
    [[ $stderr == *"unrecognized option '--bogus'"* ]] || fail "$stderr"
    run -2 --separate-stderr "$ANALYZE" --out x --schema-map public
    [[ $stderr == *"expected SRC=TGT"* ]] || fail "$stderr"
    run -2 --separate-stderr "$ANALYZE" --out x --sample 0
    run -2 --separate-stderr "$ANALYZE" --out x --zones "UTC, Europe/Berlin'; DROP"
    [[ $stderr == *"not a time zone name"* ]] || fail "$stderr"
    run -2 --separate-stderr "$ANALYZE" --out x --source-env 'host=x password=sentinel-pw'
    [[ $stderr != *sentinel-pw* ]] || fail "the value was echoed: $stderr"
    run -3 --separate-stderr "$ANALYZE" --out x --scripts "$BATS_TEST_TMPDIR/none"
}

# ---- the shop ----

@test "db: on the shop fixture it writes the fixture's own map" {
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --scripts "$FX" \
        --report "$FX/report.txt"
    assert_equal "$stderr" ""
    assert_output "$(printf '%s\n' \
        "Tables paired: 8; covered fully by the earlier migration's conventions: 8; needing a hand-written expression: 0; cannot be synced: 0" \
        "Source tables missing in the target: none")"
    run -0 map_equiv "$FX/shop.map" "$FX/analyzed.map"
    # The zone the earlier migration read timestamps in, inferred from the rows.
    run -0 --separate-stderr map_get_file "$FX/analyzed.map" public.customers expr.created_at
    assert_output "created_at AT TIME ZONE 'Europe/Berlin'"
    run -0 --separate-stderr map_get_file "$FX/analyzed.map" public.orders expr.placed_at
    assert_output "placed_at AT TIME ZONE 'Europe/Berlin'"
    run -0 --separate-stderr map_get_file "$FX/analyzed.map" public.regions mapping
    assert_output "csv regions-map.csv"
    grep -q "placed_at timestamp without time zone -> timestamp with time zone read as Europe/Berlin (902 of 902 sampled rows agree)" \
        <(tr '\n' ' ' <"$FX/report.txt" | tr -s ' ') || fail "$(cat "$FX/report.txt")"
    # Parents come before children; the cycle's two tables together.
    local order
    order=$(grep -o '^\[public\.[a-z_]*\]' "$FX/analyzed.map" | tr -d '[]' | paste -sd' ' -)
    [[ $order == *public.regions*public.customers*public.orders*public.order_items* ]] ||
        fail "order: $order"
    [[ $order == *"public.employees public.stores"* ]] || fail "order: $order"
    # doctor accepts it.
    run -0 --separate-stderr "$DOCTOR" --map "$FX/analyzed.map" --quiet
    # product_tags kept its keys, every one of them also in the source: the
    # earlier migration copied its rows (app_rows = none, and why).
    run -0 grep -B1 -x 'app_rows *= none' "$FX/analyzed.map"
    assert_line '# app_rows: every key the target holds is also in the source; remove app_rows if the application inserts rows here'
    run -0 grep -c '^app_rows' "$FX/analyzed.map"
    assert_output 1
    grep -q "app_rows = none: every key the target holds is also in the source" \
        <(tr '\n' ' ' <"$FX/report.txt" | tr -s ' ') || fail "$(cat "$FX/report.txt")"
}

@test "db: a table that kept its keys, with keys only in the target, keeps the default app_rows" {
    dirty
    psql_as target_owner target -c "INSERT INTO public.product_tags VALUES ('SKU-9999', 'app', 1), ('SKU-9998', 'app', 2)"
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --scripts "$FX" \
        --report "$FX/report.txt"
    run -1 map_get_file "$FX/analyzed.map" public.product_tags app_rows
    run -0 grep -x '# app_rows: 2 keys only in the target: the application.s (keys-only-in-target), unless declared migrated' \
        "$FX/analyzed.map"
    grep -q "2 keys only the target holds are taken as the application's at the first run" \
        <(tr '\n' ' ' <"$FX/report.txt" | tr -s ' ') || fail "$(cat "$FX/report.txt")"
}

# map_get_file MAP TABLE KEY (lib.sh's map_get, for `run`).
map_get_file() {
    (
        # shellcheck source=scripts/lib.sh
        . "$REPO/scripts/lib.sh"
        map_get "$@"
    )
}

@test "db: the comparison of maps can fail: a changed key is found" {
    sed 's/^expr.created_at = .*/expr.created_at = created_at AT TIME ZONE '"'UTC'"'/' \
        "$FX/shop.map" >"$FX/changed.map"
    run -1 map_equiv "$FX/shop.map" "$FX/changed.map"
    assert_output --partial "public.customers prefixed expr."
}

@test "db: without the mapping CSV, regions cannot be synced and references to it are left alone" {
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --report "$FX/report.txt"
    run -0 grep -A3 "^public.regions (source public.regions): cannot be synced" "$FX/report.txt"
    assert_output --partial "no legacy key column"
    run -0 grep -qx '# public.regions: cannot be synced (see the report)' "$FX/analyzed.map"
    run -1 map_get_file "$FX/analyzed.map" public.regions legacy_key
    run -0 map_get_file "$FX/analyzed.map" public.customers columns
    assert_output "name, email, doc, created_at, score, nickname"
    run -1 map_get_file "$FX/analyzed.map" public.customers fk.region_id
}

@test "db: a mapping table the earlier migration left is used" {
    dirty
    psql_as target_owner target -c "
        CREATE TABLE public.regions_map (old_id integer PRIMARY KEY, region_uuid uuid NOT NULL UNIQUE)"
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --report "$FX/report.txt"
    assert_output --partial "covered fully by the earlier migration's conventions: 8"
    run -0 map_get_file "$FX/analyzed.map" public.regions mapping
    assert_output "table public.regions_map old_id region_uuid"
    run -0 grep -x "Mapping tables the earlier migration left: public.regions_map" "$FX/report.txt"
    run -0 --separate-stderr "$DOCTOR" --map "$FX/analyzed.map" --quiet
    # doctor checks that the mapping table is there.
    psql_as target_owner target -c "ALTER TABLE public.regions_map RENAME COLUMN old_id TO legacy"
    run -6 --separate-stderr "$DOCTOR" --map "$FX/analyzed.map" --quiet
    assert_line "doctor: ERROR: public.regions: mapping table public.regions_map has no column old_id"
    psql_as target_owner target -c "DROP TABLE public.regions_map"
    run -6 --separate-stderr "$DOCTOR" --map "$FX/analyzed.map" --quiet
    assert_line "doctor: ERROR: public.regions: mapping table public.regions_map does not exist (or the role cannot see it)"
}

@test "db: rows that disagree about the time zone are flagged" {
    dirty
    # The application moved some orders' times after the earlier migration.
    psql_as target_owner target -c "
        UPDATE public.orders SET placed_at = placed_at + interval '1 hour' WHERE legacy_id % 10 = 0"
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --scripts "$FX" \
        --report "$FX/report.txt"
    assert_output --partial "needing a hand-written expression: 1"
    run -0 grep -A2 "^public.orders (source public.orders): needs a hand-written expression" \
        "$FX/report.txt"
    assert_output --partial "review: placed_at: the rows disagree about the time zone: Europe/Berlin"
    run -0 map_get_file "$FX/analyzed.map" public.orders expr.placed_at
    assert_output "placed_at AT TIME ZONE 'Europe/Berlin'"
    run -0 grep -x '# expr.placed_at: rows disagree: Europe/Berlin fits [0-9]* of 902 sampled rows' \
        "$FX/analyzed.map"
}

@test "db: --scripts names the tables the earlier migration's files cover, and their artefacts" {
    local old="$BATS_TEST_TMPDIR/old"
    mkdir -p "$old/sql"
    cat >"$old/sql/01_schema.sql" <<'EOF'
CREATE TABLE public.customers (id uuid PRIMARY KEY, legacy_id integer UNIQUE);
CREATE TABLE ORDER_ITEMS (id uuid PRIMARY KEY);
-- the regions' ids are kept in regions_legacy_map until the CSV export
EOF
    cat >"$old/load.sh" <<'EOF'
#!/bin/sh
psql -c "\copy (SELECT id, uuid FROM stage.regions) TO 'regions-map.csv' CSV HEADER"
psql -c "INSERT INTO public.orders SELECT * FROM stage.orders"
EOF
    cp "$FX/regions-map.csv" "$old/regions-map.csv"
    printf 'sku,colour\nSKU-0001,red\n' >"$old/colours.csv"
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --scripts "$old" \
        --report "$FX/report.txt"
    local report
    report=$(sed -e ':a' -e 'N' -e '$!ba' -e 's/\n    / /g' "$FX/report.txt")
    run -0 grep -A12 '^public.customers ' <<<"$report"
    assert_line "  earlier migration's files: named by sql/01_schema.sql"
    run -0 grep -A12 '^public.order_items ' <<<"$report"
    assert_line "  earlier migration's files: named by sql/01_schema.sql"
    # "orders" is a word of load.sh only: order_items does not name it.
    run -0 grep -A12 '^public.orders ' <<<"$report"
    assert_line "  earlier migration's files: named by load.sh"
    run -0 grep -A12 '^public.regions ' <<<"$report"
    assert_line "  earlier migration's files: named by load.sh, sql/01_schema.sql"
    assert_line --partial "  mapping artefacts: CSV $old/regions-map.csv (legacy_id,uuid; 6 rows)"
    assert_line --partial "regions_legacy_map (named in sql/01_schema.sql)"
    run -0 grep -A12 '^public.events ' <<<"$report"
    assert_line "  earlier migration's files: not named by any"
    run -0 grep -F "CSV files of the earlier migration not used as a mapping: $old/colours.csv" \
        < <(tr '\n' ' ' <"$FX/report.txt" | tr -s ' ')
    # The CSV is used, by a path relative to the map's directory.
    run -0 map_get_file "$FX/analyzed.map" public.regions mapping
    [[ $output == "csv ../"*/regions-map.csv ]] || fail "mapping: $output"
    local csv=${output#csv }
    assert_equal "$(cd "$FX/$(dirname "$csv")" && pwd -P)/regions-map.csv" \
        "$(cd "$old" && pwd -P)/regions-map.csv"
    run -0 map_equiv "$FX/shop.map" "$FX/analyzed.map"
}

@test "db: a table created in the source only gets DDL in the target's conventions" {
    dirty
    psql_as legacy_owner legacy -c "
        CREATE TABLE public.coupons (id integer PRIMARY KEY,
            customer_id integer NOT NULL REFERENCES public.customers (id),
            code varchar(20) NOT NULL, issued_at timestamp, meta json);
        INSERT INTO public.coupons VALUES (1, 5, 'WELCOME', '2024-07-01 12:00', '{}');
        CREATE TABLE public.audit_log (msg text);
        ALTER TABLE public.stores ADD COLUMN opened_on date"
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --scripts "$FX" \
        --ddl "$FX/missing.sql" --report "$FX/report.txt"
    assert_output --partial "Source tables missing in the target: 2 (DDL proposed in $FX/missing.sql)"
    run -0 cat "$FX/missing.sql"
    assert_output --partial "$(printf '%s\n' 'CREATE TABLE public.coupons (' \
        '    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),' \
        '    legacy_id integer UNIQUE,' \
        '    customer_id uuid NOT NULL,' \
        '    code text NOT NULL,' \
        '    issued_at timestamp with time zone,' \
        '    meta jsonb' \
        ');' \
        'ALTER TABLE public.coupons ENABLE ROW LEVEL SECURITY;' \
        'REVOKE ALL ON TABLE public.coupons FROM anon, authenticated;')"
    assert_line "ALTER TABLE public.coupons ADD FOREIGN KEY (customer_id) REFERENCES public.customers (id);"
    assert_line "ALTER TABLE public.stores ADD COLUMN opened_on date;"
    assert_line "-- public.audit_log: not created: public.audit_log has no primary key"
    # The map takes the new table, marked, with the conventions' keys.
    run -0 grep -A2 '^\[public.coupons\]' "$FX/analyzed.map"
    assert_line "# created by --create-missing"
    run -0 map_get_file "$FX/analyzed.map" public.coupons legacy_key
    assert_output "legacy_id"
    run -0 map_get_file "$FX/analyzed.map" public.coupons fk.customer_id
    assert_output "public.customers"
    run -0 map_get_file "$FX/analyzed.map" public.coupons expr.issued_at
    assert_output "issued_at AT TIME ZONE 'Europe/Berlin'"
    run -0 map_get_file "$FX/analyzed.map" public.stores columns
    assert_output "manager_id, name, opened_on"
    run -0 grep -x '# created by --create-missing: column opened_on' "$FX/analyzed.map"
    # Children after parents: coupons after customers.
    local order
    order=$(grep -o '^\[public\.[a-z_]*\]' "$FX/analyzed.map" | tr -d '[]' | paste -sd' ' -)
    [[ $order == *public.customers*public.coupons* ]] || fail "order: $order"
    # Before the DDL, doctor takes the marked table and column as still to come.
    run -0 --separate-stderr "$DOCTOR" --map "$FX/analyzed.map" --quiet
    assert_line "doctor: WARN: public.coupons: does not exist yet: the map says migrate --create-missing creates it"
    # The DDL applies as the target's owner; the new table has RLS on and no
    # grants to the API roles, and doctor finds nothing wrong with it.
    run -0 --separate-stderr psql_as target_owner target -f "$FX/missing.sql"
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT relrowsecurity, coalesce(array_to_string(relacl, ' '), '') !~ '(^| )(anon|authenticated)='
        FROM pg_class WHERE oid = 'public.coupons'::regclass"
    assert_output "t|t"
    run -0 --separate-stderr "$DOCTOR" --map "$FX/analyzed.map" --quiet
    refute_output --partial "ERROR"
    refute_output --partial "coupons"
}

@test "db: --schema-map pairs a source schema with a target schema of another name" {
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --schema-map public=app \
        --report "$FX/report.txt"
    assert_output --partial "Source tables missing in the target: 8 (--ddl FILE proposes DDL)"
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --schema-map public=app \
        --ddl "$FX/app.sql" --report "$FX/report.txt"
    run -0 grep -c '^CREATE TABLE app\.' "$FX/app.sql"
    assert_output 8
    run -0 grep -x 'CREATE SCHEMA IF NOT EXISTS app;' "$FX/app.sql"
}

@test "db: migrate runs the analyzed map without edits, and finds the sides in sync" {
    dirty
    run -0 --separate-stderr "$ANALYZE" --out "$FX/analyzed.map" --scripts "$FX" \
        --report "$FX/report.txt"
    run -0 --separate-stderr "$REPO/scripts/migrate" --map "$FX/analyzed.map" \
        --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    # Nothing to change: a wrong key, column or time zone would update rows.
    run -0 awk -F'"inserted":|,"updated":|,"deleted":|,"unchanged":|,"failed":' \
        '{ changed += $2 + $3 + $4 + $6; unchanged += $5 } END { print changed, unchanged }' \
        "$BATS_TEST_TMPDIR/run/summary.jsonl"
    assert_output "0 3891"
}
