#!/usr/bin/env bats
# migrate-make and migrate --stage on the shop fixture: driftless.mk runs the
# stages of a migrate run as make targets, independent tables side by side,
# and gives the target scripts/migrate gives. The target is reached as
# target_owner, the source as legacy_reader; results are checked with SQL.

load helpers

setup_file() {
    scratch_setup_file
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    shop_load
    export MK="$BATS_FILE_TMPDIR/driftless.mk"
    "$REPO/scripts/migrate-make" --map "$MAP" --output "$MK" --quiet
    # The first run registers the tables (product_tags' keys) on an in-sync target.
    "$REPO/scripts/migrate" --map "$MAP" --run-dir "$BATS_FILE_TMPDIR/first" --quiet
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    scratch_setup
}

# export_target DIR [DB]: database DB (default target) in source form, through
# the fixture's export (which reads the database named target).
export_target() {
    if [[ ${2:-target} != target ]]; then
        psql_super postgres -c "ALTER DATABASE target RENAME TO target_away" \
            -c "ALTER DATABASE $2 RENAME TO target"
    fi
    "$REPO/scripts/shop-fixture" export target "$1" --dir "$SHOP"
    if [[ ${2:-target} != target ]]; then
        psql_super postgres -c "ALTER DATABASE target RENAME TO $2" \
            -c "ALTER DATABASE target_away RENAME TO target"
    fi
}

in_sync() {
    rm -rf "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
    "$REPO/scripts/shop-fixture" export source "$BATS_TEST_TMPDIR/s" --dir "$SHOP"
    export_target "$BATS_TEST_TMPDIR/t"
    diff -r "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
}

checksums() {
    for t in regions customers orders order_items employees stores product_tags events; do
        checksum_table target "public.$t"
    done
    checksum_table target driftless.crosswalk
}

# snapshot_sessions: the sessions still in a transaction on either side (a
# snapshot holder would be one).
snapshot_sessions() {
    psql_super postgres -c "SELECT count(*) FROM pg_stat_activity
        WHERE datname IN ('legacy', 'target') AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
}

@test "migrate-make: --help, --version, usage errors; the makefile's targets and order" {
    run -0 --separate-stderr migrate-make --help
    assert_output --partial "Usage: migrate-make --map FILE"
    run -0 --separate-stderr migrate-make --version
    assert_output "migrate-make (driftless) 0.1.0"
    run -2 --separate-stderr migrate-make --bogus
    [[ $stderr == *"unrecognized option '--bogus'"* ]]
    run -2 --separate-stderr migrate-make
    run -3 --separate-stderr migrate-make --map /nonexistent.map
    run -2 --separate-stderr migrate --map "$MAP" --stage compute --run-dir "$BATS_TEST_TMPDIR/r"
    [[ $stderr == *"--stage compute needs --table"* ]]
    run -2 --separate-stderr migrate --map "$MAP" --stage upsert --group public.orders
    [[ $stderr == *"--stage needs --run-dir"* ]]
    run -2 --separate-stderr migrate --map "$MAP" --stage sideways --run-dir "$BATS_TEST_TMPDIR/r"
    # A stage out of order names the stage that comes first, before any write.
    run -2 --separate-stderr migrate --map "$MAP" --stage check --run-dir "$BATS_TEST_TMPDIR/r"
    [[ $stderr == *"the prepare stage comes first"* ]] || fail "$stderr"
    # make's plan: parents' computes and upserts first, children's deletes first,
    # the cycle as one group, nothing written before the check.
    run -0 make -f "$MK" -n --no-print-directory sync RUN_DIR=/r
    stages=$(printf '%s\n' "$output" | tr -d "'" | sed -n 's/.*--stage \([a-z]*\) --\(table\|group\) \(.*\)$/\1 \3/p
        s/.*--stage \([a-z]*\)\( --hold-while .*\)*$/\1/p')
    pos() { printf '%s\n' "$stages" | grep -nxF -- "$1" | cut -d: -f1; }
    for p in "compute public.regions|compute public.customers" "compute public.orders|compute public.order_items" \
        "compute public.order_items|check" "check|upsert public.regions" \
        "upsert public.customers|upsert public.orders" "upsert public.order_items|delete public.order_items" \
        "upsert public.regions|delete public.events" "delete public.order_items|delete public.orders" \
        "delete public.customers|delete public.regions" "delete public.regions|retry" "retry|finish" \
        "prepare|snapshot" "snapshot|compute public.events"; do
        a=$(pos "${p%%|*}") b=$(pos "${p#*|}")
        [[ -n $a && -n $b && $a -lt $b ]] || fail "not in order: $p ($a, $b): $stages"
    done
    [[ -n $(pos "compute public.employees --table public.stores") ]] || fail "$stages"
    [[ -n $(pos "upsert public.employees public.stores") ]] || fail "$stages"
    grep -q -- '--stage snapshot --hold-while \$\$PPID' "$MK"
}

@test "make -j2 sync gives the target migrate gives; UUIDs kept; a second run changes nothing" {
    "$REPO/scripts/shop-fixture" drift 1
    before=$(shop_uuids)
    # Two targets alike: migrate syncs the copy, make the original.
    psql_super postgres -c "CREATE DATABASE target_m TEMPLATE target OWNER target_owner"
    TARGET_DATABASE_URL="host=$PGHOST port=$PGPORT dbname=target_m user=target_owner" \
        run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/m" --quiet
    run -0 make -f "$MK" -j2 --no-print-directory sync RUN_DIR="$BATS_TEST_TMPDIR/mk1"
    [[ -f $BATS_TEST_TMPDIR/mk1/computed && -s $BATS_TEST_TMPDIR/mk1/summary.jsonl ]]
    # One run, ended ok, its per-table summary like migrate's.
    run -0 psql_super target -c "SELECT count(*), min(status) FROM driftless.runs
        WHERE id = $(cat "$BATS_TEST_TMPDIR/mk1/run.id") AND finished_at IS NOT NULL"
    assert_output "1|ok"
    assert_equal "$(cut -d, -f1-5 "$BATS_TEST_TMPDIR/mk1/summary.jsonl")" \
        "$(cut -d, -f1-5 "$BATS_TEST_TMPDIR/m/summary.jsonl")"
    in_sync
    export_target "$BATS_TEST_TMPDIR/tm" target_m
    diff -r "$BATS_TEST_TMPDIR/t" "$BATS_TEST_TMPDIR/tm"
    # No snapshot holder is left, no UUID reissued, no legacy id twice.
    assert_equal "$(snapshot_sessions)" 0
    shop_uuids_kept "$before"
    for t in customers orders order_items employees stores events; do
        run -0 psql_super target -c "SELECT count(*) FROM (SELECT legacy_id FROM $t
            WHERE legacy_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d"
        assert_output 0
    done
    sums=$(checksums)
    run -0 make -f "$MK" -j2 --no-print-directory sync RUN_DIR="$BATS_TEST_TMPDIR/mk2"
    [[ $(checksums) == "$sums" ]] || fail "a second run changed the target"
    run -0 awk -F'"inserted":|,"updated":|,"deleted":|,"unchanged"' \
        '{ s += $2 + $3 + $4 } END { print s }' "$BATS_TEST_TMPDIR/mk2/summary.jsonl"
    assert_output 0
    psql_super postgres -c "DROP DATABASE target_m"
}

@test "make: a run stopped in an upsert goes on with the same RUN_DIR; done stages are skipped" {
    "$REPO/scripts/shop-fixture" drift 2
    before=$(shop_uuids)
    migrate-make --map "$MAP" --output "$BATS_TEST_TMPDIR/small.mk" --batch-rows 2 --quiet
    DRIFTLESS_FAILPOINT=pgapply:upsert:after-commit:1 run setsid make -f "$BATS_TEST_TMPDIR/small.mk" \
        -j2 --no-print-directory sync RUN_DIR="$BATS_TEST_TMPDIR/run"
    [[ $status -ne 0 ]] || fail "the failpoint did not stop the run"
    [[ -f $BATS_TEST_TMPDIR/run/computed ]] || fail "it stopped before the check"
    [[ ! -f $BATS_TEST_TMPDIR/run/summary.jsonl ]] || fail "it got to the finish"
    run -0 make -f "$BATS_TEST_TMPDIR/small.mk" -j2 --no-print-directory sync \
        RUN_DIR="$BATS_TEST_TMPDIR/run"
    # Compute was not redone: one snapshot stage in the log.
    run -0 grep -c 'stage=compute snapshots ' "$BATS_TEST_TMPDIR/run/log"
    assert_output 1
    in_sync
    shop_uuids_kept "$before"
    run -0 psql_super target -c "SELECT count(*) FROM (SELECT legacy_id FROM customers
        WHERE legacy_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d"
    assert_output 0
}

@test "make: a failed compute stops before any write and releases the snapshots" {
    sums=$(checksums)
    psql_as legacy_owner legacy -c "ALTER TABLE order_items DROP CONSTRAINT order_items_order_id_fkey;
        INSERT INTO order_items (id, order_id, sku, qty, price) VALUES (77777777, 99999999, 'x', 1, 1)"
    run -2 --separate-stderr make -f "$MK" -j2 --no-print-directory sync RUN_DIR="$BATS_TEST_TMPDIR/run"
    [[ $stderr == *"public.order_items"* && $stderr == *99999999* ]] || fail "$stderr"
    [[ ! -f $BATS_TEST_TMPDIR/run/computed ]]
    assert_equal "$(checksums)" "$sums"
    # make has ended: the holder has let go of both snapshots.
    for _ in $(seq 50); do
        [[ $(snapshot_sessions) == 0 ]] && break
        sleep 0.2
    done
    assert_equal "$(snapshot_sessions)" 0
    run -0 psql_super target -c "SELECT status FROM driftless.runs
        WHERE id = $(cat "$BATS_TEST_TMPDIR/run/run.id")"
    assert_output failed
    psql_as legacy_owner legacy -c "DELETE FROM order_items WHERE id = 77777777;
        ALTER TABLE order_items ADD CONSTRAINT order_items_order_id_fkey
            FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE"
}
