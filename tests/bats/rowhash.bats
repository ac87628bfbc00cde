#!/usr/bin/env bats
# rowhash: the hash column and the header's hashed list, --keys-only,
# --ignore, the unambiguous encoding seen from the command line, and refusals.
# Input streams are built from CSV with rowcat --from-csv; no database needed.

load helpers

setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
}

# csv_stream OUT TYPES KEY: the CSV on stdin as a keyed stream of table public.t.
csv_stream() {
    rowcat --from-csv --table public.t --types "$2" --key "$3" -o "$1"
}

# Column N (1-based) of every CSV line of a stream, header row excluded.
csv_col() {
    rowcat --csv "$2" | cut -d, -f"$1"
}

items() {
    printf 'id,name,price,note\n1,apple,1.50,red\n2,pear,2.00,\n3,fig,0.75,"a ""quoted"", note"\n' |
        csv_stream items.rs id:bigint,name:text,price:numeric,note:text id
}

@test "rowhash: appends _hash (xxh3_128, role hash) and names the hashed columns" {
    items
    run -0 --separate-stderr rowhash -o h.rs items.rs
    assert_equal "$stderr" ""
    run -0 --separate-stderr rowcat --header h.rs
    assert_line --index 0 $'kind\trows'
    assert_line $'table\tpublic.t'
    assert_line $'columns\t5'
    assert_line $'column\t1\tid\tbigint\tkey\tint'
    assert_line $'column\t4\tnote\ttext\tdata\t-'
    assert_line $'column\t5\t_hash\txxh3_128\thash\t-'
    # The hashed list: every data column, in order; never the key.
    run -0 bash -c "rowcat --header h.rs | grep '^hashed'"
    assert_output $'hashed\tname\nhashed\tprice\nhashed\tnote'
    # Values pass through unchanged; hashes are 32 lowercase hex digits.
    run -0 --separate-stderr rowcat --csv h.rs
    assert_line --index 0 --regexp '^1,apple,1\.50,red,[0-9a-f]{32}$'
    assert_line --index 1 --regexp '^2,pear,2\.00,,[0-9a-f]{32}$'
    assert_line --index 2 --regexp '^3,fig,0\.75,"a ""quoted"", note",[0-9a-f]{32}$'
    assert_equal "${#lines[@]}" 3
}

@test "rowhash: reads stdin and a pipe, and hashes as it does from a file" {
    items
    rowhash items.rs > f.rs
    rowhash < items.rs > s.rs
    cat items.rs | rowhash - > p.rs
    run -0 rowcat --csv f.rs
    local want="$output"
    run -0 rowcat --csv s.rs
    assert_output "$want"
    run -0 rowcat --csv p.rs
    assert_output "$want"
}

@test "rowhash: the same values give the same hash; any change gives another" {
    printf 'id,a,b\n1,x,y\n2,x,y\n3,x,Y\n4,x ,y\n' | csv_stream in.rs id:int,a:text,b:text id
    rowhash in.rs > h.rs
    mapfile -t h < <(csv_col 4 h.rs)
    assert_equal "${#h[@]}" 4
    assert_equal "${h[0]}" "${h[1]}"
    [[ ${h[0]} != "${h[2]}" ]]
    [[ ${h[0]} != "${h[3]}" ]]
}

@test "rowhash: NULL, '' and 'NULL' hash differently" {
    # PostgreSQL CSV: an unquoted empty field is NULL, "" is the empty string.
    printf 'id,v\n1,\n2,""\n3,NULL\n' | csv_stream in.rs id:int,v:text id
    rowhash in.rs > h.rs
    run -0 rowcat --csv h.rs
    assert_line --index 0 --regexp '^1,,[0-9a-f]{32}$'
    assert_line --index 1 --regexp '^2,"",[0-9a-f]{32}$'
    mapfile -t h < <(csv_col 3 h.rs)
    [[ ${h[0]} != "${h[1]}" ]]
    [[ ${h[0]} != "${h[2]}" ]]
    [[ ${h[1]} != "${h[2]}" ]]
}

@test "rowhash: ('ab','c') and ('a','bc') hash differently" {
    printf 'id,a,b\n1,ab,c\n2,a,bc\n3,abc,""\n4,"",abc\n' | csv_stream in.rs id:int,a:text,b:text id
    rowhash in.rs > h.rs
    mapfile -t h < <(csv_col 4 h.rs)
    assert_equal "${#h[@]}" 4
    run -0 bash -c 'printf "%s\n" "$@" | sort -u | wc -l' _ "${h[@]}"
    assert_output 4
}

@test "rowhash: the hash is a fixed function of the values (golden value)" {
    # Pins the encoding end to end: changing it would orphan every stored hash.
    # Computed once (XXH3-128 of 02000000 01 00 0600000000000000 "héllo").
    printf 'id,a,b\n42,,héllo\n' | csv_stream in.rs id:bigint,a:text,b:text id
    run -0 bash -c 'rowhash in.rs | rowcat --csv'
    assert_output "42,,héllo,2d74736ee34fb12f69aca5ead97508e9"
}

@test "rowhash --keys-only: keeps the key columns and _hash, with the same hash" {
    printf 'a,b,v,w\n1,x,p,q\n1,y,r,\n2,x,,s\n' |
        csv_stream in.rs a:int,b:text,v:text,w:text a,b
    rowhash in.rs > full.rs
    run -0 --separate-stderr rowhash --keys-only -o k.rs in.rs
    assert_equal "$stderr" ""
    run -0 bash -c "rowcat --header k.rs | grep -E '^(column|hashed|columns)'"
    assert_output $'columns\t3\ncolumn\t1\ta\tinteger\tkey\tint\ncolumn\t2\tb\ttext\tkey\ttext\ncolumn\t3\t_hash\txxh3_128\thash\t-\nhashed\tv\nhashed\tw'
    # The hash still covers the dropped columns: it equals the full stream's.
    run -0 rowcat --csv k.rs
    assert_output "$(rowcat --csv full.rs | cut -d, -f1,2,5)"
    assert_equal "${#lines[@]}" 3
}

@test "rowhash --ignore: the column leaves the hash and the hashed list, not the output" {
    printf 'id,name,updated_at\n1,a,2024-01-01\n2,b,2024-01-02\n' |
        csv_stream a.rs id:int,name:text,updated_at:timestamptz id
    printf 'id,name,updated_at\n1,a,2025-06-30\n2,B,2024-01-02\n' |
        csv_stream b.rs id:int,name:text,updated_at:timestamptz id
    rowhash --ignore updated_at a.rs > ha.rs
    rowhash --ignore updated_at b.rs > hb.rs
    run -0 bash -c "rowcat --header ha.rs | grep '^hashed'"
    assert_output $'hashed\tname'
    run -0 rowcat --csv ha.rs
    assert_line --index 0 --regexp '^1,a,2024-01-01,[0-9a-f]{32}$'
    mapfile -t ha < <(csv_col 4 ha.rs)
    mapfile -t hb < <(csv_col 4 hb.rs)
    assert_equal "${ha[0]}" "${hb[0]}" # only the ignored column changed
    [[ ${ha[1]} != "${hb[1]}" ]]
    # Without --ignore the timestamp counts.
    mapfile -t fa < <(rowhash a.rs | rowcat --csv | cut -d, -f4)
    mapfile -t fb < <(rowhash b.rs | rowcat --csv | cut -d, -f4)
    [[ ${fa[0]} != "${fb[0]}" ]]
    # Lists, and repeated options, accumulate.
    printf 'id,a,b,c\n1,x,y,z\n' | csv_stream abc.rs id:int,a:text,b:text,c:text id
    run -0 bash -c "rowhash -i a --ignore c abc.rs | rowcat --header | grep '^hashed'"
    assert_output $'hashed\tb'
    run -0 bash -c "rowhash --ignore a,c abc.rs | rowcat --header | grep '^hashed'"
    assert_output $'hashed\tb'
}

@test "rowhash --ignore: a column that does not exist is a usage error naming it" {
    items
    run -2 --separate-stderr rowhash --ignore note,nosuch items.rs
    assert_equal "$output" ""
    assert_equal "$stderr" 'rowhash: --ignore: table public.t has no column "nosuch"'
}

@test "rowhash: a stream that is already hashed is refused" {
    items
    rowhash items.rs > h.rs
    run -4 --separate-stderr rowhash h.rs
    assert_equal "$output" ""
    assert_equal "$stderr" 'rowhash: h.rs: table public.t: stream is already hashed (column "_hash")'
}

@test "rowhash: a truncated input exits 4 and leaves the output without a trailer" {
    seq 1 3000 | awk 'BEGIN { print "id,v" } { print $1 ",value number " $1 }' |
        csv_stream in.rs id:bigint,v:text id
    head -c 2000 in.rs > cut.rs
    run -4 --separate-stderr rowhash -o out.rs cut.rs
    assert_output ""
    assert_equal "${#stderr_lines[@]}" 1
    assert_regex "$stderr" '^rowhash: cut\.rs: (table public\.t: )?truncated stream'
    [[ ! -e out.rs ]]
    run -4 --separate-stderr bash -c 'rowhash < cut.rs > piped.rs'
    run -4 --separate-stderr rowcat --count piped.rs
    assert_regex "$stderr" 'truncated stream|empty input'
    # The whole input is fine.
    run -0 --separate-stderr bash -c 'rowhash in.rs | rowcat --count'
    assert_output 3000
}

# unsorted IN OUT: swap records 2 and 3 of a stream of ids 1..3 with
# one-byte names (equal-length records), keeping everything else.
unsorted() {
    set -o pipefail
    zstd -qdc "$1" |
        perl -0777 -pe 's/(r\x022\x02b)(r\x023\x02c)/$2$1/ or die "no match\n"' |
        zstd -q -c > "$2"
}

@test "rowhash: an unsorted input exits 4 naming the keys" {
    printf 'id,name\n1,a\n2,b\n3,c\n' | csv_stream in.rs id:int,name:text id
    unsorted in.rs bad.rs
    run -4 --separate-stderr rowhash -o out.rs bad.rs
    assert_equal "$stderr" \
        'rowhash: bad.rs: table public.t: record 3: key order violation: (id)=(2) after (id)=(3)'
    [[ ! -e out.rs ]]
}

@test "rowhash: --output writes through a temp file; a failure leaves nothing" {
    items
    run -0 --separate-stderr rowhash --output out.rs items.rs
    assert_equal "$stderr" ""
    run -0 rowcat --count out.rs
    assert_output 3
    run -0 bash -c 'ls | grep -c tmp || true'
    assert_output 0
    run -0 --separate-stderr rowhash --level 19 --max-row-bytes 1M -o l.rs items.rs
    run -0 rowcat --csv l.rs
    assert_output "$(rowcat --csv out.rs)"
}

@test "rowhash: --max-row-bytes refuses a larger record" {
    printf 'id,v\n1,%s\n' "$(head -c 3000 /dev/zero | tr '\0' x)" | csv_stream in.rs id:int,v:text id
    run -4 --separate-stderr rowhash --max-row-bytes 1K in.rs
    assert_regex "$stderr" 'record 1 exceeds --max-row-bytes 1024'
    run -0 --separate-stderr bash -c 'rowhash --max-row-bytes 4K in.rs | rowcat --count'
    assert_output 1
}

@test "rowhash: writing to /dev/full exits 3" {
    items
    run -3 --separate-stderr bash -c 'rowhash items.rs > /dev/full'
    assert_regex "$stderr" '^rowhash: could not write to stdout: No space left on device'
}

@test "rowhash: usage errors exit 2 with the Try line" {
    run -2 --separate-stderr rowhash a b
    assert_equal "${stderr_lines[0]}" "rowhash: too many arguments (first extra is 'b')"
    assert_equal "${stderr_lines[1]}" "Try 'rowhash --help' for more information."
    run -2 --separate-stderr rowhash --level 99
    assert_regex "$stderr" 'invalid value for --level'
    run -3 --separate-stderr rowhash no-such-file.rs
    assert_equal "$stderr" 'rowhash: could not open "no-such-file.rs": No such file or directory'
}
