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
    # The globals the table pipelines read; scripts set them from their options.
    map=
    run_dir=
    source_env=SOURCE_DATABASE_URL
    target_env=TARGET_DATABASE_URL
    snap_source=
    snap_target=
    snap_xmin_source=
    snap_xmin_target=
    registered=
    # Tables a run created whose first fill has not completed (migrate sets
    # it, blank-separated): table_load lifts their insert guard.
    first_fill=
    # An incremental compare of the table at hand (incr_use): its key set and
    # the equal rows left out of it.
    dl_key_set=
    dl_outside=
    bg_pids=
    # What table_load sets (declared for readers of this file).
    t_error='' t_source='' t_query='' t_lk='' t_sk='' t_uuid='' t_cols='' t_mapping=''
    t_ktype='' t_guard='' t_nkeys='' t_keysel='' t_keynotnull='' t_xwkeys='' t_tcols=''
    t_tsel='' t_keytext='' t_fks='' t_schema_args='' t_app_rows=''
    tl_loaded=
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

# snap_open DIR: start a holder of an exported snapshot on each side, at
# once; sets snap_source and snap_target to their ids, snap_xmin_source and
# snap_xmin_target to their xmins. The holders keep their transactions until
# snap_close.
snap_open() {
    for snap_side in source target; do
        rm -f "$1/hold.$snap_side" "$1/snap.$snap_side"
        mkfifo "$1/hold.$snap_side" || dl_die 3 "could not create $1/hold.$snap_side"
        if [ $snap_side = source ]; then snap_env=$source_env; else snap_env=$target_env; fi
        pgdump-rows --dsn-env "$snap_env" --export-snapshot <"$1/hold.$snap_side" >"$1/snap.$snap_side" &
        eval "snap_pid_$snap_side=\$!"
        # Opening the write end lets the holder start; closing it ends the holder.
        case $snap_side in
        source) exec 8>"$1/hold.$snap_side" ;;
        target) exec 9>"$1/hold.$snap_side" ;;
        esac
    done
    snap_wait=0
    for snap_side in source target; do
        while [ ! -s "$1/snap.$snap_side" ]; do
            if ! kill -0 "$(eval "echo \$snap_pid_$snap_side")" 2>/dev/null; then
                wait "$(eval "echo \$snap_pid_$snap_side")"
                dl_die 5 "$snap_side: could not export a snapshot"
            fi
            snap_wait=$((snap_wait + 1))
            [ $snap_wait -lt 3000 ] || dl_die 5 "$snap_side: no snapshot after 60 s"
            sleep 0.02
        done
        snap_id=$(head -n 1 "$1/snap.$snap_side")
        # The second line is the snapshot's xmin: the watermark of an incremental compare.
        snap_x=$(sed -n 2p "$1/snap.$snap_side")
        case $snap_side in
        source) snap_source=$snap_id snap_xmin_source=$snap_x ;;
        target) snap_target=$snap_id snap_xmin_target=$snap_x ;;
        esac
    done
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

# snap_hold DIR PID: snap_open for both sides in a background holder that
# outlives the caller (a make target): it keeps the snapshots until
# snap_release DIR, or until process PID (the make) ends. Sets snap_source
# and snap_target. DIR/hold.token names the holder wanted, DIR/hold.ready
# the one holding.
snap_hold() {
    snap_release "$1"
    sh_token="$$.$(date +%s%N)"
    printf '%s\n' "$sh_token" >"$1/hold.token"
    (
        snap_open "$1"
        printf '%s\n' "$sh_token" >"$1/hold.ready"
        while kill -0 "$2" 2>/dev/null && [ -f "$1/hold.token" ] &&
            [ "$(cat "$1/hold.token" 2>/dev/null)" = "$sh_token" ]; do
            sleep 0.2
        done
        snap_close
        [ "$(cat "$1/hold.ready" 2>/dev/null)" != "$sh_token" ] || rm -f "$1/hold.ready"
    ) </dev/null >/dev/null 2>"$1/hold.err" 3>&- &
    sh_pid=$!
    until snap_held "$1"; do
        if ! kill -0 "$sh_pid" 2>/dev/null; then
            cat "$1/hold.err" >&2
            dl_die 5 "could not export the snapshots"
        fi
        sleep 0.1
    done
}

# snap_held DIR: true when the holder DIR/hold.token wants holds the
# snapshots; sets snap_source and snap_target, and their xmins (snap_open).
snap_held() {
    [ -s "$1/hold.ready" ] && [ "$(cat "$1/hold.ready")" = "$(cat "$1/hold.token" 2>/dev/null)" ] ||
        return 1
    snap_source=$(head -n 1 "$1/snap.source")
    snap_target=$(head -n 1 "$1/snap.target")
    snap_xmin_source=$(sed -n 2p "$1/snap.source")
    snap_xmin_target=$(sed -n 2p "$1/snap.target")
}

# snap_release DIR: end the holder of snap_hold, and wait (60 s at most) for
# its transactions to end.
snap_release() {
    sr_ready=$(cat "$1/hold.ready" 2>/dev/null) || sr_ready=
    rm -f "$1/hold.token"
    sr_wait=0
    while [ -n "$sr_ready" ] && [ "$(cat "$1/hold.ready" 2>/dev/null)" = "$sr_ready" ] &&
        [ $sr_wait -lt 600 ]; do
        sr_wait=$((sr_wait + 1))
        sleep 0.1
    done
}

# ---- waiting for a pipeline ----

# pipe_stop PID...: end the stages still running after the last one failed:
# one blocked opening a FIFO whose reader is gone would wait forever.
pipe_stop() {
    kill "$@" 2>/dev/null || true
}

# pipe_status PID...: wait for each; set ps_first to the first status that tells
# the cause (a stage killed by SIGPIPE, 141, or by pipe_stop, 143, only echoes
# another stage's failure).
# Not in $(...): a subshell cannot wait for its parent's children.
pipe_status() {
    ps_first=0
    ps_pipe=0
    for ps_pid in "$@"; do
        ps_rc=0
        wait "$ps_pid" || ps_rc=$?
        if [ $ps_rc -eq 141 ] || [ $ps_rc -eq 143 ]; then
            ps_pipe=141
        elif [ $ps_rc -ne 0 ] && [ $ps_first -eq 0 ]; then
            ps_first=$ps_rc
        fi
    done
    [ $ps_first -ne 0 ] || ps_first=$ps_pipe
}

# ---- one table's plan, from the map ----

# table_load MAP TABLE: one awk pass over the map sets every t_* variable the
# pipelines need (SQL text included), so a table costs one process, not dozens.
#   t_source t_query t_lk t_sk t_uuid t_cols t_mapping t_ktype t_nkeys
#   t_guard      rowdiff's guard options (--allow-inserts for a first_fill table)
#   t_app_rows   app_rows: none or keys-only-in-target (pgapply --register --app-rows)
#   t_keysel     "k1", "k2"                t_keynotnull  "k1" IS NOT NULL AND ...
#   t_xwkeys     the crosswalk's legacy_key (alias c) as typed key columns
#   t_tcols      uuid and data columns, comma list (target dump)
#   t_tsel       t."uuid", t."col", ...     t_keytext  the legacy-key text of row t
#   t_fks        idmap's --fk arguments, shell-quoted (for eval "set -- $t_fks")
#   t_schema_args  pgverify --schema arguments, shell-quoted ('' for a source_query)
table_load() {
    [ "${tl_loaded:-}" != "$1|$2" ] || return 0
    tl_out=$(awk -v want="$2" -v maps="$run_dir/maps" '
        function trim(x) { gsub(/^[ \t]+|[ \t]+$/, "", x); return x }
        function q(x) { gsub(/"/, "\"\"", x); return "\"" x "\"" }
        function qq(x,    n, p, i, o) { n = split(x, p, "."); o = ""
            for (i = 1; i <= n; i++) o = o (i > 1 ? "." : "") q(p[i]); return o }
        function words(x, arr,    n, i, p, k) { n = split(x, p, ","); k = 0
            for (i = 1; i <= n; i++) { p[i] = trim(p[i]); if (p[i] != "") arr[++k] = p[i] }
            return k }
        function sh(x) { gsub(/\047/, "\047\\\047\047", x); return "\047" x "\047" }
        function get(k, d) { return (k in tv) ? tv[k] : ((k in dv) ? dv[k] : d) }
        /^[ \t]*(#|$)/ { next }
        /^[ \t]*\[[^]]+\][ \t]*$/ { sec = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", sec); next }
        {
            i = index($0, "="); k = trim(substr($0, 1, i - 1)); v = trim(substr($0, i + 1))
            if (sec == want) { tv[k] = v; if (k ~ /^fk\./) fkorder[++nfk] = substr(k, 4) }
            else if (sec == "defaults") dv[k] = v
        }
        END {
            if (!("legacy_key" in tv) && !("legacy_key" in dv)) { print "t_error=" sh("no legacy_key"); exit }
            nlk = words(get("legacy_key"), lk); nsk = words(get("source_key", get("legacy_key")), sk)
            if (nlk != nsk) { print "t_error=" sh("legacy_key and source_key differ in length"); exit }
            nkt = words(get("key_type", "bigint"), kt)
            ncol = words(get("columns", ""), col)
            uuid = get("uuid_column", "")
            source = get("source", want)
            lkl = ""; keysel = ""; notnull = ""; xw = ""; ktext = ""; sel = ""
            for (i = 1; i <= nlk; i++) {
                lkl = lkl (i > 1 ? "," : "") lk[i]
                keysel = keysel (i > 1 ? ", " : "") q(lk[i])
                notnull = notnull (i > 1 ? " AND " : "") q(lk[i]) " IS NOT NULL"
                t = (i <= nkt) ? kt[i] : kt[nkt]
                xw = xw (i > 1 ? ", " : "") (nlk == 1 ? "c.legacy_key" : "(c.legacy_key::jsonb ->> " (i - 1) ")") "::" t " AS " q(lk[i])
                ktext = ktext (i > 1 ? ", " : "") "(t." q(lk[i]) ")::text"
                sel = sel (i > 1 ? ", " : "") q(sk[i]) " AS " q(lk[i])
            }
            if (nlk > 1) ktext = "pg_catalog.to_jsonb(ARRAY[" ktext "])::text"
            skl = ""; for (i = 1; i <= nsk; i++) skl = skl (i > 1 ? "," : "") sk[i]
            cols = ""; tcols = uuid; tsel = (uuid != "") ? "t." q(uuid) : ""
            for (i = 1; i <= ncol; i++) {
                cols = cols (i > 1 ? "," : "") col[i]
                tcols = tcols (tcols != "" ? "," : "") col[i]
                tsel = tsel (tsel != "" ? ", " : "") "t." q(col[i])
                e = get("expr." col[i], q(col[i]))
                sel = sel ", (" e ") AS " q(col[i])
            }
            query = get("source_query", "")
            if (query == "") query = "SELECT " sel " FROM " qq(source)
            guard = "--guard-pct " get("guard_pct", 10) " --guard-min " get("guard_min", 100)
            na = words(get("allow", ""), al)
            for (i = 1; i <= na; i++) {
                if (al[i] ~ /^(inserts|updates|deletes|all)$/) guard = guard " --allow-" al[i]
                else { print "t_error=" sh("allow: unknown value " al[i]); exit }
            }
            app = get("app_rows", "keys-only-in-target")
            if (app != "none" && app != "keys-only-in-target") { print "t_error=" sh("app_rows: unknown value " app " (none or keys-only-in-target)"); exit }
            if (app == "none" && uuid != "" && ("app_rows" in tv)) { print "t_error=" sh("app_rows = none is for a table that kept its keys (no uuid_column)"); exit }
            fks = ""
            for (i = 1; i <= nfk; i++) {
                c = fkorder[i]; spec = c
                if (c ~ /\+/) { first = c; sub(/\+.*/, "", first); spec = c; gsub(/\+/, ",", spec); spec = spec "=>" first }
                pol = get("fk_policy." c, get("dangling", "error"))
                fks = fks " --fk " sh(spec "=" maps "/" tv["fk." c] ".rs:" pol)
            }
            print "t_error=\047\047"
            print "t_source=" sh(source); print "t_query=" sh(query)
            print "t_lk=" sh(lkl); print "t_sk=" sh(skl); print "t_uuid=" sh(uuid)
            print "t_cols=" sh(cols); print "t_mapping=" sh(get("mapping", "column"))
            print "t_ktype=" sh(get("key_type", "bigint")); print "t_guard=" sh(guard)
            print "t_nkeys=" nlk; print "t_keysel=" sh(keysel); print "t_keynotnull=" sh(notnull)
            print "t_xwkeys=" sh(xw); print "t_tcols=" sh(tcols); print "t_tsel=" sh(tsel)
            print "t_keytext=" sh(ktext); print "t_fks=" sh(fks); print "t_app_rows=" sh(app)
            # pgverify --schema arguments: how target columns are filled.
            mc = ""; ign = get("ignore", "")
            # A legacy key kept only in the crosswalk has no target column.
            for (i = 1; i <= nlk; i++)
                if (get("mapping", "column") == "column") mc = mc (mc != "" ? "," : "") lk[i] "=" sk[i]
                else ign = ign (ign != "" ? "," : "") sk[i]
            ex = ""; for (i = 1; i <= ncol; i++) if (("expr." col[i]) in tv) ex = ex (ex != "" ? "," : "") col[i]
            fkc = ""; for (i = 1; i <= nfk; i++) fkc = fkc (fkc != "" ? "," : "") fkorder[i]
            sa = " --source-table " sh(source) " --target-table " sh(want)
            if (mc != "") sa = sa " --map-columns " sh(mc)
            if (ex != "") sa = sa " --expr " sh(ex)
            if (fkc != "") sa = sa " --fk " sh(fkc)
            if (uuid != "") sa = sa " --uuid-column " sh(uuid)
            if (ign != "") sa = sa " --ignore " sh(ign)
            print "t_schema_args=" sh(get("source_query", "") == "" ? sa : "")
        }' "$1") || dl_die 4 "table map $1: could not be read"
    eval "$tl_out"
    [ -z "$t_error" ] || dl_die 4 "table map: table $2: $t_error"
    case " ${first_fill:-} " in *" $2 "*) t_guard="$t_guard --allow-inserts" ;; esac
    tl_loaded="$1|$2"
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

# map_closure MAP TABLE...: the tables and every ancestor they reach through
# fk.* entries, in map order (what a run of only those tables must read).
map_closure() {
    mc_map=$1
    shift
    for mc_t in $(map_tables "$mc_map"); do
        map_prefixed "$mc_map" "$mc_t" fk. | while IFS='=' read -r _ mc_p; do
            printf 'edge %s %s\n' "$mc_t" "$mc_p"
        done
        printf 'node %s\n' "$mc_t"
    done | awk -v want="$*" '
        $1 == "edge" { par[$2] = par[$2] " " $3; next }
        $1 == "node" { order[++n] = $2 }
        function take(t,    k, p, i) { if (t in got) return; got[t] = 1
            k = split(par[t], p, " "); for (i = 1; i <= k; i++) take(p[i]) }
        END { k = split(want, w, " "); for (i = 1; i <= k; i++) take(w[i])
            for (i = 1; i <= n; i++) if (order[i] in got) print order[i] }'
}

# map_order MAP: every table, parents before children (cycle members together).
map_order() {
    map_groups "$1" | tr ' ' '\n'
}

# ---- the streams of one table, in target form ----
# These read the globals map, run_dir, source_env, target_env, snap_source,
# snap_target and registered (state_tables), and add the PIDs of the processes
# they start to bg_pids.

# state_tables: set registered to the tables driftless has taken over (one per
# line; empty before the first run), read in the target's snapshot.
state_tables() {
    registered=
    # state_ready=1: this process installed the schema (pgapply --begin-run).
    if [ "${state_ready:-0}" != 1 ]; then
        st_has=$(pgdump-rows --dsn-env "$target_env" --snapshot "$snap_target" --name state \
            --key n --query "SELECT count(*) AS n FROM pg_catalog.pg_namespace WHERE nspname = 'driftless'" |
            rowcat --csv) || return 5
        [ "$st_has" = 1 ] || return 0
    fi
    registered=$(pgdump-rows --dsn-env "$target_env" --snapshot "$snap_target" --name state \
        --key table_name --query "SELECT table_name FROM driftless.tables" | rowcat --csv) ||
        return 5
}

# is_registered TABLE: true when driftless has taken TABLE over.
is_registered() {
    printf '%s\n' "$registered" | grep -qxF "$1"
}

# crosswalk_query TABLE: the table's existing map (legacy key -> uuid).
crosswalk_query() {
    if ! is_registered "$1" && [ "$t_mapping" = column ]; then
        # Before the first apply, the legacy column is the mapping.
        printf 'SELECT %s, t.%s AS uuid FROM %s AS t WHERE %s' "$t_keysel" "$(sql_ident "$t_uuid")" \
            "$(sql_ident "$1")" "$t_keynotnull"
    else
        printf 'SELECT %s, c.uuid FROM driftless.crosswalk AS c WHERE c.table_name = %s' \
            "$t_xwkeys" "$(sql_lit "$1")"
    fi
}

# stream_keys TABLE: maps/TABLE.rs, the complete id map of this run: issued
# UUIDs kept, new ones for new legacy keys. Read before any table's rows, so
# that parents, children, self-references and cycles all find their UUIDs.
stream_keys() {
    table_load "$map" "$1"
    [ -n "$t_uuid" ] || return 0
    sk_tmp=$run_dir/tmp/$1
    # With an incremental compare's key set (incr_use keys), the map of those keys only.
    pgdump-rows --dsn-env "$target_env" --snapshot "$snap_target" --query "$(crosswalk_query "$1")" \
        --name "$1" --key "$t_lk" ${dl_key_set:+--key-set "$dl_key_set"} \
        --output "$sk_tmp.crosswalk.rs" || return $?
    # dash has no pipefail: a failed dump reaches idmap as a truncated stream (4).
    pgdump-rows --dsn-env "$source_env" --snapshot "$snap_source" \
        --query "SELECT $t_keysel FROM ($t_query) AS q" --name "$1" --key "$t_lk" \
        ${dl_key_set:+--key-set "$dl_key_set"} |
        idmap --quiet --table "$1" --uuid-column "$t_uuid" --map "$sk_tmp.crosswalk.rs" \
            --map-out "$run_dir/maps/$1.rs" >/dev/null
}

# stream_source TABLE OUT: the source rows in target form (ids mapped) into OUT.
stream_source() {
    table_load "$map" "$1"
    ss_t=$1
    ss_out=$2
    ss_fifo=$run_dir/tmp/$1.s1
    rm -f "$ss_fifo"
    mkfifo "$ss_fifo"
    eval "set -- $t_fks"
    if [ -n "$t_uuid" ]; then
        set -- "$@" --uuid-column "$t_uuid" --map "$run_dir/maps/$ss_t.rs"
    fi
    pgdump-rows --dsn-env "$source_env" --snapshot "$snap_source" --query "$t_query" \
        --name "$ss_t" --key "$t_lk" ${dl_key_set:+--key-set "$dl_key_set"} >"$ss_fifo" &
    bg_pids="$bg_pids $!"
    idmap --quiet --table "$ss_t" --stats "$run_dir/stats/$ss_t.idmap.json" "$@" \
        <"$ss_fifo" >"$ss_out" &
    bg_pids="$bg_pids $!"
}

# stream_target TABLE OUT: the target's migrated rows of TABLE into OUT.
stream_target() {
    table_load "$map" "$1"
    if [ -n "$t_uuid" ] && [ "$t_mapping" != column ]; then
        # The legacy key lives in the crosswalk only: rows not in it are the target's own.
        pgdump-rows --dsn-env "$target_env" --snapshot "$snap_target" --name "$1" --key "$t_lk" \
            --query "SELECT $t_xwkeys, $t_tsel FROM $(sql_ident "$1") AS t JOIN driftless.crosswalk AS c ON c.table_name = $(sql_lit "$1") AND c.uuid = t.$(sql_ident "$t_uuid")" \
            >"$2" &
    elif [ -z "$t_uuid" ] && is_registered "$1"; then
        # A table that kept its keys: only the keys that came from the source.
        pgdump-rows --dsn-env "$target_env" --snapshot "$snap_target" --name "$1" --key "$t_lk" \
            --query "SELECT $(printf '%s' "$t_keysel" | sed 's/"\([^"]*\)"/t."\1"/g')${t_tsel:+, $t_tsel} FROM $(sql_ident "$1") AS t WHERE EXISTS (SELECT 1 FROM driftless.owned_keys AS o WHERE o.table_name = $(sql_lit "$1") AND o.legacy_key = $t_keytext)" \
            >"$2" &
    else
        pgdump-rows --dsn-env "$target_env" --snapshot "$snap_target" --table "$1" --key "$t_lk" \
            ${t_tcols:+--columns "$t_tcols"} --skip-null-keys \
            ${dl_key_set:+--key-set "$dl_key_set"} >"$2" &
    fi
    bg_pids="$bg_pids $!"
}

# ---- the incremental compare (migrate(1), "Incremental compare") ----
# A table whose last run compared and applied it without a rejected row has a
# watermark: each side's snapshot xmin then. Rows changed since are those whose
# xmin is not older; rows deleted or inserted show in a keys-only merge. Their
# keys (the key set) are all that is read in full, on both sides.

# Above this share of the rows changed, a full compare costs no more.
incr_max_pct=15

# incr_plan TABLE: an md5 of what the map says of TABLE (its section and
# [defaults]): a watermark of another plan is not used.
incr_plan() {
    awk -v want="$1" '
        /^[ \t]*(#|$)/ { next }
        /^[ \t]*\[[^]]+\][ \t]*$/ { s = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", s); next }
        s == want || s == "defaults" { l = $0; gsub(/^[ \t]+|[ \t]+$/, "", l); print s "\t" l }
    ' "$map" | { echo "driftless incremental 1"; LC_ALL=C sort; } | md5sum | cut -c1-32
}

# incr_read: the watermarks this run may use into $run_dir/tmp/watermarks
# (table, source xmin, target xmin, plan, then of the watermark run's batches
# of the table the 32-bit xids and the change streams' checksums, each
# comma-separated, or -), read in the target's snapshot: those recorded under
# the catalog fingerprints this run recorded at its start.
incr_read() {
    : >"$run_dir/tmp/watermarks"
    [ -n "$dl_run_id" ] && [ -n "$registered" ] || return 0
    pgdump-rows --dsn-env "$target_env" --snapshot "$snap_target" --name watermarks \
        --key table_name --query "SELECT w.table_name, w.source_xmin, w.target_xmin, w.plan,
                coalesce(b.xids, '-') AS xids, coalesce(b.sums, '-') AS sums
            FROM driftless.watermarks AS w JOIN driftless.runs AS r ON r.id = $(sql_lit "$dl_run_id")::bigint
            CROSS JOIN LATERAL (
                SELECT pg_catalog.string_agg(DISTINCT (b.xid % 4294967296)::text, ',') AS xids,
                       pg_catalog.string_agg(DISTINCT b.stream_checksum, ',') AS sums
                FROM driftless.batches AS b
                WHERE b.run_id = w.run_id AND b.table_name = w.table_name) AS b
            WHERE w.source_fingerprint = r.source_fingerprint
              AND w.target_fingerprint = r.target_fingerprint" |
        rowcat --tsv >"$run_dir/tmp/watermarks" 2>>"$run_dir/log" || : >"$run_dir/tmp/watermarks"
}

# incr_keys TABLE FULL: decide how TABLE is compared. Incremental: the key set
# $run_dir/tmp/TABLE.kset.rs (the keys to read in full) and TABLE.kset.n (the
# equal rows outside it). Either way stats/TABLE.compare.json says which and
# why, and stats/TABLE.watermark.json is what this run's end records.
incr_keys() {
    table_load "$map" "$1"
    ik_t=$1
    ik_tmp=$run_dir/tmp/$1
    rm -f "$ik_tmp.kset.rs" "$ik_tmp.kset.n" "$run_dir/stats/$1.watermark.json"
    ik_why=
    ik_plan=$(incr_plan "$1")
    if [ -z "$t_uuid" ] || [ "$t_mapping" != column ]; then
        ik_why="the legacy key is not a column of a UUID table"
    elif map_get "$map" "$1" source_query >/dev/null; then
        ik_why="source_query (no xmin to read)"
    else
        case $t_fks in *":null'"* | *":skip'"*) ik_why="a dangling-key policy (null or skip)" ;; esac
    fi
    if [ -z "$ik_why" ] && [ -n "$snap_xmin_source" ] && [ -n "$snap_xmin_target" ]; then
        printf '{"source_xmin":"%s","target_xmin":"%s","plan":"%s"}\n' "$snap_xmin_source" \
            "$snap_xmin_target" "$ik_plan" >"$run_dir/stats/$1.watermark.json"
    fi
    if [ -z "$ik_why" ]; then
        if [ "$2" = 1 ]; then
            ik_why="--full"
        elif ! ik_wm=$(awk -F '\t' -v t="$1" '$1 == t { print $2, $3, $4, $5, $6; f = 1 } END { exit !f }' \
            "$run_dir/tmp/watermarks" 2>/dev/null); then
            ik_why="no watermark (first run, rejected rows, or the catalog changed)"
        fi
    fi
    if [ -z "$ik_why" ]; then
        # shellcheck disable=SC2086 # five words
        set -- $ik_wm
        ik_ws=$1 ik_wt=$2 ik_wx=${4:--} ik_wc=${5:--}
        case $ik_ws$ik_wt in '' | *[!0-9]*) ik_why="a malformed watermark" ;; esac
        case $ik_wx in -) ;; *[!0-9,]* | ,* | *, | *,,*) ik_why="a malformed watermark" ;; esac
        case $ik_wc in -) ;; *[!0-9a-f,]* | ,* | *, | *,,*) ik_why="a malformed watermark" ;; esac
        [ "$3" = "$ik_plan" ] || ik_why="the map's entry for the table changed"
    fi
    # A dangling foreign key is found in compute: a child whose parent lost
    # rows is read in full (a row of its own that is unchanged may point there).
    if [ -z "$ik_why" ]; then
        for ik_p in $(map_prefixed "$map" "$ik_t" fk. | sed 's/^[^=]*=//'); do
            [ "$ik_p" != "$ik_t" ] || continue
            if [ ! -f "$run_dir/tmp/$ik_p.kset.n" ] ||
                [ "$(json_num "$run_dir/tmp/$ik_p.kdiff.json" delete)" != 0 ]; then
                ik_why="its parent $ik_p is read in full or lost rows"
                break
            fi
        done
    fi
    if [ -z "$ik_why" ]; then
        incr_diff_keys "$ik_t" "$ik_ws" "$ik_wt" "$ik_wx" "$ik_wc" || ik_why="the keys could not be read incrementally (exit $id_rc)"
    fi
    if [ -z "$ik_why" ] && map_prefixed "$map" "$ik_t" fk. | sed 's/^[^=]*=//' | grep -qxF "$ik_t" &&
        [ "$(json_num "$ik_tmp.kdiff.json" delete)" != 0 ]; then
        ik_why="it references itself and lost rows"
    fi
    if [ -z "$ik_why" ]; then
        ik_n=$(awk '
            function num(k,    m) { if (match($0, "\"" k "\": *[0-9]+")) { m = substr($0, RSTART, RLENGTH); sub(/.*: */, "", m); return m + 0 } return 0 }
            { ch = num("insert") + num("update") + num("delete"); base = num("source_rows")
              if (num("target_rows") > base) base = num("target_rows")
              printf "%d %d %d\n", ch, num("unchanged"), (ch * 100 > base * pct) ? 1 : 0 }' \
            pct="$incr_max_pct" "$ik_tmp.kdiff.json")
        # shellcheck disable=SC2086 # three numbers
        set -- $ik_n
        if [ "$3" = 1 ]; then
            ik_why="$1 keys changed, more than $incr_max_pct% of the rows"
        else
            printf '%s\n' "$2" >"$ik_tmp.kset.n"
        fi
    fi
    if [ -n "$ik_why" ]; then
        rm -f "$ik_tmp.kset.rs"
        printf '{"compare":"full","reason":"%s"}\n' "$ik_why" >"$run_dir/stats/$ik_t.compare.json"
    else
        printf '{"compare":"incremental","keys":%s,"outside":%s}\n' "$1" "$2" \
            >"$run_dir/stats/$ik_t.compare.json"
    fi
    dl_log INFO "$ik_t" compute "$(cat "$run_dir/stats/$ik_t.compare.json")"
    return 0
}

# json_num FILE KEY: a number from a one-line JSON object (empty when absent).
json_num() {
    sed -n "s/.*\"$2\": *\\([0-9.]*\\).*/\\1/p" "$1" 2>/dev/null | head -n 1
}

# incr_diff_keys TABLE SOURCE_XMIN TARGET_XMIN XIDS SUMS: the keys-only merge
# of both sides, each key marked changed ('s' source, 't' target) when its
# row's xmin is not older than the side's watermark, into the change stream
# tmp/TABLE.kset.rs: the keys to read in full (inserts, deletes, and rows
# changed on either side). XIDS and SUMS (comma-separated, or -) are the
# watermark run's batches' transactions and change streams: a target row
# whose xmin is one of those transactions and whose key that run recorded
# as inserted or updated is the row it wrote, equal to the source then, and
# is not marked; a row a trigger of the run's writes changed is. A watermark
# 2^31 transactions old or more, or newer than the snapshot (another
# cluster), marks every row. Sets id_rc.
incr_diff_keys() {
    id_tmp=$run_dir/tmp/$1
    # xmin is 32 bits: its age is taken modulo 2^32 from the snapshot's xmax,
    # exact for every row that is not frozen and younger than 2^31 transactions.
    id_fresh='((dl_s.x % 4294967296) - t.xmin::text::bigint + 4294967296) % 4294967296 <= dl_s.x - dl_s.w'
    id_stale='dl_s.x - dl_s.w NOT BETWEEN 0 AND 2147483647'
    id_snap='(SELECT pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot()) AS x'
    # CASE fixes the order: the changes are looked up only for a row of the run's transactions.
    id_tmark="CASE WHEN $id_stale THEN 't' WHEN NOT ($id_fresh) THEN 'o'"
    if [ "$4" != - ] && [ "$5" != - ]; then
        id_tmark="$id_tmark WHEN t.xmin::text::bigint <> ALL ('{$4}'::bigint[]) THEN 't'
            WHEN EXISTS (SELECT 1 FROM driftless.changes AS dl_c
                         WHERE dl_c.stream_checksum = ANY ('{$5}'::text[])
                           AND dl_c.table_name = $(sql_lit "$1") AND dl_c.legacy_key = $t_keytext
                           AND dl_c.op IN ('I', 'U')) THEN 'o'"
    fi
    id_tmark="$id_tmark ELSE 't' END"
    id_sel=$(awk -v sk="$t_sk" -v lk="$t_lk" 'BEGIN {
        n = split(sk, s, ","); split(lk, l, ","); o = ""
        for (i = 1; i <= n; i++) { a = s[i]; b = l[i]; gsub(/"/, "\"\"", a); gsub(/"/, "\"\"", b)
            o = o (i > 1 ? ", " : "") "t.\"" a "\" AS \"" b "\"" }
        print o }')
    rm -f "$id_tmp".k1 "$id_tmp".k2 "$id_tmp".k3 "$id_tmp".k4
    mkfifo "$id_tmp".k1 "$id_tmp".k2 "$id_tmp".k3 "$id_tmp".k4
    bg_pids=
    pgdump-rows --dsn-env "$source_env" --snapshot "$snap_source" --name "$1" --key "$t_lk" \
        --query "SELECT $id_sel, CASE WHEN $id_fresh OR $id_stale THEN 's' ELSE 'o' END AS dl_mark
                 FROM $(sql_ident "$t_source") AS t, $id_snap, $2::bigint AS w) AS dl_s" \
        >"$id_tmp".k1 2>>"$run_dir/log" &
    bg_pids="$bg_pids $!"
    rowhash <"$id_tmp".k1 >"$id_tmp".k2 &
    bg_pids="$bg_pids $!"
    pgdump-rows --dsn-env "$target_env" --snapshot "$snap_target" --name "$1" --key "$t_lk" \
        --query "SELECT $(printf '%s' "$t_keysel" | sed 's/"\([^"]*\)"/t."\1"/g'), $id_tmark AS dl_mark
                 FROM $(sql_ident "$1") AS t, $id_snap, $3::bigint AS w) AS dl_s
                 WHERE $(printf '%s' "$t_keynotnull" | sed 's/"\([^"]*\)"/t."\1"/g')" \
        >"$id_tmp".k3 2>>"$run_dir/log" &
    bg_pids="$bg_pids $!"
    rowhash <"$id_tmp".k3 >"$id_tmp".k4 &
    bg_pids="$bg_pids $!"
    id_rc=0
    rowdiff --quiet --allow-all --table "$1" --stats "$id_tmp.kdiff.json" --output "$id_tmp.kset.rs" \
        "$id_tmp".k2 "$id_tmp".k4 2>>"$run_dir/log" || id_rc=$?
    # shellcheck disable=SC2086 # a list of PIDs
    [ $id_rc -le 1 ] || pipe_stop $bg_pids
    # shellcheck disable=SC2086
    pipe_status $bg_pids
    rm -f "$id_tmp".k1 "$id_tmp".k2 "$id_tmp".k3 "$id_tmp".k4
    [ "$ps_first" -eq 0 ] || id_rc=$ps_first
    [ $id_rc -le 1 ] || return 1
    id_rc=0
}

# incr_use TABLE keys|rows: set dl_key_set and dl_outside for TABLE's
# pipelines when it is compared incrementally. Its id map may be the key
# set's only when no table of the map takes foreign keys to it.
incr_use() {
    dl_key_set=
    dl_outside=
    [ -f "$run_dir/tmp/$1.kset.n" ] || return 0
    if [ "$2" = keys ] && awk -v t="$1" '
        /^[ \t]*(#|$)/ { next }
        { i = index($0, "="); k = substr($0, 1, i - 1); v = substr($0, i + 1)
          gsub(/^[ \t]+|[ \t]+$/, "", k); gsub(/^[ \t]+|[ \t]+$/, "", v)
          if (k ~ /^fk\./ && v == t) f = 1 }
        END { exit !f }' "$map"; then
        return 0
    fi
    dl_key_set=$run_dir/tmp/$1.kset.rs
    dl_outside=$(cat "$run_dir/tmp/$1.kset.n")
}

# schema_check TABLE: pgverify --schema for one table (0, or 6 on drift).
schema_check() {
    table_load "$map" "$1"
    [ -n "$t_schema_args" ] || return 0
    eval "set -- $t_schema_args"
    pgverify --schema --quiet --source-env "$source_env" --target-env "$target_env" "$@"
}

# ---- psql without a connection string in argv ----
# For the scripts that write through psql (audit --prune-days, rollback): the
# target's connection string is parsed here into libpq's PG* variables in the
# environment of the psql process alone.

# dsn_exports: shell assignments that export libpq's PG* variables for the
# connection string in $target_env (conninfo "k=v ..." or a postgres:// URI);
# dsn_error='...' instead when it cannot be used. The string is read from the
# environment and the result stays in a pipe: never in argv, never in a file.
dsn_exports() {
    DL_DSN_VAR=$target_env awk '
        function sq(s) { gsub(/\047/, "\047\\\047\047", s); return "\047" s "\047" }
        function fail(m) { print "dsn_error=" sq(m); exit }
        function set(k, v) {
            if (k == "ssl") { if (v == "true") { k = "sslmode"; v = "require" } else return }
            if (k in ENVOF) { val[ENVOF[k]] = v; return }
            if (k in IGNORED) { ign = ign (ign == "" ? "" : ", ") k; return }
            fail("the connection string in " var " has an option psql cannot take from the environment: " k)
        }
        function pct(s,    o, i, h) {
            o = ""
            while ((i = index(s, "%")) > 0) {
                h = tolower(substr(s, i + 1, 2))
                if (h !~ /^[0-9a-f][0-9a-f]$/) fail("the connection string in " var ": invalid percent-encoding")
                o = o substr(s, 1, i - 1) sprintf("%c", (index("0123456789abcdef", substr(h, 1, 1)) - 1) * 16 + index("0123456789abcdef", substr(h, 2, 1)) - 1)
                s = substr(s, i + 3)
            }
            return o s
        }
        function conninfo(s,    n, i, c, k, v) {
            n = length(s); i = 1
            for (;;) {
                while (i <= n && substr(s, i, 1) ~ /[ \t\n\r\f\v]/) i++
                if (i > n) return
                k = ""
                while (i <= n && substr(s, i, 1) !~ /[= \t\n\r\f\v]/) { k = k substr(s, i, 1); i++ }
                while (i <= n && substr(s, i, 1) ~ /[ \t\n\r\f\v]/) i++
                if (substr(s, i, 1) != "=") fail("the connection string in " var ": missing \"=\" after " k)
                i++
                while (i <= n && substr(s, i, 1) ~ /[ \t\n\r\f\v]/) i++
                v = ""
                if (substr(s, i, 1) == "\047") {
                    i++
                    for (;;) {
                        if (i > n) fail("the connection string in " var ": unterminated quoted value of " k)
                        c = substr(s, i, 1); i++
                        if (c == "\\") { v = v substr(s, i, 1); i++; continue }
                        if (c == "\047") break
                        v = v c
                    }
                } else {
                    while (i <= n && substr(s, i, 1) !~ /[ \t\n\r\f\v]/) {
                        c = substr(s, i, 1); i++
                        if (c == "\\") { c = substr(s, i, 1); i++ }
                        v = v c
                    }
                }
                set(k, v)
            }
        }
        function uri(s,    i, c, u, hosts, nh, h, p, hl, pl, anyport, q, np, kv, j) {
            # [user[:password]@][host[:port][,...]][/dbname][?k=v&...], as libpq reads it
            i = 1
            while (i <= length(s) && substr(s, i, 1) != "@" && substr(s, i, 1) != "/") i++
            if (substr(s, i, 1) == "@") {
                u = substr(s, 1, i - 1); s = substr(s, i + 1)
                if ((j = index(u, ":")) > 0) { set("password", pct(substr(u, j + 1))); u = substr(u, 1, j - 1) }
                if (u != "") set("user", pct(u))
            }
            i = 1
            while (i <= length(s) && substr(s, i, 1) != "/" && substr(s, i, 1) != "?") i++
            hosts = substr(s, 1, i - 1); s = substr(s, i)
            if (hosts != "") {
                nh = split(hosts, h, ",")
                hl = ""; pl = ""; anyport = 0
                for (j = 1; j <= nh; j++) {
                    c = h[j]; p = ""
                    if (substr(c, 1, 1) == "[") {
                        if ((i = index(c, "]")) == 0) fail("the connection string in " var ": unterminated [ in the host")
                        p = substr(c, i + 1); c = substr(c, 2, i - 2)
                        if (p != "" && substr(p, 1, 1) != ":") fail("the connection string in " var ": bad host")
                        p = substr(p, 2)
                    } else if ((i = index(c, ":")) > 0) { p = substr(c, i + 1); c = substr(c, 1, i - 1) }
                    if (p != "") anyport = 1
                    hl = hl (j > 1 ? "," : "") pct(c); pl = pl (j > 1 ? "," : "") pct(p)
                }
                if (hl ~ /[^,]/) set("host", hl)
                if (anyport) set("port", pl)
            }
            if (substr(s, 1, 1) == "/") {
                i = index(s, "?"); if (i == 0) i = length(s) + 1
                if (i > 2) set("dbname", pct(substr(s, 2, i - 2)))
                s = substr(s, i)
            }
            if (substr(s, 1, 1) == "?") {
                np = split(substr(s, 2), q, "&")
                for (j = 1; j <= np; j++) {
                    if (q[j] == "") continue
                    if ((i = index(q[j], "=")) == 0) fail("the connection string in " var ": a parameter without \"=\"")
                    set(pct(substr(q[j], 1, i - 1)), pct(substr(q[j], i + 1)))
                }
            }
        }
        BEGIN {
            n = split("host PGHOST hostaddr PGHOSTADDR port PGPORT dbname PGDATABASE user PGUSER " \
                "password PGPASSWORD passfile PGPASSFILE channel_binding PGCHANNELBINDING " \
                "connect_timeout PGCONNECT_TIMEOUT client_encoding PGCLIENTENCODING options PGOPTIONS " \
                "application_name PGAPPNAME sslmode PGSSLMODE requiressl PGREQUIRESSL " \
                "sslcompression PGSSLCOMPRESSION sslcert PGSSLCERT sslkey PGSSLKEY " \
                "sslrootcert PGSSLROOTCERT sslcrl PGSSLCRL sslcrldir PGSSLCRLDIR sslsni PGSSLSNI " \
                "requirepeer PGREQUIREPEER ssl_min_protocol_version PGSSLMINPROTOCOLVERSION " \
                "ssl_max_protocol_version PGSSLMAXPROTOCOLVERSION gssencmode PGGSSENCMODE " \
                "krbsrvname PGKRBSRVNAME gsslib PGGSSLIB gssdelegation PGGSSDELEGATION " \
                "service PGSERVICE target_session_attrs PGTARGETSESSIONATTRS " \
                "load_balance_hosts PGLOADBALANCEHOSTS require_auth PGREQUIREAUTH", a, " ")
            for (i = 1; i < n; i += 2) ENVOF[a[i]] = a[i + 1]
            split("fallback_application_name keepalives keepalives_idle keepalives_interval " \
                "keepalives_count tcp_user_timeout", b, " ")
            for (i in b) IGNORED[b[i]] = 1
            var = ENVIRON["DL_DSN_VAR"]
            if (!(var in ENVIRON)) fail("environment variable " var " is not set")
            s = ENVIRON[var]
            if (s == "") fail("environment variable " var " is empty")
            if (s ~ /^postgres(ql)?:\/\//) uri(substr(s, index(s, "://") + 3))
            else if (index(s, "=") > 0) conninfo(s)
            else set("dbname", s)
            for (k in val) printf "%s=%s\nexport %s\n", k, sq(val[k]), k
            if (ign != "") print "dsn_ignored=" sq(ign)
            print "dsn_error="
        }'
}

# with_target_env COMMAND...: run COMMAND (psql) with the target connection in
# libpq's PG* variables (its own environment only); 5 when it cannot be used,
# 6 for Supabase's transaction pooler. Reads target_env.
with_target_env() {
    (
        dsn_error=
        dsn_ignored=
        wte=$(dsn_exports) || exit 8
        eval "$wte"
        [ -z "$dsn_error" ] || dl_die 5 "$dsn_error"
        [ -z "$dsn_ignored" ] || dl_err "note: the connection string's $dsn_ignored have no environment variable and are not used"
        case ",${PGPORT:-}," in
        *,6543,*) dl_die 6 "refused: port 6543 is Supabase's transaction pooler; use the direct connection or the session-mode pooler on port 5432" ;;
        esac
        : "${PGCONNECT_TIMEOUT:=10}" "${PGAPPNAME:=$dl_prog}"
        PGCLIENTENCODING=UTF8
        export PGCONNECT_TIMEOUT PGAPPNAME PGCLIENTENCODING
        exec "$@"
    )
}

# ---- sync ----
# Helpers of scripts/sync and scripts/schedule: the operator's .env (parsed,
# never run as shell), the hiding of connection strings, and the run logs.
# Self-contained: nothing above calls them.

# sync_env_mode FILE: print FILE's mode in octal (0600); status 1 when group
# or others have any access to it (an ACL counts as access).
sync_env_mode() {
    # shellcheck disable=SC2012 # ls -ln is the portable way to read a mode
    ls -ldn -- "$1" 2>/dev/null | awk '
        NR == 1 {
            p = $1; m = 0
            for (i = 2; i <= 10; i++) {
                c = substr(p, i, 1); b = (i - 2) % 3
                if (c != "-" && c != "S" && c != "T") m += (b == 0 ? 4 : (b == 1 ? 2 : 1)) * (i <= 4 ? 64 : (i <= 7 ? 8 : 1))
            }
            printf "0%o\n", m
            exit (substr(p, 5, 6) != "------" || substr(p, 11, 1) == "+") ? 1 : 0
        }
        END { if (NR == 0) exit 2 }'
}

# sync_env_get FILE KEY: print KEY's value from a .env file of KEY=VALUE lines
# ("export " allowed, values bare or in single or double quotes, # comments).
# Status 1 when KEY is not set there, 4 on a malformed line (named by number
# only: the line may hold a password).
sync_env_get() {
    awk -v key="$2" '
        { sub(/\r$/, "") }
        /^[ \t]*(#|$)/ { next }
        {
            line = $0; sub(/^[ \t]+/, "", line); sub(/^export[ \t]+/, "", line)
            i = index(line, "=")
            k = substr(line, 1, i - 1); sub(/[ \t]+$/, "", k)
            if (i == 0 || k !~ /^[A-Za-z_][A-Za-z0-9_]*$/) {
                printf "line %d: expected KEY=VALUE\n", NR > "/dev/stderr"; bad = 1; exit
            }
            v = substr(line, i + 1); sub(/^[ \t]+/, "", v)
            q = substr(v, 1, 1)
            if (q == "\047") {
                j = index(substr(v, 2), q)
                if (j == 0) { printf "line %d: unterminated quote\n", NR > "/dev/stderr"; bad = 1; exit }
                rest = substr(v, j + 2); v = substr(v, 2, j - 1)
            } else if (q == "\"") {
                out = ""; closed = 0
                for (j = 2; j <= length(v); j++) {
                    c = substr(v, j, 1)
                    if (c == "\\" && j < length(v)) { j++; c = substr(v, j, 1); out = out (c == "n" ? "\n" : c); continue }
                    if (c == "\"") { closed = 1; break }
                    out = out c
                }
                if (!closed) { printf "line %d: unterminated quote\n", NR > "/dev/stderr"; bad = 1; exit }
                rest = substr(v, j + 1); v = out
            } else {
                sub(/[ \t]+#.*$/, "", v); sub(/[ \t]+$/, "", v); rest = ""
            }
            if (rest !~ /^[ \t]*(#.*)?$/) { printf "line %d: text after the closing quote\n", NR > "/dev/stderr"; bad = 1; exit }
            if (k == key) { val = v; found = 1 }
        }
        END { if (bad) exit 4; if (!found) exit 1; print val }' "$1"
}

# The awk function redact(line): the connection strings in the environment
# variables SOURCE_DATABASE_URL and TARGET_DATABASE_URL, and every password
# in them (keyword, URI user info or URI parameter; percent-decoded too), are
# replaced by "[redacted]". Children never print them; this is the second net.
sync_redact_awk='
function sr_add(v) { if (length(v) >= 4) sr_s[++sr_n] = v }
function sr_hex(c) { return index("0123456789abcdef", tolower(c)) - 1 }
function sr_pct(v,    o, i, a, b) {
    o = ""
    for (i = 1; i <= length(v); i++) {
        a = sr_hex(substr(v, i + 1, 1)); b = sr_hex(substr(v, i + 2, 1))
        if (substr(v, i, 1) == "%" && a >= 0 && b >= 0) { o = o sprintf("%c", a * 16 + b); i += 2 }
        else o = o substr(v, i, 1)
    }
    return o
}
function sr_dsn(d,    s, v, i, c, u) {
    if (d == "") return
    sr_add(d)
    s = d
    while (match(s, /(^|[ \t])(ssl)?password[ \t]*=[ \t]*/)) {
        s = substr(s, RSTART + RLENGTH)
        if (substr(s, 1, 1) == "\047") {
            v = ""
            for (i = 2; i <= length(s); i++) {
                c = substr(s, i, 1)
                if (c == "\\") { i++; v = v substr(s, i, 1); continue }
                if (c == "\047") break
                v = v c
            }
        } else { match(s, /^[^ \t]*/); v = substr(s, 1, RLENGTH) }
        sr_add(v)
    }
    if (match(d, /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^@\/?#]*@/)) {
        u = substr(d, RSTART, RLENGTH); sub(/^[^:]*:\/\//, "", u); sub(/@$/, "", u)
        i = index(u, ":")
        if (i > 0) { sr_add(substr(u, i + 1)); sr_add(sr_pct(substr(u, i + 1))) }
    }
    s = d
    while (match(s, /[?&](ssl)?password=[^&#]*/)) {
        v = substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH)
        sub(/^[?&][a-z]*=/, "", v); sr_add(v); sr_add(sr_pct(v))
    }
}
function redact(line,    i, p, o) {
    if (!sr_init) { sr_init = 1; sr_dsn(ENVIRON["SOURCE_DATABASE_URL"]); sr_dsn(ENVIRON["TARGET_DATABASE_URL"]) }
    for (i = 1; i <= sr_n; i++) {
        o = ""
        while ((p = index(line, sr_s[i])) > 0) {
            o = o substr(line, 1, p - 1) "[redacted]"; line = substr(line, p + length(sr_s[i]))
        }
        line = o line
    }
    return line
}
function sr_table(line, tables,    n, t, i, p, best, bp, a, z) {
    n = split(tables, t, " "); best = "-"; bp = 0
    for (i = 1; i <= n; i++) {
        p = index(line, t[i]); if (p == 0) continue
        a = substr(line, p - 1, 1); z = substr(line, p + length(t[i]), 1)
        if ((p == 1 || a !~ /[A-Za-z0-9_.]/) && z !~ /[A-Za-z0-9_]/ && (bp == 0 || p < bp)) { best = t[i]; bp = p }
    }
    return best
}'

# sync_format STAGE: a child's output (stdin) as run log lines in dl_log's
# format, appended to $sync_run_log (and printed when $sync_verbose is 1).
# The children run quiet: a driftless program's "prog: message" line is an
# error unless it says WARN, INFO or OK; "prog: detail:" and "prog: hint:"
# lines take the level and table of the line before; other lines (a report)
# are INFO. The table
# is the first table of $sync_tables a line names.
sync_format() {
    # mawk reads a pipe in blocks: lines would get the time the child ended.
    sf_lb=
    if awk -W version 2>/dev/null | head -n 1 | grep -q '^mawk'; then
        sf_lb='-W interactive'
    fi
    # shellcheck disable=SC2086 # $sf_lb is empty or two words
    SF_LOG=${sync_run_log:-/dev/null} awk $sf_lb -v run="${dl_run_id:--}" -v stage="$1" \
        -v tables="${sync_tables:-}" -v verbose="${sync_verbose:-0}" "$sync_redact_awk"'
        BEGIN {
            progs = "(pgdump-rows|rowhash|rowdiff|idmap|pgapply|pgverify|rowcat|migrate|validate|doctor|analyze|report|rollback|sync|flock|sh|awk)"
        }
        {
            line = redact($0)
            cmd = "date -u +%Y-%m-%dT%H:%M:%SZ"; ts = ""; cmd | getline ts; close(cmd)
            table = sr_table(line, tables)
            if (line ~ "^" progs ": (detail|hint): ") {
                level = plevel; if (table == "-") table = ptable
            } else if (line ~ "^" progs ": " || line ~ /^[^ :]+: [0-9]+: /) {
                if (line ~ /: WARN: |[Ww]arning: /) level = "WARN"
                else if (line ~ /: (INFO|OK): /) level = "INFO"
                else level = "ERROR"
            } else level = "INFO"
            plevel = level; ptable = table
            out = ts " " level " run=" run " table=" table " stage=" stage " " line
            print out >> ENVIRON["SF_LOG"]; fflush(ENVIRON["SF_LOG"])
            if (verbose == 1) print out
        }'
}

# sync_copy_log FILE POSFILE STAGE: append the lines of a run directory's log
# that follow the line count kept in POSFILE to $sync_run_log, with the run
# field set to $dl_run_id and the stage prefixed with STAGE/ (but for
# validate's own lines; printed too when $sync_verbose is 1); update POSFILE.
sync_copy_log() {
    [ -f "$1" ] || return 0
    SF_LOG=${sync_run_log:-/dev/null} SF_POS=$2 awk -v run="${dl_run_id:--}" -v stage="$3" \
        -v verbose="${sync_verbose:-0}" "$sync_redact_awk"'
        BEGIN { from = 0; if ((getline p < ENVIRON["SF_POS"]) > 0) from = p + 0; close(ENVIRON["SF_POS"]) }
        NR > from {
            line = redact($0); sub(/ run=[^ ]* /, " run=" run " ", line)
            if (index(line, " stage=" stage " ") == 0 && index(line, " stage=validate ") == 0)
                sub(/ stage=/, " stage=" stage "/", line)
            print line >> ENVIRON["SF_LOG"]
            if (verbose == 1) print line
        }
        END { print NR + 0 > ENVIRON["SF_POS"] }' "$1"
}

# sync_is_run_id WORD: true for a run id of sync (20261125T130501Z, or with a
# -N suffix when two runs start in the same second).
sync_is_run_id() {
    case $1 in
    [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z) return 0 ;;
    [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-[0-9]*)
        case ${1#*Z-} in *[!0-9]*) return 1 ;; esac
        return 0
        ;;
    esac
    return 1
}
