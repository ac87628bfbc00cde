#!/usr/bin/env bats
# scripts/sync, the cron wrapper, on the shop fixture: the lock, silence on
# success and one line on failure, the .env file, file modes, logs and
# retention, and resume after SIGKILL at several points (the kill sent to the
# process group, as a killed cron job's would be) or of the wrapper alone.

load helpers

setup_file() {
    scratch_setup_file
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    shop_load
    export ROUND_FILE="$BATS_FILE_TMPDIR/round"
    echo 0 >"$ROUND_FILE"
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    export STATE="$BATS_TEST_TMPDIR/state"
}

# dsync ARG...: sync, its whole process group killed if it outlives
# $SYNC_TIMEOUT seconds (a hung stage fails the test instead of hanging it).
dsync() {
    timeout -s KILL "${SYNC_TIMEOUT:-400}" "$REPO/scripts/sync" "$@"
}

# drift: the fixture's next round of source changes (new children of new
# parents, a new store with its manager, a closed store, re-keyed tags, a row
# moved to another partition, a cascading delete, a re-created customer).
drift() {
    local r
    r=$(($(cat "$ROUND_FILE") + 1))
    echo "$r" >"$ROUND_FILE"
    "$REPO/scripts/shop-fixture" drift "$r" >/dev/null
}

# in_sync: source and target hold the same rows, compared in source form
# (legacy ids, foreign keys as the parent's legacy id, computed columns out).
in_sync() {
    rm -rf "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
    "$REPO/scripts/shop-fixture" export source "$BATS_TEST_TMPDIR/s" --dir "$SHOP"
    "$REPO/scripts/shop-fixture" export target "$BATS_TEST_TMPDIR/t" --dir "$SHOP"
    diff -r "$BATS_TEST_TMPDIR/s" "$BATS_TEST_TMPDIR/t"
}

# no_duplicates: no legacy id twice in any table.
no_duplicates() {
    local t
    for t in customers orders order_items employees stores events; do
        run -0 psql_super target -c "SELECT count(*) FROM (SELECT legacy_id FROM $t
            WHERE legacy_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d"
        [[ $output == 0 ]] || fail "$t: a legacy id is there twice"
    done
}

resumed_runs() {
    psql_super target -c "SELECT count(*) FROM driftless.runs WHERE resumed"
}

# shim_bin DIR: DIR holds the programs under test, as links, for shims to replace.
shim_bin() {
    local p
    mkdir -p "$1"
    for p in "$BIN"/*; do
        ln -sf "$p" "$1/$(basename "$p")"
    done
}

# killer DIR PROG N MATCH: PROG's Nth call whose arguments hold MATCH kills
# its whole process group, as pgapply's failpoint does.
killer() {
    local dir=$1 prog=$2 n=$3 match=$4
    shim_bin "$dir"
    rm -f "$dir/$prog"
    cat >"$dir/$prog" <<EOF
#!/bin/sh
case " \$* " in
*"$match"*)
    n=\$((\$(cat "$dir/count" 2>/dev/null || echo 0) + 1))
    echo "\$n" >"$dir/count"
    [ "\$n" -lt $n ] || kill -s KILL 0
    ;;
esac
exec "$BIN/$prog" "\$@"
EOF
    chmod +x "$dir/$prog"
}

# kill_and_resume PROG N MATCH: one drift round; a sync killed (whole group)
# at PROG's Nth matching call; the next sync resumes and converges.
kill_and_resume() {
    drift
    local before
    before=$(shop_uuids)
    killer "$BATS_TEST_TMPDIR/shim" "$1" "$2" "$3"
    # dsync's timeout runs sync in a process group of its own: the kill's target.
    DRIFTLESS_BIN="$BATS_TEST_TMPDIR/shim" run dsync --map "$MAP" --state-dir "$STATE"
    [[ $status -eq 137 ]] || fail "the kill at $1 call $2 did not stop the sync (exit $status)"
    [[ -f $STATE/current ]] || fail "no current run left for resume"
    [[ -n $(cat "$BATS_TEST_TMPDIR/shim/count") ]]
    n_resumed=$(resumed_runs)
    run -0 --separate-stderr dsync --map "$MAP" --state-dir "$STATE"
    [[ -z $output && -z $stderr ]] || fail "the resumed sync printed: $output $stderr"
    grep -q 'stage=start resumed' "$STATE/logs/main.log"
    [[ ! -e $STATE/current ]]
    in_sync
    no_duplicates
    shop_uuids_kept "$before"
    [[ $(resumed_runs) -gt $n_resumed ]] || fail "the run is not marked resumed"
}

@test "sync: --help, --version and usage errors" {
    run -0 --separate-stderr sync --help
    assert_output --partial "Usage: sync --map FILE"
    [[ -z $stderr ]]
    run -0 --separate-stderr sync --version
    assert_output "sync (driftless) 0.1.0"
    run -2 --separate-stderr sync --bogus
    [[ -z $output ]]
    [[ $stderr == *"unrecognized option '--bogus'"* && $stderr == *"Try 'sync --help'"* ]]
    run -2 --separate-stderr sync --state-dir "$STATE"
    [[ $stderr == *"--map is required"* ]]
    run -2 --separate-stderr sync --map x --keep-runs many
    [[ $stderr == *"not a number"* ]]
}

@test "sync: an .env file that group or others may read is refused (exit 6)" {
    mkdir -p "$STATE"
    printf 'TARGET_DATABASE_URL=host=/nonexistent\n' >"$STATE/.env"
    chmod 644 "$STATE/.env"
    printf '[public.x]\nlegacy_key = id\n' >"$BATS_TEST_TMPDIR/x.map"
    run -6 --separate-stderr sync --map "$BATS_TEST_TMPDIR/x.map" --state-dir "$STATE"
    [[ -z $output ]]
    [[ $(printf '%s\n' "$stderr" | wc -l) -eq 1 ]]
    [[ $stderr == *"$STATE/.env"*"0644"* ]] || fail "unexpected message: $stderr"
    grep -q 'ERROR run=- table=- stage=start .*0644' "$STATE/logs/main.log"
    # An explicit --env-file is checked the same way; a missing one is an I/O error.
    chmod 640 "$STATE/.env"
    run -6 --separate-stderr sync --map "$BATS_TEST_TMPDIR/x.map" --state-dir "$STATE" \
        --env-file "$STATE/.env"
    run -3 --separate-stderr sync --map "$BATS_TEST_TMPDIR/x.map" --state-dir "$STATE" \
        --env-file "$STATE/none"
    # A malformed line is named by number, never shown (it may hold a password).
    printf 'SOURCE_DATABASE_URL=x\nthis is password=SENTINEL_LINE\n' >"$STATE/.env"
    chmod 600 "$STATE/.env"
    run -4 --separate-stderr sync --map "$BATS_TEST_TMPDIR/x.map" --state-dir "$STATE"
    [[ $stderr == *"line 2"* && $stderr != *SENTINEL* ]] || fail "unexpected message: $stderr"
    run ! grep -r SENTINEL_LINE "$STATE/logs"
}

@test "sync: main.log is rotated beyond 10 MiB, five kept; a failure is one line" {
    mkdir -p "$STATE/logs"
    head -c 10485761 /dev/zero | tr '\0' 'x' >"$STATE/logs/main.log"
    for i in 1 2 3 4 5; do echo "old $i" >"$STATE/logs/main.log.$i"; done
    printf '[public.x]\nlegacy_key = id\n' >"$BATS_TEST_TMPDIR/x.map"
    SOURCE_DATABASE_URL="host=$BATS_TEST_TMPDIR/nosuchdir dbname=x" \
        TARGET_DATABASE_URL="host=$BATS_TEST_TMPDIR/nosuchdir dbname=y" \
        run --separate-stderr sync --map "$BATS_TEST_TMPDIR/x.map" --state-dir "$STATE"
    [[ $status -ne 0 && -z $output ]]
    [[ $(printf '%s\n' "$stderr" | wc -l) -eq 1 ]] || fail "more than one line: $stderr"
    [[ $stderr == "sync: run "*" failed (exit $status) "*"; see $STATE/logs/"*.log ]] ||
        fail "unexpected message: $stderr"
    [[ $(wc -c <"$STATE/logs/main.log.1") -eq 10485761 ]]
    [[ $(cat "$STATE/logs/main.log.2") == "old 1" && $(cat "$STATE/logs/main.log.5") == "old 4" ]]
    [[ ! -e $STATE/logs/main.log.6 ]]
    [[ $(wc -c <"$STATE/logs/main.log") -lt 10000 ]]
    grep -q 'stage=finish exit' "$STATE/logs/main.log"
}

@test "sync: a successful run prints nothing; .env from the state dir; no password anywhere; modes 0600/0700; retention" {
    scratch_setup
    mkdir -p "$STATE/runs" "$STATE/logs"
    cat >"$STATE/.env" <<EOF
# driftless connections (a comment, a blank line, export and both quotes)

export SOURCE_DATABASE_URL='$SOURCE_DATABASE_URL'
TARGET_DATABASE_URL="$TARGET_DATABASE_URL password=SENTINEL_PW_31337"  # the owner
OTHER_SECRET=not-exported
EOF
    chmod 600 "$STATE/.env"
    # Earlier runs: the oldest beyond --keep-runs, one older than --keep-days, one recent.
    for id in 20200101T000000Z 20200102T000000Z 20200103T000000Z; do
        mkdir -p "$STATE/runs/$id"
        echo x >"$STATE/logs/$id.log"
    done
    touch -d '40 days ago' "$STATE/runs/20200102T000000Z" "$STATE/logs/20200102T000000Z.log"
    chmod 700 "$STATE/runs"/*
    chmod 600 "$STATE/logs"/*
    run -0 --separate-stderr env -u SOURCE_DATABASE_URL -u TARGET_DATABASE_URL \
        timeout -s KILL 400 "$REPO/scripts/sync" --map "$MAP" --state-dir "$STATE" --keep-runs 3 --keep-days 30
    [[ -z $output && -z $stderr ]] || fail "a successful sync printed: $output $stderr"
    in_sync
    [[ ! -e $STATE/current ]]
    run -0 grep -c 'stage=finish exit 0' "$STATE/logs/main.log"
    assert_output 1
    if [[ -x $REPO/scripts/report ]]; then
        compgen -G "$STATE/runs/2*/report.html" >/dev/null || fail "no report.html"
    fi
    # Every line of the logs has the format; counts are logged per table.
    run grep -Ehv '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z (INFO|WARN|ERROR) run=[^ ]+ table=[^ ]+ stage=[^ ]+ ' \
        "$STATE/logs/main.log" "$STATE/logs/$(ls "$STATE/runs" | tail -n 1).log"
    [[ $status -eq 1 ]] || fail "badly formed log lines: $output"
    grep -q 'table=public.orders stage=apply inserted 0, updated 0, deleted 0' "$STATE/logs/main.log"
    grep -q 'table=public.orders stage=validate .*matched 902' "$STATE/logs/main.log"
    # No trace of the password in logs, run directories and reports, nor in the state schema.
    run grep -r -l SENTINEL_PW --exclude=.env "$STATE"
    [[ $status -eq 1 ]] || fail "the password is in: $output"
    run -0 psql_super target -c "SELECT count(*) FROM driftless.runs r WHERE r::text LIKE '%SENTINEL%'"
    assert_output 0
    run -0 find "$STATE" ! -type d ! -perm 600
    [[ -z $output ]] || fail "files not 0600: $output"
    run -0 find "$STATE" -type d ! -perm 700
    [[ -z $output ]] || fail "directories not 0700: $output"
    # Retention: the oldest by count, the old one by age; the recent one and this run stay.
    run -0 ls "$STATE/runs"
    [[ $(echo "$output" | wc -l) -eq 2 && $output == "20200103T000000Z"* ]] || fail "runs left: $output"
    [[ ! -e $STATE/logs/20200101T000000Z.log && ! -e $STATE/logs/20200102T000000Z.log ]]
    [[ -e $STATE/logs/20200103T000000Z.log ]]
    # --verbose prints the log lines.
    run -0 --separate-stderr dsync --map "$MAP" --state-dir "$STATE" --verbose
    assert_output --partial "stage=finish exit 0"
}

@test "sync: two syncs started at once: one runs, the other exits 7 and logs why" {
    scratch_setup
    local r1=0 r2=0
    dsync --map "$MAP" --state-dir "$STATE" >"$BATS_TEST_TMPDIR/o1" 2>"$BATS_TEST_TMPDIR/e1" &
    local p1=$!
    dsync --map "$MAP" --state-dir "$STATE" >"$BATS_TEST_TMPDIR/o2" 2>"$BATS_TEST_TMPDIR/e2" &
    local p2=$!
    wait "$p1" || r1=$?
    wait "$p2" || r2=$?
    [[ "$(printf '%s\n' "$r1" "$r2" | sort | tr '\n' ' ')" == "0 7 " ]] || fail "exits $r1 and $r2"
    local loser=1
    [[ $r2 -eq 7 ]] && loser=2
    [[ ! -s $BATS_TEST_TMPDIR/o$loser ]]
    [[ $(wc -l <"$BATS_TEST_TMPDIR/e$loser") -eq 1 ]]
    grep -q 'another sync holds the lock' "$BATS_TEST_TMPDIR/e$loser"
    grep -q 'WARN run=- table=- stage=lock another sync holds the lock' "$STATE/logs/main.log"
    run -0 grep -c 'stage=finish exit 0' "$STATE/logs/main.log"
    assert_output 1
}

@test "sync: a dangling foreign key fails with one line naming the table and the log (exit 4)" {
    scratch_setup
    # Planted past the foreign key's trigger, so that the key stays for the drift rounds.
    psql_super legacy -c "SET session_replication_role = replica;
        INSERT INTO order_items (id, order_id, sku, qty, price) VALUES (77777777, 99999999, 'x', 1, 1)"
    run -4 --separate-stderr dsync --map "$MAP" --state-dir "$STATE"
    psql_super legacy -c "DELETE FROM order_items WHERE id = 77777777"
    [[ -z $output ]]
    [[ $(printf '%s\n' "$stderr" | wc -l) -eq 1 ]] || fail "more than one line: $stderr"
    [[ $stderr =~ ^sync:\ run\ ([0-9TZ-]+)\ failed\ \(exit\ 4\)\ at\ table\ public\.order_items\;\ see\ (.*)$ ]] ||
        fail "unexpected message: $stderr"
    local log=${BASH_REMATCH[2]}
    [[ $log == "$STATE/logs/${BASH_REMATCH[1]}.log" && -f $log ]]
    grep -q 'ERROR .* table=public.order_items stage=migrate idmap: .*99999999' "$log"
    grep -q 'ERROR .* table=public.order_items stage=finish exit 4' "$STATE/logs/main.log"
    # The run is over: the next sync starts a new one.
    [[ ! -e $STATE/current ]]
}

@test "sync: killed by SIGKILL after a committed batch, started again: converges, resumed" {
    scratch_setup
    drift
    local before
    before=$(shop_uuids)
    # pgapply's failpoint kills its process group: dsync's timeout gives sync one.
    DRIFTLESS_FAILPOINT=pgapply:after-commit:1 run dsync --map "$MAP" --state-dir "$STATE" \
        --batch-rows 2
    [[ $status -eq 137 ]] || fail "the failpoint did not stop the sync (exit $status)"
    [[ -f $STATE/current && -f $STATE/runs/$(cat "$STATE/current")/computed ]]
    n_resumed=$(resumed_runs)
    run -0 --separate-stderr dsync --map "$MAP" --state-dir "$STATE"
    [[ -z $output && -z $stderr ]] || fail "the resumed sync printed: $output $stderr"
    grep -q 'stage=start resumed' "$STATE/logs/main.log"
    in_sync
    no_duplicates
    shop_uuids_kept "$before"
    [[ $(resumed_runs) -gt $n_resumed ]] || fail "the run is not marked resumed"
}

@test "sync: killed during the dump, started again: computes again, converges" {
    scratch_setup
    kill_and_resume pgdump-rows 6 "--snapshot"
    # Killed in compute: the resumed run computed again in fresh snapshots.
    run -0 grep -c 'stage=migrate/compute snapshots' "$STATE/logs/$(ls "$STATE/runs").log"
    [[ $output -ge 2 ]] || fail "compute did not run again"
}

@test "sync: killed during the diff, started again: converges" {
    scratch_setup
    kill_and_resume rowdiff 3 ""
}

@test "sync: killed between tables of the delete phase, started again: converges" {
    scratch_setup
    kill_and_resume pgapply 3 "--phase delete"
}

@test "sync: killed during validate, started again: converges" {
    scratch_setup
    kill_and_resume pgverify 2 " --json "
}

@test "sync: the wrapper alone killed: its children keep the lock (exit 7), then it resumes" {
    scratch_setup
    drift
    local before shim=$BATS_TEST_TMPDIR/slow
    before=$(shop_uuids)
    # A slow apply, so that the children outlive the wrapper for a while.
    shim_bin "$shim"
    rm -f "$shim/pgapply"
    printf '#!/bin/sh\ncase " $* " in *" --phase upsert "*) sleep 2 ;; esac\nexec "%s/pgapply" "$@"\n' \
        "$BIN" >"$shim/pgapply"
    chmod +x "$shim/pgapply"
    DRIFTLESS_BIN=$shim "$REPO/scripts/sync" --map "$MAP" --state-dir "$STATE" \
        >"$BATS_TEST_TMPDIR/o1" 2>"$BATS_TEST_TMPDIR/e1" &
    local wrapper=$! i
    for ((i = 0; i < 1200; i++)); do
        compgen -G "$STATE/runs/*/computed" >/dev/null && break
        sleep 0.1
    done
    compgen -G "$STATE/runs/*/computed" >/dev/null || fail "the sync never reached apply"
    kill -KILL "$wrapper"
    wait "$wrapper" || true
    run -7 --separate-stderr sync --map "$MAP" --state-dir "$STATE"
    [[ $stderr == *"another sync holds the lock"* ]]
    # Once the children are done, the lock is free and the next sync resumes.
    for ((i = 0; i < 1800; i++)); do
        flock -n "$STATE/lock" true && break
        sleep 0.1
    done
    n_resumed=$(resumed_runs)
    run -0 --separate-stderr dsync --map "$MAP" --state-dir "$STATE"
    [[ -z $output && -z $stderr ]] || fail "the resumed sync printed: $output $stderr"
    grep -q 'stage=start resumed' "$STATE/logs/main.log"
    in_sync
    no_duplicates
    shop_uuids_kept "$before"
    [[ $(resumed_runs) -gt $n_resumed ]] || fail "the run is not marked resumed"
}

@test "sync --full: every table compared in full, where a sync without it compares from the watermarks" {
    scratch_setup
    # A first run leaves watermarks; the next one uses them where it can.
    run -0 dsync --map "$MAP" --state-dir "$STATE"
    drift
    run -0 dsync --map "$MAP" --state-dir "$STATE"
    inc=$(ls -d "$STATE"/runs/* | tail -n 1)
    run -0 cat "$inc"/stats/*.compare.json
    assert_output --partial '"compare":"incremental"'
    drift
    run -0 --separate-stderr dsync --map "$MAP" --state-dir "$STATE" --full
    [[ -z $output && -z $stderr ]] || fail "a successful sync printed: $output $stderr"
    full=$(ls -d "$STATE"/runs/* | tail -n 1)
    [[ $full != "$inc" ]]
    n=$(ls "$full"/stats/*.compare.json | wc -l)
    ((n > 1)) || fail "compare files: $n"
    run -0 grep -L '"compare":"full"' "$full"/stats/*.compare.json
    [[ -z $output ]] || fail "not compared in full: $output"
    # The tables the run before compared incrementally, because of --full.
    for f in $(grep -l '"compare":"incremental"' "$inc"/stats/*.compare.json); do
        run -0 grep -F '"reason":"--full"' "$full/stats/$(basename "$f")"
    done
    in_sync
    no_duplicates
}
