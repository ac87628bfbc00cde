#!/usr/bin/env bats
# scripts/migrate on the shop fixture: a legacy source and the target an earlier
# migration made (UUID keys, legacy ids, a CSV mapping, a cycle, a partitioned
# source, target-born rows). The target is reached as target_owner, the source
# as legacy_reader, and every result is checked with SQL or the fixture's export.

load helpers

setup_file() {
    scratch_setup_file
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    shop_load
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    scratch_setup
}

# in_sync: source and target hold the same rows, compared in source form.
in_sync() {
    rm -rf "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
    "$REPO/scripts/shop-fixture" export source "$BATS_TEST_TMPDIR/s" --dir "$SHOP"
    "$REPO/scripts/shop-fixture" export target "$BATS_TEST_TMPDIR/t" --dir "$SHOP"
    diff -r "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
}

checksums() {
    for t in regions customers orders order_items employees stores product_tags events; do
        checksum_table target "public.$t"
    done
}

@test "migrate: the first run on an in-sync target changes nothing" {
    in_sync
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    [[ -z $output ]]
    run -0 awk -F'"inserted":|,"updated":|,"deleted":|,"unchanged"' \
        '{ s += $2 + $3 + $4 } END { print s }' "$BATS_TEST_TMPDIR/run/summary.jsonl"
    assert_output 0
    # The crosswalk now holds every migrated row, regions' from the CSV.
    run -0 psql_super target -c "SELECT count(*) FROM driftless.crosswalk WHERE table_name = 'public.regions'"
    assert_output 6
    run -0 psql_super target -c "SELECT count(*) FROM public.customers c
        LEFT JOIN driftless.crosswalk x ON x.table_name = 'public.customers'
            AND x.legacy_key = c.legacy_id::text
        WHERE c.legacy_id IS NOT NULL AND x.uuid IS DISTINCT FROM c.id"
    assert_output 0
}

@test "migrate: after source changes the target equals the source; UUIDs kept; a second run is a no-op" {
    before=$(shop_uuids)
    born=$(psql_super target -c "SELECT md5(string_agg(c::text, ',' ORDER BY c.email)) FROM customers c WHERE legacy_id IS NULL")
    "$REPO/scripts/shop-fixture" drift 1
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run1"
    assert_output --partial "public.customers: inserted"
    in_sync
    # Every UUID issued before the run is unchanged unless its row was deleted.
    shop_uuids_kept "$before"
    # No legacy id twice; target-born rows untouched.
    run -0 psql_super target -c "SELECT count(*) FROM (SELECT legacy_id FROM orders
        WHERE legacy_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d"
    assert_output 0
    run -0 psql_super target -c "SELECT md5(string_agg(c::text, ',' ORDER BY c.email)) FROM customers c WHERE legacy_id IS NULL"
    assert_output "$born"
    # Every new child points at its new parent (the export compares FKs as legacy ids).
    sums=$(checksums)
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run2" --quiet
    [[ $(checksums) == "$sums" ]] || fail "a second run changed the target"
}

@test "migrate: the CSV mapping survives the loss of every run directory" {
    "$REPO/scripts/shop-fixture" drift 2
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/a" --quiet
    ids=$(psql_super target -c "SELECT legacy_key || ' ' || uuid FROM driftless.crosswalk
        WHERE table_name = 'public.regions' ORDER BY 1")
    rm -rf "$BATS_TEST_TMPDIR/a"
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/b" --quiet
    run -0 psql_super target -c "SELECT legacy_key || ' ' || uuid FROM driftless.crosswalk
        WHERE table_name = 'public.regions' ORDER BY 1"
    assert_output "$ids"
    in_sync
}

@test "migrate: a dangling foreign key stops before any write, naming table, column and key" {
    sums=$(checksums)
    psql_as legacy_owner legacy -c "ALTER TABLE order_items DROP CONSTRAINT order_items_order_id_fkey;
        INSERT INTO order_items (id, order_id, sku, qty, price) VALUES (77777777, 99999999, 'x', 1, 1)"
    run -4 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    assert_equal "$(checksums)" "$sums"
    [[ $stderr == *"public.order_items"* && $stderr == *order_id* && $stderr == *99999999* ]] ||
        fail "message does not name table, column and key: $stderr"
    psql_as legacy_owner legacy -c "DELETE FROM order_items WHERE id = 77777777;
        ALTER TABLE order_items ADD CONSTRAINT order_items_order_id_fkey
            FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE"
}

@test "migrate: a source emptied by mistake trips the delete guard (exit 6), target unchanged" {
    sums=$(checksums)
    psql_super legacy -c "CREATE DATABASE legacy_empty TEMPLATE template0 OWNER legacy_owner"
    psql_as legacy_owner legacy_empty -c "CREATE TABLE events (id int, happened_on date, kind text, payload jsonb)"
    SOURCE_DATABASE_URL="host=$PGHOST port=$PGPORT dbname=legacy_empty user=legacy_owner" \
        run -6 --separate-stderr migrate --no-doctor --map "$MAP" --table public.events \
        --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    [[ $stderr == *guard* && $stderr == *delete* ]] || fail "no guard message: $stderr"
    assert_equal "$(checksums)" "$sums"
}

@test "migrate: killed in the upsert phase, then run again, converges without duplicates" {
    "$REPO/scripts/shop-fixture" drift 3
    before=$(shop_uuids)
    DRIFTLESS_FAILPOINT=pgapply:after-commit:1 run setsid "$REPO/scripts/migrate" --map "$MAP" \
        --run-dir "$BATS_TEST_TMPDIR/run" --batch-rows 2 --quiet
    # 137: SIGKILL, sent by the failpoint to the whole process group.
    [[ $status -eq 137 ]] || fail "the failpoint did not stop the run: exit $status"
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    in_sync
    run -0 psql_super target -c "SELECT count(*) FROM (SELECT legacy_id FROM customers
        WHERE legacy_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d"
    assert_output 0
    run -0 psql_super target -c "SELECT count(*) FROM driftless.runs WHERE resumed"
    [[ $output -ge 1 ]] || fail "the second run is not marked resumed"
}

@test "migrate: killed in the delete phase, then run again, converges without duplicates" {
    "$REPO/scripts/shop-fixture" drift 4
    before=$(shop_uuids)
    DRIFTLESS_FAILPOINT=pgapply:delete:after-commit:1 run setsid "$REPO/scripts/migrate" --map "$MAP" \
        --run-dir "$BATS_TEST_TMPDIR/run" --batch-rows 2 --quiet
    [[ $status -eq 137 ]] || fail "the failpoint did not stop the run: exit $status"
    # It stopped in the delete phase: every upsert done, a delete batch committed, rows
    # the source deleted still in the target.
    run -0 find "$BATS_TEST_TMPDIR/run/stats" -name '*.upsert.done'
    assert_equal "${#lines[@]}" 7
    run -0 find "$BATS_TEST_TMPDIR/run/stats" -name '*.delete-only.done'
    assert_output ""
    run -0 psql_super target -c "SELECT count(*) FROM driftless.changes c
        JOIN driftless.runs r ON r.id = c.run_id WHERE c.op = 'D' AND NOT r.resumed
        AND r.id = (SELECT max(id) FROM driftless.runs)"
    [[ $output -ge 1 && $output -le 2 ]] || fail "expected one committed delete batch: $output"
    run -1 in_sync
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    in_sync
    shop_uuids_kept "$before"
    for t in customers orders order_items employees stores events; do
        run -0 psql_super target -c "SELECT count(*) FROM (SELECT legacy_id FROM $t
            WHERE legacy_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d"
        assert_output 0
    done
    run -0 psql_super target -c "SELECT count(*) FROM (SELECT legacy_key FROM driftless.crosswalk
        GROUP BY table_name, legacy_key HAVING count(*) > 1) d"
    assert_output 0
}

@test "migrate: drift before the first sync: with app_rows = none, product_tags converges" {
    # The earlier migration copied product_tags wholesale (shop.map: app_rows =
    # none): the keys the source lost before the first run are deleted.
    "$REPO/scripts/shop-fixture" load --dir "$SHOP" >/dev/null
    "$REPO/scripts/shop-fixture" drift 1
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    [[ $stderr != *"found only in the target"* ]] || fail "$stderr"
    in_sync
    run -0 psql_as target_owner target -c "SELECT count(*) FROM public.product_tags
        WHERE (product_sku, tag) IN (('SKU-0001', 'Blue'), ('SKU-0011', 'with space'))"
    assert_output 0
    # driftless owns every key of the table, and nothing else
    run -0 psql_as target_owner target -c "SELECT
        (SELECT count(*) FROM public.product_tags t WHERE NOT EXISTS (SELECT 1 FROM driftless.owned_keys o
            WHERE o.table_name = 'public.product_tags'
              AND o.legacy_key = to_jsonb(ARRAY[t.product_sku, t.tag])::text)),
        (SELECT count(*) FROM driftless.owned_keys WHERE table_name = 'public.product_tags')
          - (SELECT count(*) FROM public.product_tags)"
    assert_output "0|0"
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run2" --quiet
    run -0 awk -F'"inserted":|,"updated":|,"deleted":|,"unchanged"' \
        '{ s += $2 + $3 + $4 } END { print s }' "$BATS_TEST_TMPDIR/run2/summary.jsonl"
    assert_output 0
}

@test "migrate: app_rows = none still stops a mass delete before the first sync" {
    "$REPO/scripts/shop-fixture" load --dir "$SHOP" >/dev/null
    psql_as legacy_owner legacy -c "DELETE FROM public.product_tags WHERE (product_sku, tag) IN
        (SELECT product_sku, tag FROM public.product_tags ORDER BY 1, 2 LIMIT 150)"
    local sum
    sum=$(checksum_table target public.product_tags)
    run -6 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    [[ $stderr == *"public.product_tags: guard: 150 deletes of 206"* ]] || fail "$stderr"
    run -0 checksum_table target public.product_tags
    assert_output "$sum"
}

@test "migrate: by default, keys only in the target at the first run are the application's until declared migrated" {
    # Without app_rows = none, the keys the source lost before the first run
    # are taken as the application's (DESIGN.md, pgapply(1)): kept, reported
    # with how to declare them migrated. Declared, the next run deletes them.
    "$REPO/scripts/shop-fixture" load --dir "$SHOP" >/dev/null
    sed '/^app_rows/d' "$MAP" >"$SHOP/default.map"
    "$REPO/scripts/shop-fixture" drift 1
    run -0 --separate-stderr migrate --map "$SHOP/default.map" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    [[ $stderr == *"public.product_tags: first run: 2 rows found only in the target"* ]] ||
        fail "$stderr"
    [[ $stderr == *'(keys ["SKU-0001", "Blue"], ["SKU-0011", "with space"])'* ]] || fail "$stderr"
    [[ $stderr == *"pgapply --declare-migrated --table public.product_tags KEY..."* ]] ||
        fail "$stderr"
    run -1 in_sync
    run -0 diff -r -x public.product_tags.copy "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
    run -0 env LC_ALL=C comm -13 "$BATS_TEST_TMPDIR/s/public.product_tags.copy" "$BATS_TEST_TMPDIR/t/public.product_tags.copy"
    assert_output "$(printf 'SKU-0001\tBlue\t0\nSKU-0011\twith space\t0')"
    run -0 env LC_ALL=C comm -23 "$BATS_TEST_TMPDIR/s/public.product_tags.copy" "$BATS_TEST_TMPDIR/t/public.product_tags.copy"
    assert_output ""
    # A second run leaves them alone too.
    run -0 --separate-stderr migrate --map "$SHOP/default.map" --run-dir "$BATS_TEST_TMPDIR/run2" --quiet
    run -1 in_sync
    # One declared migrated: the next run deletes it; the other stays the application's.
    run -0 pgapply --dsn-env TARGET_DATABASE_URL --declare-migrated --table public.product_tags \
        '["SKU-0001", "Blue"]'
    assert_output "table public.product_tags: 1 keys declared migrated, 0 already driftless's"
    run -0 --separate-stderr migrate --map "$SHOP/default.map" --run-dir "$BATS_TEST_TMPDIR/run3" --quiet
    run -1 in_sync
    run -0 env LC_ALL=C comm -13 "$BATS_TEST_TMPDIR/s/public.product_tags.copy" "$BATS_TEST_TMPDIR/t/public.product_tags.copy"
    assert_output "$(printf 'SKU-0011\twith space\t0')"
    printf '%s\n' '["SKU-0011","with space"]' |
        pgapply --dsn-env TARGET_DATABASE_URL --declare-migrated --table public.product_tags -
    run -0 --separate-stderr migrate --map "$SHOP/default.map" --run-dir "$BATS_TEST_TMPDIR/run4" --quiet
    in_sync
}

@test "migrate: app_rows takes none or keys-only-in-target, for a table that kept its keys" {
    sed 's/^app_rows *=.*/app_rows = some/' "$MAP" >"$SHOP/bad.map"
    run -4 --separate-stderr migrate --map "$SHOP/bad.map" --run-dir "$BATS_TEST_TMPDIR/run" --dry-run
    [[ $stderr == *"table public.product_tags: app_rows: unknown value some"* ]] || fail "$stderr"
    awk '{ print } /^\[public.orders\]/ { print "app_rows = none" }' "$MAP" >"$SHOP/bad.map"
    run -4 --separate-stderr migrate --map "$SHOP/bad.map" --run-dir "$BATS_TEST_TMPDIR/run" --dry-run
    [[ $stderr == *"table public.orders: app_rows = none is for a table that kept its keys"* ]] ||
        fail "$stderr"
}

@test "migrate: usage errors exit 2; a missing map exits 3; a malformed map exits 4" {
    run -2 --separate-stderr migrate --bogus
    [[ $stderr == *"unrecognized option '--bogus'"* ]]
    run -2 --separate-stderr migrate
    run -3 --separate-stderr migrate --map /nonexistent.map
    printf '[public.x]\nthis is not a key value line\n' >"$BATS_TEST_TMPDIR/bad.map"
    run -4 --separate-stderr migrate --map "$BATS_TEST_TMPDIR/bad.map"
    [[ $stderr == *"line 2"* ]]
}
