#!/usr/bin/env bats
# The contract every program keeps (STYLE.md "Tests"): --help and --version,
# usage errors, a full stdout, a truncated stream, a failed connection that
# never shows its password.

load helpers

PROGRAMS=(pgdump-rows rowcat rowhash rowdiff idmap pgapply pgverify)
# Programs that read a row stream on stdin, with the arguments that make them do so.
declare -A STDIN_ARGS=(
    [rowcat]="--csv"
    [rowhash]=""
    [rowdiff]="- GOOD"
    [idmap]="--table public.t"
    [pgapply]="--dsn-env DL_NO_SUCH_VAR --table public.t --dry-run -"
)
# Programs that connect, with the arguments that make them try.
declare -A CONNECT_ARGS=(
    [pgdump-rows]="--dsn-env DL_SENTINEL_DSN --table public.t --key id"
    [pgapply]="--dsn-env DL_SENTINEL_DSN --install-state"
    [pgverify]="--source-env DL_SENTINEL_DSN --target-env DL_SENTINEL_DSN --table public.t --key id"
)

setup_file() {
    # A valid stream to cut short.
    printf 'id,name\n1,a\n2,b\n3,c\n' | "$BIN/rowcat" --from-csv --table public.t \
        --types id:bigint --key id >"$BATS_FILE_TMPDIR/good.rs"
    "$BIN/rowhash" <"$BATS_FILE_TMPDIR/good.rs" >"$BATS_FILE_TMPDIR/hashed.rs"
}

present() {
    [[ -x $BIN/$1 ]] || skip "$1 is not built yet"
}

@test "contract: --help and --version exit 0 on stdout, stderr empty, help within 80 columns" {
    for p in "${PROGRAMS[@]}"; do
        [[ -x $BIN/$p ]] || continue
        run -0 --separate-stderr "$BIN/$p" --help
        [[ -n $output ]] || fail "$p --help printed nothing"
        [[ -z $stderr ]] || fail "$p --help wrote to stderr: $stderr"
        long=$(printf '%s\n' "$output" | awk 'length($0) > 80' | head -n 1)
        [[ -z $long ]] || fail "$p --help has a line over 80 columns: $long"
        [[ $output == *"Exit status"* ]] || fail "$p --help does not list the exit status"
        run -0 --separate-stderr "$BIN/$p" --version
        [[ $output == "$p (driftless) "* ]] || fail "$p --version: $output"
        [[ -z $stderr ]] || fail "$p --version wrote to stderr"
    done
}

@test "contract: an unknown option exits 2 naming it, nothing on stdout" {
    for p in "${PROGRAMS[@]}"; do
        [[ -x $BIN/$p ]] || continue
        run -2 --separate-stderr "$BIN/$p" --bogus
        [[ -z $output ]] || fail "$p --bogus wrote to stdout"
        [[ $stderr == *"$p: unrecognized option '--bogus'"* ]] || fail "$p --bogus: $stderr"
        [[ $stderr == *"Try '$p --help'"* ]] || fail "$p --bogus: no hint: $stderr"
        run -2 --separate-stderr "$BIN/$p" -Z
        [[ $stderr == *"-- 'Z'"* ]] || fail "$p -Z: $stderr"
        [[ -z $output ]] || fail "$p -Z wrote to stdout"
    done
}

@test "contract: writing to a full device exits 3" {
    for p in "${PROGRAMS[@]}"; do
        [[ -x $BIN/$p ]] || continue
        run -3 --separate-stderr bash -c '"$1" --help > /dev/full' _ "$BIN/$p"
        [[ $stderr == *"$p: could not write output"* ]] || fail "$p: $stderr"
    done
}

@test "contract: a truncated stream on stdin exits 4" {
    local good="$BATS_FILE_TMPDIR/good.rs" hashed="$BATS_FILE_TMPDIR/hashed.rs"
    local size
    size=$(stat -c %s "$good")
    for p in "${!STDIN_ARGS[@]}"; do
        [[ -x $BIN/$p ]] || continue
        local src=$good
        [[ $p == rowdiff || $p == pgapply ]] && src=$hashed
        [[ $p == rowdiff ]] && size=$(stat -c %s "$hashed")
        local args=${STDIN_ARGS[$p]//GOOD/$hashed}
        # shellcheck disable=SC2086
        run --separate-stderr bash -c 'head -c "$1" "$2" | "$3" $4 > /dev/null' _ \
            $((size - 7)) "$src" "$BIN/$p" "$args"
        [[ $status -eq 4 ]] || fail "$p on a truncated stream exited $status: $stderr"
        [[ $stderr == *"$p: "*"truncated"* ]] || fail "$p: $stderr"
    done
}

@test "contract: a failed connect exits 5 and never prints the password" {
    export DL_SENTINEL_DSN="host=/nonexistent/dl port=1 dbname=x user=u password=SENTINEL-s3cr3t"
    for p in "${!CONNECT_ARGS[@]}"; do
        [[ -x $BIN/$p ]] || continue
        # shellcheck disable=SC2086
        run --separate-stderr "$BIN/$p" ${CONNECT_ARGS[$p]}
        [[ $status -eq 5 ]] || fail "$p exited $status: $stderr"
        [[ $stderr != *SENTINEL* && $output != *SENTINEL* ]] || fail "$p printed the password"
        [[ $stderr == *"$p: "* ]] || fail "$p: $stderr"
    done
    export DL_SENTINEL_DSN="postgresql://u:SENTINEL-s3cr3t@/x?host=/nonexistent/dl&port=1"
    for p in "${!CONNECT_ARGS[@]}"; do
        [[ -x $BIN/$p ]] || continue
        # shellcheck disable=SC2086
        run --separate-stderr "$BIN/$p" ${CONNECT_ARGS[$p]}
        [[ $status -eq 5 ]] || fail "$p (URI) exited $status: $stderr"
        [[ $stderr != *SENTINEL* ]] || fail "$p printed the password of a URI"
    done
}

@test "contract: a password written in argv is refused (exit 2) and not echoed" {
    declare -A args=(
        [pgdump-rows]="--table public.t --key id --dsn-env"
        [pgapply]="--install-state --dsn-env"
        [pgverify]="--table public.t --key id --target-env DL_X --source-env"
    )
    for p in "${!args[@]}"; do
        [[ -x $BIN/$p ]] || continue
        # shellcheck disable=SC2086
        run --separate-stderr "$BIN/$p" ${args[$p]} 'postgresql://u:SENTINEL-s3cr3t@h/db'
        [[ $status -eq 2 ]] || fail "$p exited $status: $stderr"
        [[ $stderr == *password* ]] || fail "$p did not say why: $stderr"
        [[ $stderr != *SENTINEL* ]] || fail "$p echoed the password: $stderr"
    done
}
