# Shared by every bats file: assertions, the programs under test on PATH, and a
# throwaway cluster (scripts/pgscratch) per file for the database tests.
#
#   load helpers
#   setup_file()    { scratch_setup_file; }
#   teardown_file() { scratch_teardown_file; }
#   setup()         { scratch_setup; }     # skips the test when SKIP_DB=1

bats_require_minimum_version 1.5.0

if [[ -f /usr/lib/bats/bats-support/load.bash ]]; then
    load /usr/lib/bats/bats-support/load
    load /usr/lib/bats/bats-assert/load
else
    bats_load_library bats-support
    bats_load_library bats-assert
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
BIN="${DRIFTLESS_BIN:-$REPO/bin}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
PGSCRATCH="$REPO/scripts/pgscratch"
export REPO BIN PGBIN
PATH="$BIN:$REPO/scripts:$PATH"
export PATH

# Start a cluster for this file and export PGHOST, PGPORT, PGSCRATCH_DIR,
# PGSCRATCH_SUPERUSER, SOURCE_DATABASE_URL and TARGET_DATABASE_URL.
# The directory is under /tmp, not BATS_FILE_TMPDIR: the postgres OS user must
# reach it, and the socket path must stay under ~107 bytes.
scratch_setup_file() {
    if [[ ${SKIP_DB:-} == 1 ]]; then
        return 0
    fi
    local dir out
    dir="$(mktemp -d /tmp/dlpg.XXXXXX)" || return 1
    export SCRATCH_DIR="$dir"
    if ! out="$("$PGSCRATCH" start "$dir")"; then
        echo "scratch_setup_file: could not start a cluster in $dir" >&2
        return 1
    fi
    eval "$out"
}

# Stop and remove the cluster; teardown_file runs even when tests or setup_file fail.
scratch_teardown_file() {
    if [[ -n ${SCRATCH_DIR:-} && -d $SCRATCH_DIR ]]; then
        if [[ -f $SCRATCH_DIR/.pgscratch ]]; then
            "$PGSCRATCH" stop "$SCRATCH_DIR"
        else
            rmdir "$SCRATCH_DIR"
        fi
    fi
}

# For setup(): bats 1.8 cannot skip from setup_file, so each test skips here.
scratch_setup() {
    if [[ ${SKIP_DB:-} == 1 ]]; then
        skip "SKIP_DB=1"
    fi
    if [[ -z ${PGSCRATCH_DIR:-} ]]; then
        echo "no scratch cluster: call scratch_setup_file from setup_file" >&2
        return 1
    fi
}

# psql_super DB [psql args]: unaligned, tuples only, stop at the first error.
psql_super() {
    local db="$1"
    shift
    psql_as "$PGSCRATCH_SUPERUSER" "$db" "$@"
}

# psql_as ROLE DB [psql args]: the same, logged in as ROLE.
psql_as() {
    local role="$1" db="$2"
    shift 2
    "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -q -At -h "$PGHOST" -p "$PGPORT" -U "$role" -d "$db" "$@"
}

# checksum_table DB TABLE: md5 of every row's text, in a stable (byte) order.
# TABLE is SQL as written (may be schema-qualified and quoted).
checksum_table() {
    local db="$1" table="$2"
    psql_super "$db" -c "SELECT md5(count(*)::text || E'\\n' ||
        coalesce(string_agg((t.*)::text, E'\\n' ORDER BY (t.*)::text COLLATE \"C\"), ''))
        FROM $table AS t"
}

# The shop fixture (scripts/shop-fixture):
# shop_load: its legacy source and migrated target in this file's cluster;
# SHOP is its directory, MAP its table map.
shop_load() {
    export SHOP="$BATS_FILE_TMPDIR/shop"
    "$REPO/scripts/shop-fixture" load --dir "$SHOP" >/dev/null
    export MAP="$SHOP/shop.map"
}

# shop_uuids: every migrated row's legacy id and UUID, for "never reissued" checks.
shop_uuids() {
    psql_super target -c "
        SELECT 'customers', legacy_id::text, id FROM customers WHERE legacy_id IS NOT NULL
        UNION ALL SELECT 'orders', legacy_id::text, id FROM orders WHERE legacy_id IS NOT NULL
        UNION ALL SELECT 'order_items', legacy_id::text, id FROM order_items WHERE legacy_id IS NOT NULL
        UNION ALL SELECT 'employees', legacy_id::text, id FROM employees WHERE legacy_id IS NOT NULL
        UNION ALL SELECT 'stores', legacy_id::text, id FROM stores WHERE legacy_id IS NOT NULL
        UNION ALL SELECT 'events', legacy_id::text, id FROM events WHERE legacy_id IS NOT NULL
        UNION ALL SELECT 'regions', NULL, id FROM regions
        ORDER BY 1, 2, 3"
}

# shop_uuids_kept BEFORE: every UUID of BEFORE (shop_uuids' output) is still its row's,
# unless the row is gone.
shop_uuids_kept() {
    local gone table legacy n
    gone=$(LC_ALL=C comm -23 <(printf '%s\n' "$1" | LC_ALL=C sort) \
        <(shop_uuids | LC_ALL=C sort) | awk -F'|' '{print $1, $2}')
    while read -r table legacy; do
        [[ -z $table ]] && continue
        [[ $table == regions ]] && continue
        n=$(psql_super target -c "SELECT count(*) FROM $table WHERE legacy_id::text = '$legacy'")
        [[ $n == 0 ]] || fail "$table legacy id $legacy got a new UUID"
    done <<<"$gone"
}
