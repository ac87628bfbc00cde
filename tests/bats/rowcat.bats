#!/usr/bin/env bats
# rowcat: CSV / COPY text / table / header / count output of a row stream, and
# --from-csv. Values are built with printf so every awkward byte is explicit.
# The last test compares with psql itself and needs a cluster (skipped with SKIP_DB=1).

load helpers

FIX="$REPO/tests/fixtures"

# Awkward values in PostgreSQL's own CSV form (what psql's \copy ... CSV HEADER
# writes): NULL, '', 'NULL', '\N', comma, quote, CR, LF, tab, backslash, emoji,
# invalid UTF-8, '\.' (not alone on its line: unquoted), spaces kept.
awkward_csv() {
    printf 'id,v\n'
    printf '1,\n'
    printf '2,""\n'
    printf '3,NULL\n'
    printf '4,\\N\n'
    printf '5,"a,b"\n'
    printf '6,"say ""hi"""\n'
    printf '7,"cr\rx"\n'
    printf '8,"lf\nx"\n'
    printf '9,tab\tx\n'
    printf '10,back\\slash\n'
    printf '11,\xf0\x9f\x98\x80 emoji\n'
    printf '12,bad \xff\xfe utf8\n'
    printf '13,\\.\n'
    printf '14, sp \n'
}

setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
    awkward_csv >awkward.csv
    rowcat --from-csv --key id --types id:bigint awkward.csv >awkward.rows
}

# bats-assert 2.1 has no assert_stderr: check stderr with assert_output's matchers.
assert_err() {
    output="$stderr" assert_output "$@"
}

teardown() {
    if [[ -n ${SCRATCH_DIR:-} ]]; then
        scratch_teardown_file
    fi
}

@test "rowcat --help and --version: stdout, exit 0" {
    run -0 --separate-stderr rowcat --help
    assert_output --partial "Usage: rowcat"
    assert_output --partial "Exit status:"
    assert_equal "$stderr" ""
    run -0 --separate-stderr bash -c 'rowcat --help | awk "length > 80" | wc -l'
    assert_output "0"
    run -0 --separate-stderr rowcat --version
    assert_output "rowcat (driftless) 0.1.0"
}

@test "rowcat: CSV -> stream -> CSV reproduces every awkward value byte for byte" {
    run -0 --separate-stderr bash -c 'rowcat --header-row awkward.rows | cmp - awkward.csv'
    assert_equal "$stderr" ""
    # Without --header-row, the same lines minus the first.
    tail -n +2 awkward.csv >body.csv
    run -0 --separate-stderr bash -c 'rowcat awkward.rows | cmp - body.csv'
    # --csv is the default.
    run -0 --separate-stderr bash -c 'rowcat --csv awkward.rows | cmp - body.csv'
}

@test "rowcat: NULL, '', 'NULL' and '\\N' stay four different values" {
    run -0 --separate-stderr bash -c 'rowcat --tsv awkward.rows | sed -n 1,4p'
    assert_output "$(printf '1\t\\N\n2\t\n3\tNULL\n4\t\\\\N')"
    run -0 --separate-stderr bash -c 'rowcat awkward.rows | sed -n 1,4p'
    assert_output "$(printf '1,\n2,""\n3,NULL\n4,\\N')"
}

@test "rowcat: CSV output quotes only what PostgreSQL quotes" {
    # Needless quotes in the input are not kept; "\." alone on a line is quoted.
    printf 'v\n"abc"\n"\\."\n\\.\n""\n\n' >one.csv
    run -0 --separate-stderr bash -c 'rowcat --from-csv one.csv | rowcat'
    assert_output "$(printf 'abc\n"\\."\n"\\."\n""\n')"
    # (The last line is the one NULL: an empty line.)
    run -0 --separate-stderr bash -c 'rowcat --from-csv one.csv | rowcat --tsv'
    assert_output "$(printf 'abc\n\\\\.\n\\\\.\n\n\\N')"
}

@test "rowcat --tsv: COPY text escapes" {
    printf '1\t\\N\n2\t\n3\tNULL\n4\t\\\\N\n5\ta,b\n6\tsay "hi"\n7\tcr\\rx\n8\tlf\\nx\n' >want.tsv
    printf '9\ttab\\tx\n10\tback\\\\slash\n11\t\xf0\x9f\x98\x80 emoji\n' >>want.tsv
    printf '12\tbad \xff\xfe utf8\n13\t\\\\.\n14\t sp \n' >>want.tsv
    run -0 --separate-stderr bash -c 'rowcat --tsv awkward.rows | cmp - want.tsv'
    assert_equal "$stderr" ""
    # BS, FF and VT too; other control bytes pass as they are, as COPY writes them.
    printf 'v\n"\b\f\v\x01\x7f"\n' | rowcat --from-csv >ctl.rows
    run -0 --separate-stderr bash -c 'rowcat --tsv --header-row ctl.rows | od -An -c | tr -s " "'
    assert_output "$(printf ' v \\n \\ b \\ f \\ v 001 177 \\n')"
}

@test "rowcat --header: one item per line, tab-separated" {
    run -0 --separate-stderr rowcat --header awkward.rows
    assert_output "$(printf '%s\n' \
        $'kind\trows' \
        $'table\tawkward' \
        $'server_version\t0' \
        $'encoding\t' \
        $'columns\t2' \
        $'column\t1\tid\tbigint\tkey\tint' \
        $'column\t2\tv\ttext\tdata\t-' \
        $'meta\tsource\tcsv')"
    assert_equal "$stderr" ""
    # Names with a tab or a backslash are escaped as in COPY text.
    printf '"a\tb",c\\d\n1,2\n' | rowcat --from-csv --table 'my table' --key 'a	b' \
        --types 'c\d:numeric(10,2)' >odd.rows
    run -0 --separate-stderr bash -c 'rowcat --header odd.rows | grep -v "^meta"'
    assert_output "$(printf '%s\n' \
        $'kind\trows' \
        $'table\tmy table' \
        $'server_version\t0' \
        $'encoding\t' \
        $'columns\t2' \
        $'column\t1\ta\\tb\ttext\tkey\ttext' \
        $'column\t2\tc\\\\d\tnumeric(10,2)\tdata\t-')"
}

@test "rowcat --count: the number of records" {
    run -0 --separate-stderr rowcat --count awkward.rows
    assert_output "14"
    assert_equal "$stderr" ""
    printf 'a\n' | rowcat --from-csv >empty.rows
    run -0 --separate-stderr rowcat --count empty.rows
    assert_output "0"
}

@test "rowcat --table: aligned like psql (golden file)" {
    {
        printf 'id,name,amount,note\n'
        printf '1,alice,1.50,\n'
        printf '2,"",-20,"tab\there"\n'
        printf '3,"two\nlines",,\xf0\x9f\x98\x80 emoji\n'
        printf '4,bad \xff byte,3,a value long enough to be cut at the default width\n'
        printf '10,"ctl \x01\x7f",12345.678,\\ back\n'
    } >t.csv
    rowcat --from-csv --key id --types id:integer,amount:numeric t.csv >t.rows
    run -0 --separate-stderr rowcat --table t.rows
    assert_equal "$stderr" ""
    diff -u "$FIX/rowcat-table.out" <(rowcat --table t.rows)
    # --null shows NULL; --width cuts (0 never cuts).
    run -0 --separate-stderr bash -c "rowcat --table --null '<null>' --width 8 t.rows | sed -n 3,5p"
    assert_output "$(printf '%s\n' \
        '  1 | alice    |     1.50 | <null>' \
        '  2 |          |      -20 | tab\t...' \
        '  3 | two\n... |   <null> | 😀 emoji')"
    run -0 --separate-stderr bash -c "rowcat --table --width 0 t.rows | grep -c 'default width'"
    assert_output "1"
}

@test "rowcat --from-csv --key: unsorted input is refused naming the lines" {
    printf 'id,v\n1,a\n10,b\n9,c\n' >unsorted.csv
    run -4 --separate-stderr rowcat --from-csv --key id --types id:int unsorted.csv
    assert_output ""
    assert_equal "${stderr_lines[0]}" 'rowcat: unsorted.csv: line 4: key (id)=(9) sorts before the previous key (id)=(10) on line 3'
    assert_equal "${stderr_lines[1]}" 'rowcat: hint: sort the CSV by the --key columns first (see rowcat(1))'
    # Integer keys compare as numbers: 9 < 10 is sorted.
    printf 'id,v\n9,a\n10,b\n' | rowcat --from-csv --key id --types id:int >/dev/null
    # Text keys compare as bytes (COLLATE "C"): "10" < "9".
    run -4 --separate-stderr bash -c "printf 'id,v\n9,a\n10,b\n' | rowcat --from-csv --key id"
    assert_equal "$stderr" "rowcat: stdin: line 3: key (id)=(10) sorts before the previous key (id)=(9) on line 2
rowcat: hint: sort the CSV by the --key columns first (see rowcat(1))"
}

@test "rowcat --from-csv --key: a duplicate key is refused naming both lines" {
    printf 'id,v\n1,a\n2,b\n2,c\n' >dup.csv
    run -4 --separate-stderr rowcat --from-csv --key id --types id:bigint dup.csv
    assert_output ""
    assert_equal "$stderr" "rowcat: dup.csv: line 4: duplicate key (id)=(2) (first on line 3)"
}

@test "rowcat --from-csv: integer keys must be int64, NULL keys are refused" {
    run -4 --separate-stderr bash -c "printf 'id,v\n1,a\n2x,b\n' | rowcat --from-csv --key id --types id:int8"
    assert_equal "$stderr" 'rowcat: stdin: line 3: key column "id": "2x" is not a valid bigint'
    run -4 --separate-stderr bash -c "printf 'id,v\n9223372036854775808,a\n' | rowcat --from-csv --key id --types id:bigint"
    assert_err --partial 'line 2: key column "id"'
    run -4 --separate-stderr bash -c "printf 'id,v\n1,a\n,b\n' | rowcat --from-csv --key id"
    assert_equal "$stderr" 'rowcat: stdin: line 3: key column "id" is NULL'
    # Integer keys are stored as PostgreSQL prints them.
    run -0 --separate-stderr bash -c "printf 'id,v\n+007,a\n' | rowcat --from-csv --key id --types id:int | rowcat"
    assert_output "7,a"
}

@test "rowcat --from-csv: malformed CSV is refused naming the line" {
    # An unterminated quote: the line where its record starts.
    printf 'id,v\n1,a\n2,"never\nclosed\n' >unterminated.csv
    run -4 --separate-stderr rowcat --from-csv unterminated.csv
    assert_equal "$stderr" "rowcat: unterminated.csv: line 3: unterminated quoted field at the end of the input"
    # A record with the wrong number of fields, after a record of two lines.
    printf 'id,v\n1,"two\nlines"\n2,b,extra\n' >wide.csv
    run -4 --separate-stderr rowcat --from-csv wide.csv
    assert_equal "$stderr" "rowcat: wide.csv: line 4: expected 2 fields, found 3"
    printf 'id,v\n1\n' >narrow.csv
    run -4 --separate-stderr rowcat --from-csv narrow.csv
    assert_equal "$stderr" "rowcat: narrow.csv: line 2: expected 2 fields, found 1"
    # A stray quote.
    printf 'id,v\n1,a"b\n' >stray.csv
    run -4 --separate-stderr rowcat --from-csv stray.csv
    assert_err --partial "rowcat: stray.csv: line 2: malformed CSV"
    # No header row at all.
    run -4 --separate-stderr rowcat --from-csv /dev/null
    assert_err --partial "no header row"
}

@test "rowcat --from-csv: CRLF line ends, a BOM, and line numbers" {
    printf '\xef\xbb\xbfid,v\r\n1,"a\r\nb"\r\n2,c\r\n3\r\n' >crlf.csv
    run -4 --separate-stderr rowcat --from-csv --key id crlf.csv
    assert_equal "$stderr" "rowcat: crlf.csv: line 5: expected 2 fields, found 1"
    printf '\xef\xbb\xbfid,v\r\n1,"a\r\nb"\r\n2,c\r\n' >crlf.csv
    run -0 --separate-stderr bash -c 'rowcat --from-csv --key id crlf.csv | rowcat --tsv --header-row'
    assert_output "$(printf 'id\tv\n1\ta\\r\\nb\n2\tc')"
}

@test "rowcat --from-csv: unknown columns in --key and --types are usage errors" {
    run -2 --separate-stderr rowcat --from-csv --key nope awkward.csv
    assert_err --partial '--key: awkward.csv has no column "nope"'
    run -2 --separate-stderr rowcat --from-csv --types nope:int awkward.csv
    assert_err --partial '--types: awkward.csv has no column "nope"'
    run -2 --separate-stderr rowcat --from-csv --types id awkward.csv
    assert_err --partial "expected COLUMN:TYPE"
    run -2 --separate-stderr rowcat --from-csv --key v,id awkward.csv
    assert_err --partial "in the order of the header row"
}

@test "rowcat --from-csv --output: written through a temp file, kept only on success" {
    run -0 --separate-stderr rowcat --from-csv --key id --types id:int -o out.rows awkward.csv
    assert_output ""
    run -0 --separate-stderr rowcat --count out.rows
    assert_output "14"
    printf 'id,v\n2,a\n1,b\n' >bad.csv
    run -4 --separate-stderr rowcat --from-csv --key id --types id:int -o out.rows bad.csv
    # The old file is intact, and no temp file is left.
    run -0 --separate-stderr rowcat --count out.rows
    assert_output "14"
    run -0 --separate-stderr bash -c 'ls | grep -c tmp || true'
    assert_output "0"
}

@test "rowcat: a truncated stream is refused with exit 4" {
    size=$(stat -c %s awkward.rows)
    head -c $((size - 10)) awkward.rows >cut.rows
    for mode in --csv --tsv --table --count; do
        run -4 --separate-stderr rowcat "$mode" cut.rows
        assert_err --partial "rowcat: cut.rows"
    done
    run -4 --separate-stderr bash -c 'head -c 20 awkward.rows | rowcat --count'
    run -4 --separate-stderr bash -c 'printf "id,v\n1,a\n" | rowcat'
}

@test "rowcat: a record over --max-row-bytes is refused" {
    run -4 --separate-stderr rowcat --max-row-bytes 8 awkward.rows
    run -4 --separate-stderr rowcat --from-csv --max-row-bytes 8 awkward.csv
    # Record 6 (line 7) is the first with more than 8 bytes: "6" and 'say "hi"'.
    assert_err --partial "awkward.csv: line 7:"
}

@test "rowcat: usage errors exit 2 with nothing on stdout" {
    run -2 --separate-stderr rowcat --bogus
    assert_output ""
    assert_equal "$stderr" "rowcat: unrecognized option '--bogus'
Try 'rowcat --help' for more information."
    run -2 --separate-stderr rowcat -Z
    assert_output ""
    run -2 --separate-stderr rowcat --csv --tsv awkward.rows
    assert_err --partial "--csv and --tsv cannot be used together"
    run -2 --separate-stderr rowcat --key id awkward.rows
    run -2 --separate-stderr rowcat --null x awkward.rows
    run -2 --separate-stderr rowcat --table --width 2 awkward.rows
    run -2 --separate-stderr rowcat awkward.rows extra
}

@test "rowcat: a full stdout exits 3" {
    run -3 --separate-stderr bash -c 'rowcat awkward.rows >/dev/full'
    assert_err --partial "rowcat: could not write"
    run -3 --separate-stderr bash -c 'rowcat --header awkward.rows >/dev/full'
    run -3 --separate-stderr bash -c 'rowcat --from-csv awkward.csv >/dev/full'
    # Output far larger than any buffer fails at the first write, not only at exit.
    seq 1 300000 | sed '1s/.*/n/' >many.csv
    rowcat --from-csv many.csv >many.rows
    run -3 --separate-stderr bash -c 'rowcat --tsv many.rows >/dev/full'
    assert_equal "$(grep -c 'could not write' <<<"$stderr")" "1"
}

@test "rowcat: CSV and COPY text are byte-identical to psql's \\copy" {
    if [[ ${SKIP_DB:-} == 1 ]]; then
        skip "SKIP_DB=1"
    fi
    scratch_setup_file
    # SQL_ASCII accepts any byte but NUL, so invalid UTF-8 can be compared too.
    psql_super postgres -c "CREATE DATABASE rowcat_bytes ENCODING 'SQL_ASCII' LOCALE_PROVIDER libc LOCALE 'C' TEMPLATE template0"
    psql_super rowcat_bytes -c "CREATE TABLE aw (id bigint, v text, w text);
        INSERT INTO aw VALUES
          (1, NULL, ''), (2, 'NULL', '\\N'), (3, 'a,b', 'q\"q'), (4, E'cr\\rx', E'lf\\nx'),
          (5, E'tab\\tx', E'back\\\\slash'), (6, E'\\xf0\\x9f\\x98\\x80', E'\\\\.'),
          (7, E'\\x01\\x7f\\x08\\x0c\\x0b', ' sp '), (8, E'\\xff\\xfe bad', '\"'),
          (9, E'\\r\\n', ','), (10, '\"\"', E'\\\\'), (-3, 'neg', NULL)"
    for q in "SELECT * FROM aw ORDER BY id" "SELECT w FROM aw ORDER BY id"; do
        psql_super rowcat_bytes -c "\\copy ($q) TO STDOUT CSV HEADER" >pg.csv
        psql_super rowcat_bytes -c "\\copy ($q) TO STDOUT" >pg.tsv
        rowcat --from-csv pg.csv >pg.rows
        run -0 --separate-stderr bash -c 'rowcat --header-row pg.rows | cmp - pg.csv'
        run -0 --separate-stderr bash -c 'rowcat --tsv pg.rows | cmp - pg.tsv'
    done
    # The table has a row with '\.' alone in its column: psql quoted it, and so did rowcat.
    run -0 --separate-stderr grep -cx '"\\\."' pg.csv
    assert_output "1"
}
