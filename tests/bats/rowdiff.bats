#!/usr/bin/env bats
# rowdiff: inserts, updates and deletes by key, the change stream's layout,
# refusals of incompatible, truncated and unsorted inputs, and the guards.
# Input streams are built from CSV with rowcat --from-csv, then rowhash.

load helpers

setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
}

# hashed OUT TYPES KEY [rowhash options]: the CSV on stdin as a hashed stream of public.t.
hashed() {
    local out="$1" types="$2" key="$3"
    shift 3
    set -o pipefail
    rowcat --from-csv --table public.t --types "$types" --key "$key" | rowhash "$@" -o "$out" -
}

# rows FIRST LAST [SUFFIX]: CSV "id,name" rows FIRST..LAST, names "name N" + SUFFIX.
rows() {
    echo id,name
    [[ $2 -ge $1 ]] && seq "$1" "$2" | awk -v s="${3:-}" '{ print $1 ",name " $1 s }'
    return 0
}

# The _hash (last CSV field) of the record with key $2 in stream $1.
hash_of() {
    rowcat --csv "$1" | awk -F, -v k="$2" '$1 == k { print $NF }'
}

small() {
    printf 'id,name,note\n1,a,x\n2,b,\n3,c,y\n4,d,z\n5,e,\n' |
        hashed tgt.rs id:bigint,name:text,note:text id
    printf 'id,name,note\n1,a,x\n2,b,\n3,C,y\n5,e,""\n6,f,new\n' |
        hashed src.rs id:bigint,name:text,note:text id
}

@test "rowdiff: finds inserts, updates and deletes by key (exit 1)" {
    small
    run -1 --separate-stderr rowdiff -o ch.rs src.rs tgt.rs
    assert_output ""
    assert_equal "$stderr" \
        "rowdiff: table public.t: 1 insert, 2 updates, 1 delete, 2 unchanged (source 5 rows, target 5 rows)"
    run -0 --separate-stderr rowcat --csv --header-row ch.rs
    assert_equal "$stderr" ""
    assert_equal "${#lines[@]}" 5
    assert_line --index 0 "_op,id,name,note,_hash"
    # 3: name changed; 5: NULL became '' (a change); 4 gone; 6 new.
    assert_line --index 1 "U,3,C,y,$(hash_of src.rs 3)"
    assert_line --index 2 "D,4,,,$(hash_of tgt.rs 4)"
    assert_line --index 3 "U,5,e,\"\",$(hash_of src.rs 5)"
    assert_line --index 4 "I,6,f,new,$(hash_of src.rs 6)"
    [[ $(hash_of src.rs 3) != "$(hash_of tgt.rs 3)" ]]
}

@test "rowdiff: the change stream's header: _op first, the source's columns, meta" {
    small
    rowdiff -q -o ch.rs src.rs tgt.rs || [[ $? == 1 ]]
    run -0 --separate-stderr rowcat --header ch.rs
    assert_line --index 0 $'kind\tchanges'
    assert_line $'table\tpublic.t'
    assert_line $'columns\t5'
    assert_line $'column\t1\t_op\ttext\top\t-'
    assert_line $'column\t2\tid\tbigint\tkey\tint'
    assert_line $'column\t3\tname\ttext\tdata\t-'
    assert_line $'column\t5\t_hash\txxh3_128\thash\t-'
    assert_line $'hashed\tname'
    assert_line $'hashed\tnote'
    assert_line $'meta\tsource\tcsv'
    assert_line $'meta\ttarget_table\tpublic.t'
    # --table renames the output's table; target_table still names the target's.
    printf 'id,name\n1,a\n' | rowcat --from-csv --table legacy.items --key id | rowhash > s2.rs
    printf 'id,name\n1,b\n' | rowcat --from-csv --table public.items --key id | rowhash > t2.rs
    rowdiff -q --table app.items s2.rs t2.rs > ch2.rs || [[ $? == 1 ]]
    run -0 rowcat --header ch2.rs
    assert_line $'table\tapp.items'
    assert_line $'meta\ttarget_table\tpublic.items'
}

@test "rowdiff: a keys-only target gives the same changes" {
    small
    printf 'id,name,note\n1,a,x\n2,b,\n3,c,y\n4,d,z\n5,e,\n' |
        hashed tgtk.rs id:bigint,name:text,note:text id --keys-only
    rowdiff -q src.rs tgt.rs > full.rs || [[ $? == 1 ]]
    rowdiff -q src.rs tgtk.rs > k.rs || [[ $? == 1 ]]
    run -0 rowcat --csv k.rs
    assert_output "$(rowcat --csv full.rs)"
    assert_equal "${#lines[@]}" 4
}

@test "rowdiff: equal streams exit 0 with an empty, complete change stream" {
    rows 1 50 | hashed a.rs id:int,name:text id
    rows 1 50 | hashed b.rs id:int,name:text id
    run -0 --separate-stderr rowdiff -o ch.rs a.rs b.rs
    assert_equal "$stderr" \
        "rowdiff: table public.t: 0 inserts, 0 updates, 0 deletes, 50 unchanged (source 50 rows, target 50 rows)"
    run -0 --separate-stderr rowcat --count ch.rs
    assert_output 0
    # Two empty tables are equal too.
    rows 1 0 | hashed e1.rs id:int,name:text id
    rows 1 0 | hashed e2.rs id:int,name:text id
    run -0 --separate-stderr bash -c 'rowdiff -q e1.rs e2.rs | rowcat --count'
    assert_output 0
    assert_equal "$stderr" ""
}

@test "rowdiff: composite and text keys join in byte order" {
    # "B" < "a" < "b" in C order; the streams are sorted that way.
    printf 'g,k,v\n1,B,1\n1,a,2\n1,b,3\n2,a,4\n' | hashed s.rs g:int,k:text,v:text g,k
    printf 'g,k,v\n1,a,2\n1,b,x\n1,c,5\n2,a,4\n' | hashed t.rs g:int,k:text,v:text g,k
    run -1 --separate-stderr rowdiff -q s.rs t.rs
    rowdiff -q s.rs t.rs > ch.rs || [[ $? == 1 ]]
    run -0 bash -c 'rowcat --csv ch.rs | cut -d, -f1-4'
    assert_output $'I,1,B,1\nU,1,b,3\nD,1,c,'
}

@test "rowdiff: reads either input from stdin, not both" {
    small
    rowdiff -q src.rs tgt.rs > a.rs || [[ $? == 1 ]]
    rowdiff -q - tgt.rs < src.rs > b.rs || [[ $? == 1 ]]
    rowdiff -q src.rs - < tgt.rs > c.rs || [[ $? == 1 ]]
    run -0 rowcat --csv a.rs
    assert_output "$(rowcat --csv b.rs)"
    assert_output "$(rowcat --csv c.rs)"
    run -2 --separate-stderr rowdiff - - < src.rs
    assert_equal "$output" ""
    assert_equal "${stderr_lines[0]}" "rowdiff: SOURCE and TARGET cannot both be standard input"
    assert_equal "${stderr_lines[1]}" "Try 'rowdiff --help' for more information."
    run -2 --separate-stderr rowdiff src.rs
    assert_equal "${stderr_lines[0]}" "rowdiff: missing TARGET"
}

@test "rowdiff: key columns, order kinds or hashed lists that differ are refused (exit 4)" {
    rows 1 3 | hashed id.rs id:int,name:text id
    rows 1 3 | sed 's/^id,/key,/' | hashed key.rs key:int,name:text key
    run -4 --separate-stderr rowdiff id.rs key.rs
    assert_output ""
    assert_equal "$stderr" "rowdiff: source and target: key columns differ: (id i) vs (key i)"

    rows 1 3 | hashed txt.rs id:text,name:text id
    run -4 --separate-stderr rowdiff id.rs txt.rs
    assert_equal "$stderr" "rowdiff: source and target: key columns differ: (id i) vs (id t)"

    printf 'id,name,note\n1,a,b\n' | hashed all.rs id:int,name:text,note:text id
    printf 'id,name,note\n1,a,b\n' | hashed ign.rs id:int,name:text,note:text id --ignore note
    run -4 --separate-stderr rowdiff all.rs ign.rs
    assert_equal "$stderr" \
        "rowdiff: source and target: hashed column lists differ: (name, note) vs (name)"
}

@test "rowdiff: a stream without _hash is refused (exit 4)" {
    rows 1 3 | hashed h.rs id:int,name:text id
    rows 1 3 | rowcat --from-csv --table public.t --types id:int --key id > plain.rs
    run -4 --separate-stderr rowdiff h.rs plain.rs
    assert_output ""
    assert_equal "$stderr" \
        'rowdiff: target plain.rs: table public.t: stream is not hashed (no "_hash" column); run it through rowhash first'
    run -4 --separate-stderr rowdiff plain.rs h.rs
    assert_regex "$stderr" '^rowdiff: source plain\.rs: .*not hashed'
}

@test "rowdiff: a truncated input exits 4 and the output gets no trailer" {
    rows 1 20000 | hashed big.rs id:bigint,name:text id
    rows 1 20000 x | hashed big2.rs id:bigint,name:text id
    head -c $(($(stat -c %s big.rs) / 2)) big.rs > cut.rs
    # As target, as source, and through a pipe.
    run -4 --separate-stderr bash -c 'rowdiff --allow-all big2.rs cut.rs > out1.rs'
    assert_regex "$stderr" '^rowdiff: cut\.rs: table public\.t: truncated stream: input ended after [1-9][0-9]* records'
    run -4 --separate-stderr rowcat --count out1.rs
    run -4 --separate-stderr bash -c 'rowdiff --allow-all cut.rs big2.rs > out2.rs'
    run -4 --separate-stderr rowcat --count out2.rs
    run -4 --separate-stderr bash -c 'cat cut.rs | rowdiff --allow-all - big2.rs > out3.rs'
    run -4 --separate-stderr rowcat --count out3.rs
    # With --output no file is left at all.
    run -4 --separate-stderr rowdiff --allow-all -o out4.rs big2.rs cut.rs
    [[ ! -e out4.rs ]]
    run -0 bash -c 'ls | grep -c tmp || true'
    assert_output 0
}

# unsorted IN OUT: swap records 2 and 3 of a stream of ids 1..3 with one-byte
# names and their hashes (equal-length records), keeping everything else.
unsorted() {
    set -o pipefail
    zstd -qdc "$1" |
        perl -0777 -pe 's/(r\x022\x02b\x21[0-9a-f]{32})(r\x023\x02c\x21[0-9a-f]{32})/$2$1/ or die "no match\n"' |
        zstd -q -c > "$2"
}

@test "rowdiff: an unsorted input exits 4 and the output gets no trailer" {
    printf 'id,name\n1,a\n2,b\n3,c\n' | hashed ok.rs id:int,name:text id
    unsorted ok.rs bad.rs
    run -4 --separate-stderr bash -c 'rowdiff ok.rs bad.rs > out.rs'
    assert_equal "$stderr" \
        'rowdiff: bad.rs: table public.t: record 3: key order violation: (id)=(2) after (id)=(3)'
    run -4 --separate-stderr rowcat --count out.rs
    run -4 --separate-stderr bash -c 'rowdiff bad.rs ok.rs > out.rs'
    run -4 --separate-stderr rowcat --count out.rs
}

@test "rowdiff guards: 50 of 60 deleted passes the default minimum of 100 rows" {
    rows 1 60 | hashed tgt.rs id:int,name:text id
    rows 1 10 | hashed src.rs id:int,name:text id
    run -1 --separate-stderr rowdiff -o ch.rs src.rs tgt.rs
    assert_equal "$stderr" \
        "rowdiff: table public.t: 0 inserts, 0 updates, 50 deletes, 10 unchanged (source 10 rows, target 60 rows)"
    run -0 rowcat --count ch.rs
    assert_output 50
}

@test "rowdiff guards: --guard-min 10 trips on 50 of 60 deleted (exit 6, no trailer)" {
    rows 1 60 | hashed tgt.rs id:int,name:text id
    rows 1 10 | hashed src.rs id:int,name:text id
    run -6 --separate-stderr bash -c 'rowdiff --guard-min 10 src.rs tgt.rs > ch.rs'
    assert_equal "${#stderr_lines[@]}" 2
    assert_equal "${stderr_lines[0]}" \
        "rowdiff: table public.t: guard: 50 deletes of 60 migrated rows (83.3%) exceed 10% and 10 rows"
    assert_equal "${stderr_lines[1]}" \
        "rowdiff: hint: if this change is planned, run again with --allow-deletes (or --allow-all)"
    run -4 --separate-stderr rowcat --count ch.rs
    run -6 --separate-stderr rowdiff --guard-min 10 -o ch2.rs src.rs tgt.rs
    [[ ! -e ch2.rs ]]
    # Allowed: per operation, all at once, or by a larger share for deletes.
    run -1 --separate-stderr rowdiff -q --guard-min 10 --allow-deletes -o ch3.rs src.rs tgt.rs
    assert_equal "$stderr" ""
    run -0 rowcat --count ch3.rs
    assert_output 50
    run -1 --separate-stderr rowdiff -q --guard-min 10 --allow-all src.rs tgt.rs
    run -1 --separate-stderr rowdiff -q --guard-min 10 --max-deletes-pct 90 src.rs tgt.rs
    run -6 --separate-stderr rowdiff -q --guard-min 10 --allow-inserts --allow-updates src.rs tgt.rs
    run -6 --separate-stderr rowdiff -q --guard-min 10 --max-inserts-pct 90 src.rs tgt.rs
}

@test "rowdiff guards: a 6-row table losing one row passes" {
    rows 1 6 | hashed tgt.rs id:int,name:text id
    rows 1 6 | sed '/^4,/d' | hashed src.rs id:int,name:text id
    run -1 --separate-stderr bash -c 'set -o pipefail; rowdiff -q src.rs tgt.rs | rowcat --csv | cut -d, -f1,2'
    assert_output "D,4"
}

@test "rowdiff guards: updates and inserts, each against its own share" {
    rows 1 200 | hashed tgt.rs id:int,name:text id
    # 30 updated (15%), 25 inserted (12.5%).
    { rows 1 30 " v2"; rows 31 225 | tail -n +2; } | hashed src.rs id:int,name:text id
    run -6 --separate-stderr rowdiff -q --guard-min 20 src.rs tgt.rs
    assert_equal "${stderr_lines[0]}" \
        "rowdiff: table public.t: guard: 25 inserts of 200 migrated rows (12.5%) exceed 10% and 20 rows"
    assert_equal "${stderr_lines[1]}" \
        "rowdiff: hint: if this change is planned, run again with --allow-inserts (or --allow-all)"
    assert_equal "${stderr_lines[2]}" \
        "rowdiff: table public.t: guard: 30 updates of 200 migrated rows (15.0%) exceed 10% and 20 rows"
    assert_equal "${#stderr_lines[@]}" 4
    run -1 --separate-stderr rowdiff -q --guard-min 20 --guard-pct 15 src.rs tgt.rs
    run -6 --separate-stderr rowdiff -q --guard-min 20 --guard-pct 15 --max-updates-pct 14.5 src.rs tgt.rs
    assert_equal "${#stderr_lines[@]}" 2
    assert_regex "${stderr_lines[0]}" 'guard: 30 updates of 200 migrated rows \(15\.0%\) exceed 14\.5% and 20 rows$'
    run -1 --separate-stderr rowdiff -q --guard-min 30 src.rs tgt.rs
}

@test "rowdiff guards: an empty target trips the insert guard (no migrated rows)" {
    rows 1 0 | hashed tgt.rs id:int,name:text id
    rows 1 150 | hashed src.rs id:int,name:text id
    run -6 --separate-stderr bash -c 'rowdiff src.rs tgt.rs > ch.rs'
    assert_equal "${stderr_lines[0]}" \
        "rowdiff: table public.t: guard: 150 inserts but the target has no migrated rows (more than 100 rows)"
    assert_regex "${stderr_lines[1]}" '^rowdiff: hint: .*this run created.*--allow-inserts'
    run -4 --separate-stderr rowcat --count ch.rs
    run -1 --separate-stderr bash -c 'set -o pipefail; rowdiff -q --allow-inserts src.rs tgt.rs | rowcat --count'
    assert_output 150
    # Below the minimum an empty target is filled without a flag.
    rows 1 100 | hashed src100.rs id:int,name:text id
    run -1 --separate-stderr rowdiff -q src100.rs tgt.rs
}

@test "rowdiff --stats: one JSON line with the counts (also when a guard trips)" {
    small
    run -1 --separate-stderr rowdiff -q --stats st.json src.rs tgt.rs
    run -0 cat st.json
    assert_output '{"table":"public.t","source_rows":5,"target_rows":5,"insert":1,"update":2,"delete":1,"unchanged":2}'
    rm st.json
    run -6 --separate-stderr rowdiff -q --guard-min 0 --stats st.json src.rs tgt.rs
    run -0 cat st.json
    assert_output --partial '"delete":1,'
    run -0 bash -c 'ls | grep -c tmp || true'
    assert_output 0
    run -3 --separate-stderr rowdiff -q --stats /nonexistent/dir/st.json src.rs tgt.rs
    assert_regex "$stderr" '^rowdiff: could not create "/nonexistent/dir/st\.json\.tmp\.[0-9]+": No such file or directory$'
}

@test "rowdiff: writing to /dev/full exits 3" {
    rows 1 3000 | hashed s.rs id:int,name:text id
    rows 1 10 | hashed t.rs id:int,name:text id
    run -3 --separate-stderr bash -c 'rowdiff -q --allow-all s.rs t.rs > /dev/full'
    assert_regex "$stderr" '^rowdiff: could not write to stdout: No space left on device'
}

@test "rowdiff: --quiet prints nothing; usage errors exit 2" {
    small
    run -1 --separate-stderr rowdiff -q -o ch.rs src.rs tgt.rs
    assert_equal "$stderr" ""
    run -2 --separate-stderr rowdiff --guard-pct ten src.rs tgt.rs
    assert_equal "${stderr_lines[0]}" "rowdiff: invalid value for --guard-pct: 'ten' is not a number"
    run -2 --separate-stderr rowdiff --guard-min -1 src.rs tgt.rs
    run -2 --separate-stderr rowdiff src.rs tgt.rs extra.rs
    assert_equal "${stderr_lines[0]}" "rowdiff: too many arguments (first extra is 'extra.rs')"
    run -3 --separate-stderr rowdiff src.rs nosuch.rs
    assert_equal "$stderr" 'rowdiff: could not open "nosuch.rs": No such file or directory'
}
