# Shared by the driftless scripts (POSIX sh): messages, logs, the table map,
# SQL quoting, exported snapshots and the per-table pipelines. Sourced, not run.
# shellcheck shell=sh
# Variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034

# dl_init NAME: program name for messages; puts the driftless programs on PATH.
dl_init() {
    dl_prog=$1
    dl_here=$(cd "$(dirname "$0")" && pwd -P)
    if [ -n "${DRIFTLESS_BIN:-}" ]; then
        PATH=$DRIFTLESS_BIN:$PATH
    elif [ -x "$dl_here/../bin/pgdump-rows" ]; then
        PATH=$(cd "$dl_here/../bin" && pwd -P):$PATH
    fi
    export PATH
    umask 077
    dl_log_file=
    dl_run_id=
}

dl_err() {
    printf '%s: %s\n' "$dl_prog" "$*" >&2
}

# dl_die CODE MESSAGE: print, log and exit.
dl_die() {
    dl_die_code=$1
    shift
    dl_err "$@"
    dl_log ERROR "-" "-" "$*"
    exit "$dl_die_code"
}

dl_usage_error() {
    dl_err "$@"
    printf "Try '%s --help' for more information.\n" "$dl_prog" >&2
    exit 2
}

# dl_log LEVEL TABLE STAGE MESSAGE: one line in the run's log file, if any.
dl_log() {
    [ -n "$dl_log_file" ] || return 0
    printf '%s %s run=%s table=%s stage=%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" \
        "${dl_run_id:--}" "$2" "$3" "$4" >>"$dl_log_file"
}

# ---- the table map (driftless-map(5)) ----

# map_check FILE: exit 4 with the line number on a malformed line.
map_check() {
    awk '
        /^[ \t]*(#|$)/ { next }
        /^[ \t]*\[[^]]+\][ \t]*$/ { next }
        /^[ \t]*[A-Za-z_][A-Za-z0-9_.+]*[ \t]*=/ { next }
        { printf "line %d: expected [table] or key = value: %s\n", NR, $0; bad = 1; exit }
        END { exit bad }
    ' "$1" >&2 || dl_die 4 "table map $1: malformed"
}

# map_tables FILE: the table sections, in file order.
map_tables() {
    awk '/^[ \t]*\[[^]]+\][ \t]*$/ {
        s = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", s); if (s != "defaults") print s }' "$1"
}

# map_get FILE TABLE KEY: the value from the table's section, else [defaults];
# status 1 when neither has it.
map_get() {
    awk -v want="$2" -v key="$3" '
        /^[ \t]*(#|$)/ { next }
        /^[ \t]*\[[^]]+\][ \t]*$/ { s = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", s); next }
        {
            i = index($0, "="); k = substr($0, 1, i - 1); v = substr($0, i + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", k); gsub(/^[ \t]+|[ \t]+$/, "", v)
            if (k != key) next
            if (s == want) { tv = v; tf = 1 } else if (s == "defaults") { dv = v; df = 1 }
        }
        END { if (tf) print tv; else if (df) print dv; else exit 1 }
    ' "$1"
}

# map_prefixed FILE TABLE PREFIX: "suffix=value" for each key starting with PREFIX.
map_prefixed() {
    awk -v want="$2" -v pre="$3" '
        /^[ \t]*(#|$)/ { next }
        /^[ \t]*\[[^]]+\][ \t]*$/ { s = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", s); next }
        s == want {
            i = index($0, "="); k = substr($0, 1, i - 1); v = substr($0, i + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", k); gsub(/^[ \t]+|[ \t]+$/, "", v)
            if (substr(k, 1, length(pre)) == pre) print substr(k, length(pre) + 1) "=" v
        }
    ' "$1"
}

# ---- SQL text ----

# sql_lit STRING: a single-quoted SQL literal.
sql_lit() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"
}

# sql_ident NAME: a double-quoted identifier; "a.b" becomes "a"."b".
sql_ident() {
    printf '%s' "$1" | awk '{
        n = split($0, p, "."); out = ""
        for (i = 1; i <= n; i++) { gsub(/"/, "\"\"", p[i]); out = out (i > 1 ? "." : "") "\"" p[i] "\"" }
        printf "%s", out }'
}

# list_words "a, b,c": one item per line.
list_words() {
    printf '%s\n' "$1" | tr ',' '\n' | sed 's/^[ \t]*//; s/[ \t]*$//' | sed '/^$/d'
}

# ---- exported snapshots ----

# snap_open SIDE ENVNAME DIR: start a holder of an exported snapshot; sets
# snap_<SIDE> to its id. The holder keeps its transaction until snap_close.
snap_open() {
    snap_side=$1
    rm -f "$3/hold.$snap_side" "$3/snap.$snap_side"
    mkfifo "$3/hold.$snap_side" || dl_die 3 "could not create $3/hold.$snap_side"
    pgdump-rows --dsn-env "$2" --export-snapshot <"$3/hold.$snap_side" >"$3/snap.$snap_side" &
    eval "snap_pid_$snap_side=\$!"
    # Opening the write end lets the holder start; closing it ends the holder.
    case $snap_side in
    source) exec 8>"$3/hold.$snap_side" ;;
    target) exec 9>"$3/hold.$snap_side" ;;
    esac
    snap_wait=0
    while [ ! -s "$3/snap.$snap_side" ]; do
        if ! kill -0 "$(eval "echo \$snap_pid_$snap_side")" 2>/dev/null; then
            wait "$(eval "echo \$snap_pid_$snap_side")"
            dl_die 5 "$snap_side: could not export a snapshot"
        fi
        snap_wait=$((snap_wait + 1))
        [ $snap_wait -lt 600 ] || dl_die 5 "$snap_side: no snapshot after 60 s"
        sleep 0.1
    done
    snap_id=$(head -n 1 "$3/snap.$snap_side")
    case $snap_side in
    source) snap_source=$snap_id ;;
    target) snap_target=$snap_id ;;
    esac
}

# snap_close: end both holders (their read-only transactions end with them).
snap_close() {
    exec 8>&- 9>&-
    for snap_side in source target; do
        snap_p=$(eval "echo \${snap_pid_$snap_side:-}")
        [ -n "$snap_p" ] && wait "$snap_p" 2>/dev/null
        eval "snap_pid_$snap_side="
    done
    return 0
}

# ---- waiting for a pipeline ----

# pipe_status PID...: wait for each; print the first status that tells the cause
# (a stage killed by SIGPIPE, 141, only reflects a later stage's failure).
pipe_status() {
    ps_first=0
    ps_pipe=0
    for ps_pid in "$@"; do
        wait "$ps_pid"
        ps_rc=$?
        if [ $ps_rc -eq 141 ]; then
            ps_pipe=141
        elif [ $ps_rc -ne 0 ] && [ $ps_first -eq 0 ]; then
            ps_first=$ps_rc
        fi
    done
    [ $ps_first -ne 0 ] || ps_first=$ps_pipe
    echo $ps_first
}

# ---- one table's plan, from the map ----

# table_load MAP TABLE: set t_source, t_query, t_lk (legacy key, comma list),
# t_sk (source key), t_uuid, t_cols, t_fkargs (idmap --fk arguments, one per line),
# t_guard (rowdiff guard arguments).
table_load() {
    tl_map=$1
    tl_t=$2
    t_source=$(map_get "$tl_map" "$tl_t" source || printf '%s' "$tl_t")
    t_lk=$(map_get "$tl_map" "$tl_t" legacy_key) ||
        dl_die 4 "table map: table $tl_t: no legacy_key"
    t_sk=$(map_get "$tl_map" "$tl_t" source_key || printf '%s' "$t_lk")
    t_uuid=$(map_get "$tl_map" "$tl_t" uuid_column || true)
    t_cols=$(map_get "$tl_map" "$tl_t" columns || true)
    t_query=$(map_get "$tl_map" "$tl_t" source_query || true)
    if [ -z "$t_query" ]; then
        t_query=$(table_source_query "$tl_map" "$tl_t")
    fi
    t_guard="--guard-pct $(map_get "$tl_map" "$tl_t" guard_pct || echo 10)"
    t_guard="$t_guard --guard-min $(map_get "$tl_map" "$tl_t" guard_min || echo 100)"
    for tl_a in $(list_words "$(map_get "$tl_map" "$tl_t" allow || true)"); do
        case $tl_a in
        inserts | updates | deletes) t_guard="$t_guard --allow-$tl_a" ;;
        all) t_guard="$t_guard --allow-all" ;;
        *) dl_die 4 "table map: table $tl_t: allow: unknown value '$tl_a'" ;;
        esac
    done
}

# table_source_query MAP TABLE: SELECT source_key AS legacy_key, expr AS col ... FROM source.
table_source_query() {
    tq_lk=$(list_words "$t_lk")
    tq_sk=$(list_words "$t_sk")
    [ "$(printf '%s\n' "$tq_lk" | wc -l)" -eq "$(printf '%s\n' "$tq_sk" | wc -l)" ] ||
        dl_die 4 "table map: table $2: legacy_key and source_key differ in length"
    tq_sel=$(printf '%s\n' "$tq_sk" | paste -d ' ' - /dev/null | {
        i=0
        while read -r sk _; do
            i=$((i + 1))
            lk=$(printf '%s\n' "$tq_lk" | sed -n "${i}p")
            printf '%s AS %s, ' "$(sql_ident "$sk")" "$(sql_ident "$lk")"
        done
    })
    for tq_c in $(list_words "$t_cols"); do
        tq_e=$(map_get "$1" "$2" "expr.$tq_c" || sql_ident "$tq_c")
        tq_sel="$tq_sel($tq_e) AS $(sql_ident "$tq_c"), "
    done
    printf 'SELECT %s FROM %s' "${tq_sel%, }" "$(sql_ident "$t_source")"
}

# map_groups MAP: the apply groups, parents before children, one per line: a
# table alone, or the tables of a foreign-key cycle (a strongly connected
# component, found with Tarjan's algorithm) together.
map_groups() {
    for mg_t in $(map_tables "$1"); do
        printf 'node %s\n' "$mg_t"
        map_prefixed "$1" "$mg_t" fk. | while IFS='=' read -r _ mg_p; do
            printf 'edge %s %s\n' "$mg_p" "$mg_t"
        done
    done | awk '
        $1 == "node" { if (!($2 in known)) { known[$2] = 1; order[++n] = $2 } }
        $1 == "edge" { if ($2 != $3) { adj[$2] = adj[$2] " " $3 } }
        function visit(v,    i, k, w, parts, comp) {
            index_of[v] = lowlink[v] = ++counter
            stack[++sp] = v; onstack[v] = 1
            k = split(adj[v], parts, " ")
            for (i = 1; i <= k; i++) {
                w = parts[i]
                if (!(w in index_of)) { visit(w); if (lowlink[w] < lowlink[v]) lowlink[v] = lowlink[w] }
                else if (onstack[w] && index_of[w] < lowlink[v]) lowlink[v] = index_of[w]
            }
            if (lowlink[v] == index_of[v]) {
                comp = ""
                do { w = stack[sp--]; onstack[w] = 0; comp = w (comp == "" ? "" : " ") comp } while (w != v)
                groups[++ng] = comp
            }
        }
        END {
            for (i = 1; i <= n; i++) if (!(order[i] in index_of)) visit(order[i])
            # Tarjan emits children before parents: print in reverse.
            for (i = ng; i >= 1; i--) print groups[i]
        }'
}

# map_order MAP: every table, parents before children (cycle members together).
map_order() {
    map_groups "$1" | tr ' ' '\n'
}
