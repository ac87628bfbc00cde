#!/usr/bin/env bats
# scripts/audit on the shop fixture: four migrate runs in which one legacy key
# (customer 1000001, new in drift round 1) is inserted, updated, deleted and
# created again under its original UUID; the history of a run, of a table and
# of that key; retention that prunes old runs and keeps the mapping; the
# connection string handed to psql through its environment, never argv.

load helpers

KEY=public.customers:1000001

setup_file() {
    scratch_setup_file
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    shop_load
    local step rc
    for step in a b c d; do
        case $step in
        a) "$REPO/scripts/shop-fixture" drift 1 >/dev/null ;;
        b) psql_as legacy_owner legacy -c "UPDATE customers SET name = 'renamed for the audit' WHERE id = 1000001" ;;
        c) psql_as legacy_owner legacy -c "DELETE FROM customers WHERE id = 1000001" ;;
        d) psql_as legacy_owner legacy -c "INSERT INTO customers (id, region_id, name, email)
               VALUES (1000001, 2, 'back again', 'back-again@example.com')" ;;
        esac
        # Rows rejected by the run (exit 1) do not concern these tests.
        rc=0
        "$REPO/scripts/migrate" --map "$SHOP/shop.map" --run-dir "$BATS_FILE_TMPDIR/$step" \
            --quiet 2>/dev/null || rc=$?
        if ((rc > 1)); then
            echo "setup_file: migrate (step $step) exited $rc" >&2
            return 1
        fi
    done
    export RUN_A RUN_B RUN_C RUN_D
    RUN_A=$(cat "$BATS_FILE_TMPDIR/a/run.id")
    RUN_B=$(cat "$BATS_FILE_TMPDIR/b/run.id")
    RUN_C=$(cat "$BATS_FILE_TMPDIR/c/run.id")
    RUN_D=$(cat "$BATS_FILE_TMPDIR/d/run.id")
}

teardown_file() {
    scratch_teardown_file
}

# csv_rows: the data rows of audit's CSV on stdin, one per line, fields split by |.
csv_rows() {
    python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
for r in rows[1:]:
    print("|".join(r))
'
}

@test "audit --key: a legacy key inserted, updated, deleted and restored across four runs" {
    scratch_setup
    uuid=$(psql_super target -c "SELECT uuid FROM driftless.crosswalk
        WHERE table_name = 'public.customers' AND legacy_key = '1000001'")
    [[ -n $uuid ]]
    run -0 --separate-stderr audit --key "$KEY" --csv
    run -0 csv_rows <<<"$output"
    # n|time|run|operation|uuid|batch|program|run_status
    run -0 awk -F'|' '{ print $3, $4, $5 }' <<<"$output"
    assert_output "$RUN_A inserted $uuid
$RUN_B updated $uuid
$RUN_C deleted $uuid
$RUN_D restored $uuid"
    # The same history for people, in time order.
    run -0 --separate-stderr audit --key "$KEY"
    assert_line --index 0 "history of public.customers key 1000001:"
    [[ $output =~ inserted.*updated.*deleted.*restored ]] || fail "not in order: $output"
    # A composite key, as a JSON array, however it is spaced.
    run -0 --separate-stderr audit --key 'public.product_tags:["SKU-0001","round 1"]' --csv
    run -0 csv_rows <<<"$output"
    run -0 awk -F'|' '{ print $3, $4 }' <<<"$output"
    assert_output "$RUN_A inserted"
    run -0 --separate-stderr audit --key 'public.product_tags:[ "SKU-0001" , "round 1" ]' --csv
    [[ $output == *",$RUN_A,inserted,"* ]]
    # A key with no history says so and exits 0.
    run -0 --separate-stderr audit --key public.customers:424242
    [[ -z $output && $stderr == *"no change of public.customers key 424242"* ]]
}

@test "audit --run: the run, then per table its counts and status, as the run counted them" {
    scratch_setup
    run -0 --separate-stderr audit --run "$RUN_A"
    assert_line --index 0 --regexp "^run $RUN_A: (ok|rejects) \(exit [01]\)$"
    assert_line --regexp '^  host      .+, user .+, database role target_owner$'
    assert_line --regexp '^  resumed   no$'
    run -0 --separate-stderr audit --run "$RUN_A" --csv
    printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/run.csv"
    run -0 python3 - "$BATS_FILE_TMPDIR/a/summary.jsonl" "$BATS_TEST_TMPDIR/run.csv" "$RUN_A" <<'EOF'
import csv, io, json, sys
run_id = sys.argv[3]
blocks = open(sys.argv[2]).read().strip().split("\n\n")
assert len(blocks) == 3, blocks
run = list(csv.DictReader(io.StringIO(blocks[0])))[0]
assert run["n"] == run_id and run["status"] in ("ok", "rejects"), run
tables = {r["table"]: r for r in csv.DictReader(io.StringIO(blocks[1]))}
summary = [json.loads(l) for l in open(sys.argv[1])]
assert len(tables) == len(summary), (tables.keys(), summary)
for s in summary:
    t = tables[s["table"]]
    got = tuple(int(t[k] or 0) for k in ("inserted", "updated", "deleted", "unchanged", "failed"))
    want = (s["inserted"], s["updated"], s["deleted"], s["unchanged"], s["failed"])
    assert got == want, (s["table"], got, want)
    assert t["status"] == ("rejects" if s["failed"] else "applied"), t
rejects = list(csv.DictReader(io.StringIO(blocks[2])))
assert len(rejects) == sum(s["failed"] for s in summary), rejects
EOF
    run -2 --separate-stderr audit --run 999999
    [[ $stderr == *"run 999999: no such run"* ]]
}

@test "audit --table: the runs that touched a table, with their counts for it" {
    scratch_setup
    run -0 --separate-stderr audit --table public.customers --csv
    run -0 csv_rows <<<"$output"
    # n|run|started_at|finished_at|status|exit_code|resumed|program|inserted|updated|deleted|failed|batches
    run -0 awk -F'|' '{ print $2 }' <<<"$output"
    assert_output "$RUN_A
$RUN_B
$RUN_C
$RUN_D"
    run -0 --separate-stderr audit --table public.customers --csv
    run -0 csv_rows <<<"$output"
    run -0 awk -F'|' -v b="$RUN_B" '$2 == b { print $10 }' <<<"$output"
    assert_output 1
    run -0 --separate-stderr audit --table public.customers --limit 2 --csv
    run -0 csv_rows <<<"$output"
    run -0 awk -F'|' '{ print $2 }' <<<"$output"
    assert_output "$RUN_C
$RUN_D"
    run -0 --separate-stderr audit --table public.nothing_here
    [[ $stderr == *"no run has touched public.nothing_here"* ]]
}

# mapping: a checksum of every mapping table of the state schema.
mapping() {
    for t in crosswalk owned_keys tables created_tables; do
        checksum_table target "driftless.$t"
    done
}

# trail RUN: the run's batches and changes, counted.
trail() {
    psql_super target -c "SELECT (SELECT count(*) FROM driftless.batches WHERE run_id = $1)
        || ' ' || (SELECT count(*) FROM driftless.changes WHERE run_id = $1)"
}

@test "audit --prune-days: old runs go with their batches and changes; the mapping stays" {
    scratch_setup
    before=$(mapping)
    trail_c=$(trail "$RUN_C")
    trail_d=$(trail "$RUN_D")
    [[ $(trail "$RUN_A") != "0 0" ]]
    # Runs A and B ended 40 days ago; two more old runs with no changes: one
    # finished, one still marked running (it is kept).
    psql_super target -c "
        UPDATE driftless.runs SET started_at = started_at - interval '40 days',
               finished_at = finished_at - interval '40 days' WHERE id IN ($RUN_A, $RUN_B);
        INSERT INTO driftless.runs (started_at, finished_at, status, exit_code, program)
        VALUES (now() - interval '90 days', now() - interval '90 days', 'ok', 0, 'test-old'),
               (now() - interval '90 days', NULL, 'running', NULL, 'test-running')"
    old_ok=$(psql_super target -c "SELECT id FROM driftless.runs WHERE program = 'test-old'")
    old_running=$(psql_super target -c "SELECT id FROM driftless.runs WHERE program = 'test-running'")
    # The old runs that the mapping names keep their runs row.
    kept=$(psql_super target -c "SELECT count(DISTINCT id) FROM driftless.runs r WHERE id IN ($RUN_A, $RUN_B)
        AND (EXISTS (SELECT 1 FROM driftless.crosswalk x WHERE x.run_id = r.id)
          OR EXISTS (SELECT 1 FROM driftless.owned_keys k WHERE k.run_id = r.id)
          OR EXISTS (SELECT 1 FROM driftless.tables t WHERE t.run_id = r.id)
          OR EXISTS (SELECT 1 FROM driftless.created_tables c WHERE c.run_id = r.id))")
    batches=$(psql_super target -c "SELECT count(*) FROM driftless.batches WHERE run_id IN ($RUN_A, $RUN_B)")
    changes=$(psql_super target -c "SELECT count(*) FROM driftless.changes WHERE run_id IN ($RUN_A, $RUN_B)")

    run -0 --separate-stderr audit --prune-days 30 --dry-run
    assert_line --index 0 "audit: dry run: would prune 3 run(s) that ended more than 30 days ago: $batches batch(es) and $changes change(s);"
    assert_line --index 1 --partial "audit: $kept of them would keep their runs row"
    [[ $(trail "$RUN_A") != "0 0" ]] || fail "the dry run deleted"
    run -0 psql_super target -c "SELECT count(*) FROM driftless.runs WHERE id = $old_ok"
    assert_output 1

    run -0 --separate-stderr audit --prune-days 30
    assert_line --index 0 "audit: pruned 3 run(s) that ended more than 30 days ago: $batches batch(es) and $changes change(s) deleted;"
    [[ $(trail "$RUN_A") == "0 0" && $(trail "$RUN_B") == "0 0" ]] || fail "old runs left batches or changes"
    [[ $(trail "$RUN_C") == "$trail_c" && $(trail "$RUN_D") == "$trail_d" ]] || fail "a recent run lost its trail"
    [[ $(mapping) == "$before" ]] || fail "pruning changed the mapping"
    run -0 psql_super target -c "SELECT count(*) FROM driftless.runs WHERE id IN ($RUN_A, $RUN_B)"
    assert_output "$kept"
    run -0 psql_super target -c "SELECT count(*) FROM driftless.runs WHERE id = $old_ok"
    assert_output 0
    run -0 psql_super target -c "SELECT count(*) FROM driftless.runs WHERE id = $old_running"
    assert_output 1
    # The key's history now starts after the pruned runs.
    run -0 --separate-stderr audit --key "$KEY" --csv
    run -0 csv_rows <<<"$output"
    run -0 awk -F'|' '{ print $3, $4 }' <<<"$output"
    assert_output "$RUN_C deleted
$RUN_D restored"
    # Nothing left to prune.
    run -0 --separate-stderr audit --prune-days 30
    assert_line --index 0 --partial "audit: pruned 0 run(s)"
}

# fake_psql DIR: a psql on PATH that records its arguments and its PG*
# environment in DIR, then runs the real one.
fake_psql() {
    mkdir -p "$1/bin"
    cat >"$1/bin/psql" <<EOF
#!/bin/sh
printf '%s\n' "\$@" >"$1/argv"
env | grep '^PG' | sort >"$1/env"
exec "$(command -v psql)" "\$@"
EOF
    chmod +x "$1/bin/psql"
}

@test "audit --prune-days: the connection string reaches psql through its environment only (URI and conninfo)" {
    scratch_setup
    d="$BATS_TEST_TMPDIR"
    fake_psql "$d"
    host=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PGHOST")
    # A URI: user and password before @, the socket directory percent-encoded.
    TARGET_DATABASE_URL="postgresql://target_owner:SENTINEL%3Aa%2Fb@/target?host=$host&port=$PGPORT&application_name=audit-test" \
        PATH="$d/bin:$PATH" run -0 --separate-stderr audit --prune-days 3650 --dry-run
    assert_line --index 0 --partial "audit: dry run: would prune"
    [[ $output$stderr != *SENTINEL* ]] || fail "the password was printed"
    run -1 grep -e SENTINEL -e postgresql: -e target_owner "$d/argv"
    run -0 cat "$d/env"
    assert_line "PGPASSWORD=SENTINEL:a/b"
    assert_line "PGHOST=$PGHOST"
    assert_line "PGPORT=$PGPORT"
    assert_line "PGDATABASE=target"
    assert_line "PGUSER=target_owner"
    assert_line "PGAPPNAME=audit-test"
    # A conninfo string, with a quoted value.
    rm -f "$d/argv" "$d/env"
    TARGET_DATABASE_URL="host=$PGHOST port=$PGPORT dbname=target user=target_owner password='SENTINEL it\\'s'" \
        PATH="$d/bin:$PATH" run -0 --separate-stderr audit --prune-days 3650 --dry-run
    assert_line --index 0 --partial "audit: dry run: would prune"
    [[ $output$stderr != *SENTINEL* ]] || fail "the password was printed"
    run -1 grep -e SENTINEL -e dbname= "$d/argv"
    run -0 cat "$d/env"
    assert_line "PGPASSWORD=SENTINEL it's"
    assert_line "PGDATABASE=target"
    assert_line "PGUSER=target_owner"
    # Supabase's transaction pooler is refused before psql runs.
    rm -f "$d/argv" "$d/env"
    TARGET_DATABASE_URL="host=$PGHOST port=6543 dbname=target user=target_owner password=SENTINEL" \
        PATH="$d/bin:$PATH" run -6 --separate-stderr audit --prune-days 30
    [[ $stderr == *"transaction pooler"* && $stderr != *SENTINEL* ]]
    [[ ! -e $d/argv ]] || fail "psql ran"
    # A string that cannot be parsed: exit 5, the string not quoted.
    TARGET_DATABASE_URL="host=$PGHOST password=SENTINEL dbname='target" \
        PATH="$d/bin:$PATH" run -5 --separate-stderr audit --prune-days 30
    [[ $stderr == *"unterminated quoted value of dbname"* && $stderr != *SENTINEL* ]]
    [[ ! -e $d/argv ]] || fail "psql ran"
}

@test "audit: usage errors exit 2" {
    run -2 --separate-stderr audit
    [[ $stderr == *"one of --run, --table, --key or --prune-days is required"* ]]
    [[ $stderr == *"Try 'audit --help'"* ]]
    run -2 --separate-stderr audit --bogus
    [[ $stderr == *"unrecognized option '--bogus'"* ]]
    run -2 --separate-stderr audit --run 1 --table public.x
    run -2 --separate-stderr audit --run abc
    run -2 --separate-stderr audit --key public.customers
    run -2 --separate-stderr audit --prune-days soon
    run -2 --separate-stderr audit --run 1 --dry-run
    run -2 --separate-stderr audit --table public.x --limit 0
    run -2 --separate-stderr audit --run 1 --target-env 'host=x password=SENTINEL'
    [[ $stderr == *"not a connection string"* && $stderr != *SENTINEL* ]]
    run -0 audit --help
    [[ ${lines[0]} == "Usage: audit --run ID [OPTION]..." ]]
    run -0 audit --version
    assert_output "audit (driftless) 0.1.0"
}

@test "audit --key: a legacy key inserted, updated and deleted by three runs, then restored by a rollback" {
    scratch_setup
    k=7000001
    psql_as legacy_owner legacy -c "INSERT INTO customers (id, region_id, name, email)
        VALUES ($k, 2, 'audited', 'audited@example.com')"
    local step rc
    for step in e f g; do
        case $step in
        f) psql_as legacy_owner legacy -c "UPDATE customers SET name = 'audited, renamed' WHERE id = $k" ;;
        g) psql_as legacy_owner legacy -c "DELETE FROM customers WHERE id = $k" ;;
        esac
        rc=0
        migrate --map "$SHOP/shop.map" --table public.customers --run-dir "$BATS_TEST_TMPDIR/$step" \
            --quiet 2>/dev/null || rc=$?
        ((rc <= 1)) || fail "migrate (step $step) exited $rc"
    done
    run_e=$(cat "$BATS_TEST_TMPDIR/e/run.id")
    run_f=$(cat "$BATS_TEST_TMPDIR/f/run.id")
    run_g=$(cat "$BATS_TEST_TMPDIR/g/run.id")
    run -0 --separate-stderr rollback --quiet --run-dir "$BATS_TEST_TMPDIR/h" "$run_g"
    run_h=$(cat "$BATS_TEST_TMPDIR/h/run.id")
    uuid=$(psql_super target -c "SELECT id FROM public.customers WHERE legacy_id = $k")
    [[ -n $uuid ]] || fail "the rollback did not bring the row back"
    run -0 --separate-stderr audit --key "public.customers:$k" --csv
    run -0 csv_rows <<<"$output"
    run -0 awk -F'|' '{ print $3, $4, $5, $7 }' <<<"$output"
    assert_output "$run_e inserted $uuid pgapply
$run_f updated $uuid pgapply
$run_g deleted $uuid pgapply
$run_h restored $uuid rollback"
    # Each run of the pair names the other.
    run -0 --separate-stderr audit --run "$run_g"
    assert_line "  rolled back by run $run_h"
    run -0 --separate-stderr audit --run "$run_h"
    assert_line "  rollback  of run $run_g"
    assert_line --index 1 --regexp '^  program   rollback '
}
