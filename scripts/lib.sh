# Shared by the driftless scripts (POSIX sh): messages, logs, the table map,
# SQL quoting, exported snapshots and the per-table pipelines. Sourced, not run.
# shellcheck shell=sh

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
