#!/usr/bin/env bats
# scripts/validate on the shop fixture: after migrate it finds nothing; every
# difference planted in the target is found by key; schema drift in the source
# is reported and stops migrate before any write.

load helpers

setup_file() {
    scratch_setup_file
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    shop_load
    "$REPO/scripts/shop-fixture" drift 1 >/dev/null
    "$REPO/scripts/migrate" --map "$MAP" --run-dir "$BATS_FILE_TMPDIR/m" --quiet
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    scratch_setup
}

@test "validate: nothing to report after migrate" {
    run -0 --separate-stderr validate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/v"
    assert_output --partial "every table matches"
    run -0 python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 8, len(rows)
assert all(r["success_rate"] == 100 or r["success_rate"] == 100.0 for r in rows), rows
' "$BATS_TEST_TMPDIR/v/validate.jsonl"
}

@test "validate: every planted difference is found by key, and only those" {
    psql_super target -c "
        DELETE FROM order_items WHERE legacy_id = 11;                         -- missing
        INSERT INTO events (legacy_id, happened_on, kind) VALUES (987654, '2024-01-01', 'x'); -- extra
        UPDATE customers SET name = coalesce(name, '') || ' ' WHERE legacy_id = 21; -- trailing space
        UPDATE customers SET nickname = NULL WHERE legacy_id = 23;            -- NULL vs value
        UPDATE customers SET score = 'NaN' WHERE legacy_id = 24;              -- NaN vs a number
        UPDATE orders SET placed_at = date_trunc('second', placed_at) WHERE legacy_id = 31
            AND placed_at <> date_trunc('second', placed_at);                 -- microseconds
        UPDATE orders SET customer_id = (SELECT id FROM customers WHERE legacy_id = 40)
            WHERE legacy_id = 32;                                             -- another parent
        UPDATE events SET id = gen_random_uuid() WHERE legacy_id = 50;        -- UUID reissued
    "
    run -1 --separate-stderr validate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/v" --show 50
    assert_output --regexp "public.order_items.*"
    assert_output --partial "(legacy_id)=(11)"
    assert_output --partial "(legacy_id)=(987654)"
    assert_output --partial "(legacy_id)=(21): name"
    assert_output --partial "(legacy_id)=(23): nickname"
    assert_output --partial "(legacy_id)=(24): score"
    assert_output --partial "(legacy_id)=(32): customer_id"
    assert_output --partial "(legacy_id)=(50)"
    # Values are customer data: not shown without --values.
    refute_output --partial "NaN"
}

@test "validate and migrate: a column added to the source stops both before any write" {
    psql_as legacy_owner legacy -c "ALTER TABLE events ADD COLUMN severity int DEFAULT 3"
    sum=$(checksum_table target public.events)
    run -6 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/m2" --quiet
    [[ $stderr == *public.events* && $stderr == *severity* ]] || fail "not named: $stderr"
    assert_equal "$(checksum_table target public.events)" "$sum"
    run -6 --separate-stderr validate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/v2" --quiet
    psql_as legacy_owner legacy -c "ALTER TABLE events DROP COLUMN severity"
}

@test "validate: usage errors exit 2" {
    run -2 --separate-stderr validate --bogus
    run -2 --separate-stderr validate
    run -2 --separate-stderr validate --map "$MAP" --show x
}
