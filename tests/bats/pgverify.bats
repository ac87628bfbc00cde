#!/usr/bin/env bats
# pgverify: every planted difference found by key (missing, extra, a changed
# column named, NULL vs '', NULL vs 'NULL', a foreign key to another parent, a
# reissued UUID, truncated microseconds, a trimmed space, NaN vs a number);
# values shown only with --values; the JSON parses; the database mode against
# a scratch cluster (legacy_reader and target_owner); --schema; bad input.

load helpers

TYPES=legacy_id:bigint,id:uuid,name:text,note:text,parent_id:uuid,ts:timestamptz,amount:numeric

# The source in target form (after idmap): twelve people.
source_csv() {
    cat <<'CSV'
legacy_id,id,name,note,parent_id,ts,amount
1,00000000-0000-4000-8000-000000000001,alice,x,,2024-01-02 03:04:05.123456+00,1.5
2,00000000-0000-4000-8000-000000000002,bob,x,,2024-01-02 03:04:05+00,2
3,00000000-0000-4000-8000-000000000003,carol,x,,2024-01-02 03:04:05+00,3
4,00000000-0000-4000-8000-000000000004,dan,,,2024-01-02 03:04:05+00,4
5,00000000-0000-4000-8000-000000000005,erin,,,2024-01-02 03:04:05+00,5
6,00000000-0000-4000-8000-000000000006,fay,x,00000000-0000-4000-8000-000000000001,2024-01-02 03:04:05+00,6
7,00000000-0000-4000-8000-000000000007,gus,x,,2024-01-02 03:04:05+00,7
8,00000000-0000-4000-8000-000000000008,hal,x,,2024-01-02 03:04:05.123456+00,8
9,00000000-0000-4000-8000-000000000009,ida ,x,,2024-01-02 03:04:05+00,9
10,00000000-0000-4000-8000-000000000010,jo,x,,2024-01-02 03:04:05+00,NaN
11,00000000-0000-4000-8000-000000000011,kim,x,,2024-01-02 03:04:05+00,11
12,00000000-0000-4000-8000-00000000abcd,lee,SENTINEL-SRC-42,,2024-01-02 03:04:05+00,12
CSV
}

# The target with one planted difference per key: 2 missing, 13 extra,
# 3 name changed, 4 NULL -> '', 5 NULL -> 'NULL', 6 another parent, 7 UUID
# reissued, 8 microseconds truncated, 9 trailing space trimmed, 10 NaN -> a
# number, 12 a note holding a sentinel; 1 and 11 equal.
target_csv() {
    cat <<'CSV'
legacy_id,id,name,note,parent_id,ts,amount
1,00000000-0000-4000-8000-000000000001,alice,x,,2024-01-02 03:04:05.123456+00,1.5
3,00000000-0000-4000-8000-000000000003,Carol,x,,2024-01-02 03:04:05+00,3
4,00000000-0000-4000-8000-000000000004,dan,"",,2024-01-02 03:04:05+00,4
5,00000000-0000-4000-8000-000000000005,erin,NULL,,2024-01-02 03:04:05+00,5
6,00000000-0000-4000-8000-000000000006,fay,x,00000000-0000-4000-8000-000000000002,2024-01-02 03:04:05+00,6
7,00000000-0000-4000-8000-0000000000ff,gus,x,,2024-01-02 03:04:05+00,7
8,00000000-0000-4000-8000-000000000008,hal,x,,2024-01-02 03:04:05.123+00,8
9,00000000-0000-4000-8000-000000000009,ida,x,,2024-01-02 03:04:05+00,9
10,00000000-0000-4000-8000-000000000010,jo,x,,2024-01-02 03:04:05+00,1.5
11,00000000-0000-4000-8000-000000000011,kim,x,,2024-01-02 03:04:05+00,11
12,00000000-0000-4000-8000-00000000abcd,lee,SENTINEL-TGT-42,,2024-01-02 03:04:05+00,12
13,00000000-0000-4000-8000-000000000013,max,x,,2024-01-02 03:04:05+00,13
CSV
}

# The crosswalk: legacy_id -> the UUID issued for it; one in upper case, as a
# CSV may hold it (the server prints lower case).
crosswalk_csv() {
    echo legacy_id,uuid
    { source_csv | sed 1d; target_csv | sed 1d | grep '^13,'; } | cut -d, -f1,2 |
        sed 's/abcd$/ABCD/'
}

# stream OUT [TYPES [KEY]]: the CSV on stdin as a row stream of public.people.
stream() {
    rowcat --from-csv --table public.people --types "${2:-$TYPES}" --key "${3:-legacy_id}" >"$1"
}

# pyjson FILE EXPR: evaluate a Python expression over the JSON object in FILE (as j).
pyjson() {
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
        "$1" "$2"
}

setup_file() {
    scratch_setup_file || return
    if [[ ${SKIP_DB:-} != 1 ]]; then
        psql_as legacy_owner legacy >/dev/null <<'SQL'
CREATE TABLE public.shared (id integer PRIMARY KEY, name text, ts timestamptz, amount float8);
INSERT INTO public.shared SELECT i, 'name ' || i, '2024-01-02 03:04:05.123456+00', i * 1.5
    FROM generate_series(1, 3000) AS i;
CREATE TABLE public.same (k text PRIMARY KEY, v text);
INSERT INTO public.same VALUES ('a', NULL), ('B', ''), ('é', 'NULL'), ('a b', 'x');
CREATE TABLE public.hidden (id integer PRIMARY KEY, v text);
INSERT INTO public.hidden VALUES (1, 'a'), (2, 'b');
ALTER TABLE public.hidden ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_sees_some ON public.hidden FOR SELECT TO legacy_reader USING (id > 1);
CREATE TABLE public.customers (id integer PRIMARY KEY, name varchar(50), email text NOT NULL,
    born timestamp, doc json);
CREATE TABLE public.orders (id integer PRIMARY KEY,
    customer_id integer REFERENCES public.customers, total numeric(12,2), note text);
CREATE TABLE public.extra_table (id integer PRIMARY KEY);
CREATE TABLE public.born (legacy_id integer, v text);
INSERT INTO public.born VALUES (1, 'a'), (2, 'b');
SQL
        psql_as target_owner target >/dev/null <<'SQL'
CREATE TABLE public.shared (id integer PRIMARY KEY, name text, ts timestamptz, amount float8);
INSERT INTO public.shared SELECT i, 'name ' || i, '2024-01-02 03:04:05.123456+00', i * 1.5
    FROM generate_series(1, 3000) AS i;
CREATE TABLE public.renamed (id integer PRIMARY KEY, name text, ts timestamptz, amount float8);
INSERT INTO public.renamed SELECT * FROM public.shared;
CREATE TABLE public.same (k text PRIMARY KEY, v text);
INSERT INTO public.same VALUES ('a', NULL), ('B', ''), ('é', 'NULL'), ('a b', 'x');
CREATE TABLE public.hidden (id integer PRIMARY KEY, v text);
INSERT INTO public.hidden VALUES (1, 'a'), (2, 'b');
CREATE TABLE public.customers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id bigint UNIQUE, name text, email text NOT NULL, born timestamptz, doc jsonb,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.orders (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id bigint UNIQUE, customer_id uuid REFERENCES public.customers,
    total numeric(12,2), note text);
CREATE TABLE public.born (legacy_id integer, v text);
INSERT INTO public.born VALUES (1, 'a'), (NULL, 'born here'), (2, 'b');
SQL
    fi
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    case $BATS_TEST_DESCRIPTION in
    db:* | schema:*) scratch_setup ;;
    esac
    cd "$BATS_TEST_TMPDIR" || return 1
    source_csv | stream src.rs
    target_csv | stream tgt.rs
    crosswalk_csv | rowcat --from-csv --table crosswalk --types legacy_id:bigint,uuid:uuid \
        --key legacy_id >xw.rs
}

@test "streams: every planted difference is found by key, the columns named (exit 1)" {
    run -1 --separate-stderr pgverify src.rs tgt.rs
    assert_equal "$stderr" ""
    assert_line --index 0 "table public.people"
    assert_line "  source rows                    12"
    assert_line "  target rows                    12"
    assert_line "  matched                         2"
    assert_line "  missing in target               1"
    assert_line "  extra in target                 1"
    assert_line "  different                       9"
    assert_line "  success rate               16.66%"
    assert_line "missing in target (1):"
    assert_line "  (legacy_id)=(2)"
    assert_line "extra in target (1):"
    assert_line "  (legacy_id)=(13)"
    assert_line "different (9):"
    assert_line "  (legacy_id)=(3): name"
    assert_line "  (legacy_id)=(4): note"
    assert_line "  (legacy_id)=(5): note"
    assert_line "  (legacy_id)=(6): parent_id"
    assert_line "  (legacy_id)=(7): id"
    assert_line "  (legacy_id)=(8): ts"
    assert_line "  (legacy_id)=(9): name"
    assert_line "  (legacy_id)=(10): amount"
    assert_line "  (legacy_id)=(12): note"
    refute_line --partial "(legacy_id)=(1)"
    refute_line --partial "(legacy_id)=(11)"
    assert_line "result: 11 discrepancies"
}

@test "streams: identical streams report nothing (exit 0), hashed or not" {
    run -0 --separate-stderr pgverify src.rs src.rs
    assert_equal "$stderr" ""
    assert_line "  matched                        12"
    assert_line "  success rate              100.00%"
    assert_line "result: match"
    rowhash src.rs >hsrc.rs
    run -0 --separate-stderr pgverify hsrc.rs src.rs
    assert_line "result: match"
    run -0 --separate-stderr pgverify hsrc.rs hsrc.rs
    assert_line "result: match"
    # The target stream itself against its crosswalk: every UUID is its entry.
    source_csv | stream fixed.rs
    run -0 --separate-stderr pgverify --crosswalk xw.rs --uuid-column id src.rs fixed.rs
    assert_line "  uuid mismatches                 0"
}

@test "streams: hashed inputs (rowhash) give the same findings; keys-only ones name no columns" {
    rowhash src.rs >hs.rs
    rowhash tgt.rs >ht.rs
    run -1 --separate-stderr pgverify src.rs tgt.rs
    local plain=$output
    run -1 --separate-stderr pgverify hs.rs ht.rs
    assert_equal "$output" "$plain"
    run -1 --separate-stderr pgverify hs.rs tgt.rs
    assert_equal "$output" "$plain"
    run -1 --separate-stderr pgverify src.rs ht.rs
    assert_equal "$output" "$plain"
    rowhash --keys-only src.rs >ks.rs
    rowhash --keys-only tgt.rs >kt.rs
    run -1 --separate-stderr pgverify ks.rs kt.rs
    assert_line "  different                       9"
    assert_line "  (legacy_id)=(3): hashes differ (the streams hold no values to compare)"
    # Hashes over different columns cannot be compared.
    rowhash --ignore note tgt.rs >hti.rs
    run -4 --separate-stderr pgverify hs.rs hti.rs
    assert_output ""
    [[ $stderr == *"hashed column lists differ"* ]]
    # A hash over fewer columns is honoured: note is not compared.
    run -1 --separate-stderr pgverify src.rs hti.rs
    refute_line --partial "(legacy_id)=(4)"
    assert_line "  (legacy_id)=(3): name"
}

@test "streams: --crosswalk flags a reissued UUID and a key missing from the crosswalk" {
    run -1 --separate-stderr pgverify --crosswalk xw.rs --uuid-column id src.rs tgt.rs
    assert_line "  uuid mismatches                 1"
    assert_line "uuid mismatches (1):"
    assert_line "  (legacy_id)=(7): uuid reissued (column id is not the crosswalk's)"
    # The UUIDs themselves only with --values.
    refute_output --partial "0000000000ff"
    crosswalk_csv | grep -v '^11,' | rowcat --from-csv --table crosswalk \
        --types legacy_id:bigint,uuid:uuid --key legacy_id >xw2.rs
    run -1 --separate-stderr pgverify --crosswalk xw2.rs --uuid-column id src.rs src.rs
    assert_line "  matched                        12"
    assert_line "  uuid mismatches                 1"
    assert_line "  (legacy_id)=(11): uuid not in the crosswalk (column id)"
    assert_line "result: 1 discrepancy"
    run -1 --separate-stderr pgverify --values --crosswalk xw.rs --uuid-column id src.rs tgt.rs
    assert_line --partial "(legacy_id)=(7): uuid reissued (column id is not the crosswalk's): target \"00000000-0000-4000-8000-0000000000ff\", crosswalk \"00000000-0000-4000-8000-000000000007\""
}

@test "streams: without --values no value appears anywhere; with it the values are shown" {
    run -1 --separate-stderr pgverify --json out.json --crosswalk xw.rs --uuid-column id \
        src.rs tgt.rs
    [[ $output != *SENTINEL* && $stderr != *SENTINEL* ]] || fail "a value was printed"
    run grep -c SENTINEL out.json
    assert_output 0
    run -1 --separate-stderr pgverify --values --json out.json src.rs tgt.rs
    assert_line "  (legacy_id)=(12): note"
    assert_line "      note: source \"SENTINEL-SRC-42\", target \"SENTINEL-TGT-42\""
    assert_line "      note: source NULL, target \"\""
    assert_line "      note: source NULL, target \"NULL\""
    assert_line "      name: source \"ida \", target \"ida\""
    assert_line "      amount: source \"NaN\", target \"1.5\""
    assert_line "      ts: source \"2024-01-02 03:04:05.123456+00\", target \"2024-01-02 03:04:05.123+00\""
    [[ $stderr != *SENTINEL* ]]
    run -0 pyjson out.json 'j["different_keys"][8]["values"]["note"]'
    assert_output "{'source': 'SENTINEL-SRC-42', 'target': 'SENTINEL-TGT-42'}"
    run -0 pyjson out.json 'j["different_keys"][1]["values"]["note"]'
    assert_output "{'source': None, 'target': ''}"
}

@test "streams: --json writes one object that parses, with counts and listed keys" {
    run -1 --separate-stderr pgverify --json out.json --crosswalk xw.rs --uuid-column id \
        src.rs tgt.rs
    [[ $output == *"table public.people"* ]]
    run -0 python3 -c 'import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, lines
j = json.loads(lines[0])
print(j["table"], j["source_rows"], j["target_rows"], j["missing"], j["extra"],
      j["different"], j["matched"], j["uuid_mismatch"], j["success_rate"])
print(j["missing_keys"], j["extra_keys"])
print([(d["key"]["legacy_id"], d["columns"]) for d in j["different_keys"]])
print(j["uuid_mismatch_keys"])' out.json
    assert_line --index 0 "public.people 12 12 1 1 9 2 1 16.66"
    assert_line --index 1 "[{'legacy_id': '2'}] [{'legacy_id': '13'}]"
    assert_line --index 2 "[('3', ['name']), ('4', ['note']), ('5', ['note']), ('6', ['parent_id']), ('7', ['id']), ('8', ['ts']), ('9', ['name']), ('10', ['amount']), ('12', ['note'])]"
    assert_line --index 3 "[{'key': {'legacy_id': '7'}, 'reason': 'reissued'}]"
    # --json - puts the object on stdout instead of the report.
    run -0 --separate-stderr pgverify --json - src.rs src.rs
    run -0 python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print(j["success_rate"], j["result"])' <<<"$output"
    assert_output "100.0 match"
}

@test "streams: --show N lists the first N keys of each kind; --show 0 none; --table names it" {
    run -1 --separate-stderr pgverify --show 2 --table public.users src.rs tgt.rs
    assert_line --index 0 "table public.users"
    assert_line "different (first 2 of 9):"
    assert_line "  (legacy_id)=(4): note"
    refute_line "  (legacy_id)=(5): note"
    run -1 --separate-stderr pgverify --show 0 -q --json out.json src.rs tgt.rs
    assert_output ""
    run -0 pyjson out.json 'len(j["different_keys"]), j["different"]'
    assert_output "(0, 9)"
}

@test "streams: empty streams match (100%), a composite text key is joined by bytes" {
    echo 'legacy_id,id,name,note,parent_id,ts,amount' | stream e1.rs
    run -0 --separate-stderr pgverify e1.rs e1.rs
    assert_line "  success rate              100.00%"
    run -1 --separate-stderr pgverify e1.rs src.rs
    assert_line "  extra in target                12"
    printf 'g,k,v\n1,B,x\n1,a,y\n1,é,z\n2,A,w\n' | stream c1.rs g:integer,k:text,v:text g,k
    printf 'g,k,v\n1,B,x\n1,b,y\n1,é,Z\n2,A,w\n' | stream c2.rs g:integer,k:text,v:text g,k
    run -1 --separate-stderr pgverify c1.rs c2.rs
    assert_line "  (g, k)=(1, a)"
    assert_line "  (g, k)=(1, b)"
    assert_line "  (g, k)=(1, é): v"
}

@test "streams: truncated or corrupt input exits 4, before any report" {
    local size
    size=$(stat -c %s tgt.rs)
    head -c $((size - 7)) tgt.rs >cut.rs
    run -4 --separate-stderr pgverify src.rs cut.rs
    assert_output ""
    [[ $stderr == "pgverify: "*"truncated"* ]]
    run -4 --separate-stderr bash -c 'head -c 100 src.rs | pgverify - tgt.rs'
    assert_output ""
    size=$(stat -c %s xw.rs)
    head -c $((size - 5)) xw.rs >xcut.rs
    run -4 --separate-stderr pgverify --crosswalk xcut.rs --uuid-column id src.rs tgt.rs
    assert_output ""
    [[ $stderr == *truncated* ]]
    printf 'not a stream at all\n' >junk.rs
    run -4 --separate-stderr pgverify junk.rs tgt.rs
    assert_output ""
    run -3 --separate-stderr pgverify src.rs no-such-file.rs
    [[ $stderr == *"no-such-file.rs"* ]]
}

@test "streams: incompatible headers exit 4 naming the difference" {
    source_csv | sed '1s/legacy_id/lid/' | stream k.rs "${TYPES/legacy_id/lid}" lid
    run -4 --separate-stderr pgverify src.rs k.rs
    assert_output ""
    [[ $stderr == *"key columns differ: (legacy_id int) vs (lid int)"* ]]
    source_csv | cut -d, -f1-6 | stream short.rs "${TYPES%,amount:numeric}"
    run -4 --separate-stderr pgverify src.rs short.rs
    [[ $stderr == *'source column "amount" is not in the target'* ]]
    source_csv | sed '1s/,note,/,remark,/' | stream renamed.rs "${TYPES/note/remark}"
    run -4 --separate-stderr pgverify src.rs renamed.rs
    [[ $stderr == *'"note"'* ]]
    source_csv | head -n 5 | stream text.rs legacy_id:text legacy_id
    run -4 --separate-stderr pgverify src.rs text.rs
    [[ $stderr == *"(legacy_id int) vs (legacy_id text)"* ]]
    printf 'id,uuid\n1,00000000-0000-4000-8000-000000000001\n' |
        rowcat --from-csv --types id:bigint --key id >badxw.rs
    run -4 --separate-stderr pgverify --crosswalk badxw.rs --uuid-column id src.rs tgt.rs
    [[ $stderr == *"target and crosswalk: key columns differ"* ]]
    run -4 --separate-stderr pgverify --crosswalk xw.rs --uuid-column nope src.rs tgt.rs
    [[ $stderr == *'no column "nope"'* ]]
    rowhash src.rs >hs.rs
    rowhash tgt.rs >ht.rs
    rowdiff -q hs.rs ht.rs >changes.rs || true
    run -4 --separate-stderr pgverify changes.rs ht.rs
    [[ $stderr == *"a change stream cannot be verified"* ]]
}

@test "streams: a record above --max-row-bytes exits 4" {
    { echo id,v; echo "1,$(printf '%05000d' 0)"; } | stream wide.rs id:bigint,v:text id
    run -0 --separate-stderr pgverify --max-row-bytes 8K wide.rs wide.rs
    run -4 --separate-stderr pgverify --max-row-bytes 1K wide.rs wide.rs
    assert_output ""
    [[ $stderr == "pgverify: "*"exceeds --max-row-bytes"* ]]
}

@test "usage: --help, --version, and bad invocations exit 2 with nothing on stdout" {
    run -0 --separate-stderr pgverify --help
    for o in --crosswalk --uuid-column --source-env --target-env --table --target-table --key \
        --columns --snapshot-source --snapshot-target --schema --map-columns --expr --fk \
        --ignore --source-tables --show --values --json --quiet --max-row-bytes; do
        assert_output --partial -- "$o"
    done
    assert_output --partial "Exit status:"
    assert_equal "$(printf '%s\n' "$output" | awk 'length > 80')" ""
    run -0 --separate-stderr pgverify --version
    assert_output "pgverify (driftless) 0.1.0"
    run -2 --separate-stderr pgverify
    assert_output ""
    [[ $stderr == *"missing SOURCE and TARGET"* && $stderr == *"Try 'pgverify --help'"* ]]
    run -2 --separate-stderr pgverify - -
    run -2 --separate-stderr pgverify a b c
    run -2 --separate-stderr pgverify --crosswalk xw.rs src.rs tgt.rs
    [[ $stderr == *"--crosswalk and --uuid-column go together"* ]]
    run -2 --separate-stderr pgverify --key id src.rs tgt.rs
    run -2 --separate-stderr pgverify --show -1 src.rs tgt.rs
    run -2 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL --table public.t --key id
    [[ $stderr == *"--target-env"* ]]
    run -2 --separate-stderr pgverify --source-env A --target-env B --table t --key id
    [[ $stderr == *"schema-qualified"* ]]
    run -2 --separate-stderr pgverify --source-env A --target-env B --table public.t
    [[ $stderr == *"--key is required"* ]]
    run -2 --separate-stderr pgverify --source-env 'host=x dbname=y' --target-env B \
        --table public.t --key id
    [[ $stderr == *"not a connection string"* && $stderr != *dbname=y* ]]
    run -2 --separate-stderr pgverify --source-env A --target-env B --table public.t --key id \
        --snapshot-source "1'; DROP TABLE x"
    [[ $stderr == *"not a snapshot ID"* ]]
    run -2 --separate-stderr pgverify --schema --source-env A
    run -2 --separate-stderr pgverify --map-columns a=b src.rs tgt.rs
    run -2 --separate-stderr pgverify --target-env X --table public.t --key id \
        --source-env 'postgresql://u:SENTINEL-pw@h/db'
    [[ $stderr == *password* && $stderr != *SENTINEL* ]]
    assert_output ""
}

@test "db: a table both sides share: planted differences found by key (exit 1)" {
    psql_as target_owner target >/dev/null <<'SQL'
UPDATE public.shared SET ts = '2024-01-02 03:04:05.123+00' WHERE id = 7;
UPDATE public.shared SET amount = 'NaN' WHERE id = 9;
UPDATE public.shared SET name = 'name 10 ' WHERE id = 10;
DELETE FROM public.shared WHERE id = 11;
INSERT INTO public.shared VALUES (3001, 'new', now(), 1), (-5, 'neg', now(), 2);
SQL
    run -1 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.shared --key id --json db.json
    assert_equal "$stderr" ""
    assert_line "  source rows                  3000"
    assert_line "  target rows                  3001"
    assert_line "  matched                      2996"
    assert_line "  (id)=(11)"
    assert_line "  (id)=(-5)"
    assert_line "  (id)=(3001)"
    assert_line "  (id)=(7): ts"
    assert_line "  (id)=(9): amount"
    assert_line "  (id)=(10): name"
    run -0 pyjson db.json '(j["table"], j["missing"], j["extra"], j["different"])'
    assert_output "('public.shared', 1, 2, 3)"
    # --columns compares only those.
    run -1 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.shared --key id --columns name
    assert_line "  different                       1"
    assert_line "  (id)=(10): name"
}

@test "db: identical tables match (exit 0); text keys; another target table name" {
    run -0 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.same --key k
    assert_equal "$stderr" ""
    assert_line "  matched                         4"
    assert_line "result: match"
    run -0 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.shared --target-table public.renamed \
        --key id --columns name
    assert_line --index 0 "table public.renamed"
    assert_line "result: match"
}

@test "db: target rows whose key is NULL (born in the target) are not compared" {
    run -0 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.born --key legacy_id
    assert_equal "$stderr" ""
    assert_line "  source rows                     2"
    assert_line "  target rows                     2"
    assert_line "result: match"
}

@test "db: snapshots are honoured; rows changed later are not seen" {
    local dir="$BATS_TEST_TMPDIR" pid id
    mkfifo "$dir/hold"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --export-snapshot <"$dir/hold" \
        >"$dir/id" 2>"$dir/holder.err" 3>&- &
    pid=$!
    exec 4>"$dir/hold"
    for _ in $(seq 100); do
        [[ -s $dir/id ]] && break
        sleep 0.1
    done
    id="$(head -n 1 "$dir/id")"
    psql_as legacy_owner legacy -c "UPDATE public.same SET v = 'later' WHERE k = 'a b'"
    run -1 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.same --key k
    assert_line "  (k)=(a b): v"
    run -0 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.same --key k --snapshot-source "$id"
    assert_line "result: match"
    exec 4>&-
    wait "$pid"
    psql_as legacy_owner legacy -c "UPDATE public.same SET v = 'x' WHERE k = 'a b'"
}

@test "db: refusals: a missing table (5), row security (6), a failed connect (5, no password)" {
    run -5 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.nope --key id
    assert_output ""
    [[ $stderr == *"source table public.nope"*"does not exist"* ]]
    run -5 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.shared --key id --target-table public.gone
    [[ $stderr == *"target table public.gone"* ]]
    run -5 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.shared --key nokey
    [[ $stderr == *'key column "nokey" does not exist'* ]]
    run -6 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --table public.hidden --key id
    assert_output ""
    [[ $stderr == *"source table public.hidden: row security is active for role legacy_reader"* ]]
    export BAD_DSN="host=$PGHOST port=$PGPORT dbname=target user=no_such_role password=s3ntinel-pw"
    run -5 --separate-stderr pgverify --source-env SOURCE_DATABASE_URL --target-env BAD_DSN \
        --table public.shared --key id
    [[ $stderr == *"target no_such_role@"* && $stderr != *s3ntinel* ]]
}

@test "schema: identical tables pass (exit 0)" {
    run -0 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.shared
    assert_equal "$stderr" ""
    assert_output "schema public.shared (source public.shared): ok"
    run -0 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.customers \
        --map-columns legacy_id=id --uuid-column id --expr born,doc
    assert_output "schema public.customers (source public.customers): ok"
}

@test "schema: a column added to the source is reported by name (exit 6)" {
    psql_as legacy_owner legacy -c "ALTER TABLE public.shared ADD COLUMN nickname text"
    run -6 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.shared --json s.json
    psql_as legacy_owner legacy -c "ALTER TABLE public.shared DROP COLUMN nickname"
    assert_line --index 0 "schema public.shared (source public.shared): 1 problem"
    assert_line --index 1 '  source column "nickname" (text) is not in the target'
    assert_equal "$stderr" 'pgverify: table public.shared: schema drift: source column "nickname" (text) is not in the target'
    run -0 pyjson s.json '(j["schema_drift"], j["problems"][0]["kind"], j["problems"][0]["name"])'
    assert_output "(1, 'source_column_missing', 'nickname')"
    # --ignore accepts it.
    psql_as legacy_owner legacy -c "ALTER TABLE public.shared ADD COLUMN nickname text"
    run -0 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.shared --ignore nickname
    psql_as legacy_owner legacy -c "ALTER TABLE public.shared DROP COLUMN nickname"
}

@test "schema: a changed type without an expression, an unfilled NOT NULL, an untranslated foreign key" {
    run -6 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.customers \
        --map-columns legacy_id=id --uuid-column id
    assert_line --partial 'column "born": the source'"'"'s type is timestamp without time zone, the target'"'"'s timestamp with time zone'
    assert_line --partial 'column "doc": the source'"'"'s type is json, the target'"'"'s jsonb'
    refute_line --partial '"name"' # varchar(50) -> text keeps the text form
    refute_line --partial '"legacy_id"' # integer -> bigint too
    [[ $stderr == *"table public.customers: schema drift (2 problems): born, doc"* ]]
    psql_as target_owner target -c "ALTER TABLE public.customers ADD COLUMN tier text NOT NULL"
    run -6 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.customers \
        --map-columns legacy_id=id --uuid-column id --expr born,doc
    psql_as target_owner target -c "ALTER TABLE public.customers DROP COLUMN tier"
    assert_line '  target column "tier" is NOT NULL without a default, and the source never fills it'
    run -6 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.orders \
        --map-columns legacy_id=id --uuid-column id
    assert_line --partial 'source foreign key "orders_customer_id_fkey" (customer_id) -> public.customers'
    run -0 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.orders \
        --map-columns legacy_id=id --uuid-column id --fk customer_id
    # A map that names a column the source no longer has.
    run -6 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.orders \
        --map-columns legacy_id=id,note=remark --uuid-column id --fk customer_id
    assert_line --partial 'the map reads source column "remark"'
}

@test "schema: --source-tables reports a source table missing from the map" {
    run -6 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --source-tables public.shared,public.same,public.hidden,public.customers,public.born
    assert_line --index 0 "schema: source tables: 2 problems"
    assert_line "  source table public.extra_table is missing from the map"
    assert_line "  source table public.orders is missing from the map"
    [[ $stderr == *"source tables missing from the map: public.extra_table, public.orders"* ]]
    run -0 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --source-tables public.shared,public.same,public.hidden,public.customers,public.orders,public.extra_table,public.born
    assert_output "schema: source tables: ok"
    run -5 --separate-stderr pgverify --schema --source-env SOURCE_DATABASE_URL \
        --target-env TARGET_DATABASE_URL --source-table public.nope
    [[ $stderr == *"source table public.nope: does not exist"* ]]
}
