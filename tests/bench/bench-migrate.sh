#!/bin/bash
# Benchmark of a whole-database migrate (issue 6): five related tables, the
# largest with 1M rows, after 1% drift, against every table of both sides read
# side by side with COPY into /dev/null; and idmap's peak memory per map
# entry. Every figure comes from this run, on a scratch cluster of its own.
# Not a test: it prints figures (see README).
set -euo pipefail

prog=bench-migrate.sh
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
BIN=${DRIFTLESS_BIN:-$REPO/bin}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGSCRATCH=$REPO/scripts/pgscratch
programs=(pgdump-rows idmap rowhash rowdiff pgapply rowcat pgverify)
tables=(customers products orders order_items shipments)

rows=1000000
keep=0
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"

usage() {
    cat <<EOF
Usage: $prog [--rows N] [--keep]
Time scripts/migrate on five related tables after 1% drift, against every
table of both sides read side by side, on a scratch cluster this script
starts and removes; and idmap's peak memory per map entry.

  --rows N     rows of the largest table, order_items (default 1000000;
               100000 is quick); customers and shipments get N/10, orders
               3N/10, products N/100
  --shared-buffers SIZE
               the server's shared_buffers (default 256MB; pgscratch's
               32MB, sized for many test clusters at once, holds too little
               of a 1M-row table's indexes to say how a real server applies)
  --keep       leave the scratch cluster and the run directories, and say
               where they are and how to stop the cluster
  -h, --help   show this help and exit

Environment: DRIFTLESS_BIN (default REPO/bin, built with make when missing),
PGBIN (default /usr/lib/postgresql/15/bin).

Exit status: 0 every goal met, 1 a goal missed, 2 usage error,
5 the cluster or the tables could not be set up, 8 a measured command failed.
EOF
}

shared_buffers=256MB
while (($# > 0)); do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --rows)
        (($# >= 2)) || usage_error "option '$1' requires an argument"
        rows=$(positive_int "$1" "$2")
        shift 2
        ;;
    --rows=*) rows=$(positive_int --rows "${1#*=}") && shift ;;
    --shared-buffers)
        (($# >= 2)) || usage_error "option '$1' requires an argument"
        [[ $2 =~ ^[0-9]+(kB|MB|GB)$ ]] || usage_error "--shared-buffers: not a size like 256MB: $2"
        shared_buffers=$2
        shift 2
        ;;
    --keep)
        keep=1
        shift
        ;;
    *) usage_error "unrecognized argument '$1'" ;;
    esac
done
((rows >= 10000)) || usage_error "--rows must be at least 10000 (products get 1%)"

/usr/bin/time -f %M -o /dev/null true 2>/dev/null ||
    die 5 "/usr/bin/time is not GNU time (apt-get install time)"

for p in "${programs[@]}"; do
    [[ -x $BIN/$p ]] && continue
    [[ -z ${DRIFTLESS_BIN:-} ]] || die 8 "$BIN: no $p there (DRIFTLESS_BIN)"
    echo "building: make -C $REPO bin/$p"
    make -C "$REPO" "bin/$p" >&2 || die 8 "make bin/$p failed"
done
[[ -x $PGBIN/psql ]] || die 5 "$PGBIN/psql: not found (set PGBIN)"

work=$(mktemp -d /tmp/dlbench-migrate-work.XXXXXX)
SCRATCH_DIR=$(mktemp -d /tmp/dlbench.XXXXXX)
started=0
cd "$work"
# A copy of the binaries and scripts: a rebuild during the run changes nothing.
mkdir "$work/bin"
for p in "${programs[@]}"; do
    cp "$BIN/$p" "$work/bin/$p" || die 8 "could not copy $BIN/$p"
done
cp -R "$REPO/scripts" "$work/scripts" || die 8 "could not copy $REPO/scripts"

# Called by the EXIT trap (shellcheck does not see it).
# shellcheck disable=SC2317
cleanup() {
    cd /
    if ((keep)); then
        printf '\nkept the run directories and map in %s\n' "$work"
    else
        rm -rf "$work"
    fi
    if ((started && keep)); then
        printf 'kept the cluster: eval "%s(%s status %s)"; stop it with: %s stop %s\n' \
            '$' "$PGSCRATCH" "$SCRATCH_DIR" "$PGSCRATCH" "$SCRATCH_DIR"
    elif [[ -f $SCRATCH_DIR/.pgscratch ]]; then
        "$PGSCRATCH" stop "$SCRATCH_DIR" || err "could not stop the cluster in $SCRATCH_DIR"
    else
        rmdir "$SCRATCH_DIR" 2>/dev/null || :
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nc=$((rows / 10)) np=$((rows / 100)) no=$((rows * 3 / 10)) ni=$rows ns=$((rows / 10))
load_start=$(loadavg)
echo "$prog: migrate of five tables (order_items $ni, orders $no, customers $nc, shipments $ns, products $np rows), 1% drift"
echo "start:    $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $load_start, $(nproc) cores"
echo "binaries: $BIN and $REPO/scripts (copied to the work directory at the start)"

out=$("$PGSCRATCH" start -c "shared_buffers=$shared_buffers" "$SCRATCH_DIR") || die 5 "could not start a scratch cluster in $SCRATCH_DIR"
started=1
eval "$out"
echo "cluster:  $SCRATCH_DIR ($("$PGBIN/postgres" --version))"

# ---- the tables, built server-side ----

# key SIDE TABLE EXPR: a key or foreign key value: the legacy integer in the
# source; in the target the UUID the earlier migration gave it (derived from
# the table and id, so that both sides are built without copying rows).
key() {
    if [[ $1 == source ]]; then
        printf '%s' "$3"
    else
        printf "md5('%s:' || (%s))::uuid" "$2" "$3"
    fi
}

# id SIDE TABLE: the key columns' values of row i.
id() {
    if [[ $1 == source ]]; then printf 'i'; else printf "%s, i" "$(key target "$2" i)"; fi
}

# gen_TABLE SIDE LO HI: INSERT rows LO..HI; every value a function of the id.
gen_customers() {
    cat <<EOF
INSERT INTO customers SELECT $(id "$1" customers),
    $(key "$1" customers "CASE WHEN i % 7 = 0 AND i > 1 THEN 1 + (hashint8(i) & 2147483647) % (i - 1) END"),
    'customer ' || i || CASE WHEN i % 41 = 0 THEN E' \\t"q" \\U0001F600' ELSE '' END,
    CASE WHEN i % 13 = 0 THEN NULL ELSE 'c' || i || '@example.com' END,
    timestamptz '2020-01-01 00:00:00+00' + i * interval '7 minutes'
FROM generate_series($2::bigint, $3) AS i;
EOF
}
gen_products() {
    cat <<EOF
INSERT INTO products SELECT $(id "$1" products), 'SKU-' || lpad(i::text, 7, '0'),
    'product ' || md5(i::text), ((hashint8(i) & 2147483647) % 100000) / 100.0
FROM generate_series($2::bigint, $3) AS i;
EOF
}
# gen_orders SIDE LO HI CUSTOMER: CUSTOMER the parent's id, an expression of i
gen_orders() {
    cat <<EOF
INSERT INTO orders SELECT $(id "$1" orders),
    $(key "$1" customers "$4"),
    timestamptz '2021-01-01 00:00:00+00' + i * interval '90 seconds',
    ((hashint8(-i) & 2147483647) % 1000000) / 100.0,
    CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || md5(i::text) END
FROM generate_series($2::bigint, $3) AS i;
EOF
}
# gen_order_items SIDE LO HI ORDER PRODUCT
gen_order_items() {
    cat <<EOF
INSERT INTO order_items SELECT $(id "$1" order_items),
    $(key "$1" orders "$4"),
    $(key "$1" products "$5"),
    1 + i % 9, ((hashint8(i * 7) & 2147483647) % 100000) / 100.0
FROM generate_series($2::bigint, $3) AS i;
EOF
}
# gen_shipments SIDE LO HI ORDER
gen_shipments() {
    cat <<EOF
INSERT INTO shipments SELECT $(id "$1" shipments),
    $(key "$1" orders "$4"),
    timestamptz '2021-01-02 00:00:00+00' + i * interval '5 minutes',
    (ARRAY['dhl', 'ups', 'post', NULL])[1 + i % 4], 'TRK' || md5(i::text)
FROM generate_series($2::bigint, $3) AS i;
EOF
}

# schema SIDE: the five tables; the foreign keys come after the rows.
schema() {
    local k=bigint lk='' fk=bigint
    if [[ $1 == target ]]; then
        k="uuid DEFAULT gen_random_uuid()" lk="legacy_id bigint UNIQUE," fk=uuid
    fi
    cat <<EOF
CREATE TABLE customers (id $k PRIMARY KEY, $lk referred_by $fk, name text, email text,
    created_at timestamptz);
CREATE TABLE products (id $k PRIMARY KEY, $lk sku text, name text, price numeric(12,2));
CREATE TABLE orders (id $k PRIMARY KEY, $lk customer_id $fk NOT NULL, placed_at timestamptz,
    total numeric(12,2), note text);
CREATE TABLE order_items (id $k PRIMARY KEY, $lk order_id $fk NOT NULL, product_id $fk NOT NULL,
    qty int, price numeric(12,2));
CREATE TABLE shipments (id $k PRIMARY KEY, $lk order_id $fk NOT NULL, shipped_at timestamptz,
    carrier text, tracking text);
EOF
}

# foreign_keys: with an index on each (a cascading delete scans none).
foreign_keys() {
    cat <<EOF
ALTER TABLE customers ADD FOREIGN KEY (referred_by) REFERENCES customers ON DELETE SET NULL;
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers ON DELETE CASCADE;
ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders ON DELETE CASCADE;
ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products ON DELETE CASCADE;
ALTER TABLE shipments ADD FOREIGN KEY (order_id) REFERENCES orders ON DELETE CASCADE;
CREATE INDEX ON customers (referred_by);
CREATE INDEX ON orders (customer_id);
CREATE INDEX ON order_items (order_id);
CREATE INDEX ON order_items (product_id);
CREATE INDEX ON shipments (order_id);
EOF
}

# build SIDE ROLE DB
build() {
    {
        schema "$1"
        gen_customers "$1" 1 "$nc"
        gen_products "$1" 1 "$np"
        gen_orders "$1" 1 "$no" "1 + (hashint8(i) & 2147483647) % $nc"
        gen_order_items "$1" 1 "$ni" "1 + (hashint8(i) & 2147483647) % $no" \
            "1 + (hashint8(-i) & 2147483647) % $np"
        gen_shipments "$1" 1 "$ns" "1 + (hashint8(i) & 2147483647) % $no"
        foreign_keys
        [[ $1 == source ]] || printf 'ALTER TABLE %s ENABLE ROW LEVEL SECURITY;\n' "${tables[@]}"
        echo "VACUUM ANALYZE;"
    } | psql_as "$2" "$3" >"$work/build.$1.log" 2>&1 ||
        { cat "$work/build.$1.log" >&2; die 5 "could not build the $1 tables"; }
}

echo
for side in source:legacy_owner:legacy target:target_owner:target; do
    IFS=: read -r s role db <<<"$side"
    printf 'building the %s tables as %s in %s (generate_series) ... ' "$s" "$role" "$db"
    t0=$(now_us)
    build "$s" "$role" "$db"
    echo "$(secs $(($(now_us) - t0))) s; $(psql_as "$role" "$db" -c "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c WHERE c.relname IN ('customers','products','orders','order_items','shipments')")"
done

map=$work/bench.map
{
    printf '%s\n' "# $prog: five related tables (customers refer to customers)." \
        "[defaults]" "legacy_key = legacy_id" "source_key = id" "uuid_column = id" "allow = all" ""
    printf '%s\n' "[public.customers]" "columns = referred_by, name, email, created_at" \
        "fk.referred_by = public.customers" ""
    printf '%s\n' "[public.products]" "columns = sku, name, price" ""
    printf '%s\n' "[public.orders]" "columns = customer_id, placed_at, total, note" \
        "fk.customer_id = public.customers" ""
    printf '%s\n' "[public.order_items]" "columns = order_id, product_id, qty, price" \
        "fk.order_id = public.orders" "fk.product_id = public.products" ""
    printf '%s\n' "[public.shipments]" "columns = order_id, shipped_at, carrier, tracking" \
        "fk.order_id = public.orders"
} >"$map"

bench_shim "$work/shim" "$work/bin" "${programs[@]}"

# migrate_run LABEL: scripts/migrate through the shim into $work/run.LABEL;
# mg_us gets its wall-clock microseconds, $work/mem.LABEL the programs' lines.
migrate_run() {
    local rc=0 t0
    checkpoint
    export DLBENCH_MEMLOG=$work/mem.$1
    : >"$DLBENCH_MEMLOG"
    t0=$(now_us)
    DRIFTLESS_BIN=$work/shim "$work/scripts/migrate" --map "$map" --run-dir "$work/run.$1" --quiet || rc=$?
    mg_us=$(($(now_us) - t0))
    if ((rc != 0)); then
        tail -n 20 "$work/run.$1/log" >&2 || :
        die 8 "migrate ($1) exited $rc"
    fi
}

# ---- drift: 1% of every table ----

# drift: in each table a third of 1% updated, a third deleted (with what
# cascades), a third inserted: new customers (some referred by another new
# one), their orders, items and shipments.
drift() {
    local c=$((nc / 100)) p=$((np / 100)) o=$((no / 100)) i=$((ni / 100)) s=$((ns / 100))
    {
        echo "BEGIN; SELECT setseed(0.42);"
        echo "UPDATE customers SET name = name || ' (moved)', referred_by = NULL WHERE id IN (SELECT id FROM customers ORDER BY random() LIMIT $((c / 3)));"
        echo "UPDATE products SET price = price + 1 WHERE id IN (SELECT id FROM products ORDER BY random() LIMIT $((p / 2)));"
        echo "UPDATE orders SET total = total + 1, note = 'drift' WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT $((o / 3)));"
        echo "UPDATE order_items SET qty = qty + 1 WHERE id IN (SELECT id FROM order_items ORDER BY random() LIMIT $((i / 3)));"
        echo "UPDATE shipments SET carrier = 'drift' WHERE id IN (SELECT id FROM shipments ORDER BY random() LIMIT $((s / 3)));"
        echo "DELETE FROM shipments WHERE id IN (SELECT id FROM shipments ORDER BY random() LIMIT $((s / 3)));"
        echo "DELETE FROM order_items WHERE id IN (SELECT id FROM order_items ORDER BY random() LIMIT $((i / 3)));"
        echo "DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT $((o / 3)));"
        echo "DELETE FROM customers WHERE id IN (SELECT id FROM customers ORDER BY random() LIMIT $((c / 3)));"
        # New rows refer to new parents: a new customer referred by the next one.
        gen_customers source $((nc + 1)) $((nc + c / 3))
        echo "UPDATE customers SET referred_by = id + 1 WHERE id > $nc AND id < $((nc + c / 3)) AND id % 2 = 0;"
        gen_products source $((np + 1)) $((np + p / 2))
        gen_orders source $((no + 1)) $((no + o / 3)) "$nc + 1 + i % $((c / 3))"
        gen_order_items source $((ni + 1)) $((ni + i / 3)) "$no + 1 + i % $((o / 3))" \
            "1 + (hashint8(-i) & 2147483647) % $np"
        gen_shipments source $((ns + 1)) $((ns + s / 3)) "$no + 1 + i % $((o / 3))"
        echo "COMMIT; VACUUM ANALYZE;"
    } | psql_as legacy_owner legacy >"$work/drift.log" 2>&1 ||
        { cat "$work/drift.log" >&2; die 5 "the drift failed"; }
}

# ---- side-by-side read: every table of both sides, the two sides at once ----

# read_side ROLE DB OUTFILE: each table's COPY into /dev/null in turn.
read_side() {
    local t0 t
    t0=$(now_us)
    for t in "${tables[@]}"; do
        PGUSER=$1 PGDATABASE=$2 "$PGBIN/psql" -X -q -c "COPY $t TO STDOUT" >/dev/null || return 8
    done
    echo $(($(now_us) - t0)) >"$3"
}

read_both() {
    local t0 pa pb
    t0=$(now_us)
    read_side legacy_reader legacy "$work/rd.src" &
    pa=$!
    read_side target_owner target "$work/rd.tgt" &
    pb=$!
    wait "$pa" || die 8 "COPY (legacy) failed"
    wait "$pb" || die 8 "COPY (target) failed"
    rd_both=$(($(now_us) - t0))
}

echo
printf 'first migrate, no drift (fills the crosswalk from legacy_id) ... '
migrate_run m0
m0_us=$mg_us
echo "$(secs "$m0_us") s"

printf 'drift: 1%% of every table (a third updated, a third deleted, a third inserted) ... '
drift
echo "done"

echo
echo "side-by-side read, 3 rounds: R = psql -X -c \"COPY TABLE TO STDOUT\" > /dev/null for each of the five"
echo "  tables in turn, as legacy_reader on legacy and as target_owner on target, the two sides at once"
read_both
r_times=()
for r in 1 2 3; do
    checkpoint
    read_both
    r_times+=("$rd_both")
    printf '  round %d: R %s s   (legacy %s s, target %s s)\n' "$r" "$(secs "$rd_both")" \
        "$(secs "$(cat "$work/rd.src")")" "$(secs "$(cat "$work/rd.tgt")")"
done
r_med=$(median "${r_times[@]}")

echo
printf 'migrate after 1%% drift (M1) ... '
migrate_run m1
m1_us=$mg_us
echo "$(secs "$m1_us") s"
sed 's/^/  /' "$work/run.m1/summary.txt"

# Convergence: counts, and validate over every table.
converged=1
for t in "${tables[@]}"; do
    a=$(psql_as legacy_reader legacy -c "SELECT count(*) FROM $t")
    b=$(psql_as target_owner target -c "SELECT count(*) FROM $t WHERE legacy_id IS NOT NULL")
    [[ $a == "$b" ]] || { converged=0 && echo "  $t: $a source rows, $b target rows"; }
done
vrc=0
DRIFTLESS_BIN=$work/bin "$work/scripts/validate" --map "$map" --quiet --run-dir "$work/validate" \
    >"$work/validate.out" 2>&1 || vrc=$?
((vrc == 0)) || { converged=0 && sed 's/^/  validate: /' "$work/validate.out" | head -n 20; }

# idmap's peak memory: its processes of the largest table, against the maps they hold.
entries=$("$work/bin/rowcat" --count "$work/run.m1/maps/public.order_items.rs")
entries_o=$("$work/bin/rowcat" --count "$work/run.m1/maps/public.orders.rs")
entries_p=$("$work/bin/rowcat" --count "$work/run.m1/maps/public.products.rs")
idmap_peak() {
    awk -v want="$1" '$1 ~ /^[0-9]+[.,][0-9]+$/ && NF >= 7 {
        n = split($7, q, "/"); if (q[n] != "idmap" || index($0, want) == 0) next
        if (($0 ~ /--map-out/) == (mode == "keys") && $5 > m) m = $5 }
        END { print m + 0 }' mode="$2" "$work/mem.m1"
}
keys_kib=$(idmap_peak "--table public.order_items" keys)
rows_kib=$(idmap_peak "--table public.order_items" rows)
all_kib=$(awk '$1 ~ /^[0-9]+[.,][0-9]+$/ && NF >= 7 { n = split($7, q, "/"); if (q[n] == "idmap" && $5 > m) m = $5 }
    END { print m + 0 }' "$work/mem.m1")
# Bytes per entry, integer arithmetic (KiB * 1024 / entries).
per_entry=$((all_kib * 1024 / entries))
per_entry_held=$((rows_kib * 1024 / (entries + entries_o + entries_p)))

load_end=$(loadavg)
echo
echo "end:      $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $load_end"

missed=0
verdict() {
    if (($2)); then printf -v "$1" PASS; else
        missed=1
        printf -v "$1" MISS
    fi
}
v_mem='' v_conv=''
verdict v_mem $((per_entry <= 40))
verdict v_conv "$converged"
fig() {
    printf '  %-52s %10s  %s\n' "$1" "$2" "${3:-}"
}
echo
echo "figures: (order_items $ni rows; shared_buffers $shared_buffers; load average $load_start at start, $load_end at end, $(nproc) cores)"
fig "R    every table, both sides, COPY side by side" "$(secs "$r_med") s" "(median of 3)"
fig "M0   migrate, first run, no drift" "$(secs "$m0_us") s" "(fills the crosswalk; no goal)"
fig "M1   migrate after 1% drift" "$(secs "$m1_us") s"
fig "M1/R" "$(fixed "$m1_us" "$r_med" 2)" "(no goal here; bench-sync.sh's one-table goal is <= 1.50)"
fig "idmap peak RSS, any process" "$(fixed "$all_kib" 1024 1) MiB"
fig "  keys of order_items (idmap --map-out)" "$(fixed "$keys_kib" 1024 1) MiB" "$entries entries"
fig "  rows of order_items (its map + orders' + products')" "$(fixed "$rows_kib" 1024 1) MiB" \
    "$((entries + entries_o + entries_p)) entries: $per_entry_held bytes/entry"
fig "idmap peak RSS / entries of the largest map" "$per_entry B" "goal <= 40 bytes/entry  $v_mem"
fig "convergence (counts equal, validate exit 0)" "$v_conv"
echo "  rerun: cd $REPO && ${DRIFTLESS_BIN:+DRIFTLESS_BIN=$DRIFTLESS_BIN }tests/bench/bench-migrate.sh --rows $rows"
exit "$missed"
