#!/bin/bash
# Benchmark of the foundation (issue 4): pgdump-rows | rowcat --count against
# an ordered raw COPY of the same table, pgdump-rows' peak memory, and the
# stream's size against the COPY text. Every figure comes from this run, on a
# scratch cluster of its own. Not a test: it prints figures (see README).
set -euo pipefail

prog=bench-dump.sh
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
BIN=${DRIFTLESS_BIN:-$REPO/bin}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGSCRATCH=$REPO/scripts/pgscratch

rows=1000000
runs=3
keep=0
# err, die, usage_error, positive_int, timing, psql_as, the items table
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"

usage() {
    cat <<EOF
Usage: $prog [--rows N] [--runs N] [--keep]
Time pgdump-rows | rowcat --count against psql's ordered COPY of the same
table, on a scratch cluster this script starts and removes.

  --rows N     rows in the items table (default 1000000; 100000 is quick)
  --runs N     timed rounds, odd; the median is reported (default 3)
  --keep       leave the scratch cluster running, and say how to stop it
  -h, --help   show this help and exit

Environment: DRIFTLESS_BIN (default REPO/bin, built with make when missing),
PGBIN (default /usr/lib/postgresql/15/bin).

Exit status: 0 every goal met, 1 a goal missed, 2 usage error,
5 the cluster or the table could not be set up, 8 a measured command failed.
EOF
}

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
    --keep)
        keep=1
        shift
        ;;
    *) usage_error "unrecognized argument '$1'" ;;
    esac
done
((runs % 2 == 1)) || usage_error "--runs must be odd (the median is reported)"

# ---- measuring helpers ----

# GNU time writes peak RSS (%M, KiB); without it, poll VmHWM while the process
# runs (a sample every 20 ms: it may miss a last-moment peak).
have_gnu_time=0
if /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
    have_gnu_time=1
fi

# peak_run MEMFILE CMD...: run CMD; MEMFILE gets its peak RSS in KiB and
# its CPU seconds (user + system; "-" without GNU time).
peak_run() {
    local memfile=$1
    shift
    if ((have_gnu_time)); then
        /usr/bin/time -f '%M %U %S' -o "$memfile" "$@"
        return
    fi
    local pid hwm=0 v rc=0
    "$@" &
    pid=$!
    while v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) && [[ -n $v ]]; do
        hwm=$v
        sleep 0.02
    done
    wait "$pid" || rc=$?
    printf '%s - -\n' "$hwm" >"$memfile"
    return "$rc"
}

# ---- the cluster ----

if [[ ! -x $BIN/pgdump-rows || ! -x $BIN/rowcat ]]; then
    if [[ -n ${DRIFTLESS_BIN:-} ]]; then
        die 8 "$BIN: no pgdump-rows or rowcat there (DRIFTLESS_BIN)"
    fi
    echo "building: make -C $REPO"
    make -C "$REPO" >&2 || die 8 "make failed"
fi
[[ -x $PGBIN/psql ]] || die 5 "$PGBIN/psql: not found (set PGBIN)"

work=$(mktemp -d /tmp/dlbench-work.XXXXXX)
SCRATCH_DIR=$(mktemp -d /tmp/dlbench.XXXXXX)
started=0

# Called by the EXIT trap (shellcheck does not see it).
# shellcheck disable=SC2317
cleanup() {
    rm -rf "$work"
    if ((started && keep)); then
        printf '\nkept the cluster: eval "%s(%s status %s)"; stop it with: %s stop %s\n' \
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

load_start=$(loadavg)
echo "$prog: pgdump-rows benchmark, $rows rows, $runs timed rounds"
echo "start:    $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $load_start, $(nproc) cores"
echo "binaries: $BIN"
if ((have_gnu_time)); then
    echo "memory:   peak RSS from /usr/bin/time -f %M"
else
    echo "memory:   peak RSS from VmHWM in /proc/PID/status, sampled every 20 ms (no GNU time)"
fi

out=$("$PGSCRATCH" start "$SCRATCH_DIR") || die 5 "could not start a scratch cluster in $SCRATCH_DIR"
started=1
eval "$out"
echo "cluster:  $SCRATCH_DIR ($("$PGBIN/postgres" --version))"

echo
printf 'generating items as legacy_owner in legacy ... '
t0=$(now_us)
# On stdin, not -c: VACUUM cannot run in -c's implicit transaction.
items_source_sql "$rows" | psql_as legacy_owner legacy >"$work/gen.log" 2>&1 ||
    { cat "$work/gen.log" >&2; die 5 "could not create the items table"; }
t1=$(now_us)
table_size=$(psql_as legacy_owner legacy -c "SELECT pg_size_pretty(pg_total_relation_size('items'))")
echo "$(secs $((t1 - t0))) s; $table_size on disk with its index"

# The two commands under test. A is the spec's psql line as legacy_reader.
copy_sql="COPY (SELECT * FROM items ORDER BY id) TO STDOUT"
run_a() {
    PGUSER=legacy_reader PGDATABASE=legacy "$PGBIN/psql" -X -c "$copy_sql"
}
dump=("$BIN/pgdump-rows" --dsn-env SOURCE_DATABASE_URL --table public.items --key id)

# cpu_of MEMFILE: the CPU seconds peak_run wrote, or n/a.
cpu_of() {
    local kib u s
    read -r kib u s <"$1"
    if [[ $u == - ]]; then
        echo n/a
    else
        awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }'
    fi
}

# run_b MEMFILE: pgdump-rows | rowcat --count; the count must be the table's.
# rowcat's peak and CPU go to MEMFILE.rowcat.
run_b() {
    local count
    count=$(peak_run "$1" "${dump[@]}" | peak_run "$1.rowcat" "$BIN/rowcat" --count) ||
        die 8 "pgdump-rows | rowcat --count failed"
    [[ $count == "$rows" ]] || die 8 "rowcat --count printed '$count', expected $rows"
}

printf 'warming the cache (one COPY, one dump) ... '
t0=$(now_us)
run_a >/dev/null || die 8 "psql COPY failed"
run_b "$work/mem.warm"
echo "$(secs $(($(now_us) - t0))) s"

echo
echo "timing, $runs rounds, A and B alternating (median reported; wall clock):"
echo "  A = psql -X -c \"$copy_sql\" > /dev/null   (as legacy_reader)"
echo "  B = pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.items --key id | rowcat --count"
a_times=()
b_times=()
b_mem=()
for ((r = 1; r <= runs; r++)); do
    t0=$(now_us)
    run_a >/dev/null || die 8 "psql COPY failed"
    t1=$(now_us)
    run_b "$work/mem.$r"
    t2=$(now_us)
    a_times+=($((t1 - t0)))
    b_times+=($((t2 - t1)))
    read -r kib _ <"$work/mem.$r"
    b_mem+=("$kib")
    printf '  round %d: A %s s   B %s s   B/A %s   CPU s: pgdump-rows %s, rowcat %s   pgdump-rows peak %s MiB\n' \
        "$r" "$(secs "${a_times[-1]}")" "$(secs "${b_times[-1]}")" \
        "$(fixed "${b_times[-1]}" "${a_times[-1]}" 2)" \
        "$(cpu_of "$work/mem.$r")" "$(cpu_of "$work/mem.$r.rowcat")" "$(fixed "$kib" 1024 1)"
done
a_med=$(median "${a_times[@]}")
b_med=$(median "${b_times[@]}")
a_best=$(printf '%s\n' "${a_times[@]}" | sort -n | head -n 1)
b_best=$(printf '%s\n' "${b_times[@]}" | sort -n | head -n 1)
mem_max=$(printf '%s\n' "${b_mem[@]}" | sort -n | tail -n 1)

echo
echo "sizes:"
copy_bytes=$(run_a | wc -c) || die 8 "psql COPY | wc -c failed"
printf '  COPY text (psql COPY | wc -c):                       %12d bytes\n' "$copy_bytes"
t0=$(now_us)
peak_run "$work/mem.file" "${dump[@]}" --output "$work/items.rs" || die 8 "pgdump-rows --output failed"
file_us=$(($(now_us) - t0))
file_bytes=$(stat -c %s "$work/items.rs")
read -r file_mem _ <"$work/mem.file"
[[ $("$BIN/rowcat" --count "$work/items.rs") == "$rows" ]] || die 8 "the file's record count is not $rows"
printf '  file level (--output FILE, default file level):      %12d bytes  %s%%  (%s s, peak %s MiB)\n' \
    "$file_bytes" "$(fixed $((file_bytes * 100)) "$copy_bytes" 1)" "$(secs "$file_us")" \
    "$(fixed "$file_mem" 1024 1)"
pipe_bytes=$("${dump[@]}" | wc -c) || die 8 "pgdump-rows | wc -c failed"
printf '  pipe level (| wc -c, default pipe level):            %12d bytes  %s%%\n' \
    "$pipe_bytes" "$(fixed $((pipe_bytes * 100)) "$copy_bytes" 1)"

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
ratio100=$(((b_med * 100 * 2 + a_med) / (a_med * 2)))
file_pct10=$(((file_bytes * 1000 * 2 + copy_bytes) / (copy_bytes * 2)))
v_ratio='' v_mem='' v_file=''
verdict v_ratio $((b_med * 100 <= a_med * 130))
verdict v_mem $((mem_max < 50 * 1024))
verdict v_file $((file_bytes * 100 <= copy_bytes * 35))
note="load average $load_start at start, $load_end at end, $(nproc) cores"

echo
echo "figures: ($rows rows, median of $runs rounds, $note)"
printf '  A  ordered COPY to /dev/null (psql)     %8s s\n' "$(secs "$a_med")"
printf '  B  pgdump-rows | rowcat --count         %8s s\n' "$(secs "$b_med")"
printf '  B/A                                     %8s    goal <= 1.30     %s\n' \
    "$(fixed "$ratio100" 100 2)" "$v_ratio"
printf '  B/A of the best times (for reference)   %8s\n' "$(fixed "$b_best" "$a_best" 2)"
printf '  pgdump-rows peak memory (max of B)      %8s MiB  goal < 50 MiB   %s\n' \
    "$(fixed "$mem_max" 1024 1)" "$v_mem"
printf '  file-level stream / COPY text           %8s %%    goal <= 35%%     %s\n' \
    "$(fixed "$file_pct10" 10 1)" "$v_file"
printf '  pipe-level stream / COPY text           %8s %%    (no goal)\n' \
    "$(fixed $((pipe_bytes * 100)) "$copy_bytes" 1)"
printf '  COPY text                               %8s MB\n' "$(fixed "$copy_bytes" 1000000 1)"
rerun="cd $REPO && "
if [[ -n ${DRIFTLESS_BIN:-} ]]; then
    rerun+="DRIFTLESS_BIN=$DRIFTLESS_BIN "
fi
rerun+="tests/bench/bench-dump.sh --rows $rows --runs $runs"
echo "  rerun: $rerun"
exit "$missed"
