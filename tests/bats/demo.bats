#!/usr/bin/env bats
# The README's demo command (issue 9: "the demo command passes from a clean
# clone in CI"): it runs end to end, says what happened, leaves the target
# equal to the source, and a failing step fails the demo with one line.
# .ci/run has installed the packages and make has built bin/, so the demo runs
# with --no-install.

load helpers

setup() {
    if [[ ${SKIP_DB:-} == 1 ]]; then
        skip "SKIP_DB=1"
    fi
    # Under /tmp: run as root, the server runs as postgres, which must reach it.
    DEMO_DIR=$(mktemp -d /tmp/dldemo.XXXXXX)
    chmod 755 "$DEMO_DIR"
}

teardown() {
    if [[ -n ${DEMO_DIR:-} ]]; then
        if [[ -f $DEMO_DIR/pg/.pgscratch ]]; then
            "$PGSCRATCH" stop "$DEMO_DIR/pg" || true
        fi
        rm -rf "$DEMO_DIR"
    fi
}

# counts_re TABLE: a regular expression for the counts line migrate prints for TABLE.
counts_re() {
    printf '   %s: inserted [0-9]+, updated [0-9]+, deleted [0-9]+, unchanged [0-9]+, failed 0, ' "$1"
}

@test "demo: runs end to end, shows each run's counts, validates and names the HTML report" {
    local start=$SECONDS
    run --separate-stderr "$REPO/scripts/demo" --no-install --keep --dir "$DEMO_DIR" --rounds 2
    echo "$output"
    echo "stderr: $stderr"
    [[ $status -eq 0 ]] || fail "demo exited $status: $stderr"
    echo "# demo took $((SECONDS - start)) s" >&3

    local t n
    for t in public.regions public.customers public.orders public.order_items \
        public.employees public.stores public.product_tags public.events; do
        # The first migration, rounds 1 and 2: one counts line each.
        n=$(grep -cE "^$(counts_re "$t")" <<<"$output")
        [[ $n -eq 3 ]] || fail "$t: $n counts lines, not 3"
        grep -qE "^   $t: would insert [0-9]+, update [0-9]+, delete [0-9]+; unchanged [0-9]+$" \
            <<<"$output" || fail "$t: no dry-run line"
    done
    # The first migration found the earlier migration complete: nothing changed.
    grep -qE "^   public.customers: inserted 0, updated 0, deleted 0, unchanged [1-9]" <<<"$output" ||
        fail "the first migration changed customers"
    # Round 1 moved rows.
    grep -qE "^   public.customers: inserted [1-9]" <<<"$output" || fail "no customer inserted by a sync"
    assert_line "   validate: every table matches; report $DEMO_DIR/runs/validate/validate.txt"
    assert_line "   HTML report of the last run (open it in a browser): $DEMO_DIR/runs/2/report.html"
    [[ -s $DEMO_DIR/runs/2/report.html ]] || fail "no report.html"
    grep -q '</html>' "$DEMO_DIR/runs/2/report.html" || fail "report.html is not a whole page"
    assert_line --regexp '^   done in [0-9]+ s$'

    # The target really equals the source, read with SQL by the fixture's export.
    eval "$("$PGSCRATCH" status "$DEMO_DIR/pg")"
    "$REPO/scripts/shop-fixture" export source "$DEMO_DIR/src" --dir "$DEMO_DIR/shop"
    "$REPO/scripts/shop-fixture" export target "$DEMO_DIR/tgt" --dir "$DEMO_DIR/shop"
    run diff -r "$DEMO_DIR/src" "$DEMO_DIR/tgt"
    [[ $status -eq 0 ]] || fail "target differs from source after the demo: $output"
    # Three changing runs were recorded (the first migration and two syncs); the dry run wrote none.
    run psql_super target -c "SELECT count(*) FROM driftless.runs"
    [[ $output == 3 ]] || fail "driftless.runs has $output rows, not 3"
}

@test "demo: a failing step stops the demo with its exit status and one line naming it" {
    # A copy of the tree whose migrate refuses, as a guard would.
    local tree=$DEMO_DIR/tree f
    mkdir -p "$tree/scripts" "$tree/tests"
    ln -s "$BIN" "$tree/bin"
    ln -s "$REPO/tests/fixtures" "$tree/tests/fixtures"
    for f in "$REPO"/scripts/*; do
        ln -s "$f" "$tree/scripts/${f##*/}"
    done
    rm "$tree/scripts/migrate"
    printf '#!/bin/sh\necho "migrate: public.orders: refused by the delete guard" >&2\nexit 6\n' \
        >"$tree/scripts/migrate"
    chmod 755 "$tree/scripts/migrate"
    run --separate-stderr "$tree/scripts/demo" --no-install --dir "$DEMO_DIR/work"
    echo "$output"
    echo "stderr: $stderr"
    [[ $status -eq 6 ]] || fail "demo exited $status, not migrate's 6"
    # What migrate said is shown, and the demo's own line names the step.
    assert_line "   migrate: public.orders: refused by the delete guard"
    [[ $stderr == "demo: the first migration failed (exit 6); see $DEMO_DIR/work/runs/0/log" ]] ||
        fail "stderr: $stderr"
    refute_output --partial "Round 1"
    # The throwaway cluster is stopped and removed all the same.
    [[ ! -e $DEMO_DIR/work/pg ]] || fail "the cluster was left behind"
}
