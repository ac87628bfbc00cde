#!/usr/bin/env bats
# migrate's incremental compare: after a full first run, a table is compared
# from its watermark (each side's snapshot xmin). Each test checks the path a
# run took (stats/TABLE.compare.json, summary.jsonl) and the target's content
# with SQL against the source, as a full compare would leave it.

load helpers

setup_file() {
    scratch_setup_file
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    psql_as legacy_owner legacy -c "
        CREATE TABLE items (id bigint PRIMARY KEY, name text, qty int);
        INSERT INTO items SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 2000) g"
    psql_as target_owner target -c "
        CREATE TABLE items (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            legacy_id bigint UNIQUE, name text, qty int CHECK (qty >= 0));
        ALTER TABLE items ENABLE ROW LEVEL SECURITY"
    psql_as legacy_owner legacy -c "COPY (SELECT id, name, qty FROM items ORDER BY id) TO STDOUT" |
        psql_as target_owner target -c "COPY items (legacy_id, name, qty) FROM STDIN"
    export MAP="$BATS_FILE_TMPDIR/items.map"
    cat >"$MAP" <<'EOF'
[public.items]
legacy_key  = legacy_id
source_key  = id
uuid_column = id
columns     = name, qty
EOF
    # The first run is a full compare: it registers the table and leaves a watermark.
    "$REPO/scripts/migrate" --map "$MAP" --run-dir "$BATS_FILE_TMPDIR/first" --quiet
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    scratch_setup
}

# same: the target's migrated rows equal the source's rows (key, values).
same() {
    local s t
    s=$(psql_as legacy_owner legacy -c "SELECT id, name, qty FROM items ORDER BY id")
    t=$(psql_as target_owner target -c "SELECT legacy_id, name, qty FROM items
        WHERE legacy_id IS NOT NULL ORDER BY legacy_id")
    [[ $s == "$t" ]] || fail "target differs from source: $(diff <(echo "$s") <(echo "$t") | head)"
}

# compare RUNDIR: the compare a run took of public.items ("incremental" or "full").
compare() {
    sed -n 's/.*"compare":"\([a-z]*\)".*/\1/p' "$1/stats/public.items.compare.json"
}

# migrate_ok RUNDIR [OPTION...]: a run that must exit 0.
migrate_ok() {
    local dir="$1"
    shift
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$dir" --quiet "$@"
}

# target_sum: md5 of the target's migrated rows, UUIDs included.
target_sum() {
    psql_as target_owner target -c "SELECT md5(string_agg(t::text, E'\n' ORDER BY legacy_id))
        FROM items t WHERE legacy_id IS NOT NULL"
}

@test "incremental: the first run was full; the next one finds source inserts, updates and deletes" {
    [[ $(compare "$BATS_FILE_TMPDIR/first") == full ]]
    run -0 grep -F '"reason":"no watermark' "$BATS_FILE_TMPDIR/first/stats/public.items.compare.json"
    run -0 psql_as target_owner target -c "SELECT count(*) FROM driftless.watermarks
        WHERE table_name = 'public.items'"
    assert_output 1
    psql_as legacy_owner legacy -c "
        INSERT INTO items VALUES (5001, 'new', 1), (5002, 'newer', 2);
        UPDATE items SET name = 'changed' WHERE id IN (10, 1500);
        UPDATE items SET qty = NULL WHERE id = 20;
        DELETE FROM items WHERE id IN (30, 31, 1999)"
    migrate_ok "$BATS_TEST_TMPDIR/r"
    [[ $(compare "$BATS_TEST_TMPDIR/r") == incremental ]]
    run -0 cat "$BATS_TEST_TMPDIR/r/summary.jsonl"
    assert_output --partial '"inserted":2,"updated":3,"deleted":3,"unchanged":1994'
    assert_output --partial '"compare":"incremental"'
    same
    # Only the changed keys were read in full: 2 inserts, 3 updates, 3 deletes.
    run -0 rowcat --count "$BATS_TEST_TMPDIR/r/tmp/public.items.kset.rs"
    assert_output 8
    # The watermark moved to this run.
    run -0 psql_as target_owner target -c "SELECT w.run_id = $(cat "$BATS_TEST_TMPDIR/r/run.id")
        FROM driftless.watermarks w WHERE table_name = 'public.items'"
    assert_output t
    # The rows the run wrote are not taken for target changes by the next run
    # (batches.xid), but an application's edit of one of them after it is.
    psql_as target_owner target -c "UPDATE items SET name = 'app' WHERE legacy_id = 10"
    migrate_ok "$BATS_TEST_TMPDIR/r2"
    [[ $(compare "$BATS_TEST_TMPDIR/r2") == incremental ]]
    run -0 cat "$BATS_TEST_TMPDIR/r2/summary.jsonl"
    assert_output --partial '"inserted":0,"updated":1,"deleted":0,"unchanged":1998'
    run -0 rowcat --count "$BATS_TEST_TMPDIR/r2/tmp/public.items.kset.rs"
    assert_output 1
    same
    # A run at once reads no row in full and changes nothing.
    sum=$(target_sum)
    migrate_ok "$BATS_TEST_TMPDIR/r3"
    [[ $(compare "$BATS_TEST_TMPDIR/r3") == incremental ]]
    run -0 cat "$BATS_TEST_TMPDIR/r3/summary.jsonl"
    assert_output --partial '"inserted":0,"updated":0,"deleted":0,"unchanged":1999'
    run -0 rowcat --count "$BATS_TEST_TMPDIR/r3/tmp/public.items.kset.rs"
    assert_output 0
    assert_equal "$(target_sum)" "$sum"
}

@test "incremental: an application's edit, insert and delete in the target are found; the source wins" {
    migrate_ok "$BATS_TEST_TMPDIR/r0"
    psql_as target_owner target -c "
        UPDATE items SET name = 'edited in the app' WHERE legacy_id = 100;
        UPDATE items SET qty = 6 WHERE legacy_id = 101 AND qty <> 6;
        DELETE FROM items WHERE legacy_id = 102;
        INSERT INTO items (legacy_id, name, qty) VALUES (987654, 'stray', 1);
        INSERT INTO items (name, qty) VALUES ('born in the target', 3)"
    migrate_ok "$BATS_TEST_TMPDIR/r"
    [[ $(compare "$BATS_TEST_TMPDIR/r") == incremental ]]
    run -0 cat "$BATS_TEST_TMPDIR/r/summary.jsonl"
    assert_output --partial '"inserted":1,"updated":2,"deleted":1,'
    same
    # A UUID the application rewrote is refused (exit 6) as by a full compare: not tested here.
    # The target-born row (no legacy key) is untouched.
    run -0 psql_as target_owner target -c "SELECT count(*) FROM items WHERE name = 'born in the target'"
    assert_output 1
}

@test "incremental: a row a target trigger changed beside the run's own writes is found by the next run" {
    migrate_ok "$BATS_TEST_TMPDIR/r0"
    psql_as target_owner target -c "
        CREATE FUNCTION touch_next() RETURNS trigger LANGUAGE plpgsql AS \$\$
        BEGIN
            IF NEW.legacy_id = 40 THEN
                UPDATE items SET name = 'touched by a trigger' WHERE legacy_id = 41;
            END IF;
            RETURN NULL;
        END \$\$;
        CREATE TRIGGER touch_next AFTER UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch_next()"
    psql_as legacy_owner legacy -c "UPDATE items SET name = 'forty' WHERE id = 40"
    # This run writes 40; its trigger changes 41 in the same transaction.
    migrate_ok "$BATS_TEST_TMPDIR/r1"
    run -0 cat "$BATS_TEST_TMPDIR/r1/summary.jsonl"
    assert_output --partial '"inserted":0,"updated":1,"deleted":0,'
    run -0 psql_as target_owner target -c "SELECT name FROM items WHERE legacy_id = 41"
    assert_output 'touched by a trigger'
    # 41 carries the run's transaction but is none of its changes: read again, and the source wins.
    migrate_ok "$BATS_TEST_TMPDIR/r2"
    [[ $(compare "$BATS_TEST_TMPDIR/r2") == incremental ]]
    run -0 cat "$BATS_TEST_TMPDIR/r2/summary.jsonl"
    assert_output --partial '"inserted":0,"updated":1,"deleted":0,'
    psql_as target_owner target -c "DROP TRIGGER touch_next ON items; DROP FUNCTION touch_next()"
    same
}

@test "incremental: --full and a changed map entry force a full compare with the same result" {
    psql_as legacy_owner legacy -c "UPDATE items SET qty = qty + 1 WHERE id BETWEEN 200 AND 209"
    migrate_ok "$BATS_TEST_TMPDIR/full" --full
    [[ $(compare "$BATS_TEST_TMPDIR/full") == full ]]
    run -0 grep -F '"reason":"--full"' "$BATS_TEST_TMPDIR/full/stats/public.items.compare.json"
    run -0 cat "$BATS_TEST_TMPDIR/full/summary.jsonl"
    assert_output --partial '"updated":10,'
    same
    psql_as legacy_owner legacy -c "UPDATE items SET qty = qty + 1 WHERE id BETWEEN 300 AND 304"
    printf 'guard_min = 1000\n' >>"$MAP"
    migrate_ok "$BATS_TEST_TMPDIR/map"
    [[ $(compare "$BATS_TEST_TMPDIR/map") == full ]]
    run -0 grep -F "map's entry for the table changed" "$BATS_TEST_TMPDIR/map/stats/public.items.compare.json"
    run -0 cat "$BATS_TEST_TMPDIR/map/summary.jsonl"
    assert_output --partial '"updated":5,'
    same
    # The next run is incremental again, under the new entry.
    migrate_ok "$BATS_TEST_TMPDIR/after"
    [[ $(compare "$BATS_TEST_TMPDIR/after") == incremental ]]
}

@test "incremental: its change stream and counts equal a full compare's" {
    psql_as legacy_owner legacy -c "
        INSERT INTO items VALUES (6001, 'a', 1);
        UPDATE items SET name = name || '!' WHERE id % 250 = 0;
        DELETE FROM items WHERE id IN (40, 41)"
    psql_as target_owner target -c "UPDATE items SET qty = 99 WHERE legacy_id = 42"
    # The same drift through both paths: a dry run computes in full, writing nothing.
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/full" --dry-run --quiet
    [[ $(compare "$BATS_TEST_TMPDIR/full") == full ]]
    migrate_ok "$BATS_TEST_TMPDIR/inc"
    [[ $(compare "$BATS_TEST_TMPDIR/inc") == incremental ]]
    for r in full inc; do
        rowcat --csv "$BATS_TEST_TMPDIR/$r/changes/public.items.rs" |
            sed 's/,[^,]*$//' >"$BATS_TEST_TMPDIR/$r.csv" # the hash of a new UUID differs
    done
    # Inserts carry a new UUID each time: compare without the UUID column.
    run -0 diff <(cut -d, -f1,2,4- "$BATS_TEST_TMPDIR/full.csv") <(cut -d, -f1,2,4- "$BATS_TEST_TMPDIR/inc.csv")
    run -0 diff "$BATS_TEST_TMPDIR/full/stats/public.items.diff.json" \
        "$BATS_TEST_TMPDIR/inc/stats/public.items.diff.json"
    same
}

@test "incremental: a run with a rejected row keeps the watermark; the next run still finds the row" {
    migrate_ok "$BATS_TEST_TMPDIR/r0"
    wm=$(psql_as target_owner target -c "SELECT run_id FROM driftless.watermarks")
    # The target refuses a negative qty (CHECK): that row is rejected.
    psql_as legacy_owner legacy -c "UPDATE items SET qty = -1 WHERE id = 700;
        UPDATE items SET name = 'fine' WHERE id = 701"
    run -1 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/r1" --quiet
    [[ $(compare "$BATS_TEST_TMPDIR/r1") == incremental ]]
    run -0 psql_as target_owner target -c "SELECT run_id FROM driftless.watermarks"
    assert_output "$wm"
    # Fixed in the source, the row is found by the next run, which moves the watermark.
    psql_as legacy_owner legacy -c "UPDATE items SET qty = 1 WHERE id = 700"
    migrate_ok "$BATS_TEST_TMPDIR/r2"
    [[ $(compare "$BATS_TEST_TMPDIR/r2") == incremental ]]
    same
    run -0 psql_as target_owner target -c "SELECT run_id = $(cat "$BATS_TEST_TMPDIR/r2/run.id") FROM driftless.watermarks"
    assert_output t
}

@test "incremental: a row rejected and left as it was in the source is retried by later runs" {
    migrate_ok "$BATS_TEST_TMPDIR/r0"
    psql_as legacy_owner legacy -c "UPDATE items SET qty = -5 WHERE id = 800"
    run -1 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/r1" --quiet
    run -1 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/r2" --quiet
    [[ $(compare "$BATS_TEST_TMPDIR/r2") == incremental ]]
    run -0 cat "$BATS_TEST_TMPDIR/r2/summary.jsonl"
    assert_output --partial '"failed":1'
    psql_as legacy_owner legacy -c "UPDATE items SET qty = 5 WHERE id = 800"
    migrate_ok "$BATS_TEST_TMPDIR/r3"
    same
}

@test "incremental: more changed rows than the threshold fall back to a full compare" {
    migrate_ok "$BATS_TEST_TMPDIR/r0"
    psql_as legacy_owner legacy -c "UPDATE items SET name = name || '.' WHERE id % 5 = 0"
    migrate_ok "$BATS_TEST_TMPDIR/r" --allow-all
    [[ $(compare "$BATS_TEST_TMPDIR/r") == full ]]
    run -0 grep -F "more than 15% of the rows" "$BATS_TEST_TMPDIR/r/stats/public.items.compare.json"
    same
}
