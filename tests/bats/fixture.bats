#!/usr/bin/env bats
# The shop fixture (scripts/shop-fixture, tests/fixtures/shop): the legacy
# source, the target its earlier migration filled, and rounds of source
# changes. Other tests build on its shapes and counts: they are pinned here.

load helpers

FIXTURE="$REPO/scripts/shop-fixture"

setup_file() {
    scratch_setup_file || return 1
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    export FX="$BATS_FILE_TMPDIR/fx"
    "$FIXTURE" load --dir "$FX"
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    # The command-line tests need no database.
    if [[ $BATS_TEST_DESCRIPTION != "cli: "* ]]; then
        scratch_setup
    fi
}

tables="regions customers orders order_items employees stores product_tags events"

# legacy_checksums: one line per legacy table, md5 of its rows in a stable order.
legacy_checksums() {
    local t q=""
    for t in $tables; do
        q+="${q:+ UNION ALL }SELECT '$t', md5(coalesce(string_agg(x::text, E'\\n'
            ORDER BY x::text COLLATE \"C\"), '')) FROM public.$t AS x"
    done
    psql_super legacy -c "$q ORDER BY 1"
}

# copy_out ROLE DB QUERY: the query's rows as COPY text.
copy_out() {
    psql_as "$1" "$2" -c "\\copy ($3) TO STDOUT"
}

# ---- the command line ----

@test "cli: --help and --version print on stdout and exit 0" {
    run -0 --separate-stderr "$FIXTURE" --help
    assert_output --partial "Usage: shop-fixture load"
    assert_equal "$stderr" ""
    local line
    while IFS= read -r line; do
        (( ${#line} <= 80 )) || fail "help line longer than 80 columns: $line"
    done <<<"$output"
    run -0 --separate-stderr "$FIXTURE" --version
    assert_output "shop-fixture (driftless) 0.1.0"
}

@test "cli: bad options, commands and arguments exit 2 and name the problem" {
    run -2 --separate-stderr "$FIXTURE" --bogus load
    assert_output ""
    assert_equal "$stderr" "$(printf '%s\n' "shop-fixture: unrecognized option '--bogus'" \
        "Try 'shop-fixture --help' for more information.")"
    run -2 --separate-stderr "$FIXTURE" -Z
    [[ $stderr == *"'Z'"* ]] || fail "stderr does not name -Z: $stderr"
    run -2 --separate-stderr "$FIXTURE"
    [[ $stderr == *"missing command"* ]] || fail "$stderr"
    run -2 --separate-stderr "$FIXTURE" frobnicate
    [[ $stderr == *"unknown command 'frobnicate'"* ]] || fail "$stderr"
    run -2 --separate-stderr "$FIXTURE" load --scale 0
    [[ $stderr == *"--scale must be between 1 and 500"* ]] || fail "$stderr"
    run -2 --separate-stderr "$FIXTURE" load --scale x
    [[ $stderr == *"invalid value for --scale: 'x'"* ]] || fail "$stderr"
    run -2 --separate-stderr "$FIXTURE" drift
    [[ $stderr == *"missing ROUND"* ]] || fail "$stderr"
    run -2 --separate-stderr "$FIXTURE" drift 0
    run -2 --separate-stderr "$FIXTURE" drift 1x
    run -2 --separate-stderr "$FIXTURE" drift 1 2
    run -2 --separate-stderr "$FIXTURE" export sideways /tmp/x
    [[ $stderr == *"expected source or target"* ]] || fail "$stderr"
    run -2 --separate-stderr "$FIXTURE" export source
    [[ $stderr == *"missing OUTDIR"* ]] || fail "$stderr"
}

@test "cli: without PGHOST it stops before connecting anywhere" {
    run -2 --separate-stderr env -u PGHOST "$FIXTURE" drift 1
    [[ $stderr == *"PGHOST is not set"* ]] || fail "$stderr"
}

@test "cli: a PGHOST that pgscratch did not make is refused (exit 6)" {
    mkdir -p "$BATS_TEST_TMPDIR/notscratch"
    run -6 --separate-stderr env PGHOST="$BATS_TEST_TMPDIR/notscratch" PGPORT=5432 \
        PGSCRATCH_SUPERUSER=postgres "$FIXTURE" load --dir "$BATS_TEST_TMPDIR/fx"
    [[ $stderr == *"is not a cluster made by pgscratch"* ]] || fail "$stderr"
    run -6 --separate-stderr env PGHOST="$BATS_TEST_TMPDIR/notscratch" PGPORT=5432 \
        "$FIXTURE" drift 1
    [[ ! -e $BATS_TEST_TMPDIR/fx ]] || fail "load wrote files before refusing"
}

# ---- load ----

@test "load: builds both sides again from scratch, silently, in a few seconds" {
    local before=$SECONDS
    run -0 --separate-stderr "$FIXTURE" load --dir "$FX"
    assert_output ""
    assert_equal "$stderr" ""
    (( SECONDS - before <= 10 )) || fail "load took $((SECONDS - before)) s"
    [[ -s $FX/regions-map.csv ]] || fail "no regions-map.csv"
    cmp "$REPO/tests/fixtures/shop/shop.map" "$FX/shop.map"
    # The source is deterministic: a second load gives the same rows.
    local sums
    sums=$(legacy_checksums)
    [[ $(wc -l <<<"$sums") == 8 ]] || fail "expected 8 checksums: $sums"
    run -0 --separate-stderr "$FIXTURE" load --dir "$FX"
    assert_equal "$(legacy_checksums)" "$sums"
}

@test "load: source and target have the same rows per table (scale 1 counts pinned)" {
    run -0 --separate-stderr psql_as legacy_reader legacy -c "
        SELECT (SELECT count(*) FROM public.regions), (SELECT count(*) FROM public.customers),
               (SELECT count(*) FROM public.orders), (SELECT count(*) FROM public.order_items),
               (SELECT count(*) FROM public.employees), (SELECT count(*) FROM public.stores),
               (SELECT count(*) FROM public.product_tags), (SELECT count(*) FROM public.events)"
    assert_output "6|302|902|1802|61|10|206|602"
    # Rows born in the target (legacy_id NULL) are not the source's.
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT (SELECT count(*) FROM public.regions),
               (SELECT count(legacy_id) FROM public.customers),
               (SELECT count(legacy_id) FROM public.orders),
               (SELECT count(legacy_id) FROM public.order_items),
               (SELECT count(legacy_id) FROM public.employees),
               (SELECT count(legacy_id) FROM public.stores),
               (SELECT count(*) FROM public.product_tags),
               (SELECT count(legacy_id) FROM public.events)"
    assert_output "6|302|902|1802|61|10|206|602"
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT (SELECT count(*) FROM public.customers WHERE legacy_id IS NULL),
               (SELECT count(*) FROM public.orders WHERE legacy_id IS NULL),
               (SELECT count(*) FROM public.orders AS o JOIN public.customers AS c
                    ON c.id = o.customer_id WHERE o.legacy_id IS NULL AND c.legacy_id = 2)"
    assert_output "2|2|1"
}

@test "load: every target legacy_id is a source id, and every source id is there" {
    local pairs="customers:id orders:id order_items:id employees:id stores:id events:id"
    local p t
    for p in $pairs; do
        t=${p%%:*}
        copy_out legacy_reader legacy "SELECT id FROM public.$t ORDER BY 1" >"$BATS_TEST_TMPDIR/s"
        copy_out target_owner target \
            "SELECT legacy_id FROM public.$t WHERE legacy_id IS NOT NULL ORDER BY 1" \
            >"$BATS_TEST_TMPDIR/t"
        [[ -s $BATS_TEST_TMPDIR/s ]] || fail "$t: no source ids"
        run -0 --separate-stderr diff "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
    done
    # regions: the CSV is the only mapping.
    copy_out legacy_reader legacy "SELECT id FROM public.regions ORDER BY 1" >"$BATS_TEST_TMPDIR/s"
    tail -n +2 "$FX/regions-map.csv" | cut -d, -f1 | sort -n >"$BATS_TEST_TMPDIR/t"
    run -0 --separate-stderr diff "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT attname FROM pg_attribute WHERE attrelid = 'public.regions'::regclass
        AND attname = 'legacy_id'"
    assert_output ""
}

@test "load: target foreign keys point at the right parents (both sides in source form)" {
    run -0 --separate-stderr "$FIXTURE" export source "$BATS_TEST_TMPDIR/src"
    run -0 --separate-stderr "$FIXTURE" export target "$BATS_TEST_TMPDIR/tgt" --dir "$FX"
    local t
    for t in $tables; do
        [[ -s $BATS_TEST_TMPDIR/src/public.$t.copy ]] || fail "no rows exported for $t"
    done
    run -0 --separate-stderr diff -r "$BATS_TEST_TMPDIR/src" "$BATS_TEST_TMPDIR/tgt"
    # The same, asked by hand for parents in every table.
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT c.legacy_id FROM public.orders AS o JOIN public.customers AS c ON c.id = o.customer_id
        WHERE o.legacy_id = 9007199254740993
        UNION ALL SELECT o.legacy_id FROM public.order_items AS i
            JOIN public.orders AS o ON o.id = i.order_id WHERE i.legacy_id = -1
        UNION ALL SELECT m.legacy_id FROM public.employees AS e
            JOIN public.employees AS m ON m.id = e.manager_id WHERE e.legacy_id = 2
        UNION ALL SELECT s.legacy_id FROM public.employees AS e
            JOIN public.stores AS s ON s.id = e.store_id WHERE e.legacy_id = 7
        UNION ALL SELECT m.legacy_id FROM public.stores AS s
            JOIN public.employees AS m ON m.id = s.manager_id WHERE s.legacy_id = 1"
    assert_output "$(printf '%s\n' 5 9007199254740993 7 1 7)"
    # The comparison can fail: one order re-pointed at another customer shows.
    psql_as target_owner target -c "
        UPDATE public.orders SET customer_id = (SELECT id FROM public.customers WHERE legacy_id = 3)
        WHERE legacy_id = 1"
    run -0 --separate-stderr "$FIXTURE" export target "$BATS_TEST_TMPDIR/bad" --dir "$FX"
    run -1 --separate-stderr diff -r "$BATS_TEST_TMPDIR/src" "$BATS_TEST_TMPDIR/bad"
    assert_output --partial "public.orders.copy"
    refute_output --partial "public.customers.copy"
    psql_as target_owner target -c "
        UPDATE public.orders SET customer_id = (SELECT id FROM public.customers WHERE legacy_id = 1)
        WHERE legacy_id = 1"
}

@test "load: the table shapes other tests rely on" {
    local q="SELECT c.relname || '(' || string_agg(a.attname || ' ' ||
                 format_type(a.atttypid, a.atttypmod) ||
                 CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum) || ')'
             FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
               AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
             GROUP BY c.relname ORDER BY c.relname"
    run -0 --separate-stderr psql_as legacy_reader legacy -c "$q"
    assert_output "$(printf '%s\n' \
        'customers(id integer not null, region_id integer, name text, email text, doc json, created_at timestamp without time zone, score real, nickname character varying(40))' \
        'employees(id integer not null, manager_id integer, store_id integer, name text)' \
        'events(id integer not null, happened_on date not null, kind text, payload jsonb)' \
        'order_items(id integer not null, order_id bigint not null, sku text, qty integer, price numeric(30,10))' \
        'orders(id bigint not null, customer_id integer not null, placed_at timestamp without time zone, total numeric(12,2), note text)' \
        'product_tags(product_sku text not null, tag text not null, weight integer)' \
        'regions(id integer not null, name text not null)' \
        'stores(id integer not null, manager_id integer not null, name text)')"
    run -0 --separate-stderr psql_as target_owner target -c "$q"
    assert_output "$(printf '%s\n' \
        'customers(id uuid not null, legacy_id integer, region_id uuid, name text, email text, doc jsonb, created_at timestamp with time zone, score double precision, nickname text, updated_at timestamp with time zone, auth_user_id uuid)' \
        'employees(id uuid not null, legacy_id integer, manager_id uuid, store_id uuid, name text)' \
        'events(id uuid not null, legacy_id integer, happened_on date not null, kind text, payload jsonb)' \
        'order_items(id uuid not null, legacy_id integer, order_id uuid not null, sku text, qty integer, price numeric(30,10))' \
        'orders(id uuid not null, legacy_id bigint, customer_id uuid not null, placed_at timestamp with time zone, total numeric(12,2), note text, total_cents bigint, created_at timestamp with time zone not null, updated_at timestamp with time zone)' \
        'product_tags(product_sku text not null, tag text not null, weight integer)' \
        'regions(id uuid not null, name text not null)' \
        'stores(id uuid not null, legacy_id integer, manager_id uuid not null, name text)')"
    # Foreign keys, with their deferrability, on both sides.
    q="SELECT conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
       WHERE contype = 'f' AND connamespace = 'public'::regnamespace
         AND conparentid = 0 ORDER BY 1"
    run -0 --separate-stderr psql_as legacy_reader legacy -c "$q"
    assert_output "$(printf '%s\n' \
        'customers FOREIGN KEY (region_id) REFERENCES regions(id)' \
        'employees FOREIGN KEY (manager_id) REFERENCES employees(id)' \
        'employees FOREIGN KEY (store_id) REFERENCES stores(id) DEFERRABLE' \
        'order_items FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE' \
        'orders FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE' \
        'stores FOREIGN KEY (manager_id) REFERENCES employees(id) DEFERRABLE')"
    run -0 --separate-stderr psql_as target_owner target -c "$q"
    assert_output "$(printf '%s\n' \
        'customers FOREIGN KEY (auth_user_id) REFERENCES auth.users(id)' \
        'customers FOREIGN KEY (region_id) REFERENCES regions(id)' \
        'employees FOREIGN KEY (manager_id) REFERENCES employees(id)' \
        'employees FOREIGN KEY (store_id) REFERENCES stores(id) DEFERRABLE' \
        'order_items FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE' \
        'orders FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE' \
        'stores FOREIGN KEY (manager_id) REFERENCES employees(id) DEFERRABLE')"
    # Unique legacy keys, nullable; the target computes total_cents and updated_at.
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT count(*) FROM pg_index AS i JOIN pg_attribute AS a
            ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indisunique AND i.indnatts = 1 AND a.attname = 'legacy_id'
          AND i.indrelid::regclass::text IN ('customers', 'orders', 'order_items', 'employees',
                                             'stores', 'events')"
    assert_output "6"
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
    assert_output "$(printf '%s\n' 'customers customers_updated_at' 'orders orders_updated_at')"
}

@test "load: the earlier migration's conversions (jsonb, Berlin time, float8, text)" {
    run -0 --separate-stderr psql_as target_owner target -c "
        SET TimeZone = 'UTC'; SET extra_float_digits = 3;
        SELECT legacy_id, doc, created_at, score FROM public.customers
        WHERE legacy_id IN (13, 14, 15, 17, 19) ORDER BY legacy_id"
    assert_output "$(printf '%s\n' \
        '13|{}|2019-01-13 09:00:00+00|1.401298464324817e-45' \
        '14|{}|2023-03-26 01:30:00+00|14' \
        '15|{}|2023-10-29 01:30:00.000001+00|15' \
        '17|{}|infinity|17' \
        '19|{"n": 1000, "name": "café", "emoji": "🛒"}|2019-01-19 09:00:00+00|19')"
    run -0 --separate-stderr psql_as legacy_reader legacy -c "
        SELECT doc FROM public.customers WHERE id = 19"
    assert_output '{"name": "caf\u00e9", "emoji": "\ud83d\uded2", "n": 1.50, "n": 1e3}'
    # NULL, '', 'NULL' and '\N' stay four different values.
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT legacy_id, coalesce(name, '<null>') FROM public.customers
        WHERE legacy_id BETWEEN 1 AND 4 ORDER BY 1"
    assert_output "$(printf '%s\n' '1|<null>' '2|' '3|NULL' '4|\N')"
}

@test "load: RLS is enabled on every target table, which target_owner owns" {
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT count(*), count(*) FILTER (WHERE relrowsecurity AND NOT relforcerowsecurity
                                           AND pg_get_userbyid(relowner) = 'target_owner')
        FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
    assert_output "8|8"
    # auth.users belongs to someone else, as on Supabase.
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT pg_get_userbyid(relowner) <> 'target_owner', (SELECT count(*) FROM auth.users)
        FROM pg_class WHERE oid = 'auth.users'::regclass"
    assert_output "t|31"
    run -0 --separate-stderr psql_as target_owner target -c "
        SELECT count(auth_user_id) FROM public.customers"
    assert_output "31"
    # The API roles see what the policies allow: regions, and no one's customers.
    run -0 --separate-stderr psql_super target -c "
        SET ROLE authenticated;
        SELECT (SELECT count(*) FROM public.regions), (SELECT count(*) FROM public.customers),
               (SELECT count(*) FROM public.events)"
    assert_output "6|0|0"
}

@test "load: regions-map.csv has one row per region and well-formed, known UUIDs" {
    run -0 --separate-stderr head -n 1 "$FX/regions-map.csv"
    assert_output "legacy_id,uuid"
    local n
    n=$(tail -n +2 "$FX/regions-map.csv" | grep -cE \
        '^[0-9]+,[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
    assert_equal "$n" 6
    assert_equal "$(wc -l <"$FX/regions-map.csv")" 7
    assert_equal "$(tail -n +2 "$FX/regions-map.csv" | cut -d, -f2 | sort -u | wc -l)" 6
    tail -n +2 "$FX/regions-map.csv" | cut -d, -f2 | sort >"$BATS_TEST_TMPDIR/csv"
    copy_out target_owner target "SELECT id FROM public.regions ORDER BY 1" >"$BATS_TEST_TMPDIR/t"
    run -0 --separate-stderr diff "$BATS_TEST_TMPDIR/csv" "$BATS_TEST_TMPDIR/t"
    # Names match through the CSV: legacy region 5 is the same region on both sides.
    local uuid
    uuid=$(grep '^5,' "$FX/regions-map.csv" | cut -d, -f2)
    run -0 --separate-stderr psql_as target_owner target -c \
        "SELECT name FROM public.regions WHERE id = '$uuid'"
    assert_output "Zentral – Mitte"
}

@test "load: the source's events are spread over three partitions, +-infinity included" {
    run -0 --separate-stderr psql_as legacy_reader legacy -c "
        SELECT tableoid::regclass, count(*), min(happened_on), max(happened_on)
        FROM public.events GROUP BY 1 ORDER BY 1"
    assert_output "$(printf '%s\n' \
        'events_before_2024|145|-infinity|2023-12-31' \
        'events_2024|244|2024-01-03|2024-12-31' \
        'events_from_2025|213|2025-01-03|infinity')"
}

@test "load: the target's trigger and generated column work as the owner" {
    run -0 --separate-stderr psql_as target_owner target -c "
        BEGIN;
        SELECT total_cents FROM public.orders WHERE legacy_id = 9007199254740993;
        UPDATE public.customers SET updated_at = '2000-01-01' WHERE legacy_id = 1;
        SELECT updated_at > '2020-01-01' FROM public.customers WHERE legacy_id = 1;
        ROLLBACK;"
    assert_output "$(printf '%s\n' 999999999999 t)"
}

# ---- drift ----

@test "drift: rounds 1 and 2 apply cleanly and change what they say" {
    run -0 --separate-stderr "$FIXTURE" load --dir "$FX"
    run -0 --separate-stderr "$FIXTURE" drift 1
    assert_output ""
    assert_equal "$stderr" ""
    run -0 --separate-stderr "$FIXTURE" drift 2
    assert_equal "$stderr" ""
    run -0 --separate-stderr psql_as legacy_reader legacy -c "
        SELECT (SELECT count(*) FROM public.stores WHERE id IN (10, 1000001)),
               (SELECT count(*) FROM public.employees WHERE store_id IN (10, 1000001)
                    OR id IN (56, 61, 1000003, 1000004)),
               (SELECT count(*) FROM public.stores WHERE id = 2000001 AND manager_id = 2000003),
               (SELECT manager_id FROM public.employees WHERE id = 2000001),
               (SELECT count(*) FROM public.customers WHERE id IN (101, 102, 151, 152)),
               (SELECT count(*) FROM public.orders WHERE customer_id IN (101, 102)),
               (SELECT email FROM public.customers WHERE id = 2000010),
               (SELECT count(*) FROM public.customers WHERE id = 2),
               (SELECT tableoid::regclass::text FROM public.events WHERE id = 14),
               (SELECT count(*) FROM public.product_tags WHERE tag IN ('round 1', 'round 2')),
               (SELECT count(*) FROM public.regions WHERE id = 6)"
    assert_output "0|0|1|2000002|0|0|c152@example.com|1|events_2024|2|0"
    # The target has not followed: the two sides now differ.
    run -0 --separate-stderr "$FIXTURE" export source "$BATS_TEST_TMPDIR/src"
    run -0 --separate-stderr "$FIXTURE" export target "$BATS_TEST_TMPDIR/tgt" --dir "$FX"
    run -1 --separate-stderr diff -rq "$BATS_TEST_TMPDIR/src" "$BATS_TEST_TMPDIR/tgt"
    local t
    for t in $tables; do
        assert_output --partial "public.$t.copy"
    done
}

@test "drift: a round applied twice fails as a whole and changes nothing" {
    run -0 --separate-stderr "$FIXTURE" load --dir "$FX"
    local sums loaded
    loaded=$(legacy_checksums)
    run -0 --separate-stderr "$FIXTURE" drift 1
    sums=$(legacy_checksums)
    # Round 1 changes every table.
    assert_equal "$(paste -d'|' <(printf '%s\n' "$loaded") <(printf '%s\n' "$sums") |
        awk -F'|' '$2 != $4' | wc -l)" 8
    run -5 --separate-stderr "$FIXTURE" drift 1
    [[ $stderr == *"drift round 1 failed"* ]] || fail "$stderr"
    assert_equal "$(legacy_checksums)" "$sums"
}
