# Shared by the benchmarks (bash): messages, option checks, timing, the
# scratch cluster's psql, and the PATH shim that runs each program under GNU
# time. Sourced after the caller sets prog (its name) and PGBIN.
# shellcheck shell=bash
# prog and PGBIN are the caller's.
# shellcheck disable=SC2154

err() {
    printf '%s: %s\n' "$prog" "$*" >&2
}

die() {
    local code=$1
    shift
    err "$@"
    exit "$code"
}

usage_error() {
    err "$1"
    printf "Try '%s --help' for more information.\n" "$prog" >&2
    exit 2
}

# positive_int OPTION VALUE
positive_int() {
    if [[ ! $2 =~ ^[0-9]{1,9}$ ]] || ((10#$2 < 1)); then
        usage_error "invalid value for $1: '$2'"
    fi
    printf '%d\n' "$((10#$2))"
}

# ---- measuring helpers ----

# Microseconds since the epoch, from bash's own clock (no fork).
now_us() {
    local t=${EPOCHREALTIME/[.,]/}
    printf '%s\n' "$((10#$t))"
}

# secs US: microseconds as seconds with three decimals.
secs() {
    printf '%d.%03d' "$(($1 / 1000000))" "$((($1 % 1000000 + 500) / 1000))"
}

# fixed VALUE SCALE DECIMALS: VALUE/SCALE rounded, with DECIMALS (1 or 2) decimals.
fixed() {
    local d=$((10 ** $3)) v
    v=$((($1 * d * 2 + $2) / ($2 * 2)))
    printf "%d.%0${3}d" "$((v / d))" "$((v % d))"
}

# median N...: the middle value (of an even count, the lower middle).
median() {
    printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"
}

loadavg() {
    cut -d' ' -f1-3 /proc/loadavg
}

# json_num FILE KEY: a number from a one-line JSON object (0 when absent).
json_num() {
    local v
    v=$(sed -n "s/.*\"$2\": *\\([0-9.]*\\).*/\\1/p" "$1" 2>/dev/null | head -n 1)
    printf '%s\n' "${v:-0}"
}

# ---- the scratch cluster ----

# psql_as ROLE DB [ARGS]: quiet, unaligned, stop at the first error.
psql_as() {
    local role=$1 db=$2
    shift 2
    "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -q -At -U "$role" -d "$db" "$@"
}

# A checkpoint before each timed stage, so none pays for the previous one's writes.
checkpoint() {
    psql_as "$PGSCRATCH_SUPERUSER" postgres -c CHECKPOINT
}

# bench_shim DIR BINDIR PROGRAM...: in DIR, one script per PROGRAM that runs
# BINDIR/PROGRAM under GNU time, which appends one line to $DLBENCH_MEMLOG:
#   START ELAPSED USER SYS MAXRSS_KIB EXIT COMMAND...
# START is the shim's EPOCHREALTIME, for the timeline; the command line is
# put on one line (queries span lines), each argument cut to 200 bytes.
# migrate puts DRIFTLESS_BIN first on PATH: DRIFTLESS_BIN=DIR measures what
# it (and the scripts it calls) starts.
bench_shim() {
    local dir=$1 bindir=$2 p
    shift 2
    mkdir -p "$dir"
    for p in "$@"; do
        {
            echo '#!/bin/bash'
            echo "# $prog: runs $p under GNU time."
            echo "real=$(printf %q "$bindir/$p")"
            cat <<'EOF2'
cmd=$real
for a in "$@"; do
    a=${a//[$'\n\t\r']/ }
    cmd+=" ${a:0:200}"
done
# GNU time reads % and \ in its format: escape them in the command line.
cmd=${cmd//\\/\\\\}
cmd=${cmd//%/%%}
exec /usr/bin/time -f "${EPOCHREALTIME} %e %U %S %M %x $cmd" -a -o "$DLBENCH_MEMLOG" "$real" "$@"
EOF2
        } >"$dir/$p"
        chmod 755 "$dir/$p"
    done
}

# ---- the items table of bench-dump.sh and bench-sync.sh ----

# items_insert LO HI: INSERT the generated rows with ids LO..HI. Deterministic:
# every value is a function of id, through hashint8 where real data would not
# repeat. NULL, '' and awkward bytes (tab, newline, CR, quotes, backslash,
# emoji) in every text-like column.
items_insert() {
    cat <<EOF
INSERT INTO items
SELECT i,
    CASE WHEN i % 97 = 0 THEN NULL
         WHEN i % 89 = 0 THEN ''
         WHEN i % 53 = 0 THEN E'tab\\there, "quoted", back\\\\slash ' || i
         WHEN i % 41 = 0 THEN E'line one\\nline two \\U0001F600 ' || i
         ELSE (ARRAY['widget','gadget','sprocket','gizmo','bracket','flange','bolt','washer',
                     'hinge','spring','valve','gasket'])[1 + h % 12]
              || ' ' || (ARRAY['small','large','blue','red','deluxe','basic','steel',
                               'brass','long','short'])[1 + h2 % 10]
              || ' ' || (h % 9973)
    END,
    CASE WHEN i % 50 = 0 THEN NULL ELSE (h2 % 10000000) / 100.0 END,
    CASE WHEN i % 31 = 0 THEN NULL ELSE h % 2000 - 100 END,
    CASE WHEN i % 43 = 0 THEN NULL
         WHEN i % 47 = 0 THEN '{}'::text[]
         WHEN i % 29 = 0 THEN ARRAY['a"b', E'c\\\\d', NULL, '', 'e f', E'\\U0001F600']
         ELSE ARRAY['cat' || h % 40, 'tag' || h2 % 300]
    END,
    CASE WHEN i % 37 = 0 THEN NULL
         ELSE jsonb_build_object(
             'sku', 'SKU-' || lpad((h % 1000000)::text, 6, '0'),
             'weight', (h2 % 5000) / 10.0,
             'active', h % 3 > 0,
             'dims', jsonb_build_array(h % 100, h2 % 100, NULL),
             'label', CASE WHEN i % 11 = 0 THEN E'tab\\t nl\\n "q" \\\\ \\U0001F600' ELSE 'plain' END)
    END,
    CASE WHEN i % 3 = 0 THEN NULL
         WHEN i % 17 = 0 THEN ''
         ELSE 'note ' || md5(i::text)
              || CASE WHEN i % 5 = 0 THEN E'\\r\\nsecond line\\twith a tab' ELSE '' END
    END,
    CASE WHEN i % 61 = 0 THEN NULL
         ELSE timestamptz '2020-01-01 00:00:00+00' + i * interval '30 seconds'
              + (h % 86400000000) * interval '1 microsecond'
    END
FROM generate_series($1::bigint, $2) AS i,
    LATERAL (SELECT hashint8(i)::bigint & 2147483647 AS h,
                    hashint8(-i)::bigint & 2147483647 AS h2) AS r;
EOF
}

# items_columns_sql: the items table's data columns, on both sides.
items_columns_sql() {
    cat <<EOF
    name text,
    price numeric(12,2),
    qty int,
    tags text[],
    doc jsonb,
    note text,
    updated_at timestamptz
EOF
}

# items_source_sql ROWS: the source's items table with ROWS generated rows.
items_source_sql() {
    cat <<EOF
CREATE TABLE items (
    id bigint PRIMARY KEY,
$(items_columns_sql)
);
$(items_insert 1 "$1")
VACUUM ANALYZE items;
EOF
}
