#!/bin/bash
# Benchmark of the differential core (issues 5 and 6): scripts/migrate on a
# 1M-row items table after 1% and 10% drift, against both tables read side by
# side and against TRUNCATE + COPY of the target; the apply's rows/s and each
# stage's peak memory. Every figure comes from this run, on a scratch cluster
# of its own. Not a test: it prints figures (see README).
set -euo pipefail

prog=bench-sync.sh
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
BIN=${DRIFTLESS_BIN:-$REPO/bin}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGSCRATCH=$REPO/scripts/pgscratch
programs=(pgdump-rows idmap rowhash rowdiff pgapply rowcat pgverify)
goal_stages=(pgdump-rows idmap rowhash rowdiff pgapply)

rows=1000000
runs=1
keep=0
# err, die, usage_error, positive_int, timing, psql_as, checkpoint, bench_shim,
# the items table
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"

usage() {
    cat <<EOF
Usage: $prog [--rows N] [--runs N] [--shared-buffers SIZE] [--keep]
Time scripts/migrate on one table after 1% and after 10% drift, against both
tables read side by side and against TRUNCATE + COPY of the target, on a
scratch cluster this script starts and removes.

  --rows N     rows in the items table (default 1000000; 100000 is quick)
  --runs N     migrate rounds per drift size, each after a fresh drift; the
               median is reported (default 1). The reads and TRUNCATE + COPY
               take the median of max(3, N) rounds.
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
    --rows | --runs)
        (($# >= 2)) || usage_error "option '$1' requires an argument"
        if [[ $1 == --rows ]]; then rows=$(positive_int "$1" "$2"); else runs=$(positive_int "$1" "$2"); fi
        shift 2
        ;;
    --rows=*) rows=$(positive_int --rows "${1#*=}") && shift ;;
    --runs=*) runs=$(positive_int --runs "${1#*=}") && shift ;;
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
((rows >= 1000)) || usage_error "--rows must be at least 1000 (1% of it is the small drift)"
rounds=$((runs < 3 ? 3 : runs))

# GNU time gives each program's peak RSS, CPU and elapsed time.
/usr/bin/time -f %M -o /dev/null true 2>/dev/null ||
    die 5 "/usr/bin/time is not GNU time (apt-get install time)"

# ---- the binaries and the cluster ----

for p in "${programs[@]}"; do
    [[ -x $BIN/$p ]] && continue
    if [[ -n ${DRIFTLESS_BIN:-} ]]; then
        die 8 "$BIN: no $p there (DRIFTLESS_BIN)"
    fi
    echo "building: make -C $REPO bin/$p"
    make -C "$REPO" "bin/$p" >&2 || die 8 "make bin/$p failed"
done
[[ -x $PGBIN/psql ]] || die 5 "$PGBIN/psql: not found (set PGBIN)"

work=$(mktemp -d /tmp/dlbench-sync-work.XXXXXX)
SCRATCH_DIR=$(mktemp -d /tmp/dlbench.XXXXXX)
started=0
# Nothing lands in the caller's directory.
cd "$work"

# A copy of the binaries and scripts: a rebuild of bin/ or an edit of
# scripts/ during the run does not change what is measured.
mkdir "$work/bin"
for p in "${programs[@]}"; do
    cp "$BIN/$p" "$work/bin/$p" || die 8 "could not copy $BIN/$p"
done
cp -R "$REPO/scripts" "$work/scripts" || die 8 "could not copy $REPO/scripts"
MIGRATE=$work/scripts/migrate
VALIDATE=$work/scripts/validate

# Called by the EXIT trap (shellcheck does not see it).
# shellcheck disable=SC2317
cleanup() {
    cd /
    if ((keep)); then
        printf '\nkept the run directories, stage logs and map in %s\n' "$work"
    else
        rm -rf "$work"
    fi
    if ((started && keep)); then
        printf 'kept the cluster (server log %s/server.log): eval "%s(%s status %s)"; stop it with: %s stop %s\n' \
            "$SCRATCH_DIR" '$' "$PGSCRATCH" "$SCRATCH_DIR" "$PGSCRATCH" "$SCRATCH_DIR"
    elif [[ -f $SCRATCH_DIR/.pgscratch ]]; then
        "$PGSCRATCH" stop "$SCRATCH_DIR" || err "could not stop the cluster in $SCRATCH_DIR"
    else
        rmdir "$SCRATCH_DIR" 2>/dev/null || :
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

n1=$((rows / 100))
n10=$((rows / 10))
load_start=$(loadavg)
echo "$prog: migrate benchmark, $rows rows, drift $n1 (1%) and $n10 (10%) rows, $runs migrate round(s) each"
echo "start:    $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $load_start, $(nproc) cores"
echo "binaries: $BIN and $REPO/scripts (copied to the work directory at the start)"
echo "memory:   peak RSS of every program migrate starts, from /usr/bin/time -f %M (PATH shim)"

# Every statement's duration goes to the server log: where the server's time goes.
out=$("$PGSCRATCH" start -c "shared_buffers=$shared_buffers" -c log_min_duration_statement=0 \
    -c "log_line_prefix=%m [%p] app=%a " \
    "$SCRATCH_DIR") || die 5 "could not start a scratch cluster in $SCRATCH_DIR"
started=1
eval "$out"
server_log=$SCRATCH_DIR/server.log
echo "cluster:  $SCRATCH_DIR ($("$PGBIN/postgres" --version)), log_min_duration_statement=0"

cols="name, price, qty, tags, doc, note, updated_at"


# The earlier migration's form: a UUID key with a default, the legacy id
# unique, RLS on (the owner, which the sync runs as, bypasses it).
target_sql="
CREATE TABLE items (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id bigint UNIQUE,
$(items_columns_sql)
);
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
"

# copy_into_target: the source's rows into the target, new UUIDs from the
# column default (how the earlier migration filled it).
copy_into_target() {
    psql_as legacy_reader legacy -c "\\copy (SELECT id, $cols FROM items ORDER BY id) TO pstdout" |
        psql_as target_owner target -c "\\copy items (legacy_id, $cols) FROM pstdin"
}

echo
printf 'generating items (source) as legacy_owner in legacy ... '
t0=$(now_us)
# On stdin, not -c: VACUUM cannot run in -c's implicit transaction.
items_source_sql "$rows" | psql_as legacy_owner legacy >"$work/gen.log" 2>&1 ||
    { cat "$work/gen.log" >&2; die 5 "could not create the source items table"; }
echo "$(secs $(($(now_us) - t0))) s; $(psql_as legacy_owner legacy -c "SELECT pg_size_pretty(pg_total_relation_size('items'))") with its index"

printf 'creating items (target) as target_owner in target, filled by \\copy ... '
t0=$(now_us)
{ printf '%s\n' "$target_sql" | psql_as target_owner target && copy_into_target &&
    psql_as target_owner target -c "VACUUM ANALYZE items"; } >"$work/target.log" 2>&1 ||
    { cat "$work/target.log" >&2; die 5 "could not create the target items table"; }
echo "$(secs $(($(now_us) - t0))) s; $(psql_as target_owner target -c "SELECT pg_size_pretty(pg_total_relation_size('items'))") with its indexes"

map=$work/items.map
cat >"$map" <<'EOF'
# bench-sync.sh: the one table of the benchmark.
[public.items]
source      = public.items
legacy_key  = legacy_id
source_key  = id
uuid_column = id
columns     = name, price, qty, tags, doc, note, updated_at
allow       = all
EOF

# The PATH shim (lib.sh): every program migrate starts runs under GNU time.
shim=$work/shim
bench_shim "$shim" "$work/bin" "${programs[@]}"

# ---- side-by-side read ----

copy_sql="COPY items TO STDOUT"
# read_pair: both tables' COPY into /dev/null at once; rd_src, rd_tgt and
# rd_both get the wall-clock microseconds.
read_pair() {
    local t0 pa pb
    t0=$(now_us)
    (
        PGUSER=legacy_reader PGDATABASE=legacy "$PGBIN/psql" -X -c "$copy_sql" >/dev/null
        echo $(($(now_us) - t0)) >"$work/rd.src"
    ) &
    pa=$!
    (
        PGUSER=target_owner PGDATABASE=target "$PGBIN/psql" -X -c "$copy_sql" >/dev/null
        echo $(($(now_us) - t0)) >"$work/rd.tgt"
    ) &
    pb=$!
    wait "$pa" || die 8 "psql $copy_sql (legacy) failed"
    wait "$pb" || die 8 "psql $copy_sql (target) failed"
    rd_both=$(($(now_us) - t0))
    rd_src=$(cat "$work/rd.src")
    rd_tgt=$(cat "$work/rd.tgt")
}

printf 'warming the cache (one side-by-side read) ... '
read_pair
echo "$(secs "$rd_both") s"

echo
echo "side-by-side read, $rounds rounds (wall clock; median reported):"
echo "  R = psql -X -c \"$copy_sql\" > /dev/null, as legacy_reader on legacy and as target_owner on target, at once"
r_times=()
r_src=()
r_tgt=()
for ((r = 1; r <= rounds; r++)); do
    checkpoint
    read_pair
    r_times+=("$rd_both")
    r_src+=("$rd_src")
    r_tgt+=("$rd_tgt")
    printf '  round %d: R %s s   (legacy %s s, target %s s)\n' "$r" "$(secs "$rd_both")" \
        "$(secs "$rd_src")" "$(secs "$rd_tgt")"
done
r_med=$(median "${r_times[@]}")

# ---- TRUNCATE + COPY ----

echo
echo "TRUNCATE + COPY of the target, $rounds rounds (median reported):"
echo "  T = psql -c \"TRUNCATE items\"; then psql \\copy (SELECT id, ... ORDER BY id) TO pstdout | psql \\copy items (legacy_id, ...) FROM pstdin"
t_times=()
t_trunc=()
t_copy=()
for ((r = 1; r <= rounds; r++)); do
    checkpoint
    t0=$(now_us)
    psql_as target_owner target -c "TRUNCATE items" || die 8 "TRUNCATE items failed"
    t1=$(now_us)
    copy_into_target || die 8 "\\copy into the target failed"
    t2=$(now_us)
    t_trunc+=($((t1 - t0)))
    t_copy+=($((t2 - t1)))
    t_times+=($((t2 - t0)))
    printf '  round %d: T %s s   (TRUNCATE %s s, COPY %s s)\n' "$r" "$(secs $((t2 - t0)))" \
        "$(secs $((t1 - t0)))" "$(secs $((t2 - t1)))"
done
t_med=$(median "${t_times[@]}")
# The last round is the earlier migration the syncs start from.
psql_as target_owner target -c "VACUUM ANALYZE items" || die 5 "VACUUM ANALYZE of the target failed"

# ---- drift ----

next_id=$((rows + 1))
drift_no=0
# drift N: N changed source rows, a third each: updates and deletes of random
# existing rows (fixed seed per drift), inserts of new ids.
drift() {
    local n=$1 ku kd ki seed
    ku=$((n / 3))
    kd=$((n / 3))
    ki=$((n - ku - kd))
    drift_no=$((drift_no + 1))
    seed=0.$((drift_no * 37 % 100))
    {
        cat <<EOF
BEGIN;
SELECT setseed($seed);
CREATE TEMP TABLE pick AS
    SELECT id, row_number() OVER () AS rn
    FROM (SELECT id FROM items ORDER BY random() LIMIT $((ku + kd))) AS s;
UPDATE items AS i SET
    price = coalesce(i.price, 0) + 1,
    qty = coalesce(i.qty, 0) + 1,
    note = 'drift $drift_no ' || md5(i.id::text || '$drift_no'),
    updated_at = coalesce(i.updated_at, timestamptz '2020-01-01 00:00:00+00') + interval '1 day'
FROM pick AS p WHERE p.id = i.id AND p.rn <= $ku;
DELETE FROM items AS i USING pick AS p WHERE p.id = i.id AND p.rn > $ku;
EOF
        items_insert "$next_id" $((next_id + ki - 1))
        echo "COMMIT;"
    } | psql_as legacy_owner legacy >/dev/null || die 5 "drift $drift_no failed"
    next_id=$((next_id + ki))
    drift_desc="$ki inserts, $ku updates, $kd deletes"
}

# ---- migrate, measured ----

# migrate_run LABEL: scripts/migrate through the shim into $work/run.LABEL;
# mg_us gets its wall-clock microseconds; the programs' lines go to
# $work/mem.LABEL and the server's statements to $work/server.LABEL.
migrate_run() {
    local label=$1 rd=$work/run.$1 off0 off1 rc=0 t0
    checkpoint
    off0=$(stat -c %s "$server_log")
    export DLBENCH_MEMLOG=$work/mem.$label
    : >"$DLBENCH_MEMLOG"
    t0=$(now_us)
    DRIFTLESS_BIN=$shim "$MIGRATE" --map "$map" --run-dir "$rd" --quiet || rc=$?
    mg_us=$(($(now_us) - t0))
    mg_t0=$t0
    off1=$(stat -c %s "$server_log")
    dd if="$server_log" of="$work/server.$label" iflag=skip_bytes,count_bytes skip="$off0" \
        count=$((off1 - off0)) status=none || die 8 "could not read $server_log"
    if ((rc != 0)); then
        err "migrate ($label) exited $rc; the last lines of its log:"
        tail -n 20 "$rd/log" >&2 || :
        die 8 "migrate ($label) failed"
    fi
}

converged=1
# verify LABEL: counts equal on both sides and validate exits 0; vf_us gets
# validate's wall-clock microseconds.
verify() {
    local label=$1 src tgt rc=0 t0
    src=$(psql_as legacy_reader legacy -c "SELECT count(*) FROM items") || die 8 "count (legacy) failed"
    tgt=$(psql_as target_owner target -c "SELECT count(*) FROM items WHERE legacy_id IS NOT NULL") ||
        die 8 "count (target) failed"
    t0=$(now_us)
    DRIFTLESS_BIN=$work/bin "$VALIDATE" --map "$map" --table public.items --quiet \
        --run-dir "$work/validate.$label" >"$work/validate.$label.out" 2>&1 || rc=$?
    vf_us=$(($(now_us) - t0))
    if [[ $src == "$tgt" ]] && ((rc == 0)); then
        vf_ok="converged: $src rows on both sides, validate exit 0 in $(secs "$vf_us") s"
    else
        converged=0
        vf_ok="NOT converged: $src source rows, $tgt target rows, validate exit $rc in $(secs "$vf_us") s"
        sed 's/^/    validate: /' "$work/validate.$label.out" | head -n 20
    fi
}

# stats LABEL: the apply's figures from the run directory's stats JSONs, one
# per apply phase that ran (upsert, delete, delete-only, retry): st_changed,
# st_apply (s), st_compute (s), st_rate (changed / apply s), st_sumrate
# (summary.jsonl rows_per_s), st_line.
stats() {
    local s=$work/run.$1/stats/public.items ph f ins=0 upd=0 del=0 phases=''
    st_apply=0
    for ph in upsert delete delete-only retry; do
        f=$s.$ph.json
        [[ -f $f ]] || continue
        ins=$((ins + $(json_num "$f" inserted)))
        upd=$((upd + $(json_num "$f" updated)))
        del=$((del + $(json_num "$f" deleted)))
        st_apply=$(awk -v a="$st_apply" -v b="$(json_num "$f" seconds)" 'BEGIN { printf "%.3f", a + b }')
        phases+="${phases:+, }$ph $(json_num "$f" seconds) s"
    done
    st_compute=$(cat "$s.compute.seconds" 2>/dev/null || echo 0)
    st_changed=$((ins + upd + del))
    st_rate=$(awk -v n="$st_changed" -v s="$st_apply" 'BEGIN { printf "%d", (s > 0 ? n / s : 0) }')
    st_sumrate=$(json_num "$work/run.$1/summary.jsonl" rows_per_s)
    st_line="inserted $ins, updated $upd, deleted $del; compute $(printf '%.2f' "$st_compute") s, apply $st_apply s ($phases) = $st_rate rows/s"
}

# timeline LABEL: where migrate's time went, from the shim's lines: each kind
# of process, when it ran (seconds from migrate's start), its CPU and peak RSS;
# then the phases, each from its first start to its last end.
timeline() {
    awk -v t0="$mg_t0" -v total="$mg_us" '
        $1 ~ /^[0-9]+[.,][0-9]+$/ && NF >= 7 {
            start = $1; sub(/,/, ".", start); start = start - t0 / 1e6
            n = split($7, p, "/"); prog = p[n]; line = $0
            if (line ~ /--name doctor|\/doctor\.[^ ]*\/q\./) k = "preflight: scripts/doctor (" prog ")"
            else if (line ~ /--name report\.|driftless-report\./) k = "finish: scripts/report (" prog ")"
            else if (prog == "pgverify") k = "prepare: schema check (pgverify --schema)"
            else if (prog == "pgapply") {
                if (match(line, /--phase [a-z-]+/)) k = "apply: pgapply " substr(line, RSTART, RLENGTH)
                else if (line ~ /--install-state/) k = "prepare: pgapply --install-state"
                else if (line ~ /--begin-run/) k = "prepare: pgapply --begin-run"
                else if (line ~ /--end-run/) k = "finish: pgapply --end-run"
                else k = "prepare: pgapply (other)"
            } else if (prog == "pgdump-rows") {
                if (line ~ /--export-snapshot/) k = "snapshot holders (pgdump-rows, idle)"
                else if (line ~ /--name state/) k = "prepare: state read (pgdump-rows)"
                else if (line ~ /crosswalk/) k = "keys: target crosswalk (pgdump-rows)"
                else if (line ~ /--table/) k = "compute: target rows (pgdump-rows)"
                else if (line ~ /SELECT "legacy_id" FROM \(/) k = "keys: source keys (pgdump-rows)"
                else if (line ~ /--snapshot/) k = "compute: source rows (pgdump-rows)"
                else k = "other: pgdump-rows"
            } else if (prog == "idmap") k = (line ~ /--map-out/) ? "keys: idmap --map-out" : "compute: idmap (source rows)"
            else if (prog == "rowhash") k = "compute: rowhash (both sides)"
            else if (prog == "rowdiff") k = "compute: rowdiff"
            else if (prog == "rowcat") k = (line ~ /rejects/) ? "finish: rowcat --count (rejects)" : "prepare: state read (rowcat)"
            else k = "other: " prog
            if (!(k in cnt)) { order[++nk] = k; from[k] = start; to[k] = start + $2 }
            cnt[k]++
            if (start < from[k]) from[k] = start
            if (start + $2 > to[k]) to[k] = start + $2
            cpu[k] += $3 + $4
            if ($5 > rss[k]) rss[k] = $5
            ph = k; sub(/:.*/, "", ph)
            if (ph !~ /^(preflight|prepare|keys|compute|apply|finish)$/) next
            if (!(ph in pf) || start < pf[ph]) pf[ph] = start
            if (start + $2 > pt[ph]) pt[ph] = start + $2
        }
        END {
            # By first start: the order in which migrate ran them.
            for (i = 1; i <= nk; i++) for (j = i + 1; j <= nk; j++)
                if (from[order[j]] < from[order[i]]) { x = order[i]; order[i] = order[j]; order[j] = x }
            printf "    %-46s %3s %8s %8s %7s %9s\n", "processes", "n", "from s", "to s", "CPU s", "peak MiB"
            for (i = 1; i <= nk; i++) {
                k = order[i]
                printf "    %-46s %3d %8.2f %8.2f %7.2f %9.1f\n", k, cnt[k], from[k], to[k], cpu[k], rss[k] / 1024
            }
            printf "    %-46s %3s %8s %8.2f\n", "migrate (wall clock)", "", "0.00", total / 1e6
            # What no phase covers is the scripts themselves (sh, awk, sed).
            s = "    phases:"; sum = 0
            split("preflight prepare keys compute apply finish", names, " ")
            for (i = 1; i <= 6; i++) if (names[i] in pf) {
                d = pt[names[i]] - pf[names[i]]; sum += d
                s = s sprintf(" %s %.2f s,", names[i], d)
            }
            printf "%s between them %.2f s\n", s, total / 1e6 - sum
        }' "$work/mem.$1"
}

# server_top LABEL: the server's statements during the run, from the log of
# log_min_duration_statement=0, grouped by application and statement shape
# (literals and numbers folded), the largest totals first.
server_top() {
    awk '
        match($0, / duration: [0-9.]+ ms  /) {
            d = substr($0, RSTART + 11, RLENGTH - 16) + 0
            app = "?"
            if (match($0, /app=[^ ]* /)) app = substr($0, RSTART + 4, RLENGTH - 5)
            if (app == "") app = "?"
            rest = $0; sub(/.* duration: [0-9.]+ ms  /, "", rest)
            kind = rest; sub(/ .*/, "", kind); sub(/:$/, "", kind)
            sql = rest; sub(/^[^:]*: /, "", sql)
            gsub(/\047[^\047]*\047/, "?", sql); gsub(/[0-9]+/, "N", sql); gsub(/[ \t]+/, " ", sql)
            key = sprintf("%-12s %-9s %s", app, kind, substr(sql, 1, 78))
            tot[key] += d; cnt[key]++; all += d; per[app] += d
        }
        END {
            for (k in tot) printf "%10.2f %6d  %s\n", tot[k] / 1000, cnt[k], k | "sort -rn | head -n 8"
            close("sort -rn | head -n 8")
            s = ""
            for (a in per) s = s sprintf("%s %.2f s; ", a, per[a] / 1000)
            printf "    by application (server-side seconds, statements overlap): %s\n", s
        }' "$work/server.$1" | sed 's/^/    /'
}

# report LABEL TITLE: the run's line, its timeline and the server's view.
report() {
    stats "$1"
    printf '  %s: migrate %s s   %s\n' "$2" "$(secs "$mg_us")" "$st_line"
    printf '    %s\n' "$vf_ok"
    timeline "$1"
    echo "    server statements (total s, count, application, kind, statement):"
    server_top "$1"
}

echo
echo "first migrate, no drift (the first run fills the crosswalk from legacy_id):"
migrate_run m0
m0_us=$mg_us
verify m0
v_times=("$vf_us")
report m0 "M0"

m1_times=()
for ((r = 1; r <= runs; r++)); do
    echo
    drift "$n1"
    echo "1% drift, round $r: $drift_desc in the source"
    migrate_run "d1.$r"
    m1_times+=("$mg_us")
    verify "d1.$r"
    v_times+=("$vf_us")
    report "d1.$r" "M1"
done
m1_med=$(median "${m1_times[@]}")

m10_times=()
m10_rates=()
m10_sumrates=()
for ((r = 1; r <= runs; r++)); do
    echo
    drift "$n10"
    echo "10% drift, round $r: $drift_desc in the source"
    migrate_run "d10.$r"
    m10_times+=("$mg_us")
    verify "d10.$r"
    v_times+=("$vf_us")
    report "d10.$r" "M10"
    m10_rates+=("$st_rate")
    m10_sumrates+=("$st_sumrate")
done
m10_med=$(median "${m10_times[@]}")
rate_med=$(median "${m10_rates[@]}")
sumrate_med=$(median "${m10_sumrates[@]}")

# ---- bare writes: the baseline of the apply rate ----
# As many row writes as a 10% drift applies (a third each: UPDATE, DELETE and
# INSERT by legacy key from a temp table), in plain SQL on the same target, in
# one transaction rolled back: what the server itself costs per row, without
# before-images, crosswalk, change records or checks. Last, so the dead rows
# it leaves weigh on nothing measured.
echo
echo "bare writes, $rounds rounds (median reported):"
echo "  W = psql as target_owner: UPDATE, DELETE and INSERT of $n10 rows by legacy key from a temp table, timed inside one transaction, then ROLLBACK"
w_rates=()
ku=$((n10 / 3)) kd=$((n10 / 3))
ki=$((n10 - ku - kd))
for ((r = 1; r <= rounds; r++)); do
    checkpoint
    w_secs=$(psql_as target_owner target <<SQL
BEGIN;
CREATE TEMP TABLE bw AS
    SELECT legacy_id, row_number() OVER () AS rn
    FROM (SELECT legacy_id FROM items WHERE legacy_id IS NOT NULL ORDER BY random() LIMIT $((ku + kd + ki))) AS s;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
UPDATE items AS t SET price = coalesce(t.price, 0) + 1, note = 'bare ' || t.legacy_id
    FROM bw WHERE bw.legacy_id = t.legacy_id AND bw.rn <= $ku;
DELETE FROM items AS t USING bw WHERE bw.legacy_id = t.legacy_id AND bw.rn > $ku AND bw.rn <= $((ku + kd));
INSERT INTO items (legacy_id, $cols)
    SELECT t.legacy_id + 1000000000000, t.name, t.price, t.qty, t.tags, t.doc, t.note, t.updated_at
    FROM items AS t JOIN bw ON bw.legacy_id = t.legacy_id AND bw.rn > $((ku + kd));
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
ROLLBACK;
SQL
) || die 8 "the bare writes failed"
    w_secs=${w_secs##*$'\n'}
    w_rates+=("$(awk -v n="$n10" -v s="$w_secs" 'BEGIN { printf "%d", (s > 0 ? n / s : 0) }')")
    printf '  round %d: W %s s = %s rows/s\n' "$r" "$w_secs" "${w_rates[-1]}"
done
w_med=$(median "${w_rates[@]}")

# Peak RSS per program over every migrate of the run (KiB).
declare -A peak
for p in "${programs[@]}"; do
    peak[$p]=$(cat "$work"/mem.* | awk -v want="$p" '
        $1 ~ /^[0-9]+[.,][0-9]+$/ && NF >= 7 { n = split($7, q, "/"); if (q[n] == want && $5 > m) m = $5 }
        END { print m + 0 }')
done

load_end=$(loadavg)
echo
echo "end:      $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $load_end"

# ---- figures and goals ----
missed=0
# verdict VAR OK: VAR becomes PASS or MISS; a miss is remembered for the exit status.
verdict() {
    if (($2)); then
        printf -v "$1" PASS
    else
        missed=1
        printf -v "$1" MISS
    fi
}
v_r='' v_t='' v_rate='' v_conv=''
verdict v_r $((m1_med * 100 <= r_med * 150))
verdict v_t $((m1_med < t_med))
verdict v_rate $((rate_med >= 50000))
verdict v_conv "$converged"
note="load average $load_start at start, $load_end at end, $(nproc) cores"
vlist=''
for v in "${v_times[@]}"; do vlist+="$(secs "$v"), "; done
vlist=${vlist%, }

# fig LABEL VALUE [REST]: one aligned line of the figures block.
fig() {
    printf '  %-46s %10s  %s\n' "$1" "$2" "${3:-}"
}

echo
echo "figures: ($rows rows; migrate: median of $runs round(s) per drift; R and T: median of $rounds; shared_buffers $shared_buffers; $note)"
fig "R    both tables COPY TO STDOUT side by side" "$(secs "$r_med") s" \
    "(legacy $(secs "$(median "${r_src[@]}")") s, target $(secs "$(median "${r_tgt[@]}")") s)"
fig "T    TRUNCATE + COPY of the target" "$(secs "$t_med") s" \
    "(TRUNCATE $(secs "$(median "${t_trunc[@]}")") s, COPY $(secs "$(median "${t_copy[@]}")") s)"
fig "M0   migrate, first run, no drift" "$(secs "$m0_us") s" "(fills the crosswalk; no goal)"
fig "M1   migrate after 1% drift ($n1 rows)" "$(secs "$m1_med") s"
fig "M1/R" "$(fixed "$m1_med" "$r_med" 2)" "goal <= 1.50          $v_r"
fig "M1/T" "$(fixed "$m1_med" "$t_med" 2)" "goal < 1 (faster)     $v_t"
fig "M10  migrate after 10% drift ($n10 rows)" "$(secs "$m10_med") s" \
    "(M10/R $(fixed "$m10_med" "$r_med" 2), M10/T $(fixed "$m10_med" "$t_med" 2); no goal)"
fig "apply rate at 10% (changed rows / apply s)" "$rate_med" \
    "goal >= 50000 rows/s  $v_rate  (summary.jsonl rows_per_s $sumrate_med)"
fig "W    bare SQL writes of as many rows" "$w_med" \
    "rows/s (no audit, no checks; apply rate / W $(fixed "$rate_med" "$w_med" 2); no goal)"
fig "validate after M0, M1..., M10..." "" "$vlist s"
fig "convergence (counts equal, validate exit 0)" "$v_conv"
for p in "${programs[@]}"; do
    goal='(no goal)'
    for g in "${goal_stages[@]}"; do
        if [[ $g == "$p" ]]; then
            v=''
            verdict v $((peak[$p] < 64 * 1024))
            goal="goal < 64 MiB         $v"
        fi
    done
    fig "peak memory, $p" "$(fixed "${peak[$p]}" 1024 1) MiB" "$goal"
done
rerun="cd $REPO && "
if [[ -n ${DRIFTLESS_BIN:-} ]]; then
    rerun+="DRIFTLESS_BIN=$DRIFTLESS_BIN "
fi
rerun+="tests/bench/bench-sync.sh --rows $rows --runs $runs"
echo "  rerun: $rerun"
exit "$missed"
