#!/usr/bin/env bats
# scripts/schedule against a crontab stub ($CRONTAB keeps the crontab in a
# file), the next-run computation, and the systemd units and logrotate snippet
# in share/. No database.

load helpers

setup() {
    export CRONTAB="$BATS_TEST_TMPDIR/crontab-stub"
    export CRONTAB_FILE="$BATS_TEST_TMPDIR/crontab"
    cat >"$CRONTAB" <<'EOF'
#!/bin/sh
# A crontab(1) stand-in: -l prints the crontab, - replaces it with stdin.
case ${1:-} in
-l)
    [ -f "$CRONTAB_FILE" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }
    cat "$CRONTAB_FILE"
    ;;
-) cat >"$CRONTAB_FILE" ;;
*) echo "crontab-stub: usage" >&2; exit 2 ;;
esac
EOF
    chmod +x "$CRONTAB"
    export STATE="$BATS_TEST_TMPDIR/state dir"
    export MAP="$BATS_TEST_TMPDIR/shop.map"
    printf '[public.x]\nlegacy_key = id\n' >"$MAP"
}

@test "schedule: --help, --version and usage errors" {
    run -0 --separate-stderr schedule --help
    assert_output --partial "Usage: schedule install"
    [[ -z $stderr ]]
    run -0 --separate-stderr schedule --version
    assert_output "schedule (driftless) 0.1.0"
    run -2 --separate-stderr schedule --bogus
    [[ $stderr == *"unrecognized option '--bogus'"* && $stderr == *"Try 'schedule --help'"* ]]
    run -2 --separate-stderr schedule
    run -2 --separate-stderr schedule frobnicate
    run -2 --separate-stderr schedule install hourly
    [[ $stderr == *"--map"* ]]
    run -2 --separate-stderr schedule install '61 * * * *' --map "$MAP"
    run -2 --separate-stderr schedule install '* * *' --map "$MAP"
    run -2 --separate-stderr schedule install '* * * * * ; rm -rf ~' --map "$MAP"
    run -3 --separate-stderr schedule install hourly --map "$BATS_TEST_TMPDIR/none.map"
    [[ ! -e $CRONTAB_FILE ]]
}

@test "schedule: install -> status -> remove round trip, idempotent, other entries kept" {
    printf 'MAILTO=dba@example.net\n15 2 * * * /usr/local/bin/backup --all\n' >"$CRONTAB_FILE"
    run -0 --separate-stderr schedule install hourly --map "$MAP" --state-dir "$STATE"
    assert_output --partial "installed"
    run -0 grep -c '^# driftless-sync$' "$CRONTAB_FILE"
    assert_output 1
    # The entry: five fields, the sync script and absolute, quoted paths.
    run -0 grep -A1 '^# driftless-sync$' "$CRONTAB_FILE"
    assert_line --index 1 "0 * * * * '$REPO/scripts/sync' --map '$MAP' --state-dir '$STATE'"
    cp "$CRONTAB_FILE" "$BATS_TEST_TMPDIR/once"
    # Twice: one entry, the same crontab.
    run -0 --separate-stderr schedule install hourly --map "$MAP" --state-dir "$STATE"
    assert_output --partial "already installed"
    cmp "$CRONTAB_FILE" "$BATS_TEST_TMPDIR/once"

    # status: the entry, the last run from sync's main log, the next run.
    mkdir -p "$STATE/logs"
    cat >"$STATE/logs/main.log" <<'EOF'
2026-11-25T12:00:40Z INFO run=20261125T120001Z table=- stage=finish exit 0: ok in 39 s
2026-11-25T13:00:12Z INFO run=20261125T130001Z table=- stage=start run 20261125T130001Z started
2026-11-25T13:00:50Z ERROR run=20261125T130001Z table=public.orders stage=finish exit 4: failed in migrate at table public.orders
2026-11-25T13:00:51Z WARN run=- table=- stage=lock another sync holds the lock
EOF
    SCHEDULE_NOW='2026-11-25 13:05' run -0 --separate-stderr schedule status
    assert_line --partial "schedule:  0 * * * * (hourly)"
    assert_line "state:     $STATE"
    assert_line "last run:  20261125T130001Z, finished 2026-11-25T13:00:50Z: exit 4: failed in migrate at table public.orders"
    assert_line --regexp '^next run:  2026-11-25 14:00 '

    # daily replaces hourly: still one entry.
    run -0 --separate-stderr schedule install daily --map "$MAP" --state-dir "$STATE"
    run -0 grep -c 'driftless-sync\|scripts/sync' "$CRONTAB_FILE"
    assert_output 2
    SCHEDULE_NOW='2026-11-25 13:05' run -0 --separate-stderr schedule status
    assert_line --regexp '^next run:  2026-11-26 04:00 '

    run -0 --separate-stderr schedule remove
    assert_output "schedule: removed"
    run -0 cat "$CRONTAB_FILE"
    assert_output "MAILTO=dba@example.net
15 2 * * * /usr/local/bin/backup --all"
    run -0 --separate-stderr schedule remove
    assert_output "schedule: no entry to remove"
    run -1 --separate-stderr schedule status
    assert_output "schedule: not installed"
}

@test "schedule: no crontab yet; custom expressions; the next run is computed" {
    run -0 --separate-stderr schedule install '*/15 9-17 * * 1-5' --map "$MAP" --state-dir "$STATE"
    # Saturday 10:00 -> Monday 09:00.
    SCHEDULE_NOW='2026-11-28 10:00' run -0 --separate-stderr schedule status
    assert_line --regexp '^next run:  2026-11-30 09:00 '
    assert_line "last run:  none yet"
    # Both day fields restricted: either one matches, as cron does.
    run -0 --separate-stderr schedule install '0 12 13 * fri' --map "$MAP" --state-dir "$STATE"
    SCHEDULE_NOW='2026-11-25 13:05' run -0 --separate-stderr schedule status
    assert_line --regexp '^next run:  2026-11-27 12:00 '
    run -0 --separate-stderr schedule install '0 0 29 2 *' --map "$MAP" --state-dir "$STATE"
    SCHEDULE_NOW='2026-11-25 13:05' run -0 --separate-stderr schedule status
    assert_line --regexp '^next run:  2028-02-29 00:00 '
    run -0 --separate-stderr schedule install '@weekly' --map "$MAP" --state-dir "$STATE"
    SCHEDULE_NOW='2026-11-25 13:05' run -0 --separate-stderr schedule status
    assert_line --regexp '^next run:  2026-11-29 00:00 '
    run -0 grep -c '^# driftless-sync$' "$CRONTAB_FILE"
    assert_output 1
}

@test "schedule: a % in a path is escaped for cron; the state dir is read back" {
    local odd="$BATS_TEST_TMPDIR/50% it's"
    run -0 --separate-stderr schedule install hourly --map "$MAP" --state-dir "$odd"
    run -0 grep -F "\\%" "$CRONTAB_FILE"
    run -0 --separate-stderr schedule status
    assert_line "state:     $odd"
}

@test "schedule: an .env file that group or others may read is refused (exit 6)" {
    printf 'TARGET_DATABASE_URL=x\n' >"$BATS_TEST_TMPDIR/env"
    chmod 604 "$BATS_TEST_TMPDIR/env"
    run -6 --separate-stderr schedule install hourly --map "$MAP" --env-file "$BATS_TEST_TMPDIR/env"
    [[ $stderr == *"0604"* ]]
    [[ ! -e $CRONTAB_FILE ]]
    chmod 600 "$BATS_TEST_TMPDIR/env"
    run -0 --separate-stderr schedule install hourly --map "$MAP" --env-file "$BATS_TEST_TMPDIR/env" \
        --state-dir "$STATE"
    grep -qF -- "--env-file '$BATS_TEST_TMPDIR/env'" "$CRONTAB_FILE"
}

@test "schedule: a failing crontab -l is not taken for an empty crontab" {
    printf '#!/bin/sh\necho "crontab: cannot open /var/spool" >&2\nexit 1\n' >"$CRONTAB"
    run -3 --separate-stderr schedule install hourly --map "$MAP" --state-dir "$STATE"
    [[ $stderr == *"could not read the crontab"* ]]
    CRONTAB=/nonexistent/crontab run -3 --separate-stderr schedule status
}

@test "schedule: the systemd units pass systemd-analyze verify" {
    command -v systemd-analyze >/dev/null || skip "systemd-analyze is not installed"
    local d=$BATS_TEST_TMPDIR/units
    mkdir -p "$d"
    # verify wants ExecStart's program to exist: point it at this tree's sync.
    sed "s#/usr/local/bin/driftless-sync#$REPO/scripts/sync#" \
        "$REPO/share/systemd/driftless-sync.service" >"$d/driftless-sync.service"
    cp "$REPO/share/systemd/driftless-sync.timer" "$d/"
    run -0 --separate-stderr systemd-analyze verify --man=no "$d/driftless-sync.service" \
        "$d/driftless-sync.timer"
    # It only warns about a setting it cannot parse: there must be none.
    [[ -z $stderr && -z $output ]] || fail "systemd-analyze: $output $stderr"
    grep -qx 'OnCalendar=hourly' "$d/driftless-sync.timer"
    grep -qx 'Type=oneshot' "$d/driftless-sync.service"
}

@test "schedule: the logrotate snippet parses" {
    command -v logrotate >/dev/null || skip "logrotate is not installed"
    # Its account is a placeholder: use one that exists here.
    sed "s/driftless driftless/$(id -un) $(id -gn)/" "$REPO/share/logrotate/driftless" \
        >"$BATS_TEST_TMPDIR/lr.conf"
    run -0 --separate-stderr logrotate --debug --state "$BATS_TEST_TMPDIR/lr.state" \
        "$BATS_TEST_TMPDIR/lr.conf"
    [[ $stderr$output != *error* ]] || fail "logrotate: $output $stderr"
    [[ $stderr$output == *"Handling 1 logs"* ]] || fail "logrotate: $output $stderr"
}
