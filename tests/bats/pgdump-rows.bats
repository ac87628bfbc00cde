#!/usr/bin/env bats
# pgdump-rows against a throwaway cluster, connected as the non-superuser
# legacy_reader: every type byte for byte against psql's own CSV, the key
# order kinds, the snapshot pair, and each refusal with its exit code.

load helpers

# psql's session pinned as pgdump-rows pins its own.
PINNED='-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c TimeZone=UTC -c bytea_output=hex'

fixtures_sql() {
    cat <<'SQL'
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN public.posint AS integer CHECK (VALUE > 0);
CREATE TABLE public.every (
    id bigint PRIMARY KEY, c_small smallint, c_int integer, c_big bigint,
    c_num numeric, c_real real, c_double double precision,
    c_text text, c_varchar varchar(20), c_char char(5), c_bool boolean,
    c_date date, c_ts timestamp, c_tstz timestamptz, c_time time, c_timetz timetz,
    c_interval interval, c_uuid uuid, c_json json, c_jsonb jsonb, c_bytea bytea,
    c_intarr integer[], c_textarr text[], c_mood public.mood, c_dom public.posint,
    c_inet inet, c_range int4range);
INSERT INTO public.every VALUES
 (1, -32768, -2147483648, -9223372036854775808,
  123456789012345678901234567890.123456789012345678901234567890, 1.17549435e-38, 'NaN',
  E'tab\there', 'varchar', 'ab', true, '-infinity', '2001-02-03 04:05:06.789',
  '2001-02-03 04:05:06.789+05:30', '04:05:06', '04:05:06+02',
  '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2.50, "x\ty"]}', '{"b": 1, "a": "é"}',
  (SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex')
     FROM generate_series(0, 255) AS i),
  '{1,NULL,3}', '{"a b",NULL,"NULL","",",\""}', 'happy', 5, '192.168.0.1/24', '[1,10)'),
 (2, 32767, 2147483647, 9223372036854775807, -0.000000000000000000000000000001,
  'Infinity', '-Infinity', E'new\nline\rcr\\back''single"double', 'NULL', E'\\N', false,
  'infinity', '294276-12-31 23:59:59', 'epoch', '24:00', '00:00+00', '-1 days +02:00',
  '00000000-0000-0000-0000-000000000000', 'null', '[]', '\x', '{}', '{}', 'sad', 1,
  '::1', 'empty'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, 0, '-0', 3.141592653589793, '', '', '', true, '2000-01-01',
  '1999-12-31 23:59:59.999999', '1999-12-31 23:59:59.999999+00', '00:00',
  '23:59:59.999999-12', '0', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12', '"\u00e9"', '"😀"',
  '\x00', '{-1}', '{"\\N"}', 'ok', 2, '10.0.0.0/8', '(,)'),
 (5, 1, 1, 1, 1e-20, 1e20, 1e-300, E'😀 \\N and \\. and \x01\x7f, "quoted"', 'NULL ', 'é',
  false, '0001-01-01 BC', '0001-01-01 00:00:00 BC', '1970-01-01 00:00:00+14',
  '12:34:56.123456', '12:34:56.123456+14:59', '178000000 years',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '{"k": "\\u0000"}', '{"k": "line\nx"}',
  '\xdeadbeef', '{{1,2},{3,4}}', '{"{","}","\\"}', 'sad', 7, '2001:db8::/32', '[-5,5]'),
 (6, 1, 1, 1, 1, 1, 1, '\N', E'\\', E'\r\n', true, '2024-02-29', '2024-02-29 12:00',
  '2024-02-29 12:00-08', '12:00', '12:00-08', '1 mon -1 days', 
  '12345678-1234-1234-1234-123456789abc', '{"a":1}', '{"a":1}', '\x5c0a0d09', '{0}',
  '{" "}', 'ok', 3, '0.0.0.0/0', '[0,0]');

CREATE TABLE public.ikeys (id integer PRIMARY KEY, v text);
INSERT INTO public.ikeys VALUES (10, 'ten'), (-5, 'minus five'), (0, 'zero'), (2, 'two'),
    (-1, 'minus one'), (100, 'hundred'), (1, 'one');

CREATE TABLE public.tkeys (k text PRIMARY KEY, v integer);
INSERT INTO public.tkeys VALUES ('a', 1), ('B', 2), ('Z', 3), ('b', 4), (' x', 5), ('é', 6),
    ('É', 7), ('ab', 8), ('A', 9);

CREATE TABLE public.ckeys (i integer, t text, v text, PRIMARY KEY (i, t));
INSERT INTO public.ckeys VALUES (1, 'b', 'x'), (1, 'B', 'x'), (-1, 'z', 'x'), (2, 'a', 'x'),
    (1, 'a ', 'x'), (1, 'a', 'x'), (10, 'A', 'x');

CREATE TABLE public.ukeys (u uuid PRIMARY KEY, v text);
INSERT INTO public.ukeys VALUES ('ffffffff-0000-0000-0000-000000000000', 'f'),
    ('0a000000-0000-0000-0000-000000000000', '0a'), ('a0000000-0000-0000-0000-000000000000', 'a0'),
    ('00000000-0000-0000-0000-000000000001', '01'), ('9fffffff-0000-0000-0000-000000000000', '9f');

CREATE TABLE public.dups (id integer, g integer);
INSERT INTO public.dups VALUES (1, 5), (2, 7), (3, 7), (4, 9);

CREATE TABLE public.nullkeys (id integer, legacy_id integer, v text);
INSERT INTO public.nullkeys VALUES (1, 11, 'a'), (2, NULL, 'born in target'), (3, 13, 'c');

CREATE TABLE public.rls_items (id integer PRIMARY KEY, v text);
INSERT INTO public.rls_items SELECT i, 'v' || i FROM generate_series(1, 10) AS i;
ALTER TABLE public.rls_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_sees_some ON public.rls_items FOR SELECT TO legacy_reader USING (id > 5);

CREATE TABLE public.snap (id integer PRIMARY KEY, v text);
INSERT INTO public.snap VALUES (1, 'a'), (2, 'b'), (3, 'c');

CREATE TABLE public.wide (id integer PRIMARY KEY, big text);
INSERT INTO public.wide VALUES (1, 'small'), (2, repeat('x', 5000));

CREATE TABLE public.gen (id integer PRIMARY KEY, a integer,
    doubled integer GENERATED ALWAYS AS (a * 2) STORED, dropme text, z text);
ALTER TABLE public.gen DROP COLUMN dropme;
INSERT INTO public.gen (id, a, z) VALUES (1, 21, 'z');
SQL
}

setup_file() {
    scratch_setup_file || return
    if [[ ${SKIP_DB:-} != 1 ]]; then
        fixtures_sql | psql_as legacy_owner legacy >/dev/null
    fi
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    # The usage tests need no database.
    case $BATS_TEST_DESCRIPTION in
    usage:*) ;;
    *) scratch_setup ;;
    esac
}

# dump_csv ARGS...: pgdump-rows as legacy_reader, then rowcat --csv; fails with
# pgdump-rows's status (its stderr passes through).
dump_csv() {
    pgdump-rows --dsn-env SOURCE_DATABASE_URL "$@" >"$BATS_TEST_TMPDIR/dump.rs" || return
    rowcat --csv "$BATS_TEST_TMPDIR/dump.rs"
}

# psql_csv SQL: psql's own \copy (SQL) TO STDOUT CSV as legacy_reader, session pinned.
psql_csv() {
    PGOPTIONS="$PINNED" psql_as legacy_reader legacy -c "\\copy ($1) TO STDOUT CSV"
}

@test "usage: --help lists every option and the exit status, in 80 columns" {
    run -0 --separate-stderr pgdump-rows --help
    assert_equal "$stderr" ""
    assert_line --index 0 --partial "Usage: pgdump-rows"
    for o in --dsn-env --table --query --name --key --columns --where --skip-null-keys --key-set \
        --snapshot --export-snapshot --allow-row-security --output --level --max-row-bytes \
        --progress --help --version; do
        assert_output --partial -- "$o"
    done
    assert_output --partial "Exit status:"
    assert_equal "$(printf '%s\n' "$output" | awk 'length > 80')" ""
    run -0 --separate-stderr pgdump-rows --version
    assert_output "pgdump-rows (driftless) 0.1.0"
}

@test "usage: bad options exit 2 with the Try line and nothing on stdout" {
    run -2 --separate-stderr pgdump-rows --bogus
    assert_output ""
    [[ $stderr == *"unrecognized option '--bogus'"* ]]
    [[ $stderr == *"Try 'pgdump-rows --help' for more information."* ]]
    run -2 --separate-stderr pgdump-rows --table public.x
    [[ $stderr == *"--key is required"* ]]
    run -2 --separate-stderr pgdump-rows --key id
    run -2 --separate-stderr pgdump-rows --table public.x --query 'SELECT 1' --key id
    run -2 --separate-stderr pgdump-rows --table x --key id
    [[ $stderr == *"schema-qualified"* ]]
    run -2 --separate-stderr pgdump-rows --export-snapshot --table public.x
    run -2 --separate-stderr pgdump-rows --table public.x --key id --snapshot "1'; DROP TABLE x"
    [[ $stderr == *"not a snapshot ID"* ]]
    run -2 --separate-stderr pgdump-rows --table public.x --key id --level 99
    run -2 --separate-stderr pgdump-rows --table public.x --key id,id
    assert_output ""
}

@test "usage: a connection string with a password in argv is refused, not echoed" {
    run -2 --separate-stderr pgdump-rows --dsn-env 'postgresql://u:s3cret-argv@h/db' \
        --table public.x --key id
    assert_output ""
    [[ $stderr == *"--dsn-env: a password written on the command line is refused"* ]]
    [[ $stderr != *s3cret-argv* ]]
    run -2 --separate-stderr pgdump-rows --dsn-env 'host=h password=s3cret-argv' \
        --table public.x --key id
    [[ $stderr != *s3cret-argv* ]]
    # A DSN without a password is still a name, not a DSN: refused, and not echoed.
    run -2 --separate-stderr pgdump-rows --dsn-env 'postgresql://u@h/db' --table public.x --key id
    [[ $stderr == *"name of an environment variable"* ]]
    [[ $stderr != *"u@h/db"* ]]
    run -2 --separate-stderr pgdump-rows --query "SELECT * FROM dblink('password=s3cret-argv', 'x')" \
        --key id
    [[ $stderr != *s3cret-argv* ]]
    run -2 --separate-stderr pgdump-rows --dsn-env NO_SUCH_VARIABLE_SET --table public.x --key id
    [[ $stderr == *"environment variable NO_SUCH_VARIABLE_SET is not set"* ]]
}

@test "every type: rowcat --csv equals psql's \\copy CSV byte for byte" {
    run -0 --separate-stderr dump_csv --table public.every --key id
    assert_equal "$stderr" ""
    local got="$output"
    run -0 --separate-stderr psql_csv "SELECT * FROM public.every ORDER BY id"
    assert_equal "$got" "$output"
    # The data is really there: 6 records, with NULL and '' kept apart.
    run -0 --separate-stderr rowcat --count "$BATS_TEST_TMPDIR/dump.rs"
    assert_output "6"
    [[ $got == *'"{""a"": [1, 2.50, ""x\ty""]}"'* ]]
    # Compared as files too: the shell's $(...) would drop trailing newlines.
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.every --key id |
        rowcat --csv >"$BATS_TEST_TMPDIR/got.csv"
    psql_csv "SELECT * FROM public.every ORDER BY id" >"$BATS_TEST_TMPDIR/want.csv"
    cmp "$BATS_TEST_TMPDIR/got.csv" "$BATS_TEST_TMPDIR/want.csv"
}

@test "every type: the header names each column's type, key first, and the source" {
    run -0 --separate-stderr bash -c \
        'pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.every --key id | rowcat --header'
    assert_line "table	public.every"
    assert_line "encoding	UTF8"
    assert_line --regexp "^server_version	15[0-9]{4}$"
    assert_line "column	1	id	bigint	key	int"
    assert_line "column	10	c_char	character(5)	data	-"
    assert_line "column	24	c_mood	public.mood	data	-"
    assert_line "column	25	c_dom	public.posint	data	-"
    assert_line "column	27	c_range	int4range	data	-"
    assert_line "meta	source	legacy_reader@$PGHOST:$PGPORT/legacy"
}

@test "every type: the bytea with every byte value survives as hex" {
    run -0 --separate-stderr dump_csv --table public.every --key id --columns c_bytea \
        --where 'id = 1'
    local hex
    hex="$(printf '%02x' $(seq 0 255))"
    assert_output "1,\\x$hex"
}

@test "integer key: ordered as numbers, negative and zero included" {
    run -0 --separate-stderr dump_csv --table public.ikeys --key id
    assert_output "$(printf '%s\n' '-5,minus five' '-1,minus one' '0,zero' '1,one' '2,two' \
        '10,ten' '100,hundred')"
    run -0 --separate-stderr psql_csv "SELECT id, v FROM public.ikeys ORDER BY id"
    assert_equal "$(rowcat --csv "$BATS_TEST_TMPDIR/dump.rs")" "$output"
}

@test "text key: emitted and ordered as (k)::text COLLATE \"C\", not en-US" {
    run -0 --separate-stderr dump_csv --table public.tkeys --key k
    local got="$output"
    assert_equal "$got" "$(printf '%s\n' ' x,5' 'A,9' 'B,2' 'Z,3' 'a,1' 'ab,8' 'b,4' 'É,7' 'é,6')"
    run -0 --separate-stderr psql_csv \
        "SELECT (k)::text, v FROM public.tkeys ORDER BY (k)::text COLLATE \"C\""
    assert_equal "$got" "$output"
    # The cluster's own collation orders them otherwise: the test can tell.
    run -0 --separate-stderr psql_csv "SELECT k, v FROM public.tkeys ORDER BY k"
    [[ $got != "$output" ]]
    run -0 --separate-stderr bash -c \
        'pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.tkeys --key k | rowcat --header'
    assert_line "column	1	k	text	key	text"
}

@test "composite key (integer, text): both kinds, in --key order" {
    run -0 --separate-stderr dump_csv --table public.ckeys --key i,t
    local got="$output"
    run -0 --separate-stderr psql_csv \
        "SELECT i, (t)::text, v FROM public.ckeys ORDER BY i, (t)::text COLLATE \"C\""
    assert_equal "$got" "$output"
    assert_equal "$(head -n 1 <<<"$got")" "-1,z,x"
    # --key t,i puts t first: the stream's key order is the --key order.
    run -0 --separate-stderr dump_csv --table public.ckeys --key t,i
    assert_line --index 0 "A,10,x"
    run -0 --separate-stderr bash -c \
        'pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.ckeys --key t,i | rowcat --header'
    assert_line "column	1	t	text	key	text"
    assert_line "column	2	i	integer	key	int"
    assert_line "column	3	v	text	data	-"
}

@test "uuid key: ordered as its text" {
    run -0 --separate-stderr dump_csv --table public.ukeys --key u
    local got="$output"
    run -0 --separate-stderr psql_csv \
        "SELECT (u)::text, v FROM public.ukeys ORDER BY (u)::text COLLATE \"C\""
    assert_equal "$got" "$output"
    assert_equal "$(cut -d, -f2 <<<"$got" | tr '\n' ' ')" "01 0a 9f a0 f "
}

@test "--columns, --where and generated columns; dropped columns never appear" {
    run -0 --separate-stderr dump_csv --table public.every --key id --columns c_text,c_bool \
        --where 'c_bool'
    assert_output "$(printf '%s\n' '1,tab	here,t' '4,"",t' '6,\N,t')"
    run -0 --separate-stderr dump_csv --table public.gen --key id
    assert_output "1,21,42,z"
}

@test "--query: columns and types from the query, --name names the stream" {
    run -0 --separate-stderr bash -c 'pgdump-rows --dsn-env SOURCE_DATABASE_URL \
        --query "SELECT id, c_dom, c_num::numeric(40,2) AS n FROM public.every -- comment" \
        --key c_dom --skip-null-keys --name every_q | rowcat --header'
    assert_line "table	every_q"
    assert_line "column	1	c_dom	public.posint	key	int"
    assert_line "column	3	n	numeric(40,2)	data	-"
    run -0 --separate-stderr dump_csv --query 'SELECT v, id FROM public.ikeys WHERE id > 0;' --key id
    assert_output "$(printf '%s\n' '1,one' '2,two' '10,ten' '100,hundred')"
}

@test "a key that is not unique: exit 4 naming the key value" {
    run -4 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.dups --key g
    [[ $stderr == *"duplicate key (g)=(7)"* ]]
    [[ $stderr == *public.dups* ]]
}

@test "a NULL key: exit 4, unless --skip-null-keys leaves the row out" {
    run -4 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.nullkeys \
        --key legacy_id
    [[ $stderr == *'NULL in key column "legacy_id"'* ]]
    [[ $stderr == *"--skip-null-keys"* ]]
    [[ $stderr != *"born in target"* ]]
    run -0 --separate-stderr dump_csv --table public.nullkeys --key legacy_id --skip-null-keys
    assert_output "$(printf '%s\n' '11,1,a' '13,3,c')"
}

@test "row security: exit 6 naming the table; --allow-row-security dumps what it sees" {
    run -6 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.rls_items \
        --key id
    assert_output ""
    [[ $stderr == *"table public.rls_items: row security is active for role legacy_reader"* ]]
    [[ $stderr == *"--allow-row-security"* ]]
    run -6 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL \
        --query 'SELECT * FROM public.rls_items' --key id
    [[ $stderr == *'"rls_items"'* ]]
    run -0 --separate-stderr dump_csv --table public.rls_items --key id --allow-row-security
    assert_output "$(printf '%s\n' 6,v6 7,v7 8,v8 9,v9 10,v10)"
    # The owner is not subject to its own table's policies.
    run -0 --separate-stderr env PGUSER=legacy_owner PGDATABASE=legacy \
        pgdump-rows --table public.rls_items --key id --output "$BATS_TEST_TMPDIR/owner.rs"
    run -0 --separate-stderr rowcat --count "$BATS_TEST_TMPDIR/owner.rs"
    assert_output "10"
}

@test "a missing table or column: exit 5 naming it, nothing on stdout" {
    run -5 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.nosuch \
        --key id
    assert_output ""
    [[ $stderr == *'relation "public.nosuch" does not exist'* ]]
    run -5 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.ikeys \
        --key id --columns v,nosuchcol
    assert_output ""
    [[ $stderr == *'column "nosuchcol" does not exist'* ]]
    run -5 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.ikeys \
        --key nosuchkey
    [[ $stderr == *'"nosuchkey" does not exist'* ]]
    run -5 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL \
        --query 'SELECT nosuchcol FROM public.ikeys' --key id
    [[ $stderr == *'nosuchcol'* ]]
}

@test "--snapshot reads an --export-snapshot's data; rows inserted later are not in it" {
    local dir="$BATS_TEST_TMPDIR" pid id
    mkfifo "$dir/hold"
    # The holder keeps its snapshot until its stdin (the fifo) reaches EOF.
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --export-snapshot <"$dir/hold" \
        >"$dir/id" 2>"$dir/holder.err" 3>&- &
    pid=$!
    exec 4>"$dir/hold"
    for _ in $(seq 100); do
        [[ -s $dir/id ]] && break
        sleep 0.1
    done
    id="$(head -n 1 "$dir/id")"
    [[ $id =~ ^[0-9A-F]+-[0-9A-F]+-[0-9]+$ ]]
    # The second line is the snapshot's xmin, a 64-bit transaction ID.
    [[ $(sed -n 2p "$dir/id") =~ ^[0-9]+$ ]]
    psql_as legacy_owner legacy -c "INSERT INTO public.snap VALUES (4, 'late')"
    run -0 --separate-stderr dump_csv --table public.snap --key id --snapshot "$id"
    assert_output "$(printf '%s\n' 1,a 2,b 3,c)"
    run -0 --separate-stderr bash -c \
        'pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.snap --key id --snapshot "$1" |
         rowcat --header' _ "$id"
    assert_line "meta	snapshot	$id"
    run -0 --separate-stderr dump_csv --table public.snap --key id
    assert_line "4,late"
    exec 4>&-
    local st=0
    wait "$pid" || st=$?
    assert_equal "$st" 0
    assert_equal "$(cat "$dir/holder.err")" ""
    # Once released, the snapshot is gone.
    run -5 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.snap \
        --key id --snapshot "$id"
    [[ $stderr == *"invalid snapshot identifier"* ]]
}

@test "--export-snapshot lets go on SIGTERM and exits 0" {
    local dir="$BATS_TEST_TMPDIR" pid
    mkfifo "$dir/hold"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --export-snapshot <"$dir/hold" \
        >"$dir/id" 2>"$dir/holder.err" 3>&- &
    pid=$!
    exec 4>"$dir/hold"
    for _ in $(seq 100); do
        [[ -s $dir/id ]] && break
        sleep 0.1
    done
    [[ -s $dir/id ]]
    kill -TERM "$pid"
    local st=0
    wait "$pid" || st=$?
    exec 4>&-
    assert_equal "$st" 0
    assert_equal "$(cat "$dir/holder.err")" ""
}

@test "a failed connect: exit 5, user@host:port/db named, the password never shown" {
    export SENTINEL_DSN="host=$PGHOST port=$PGPORT dbname=legacy user=no_such_role password=s3ntinel-pw"
    run -5 --separate-stderr pgdump-rows --dsn-env SENTINEL_DSN --table public.ikeys --key id
    assert_output ""
    [[ $stderr == *"SENTINEL_DSN no_such_role@$PGHOST:$PGPORT/legacy: could not connect:"* ]]
    [[ $stderr != *s3ntinel-pw* ]]
    export SENTINEL_URI='postgresql://no_such_role:s3ntinel-pw@127.0.0.1:1/legacy'
    run -5 --separate-stderr pgdump-rows --dsn-env SENTINEL_URI --table public.ikeys --key id
    [[ $stderr == *"no_such_role@127.0.0.1:1/legacy: could not connect"* ]]
    [[ $stderr != *s3ntinel-pw* ]]
    # A malformed URI: libpq would quote the bad part, password and all.
    export SENTINEL_BAD='postgresql://u:s3ntinel-pw%zz@127.0.0.1:1/legacy'
    run -5 --separate-stderr pgdump-rows --dsn-env SENTINEL_BAD --table public.ikeys --key id
    [[ $stderr != *s3ntinel* ]]
}

@test "the transaction pooler (port 6543) is refused with exit 6 and a hint" {
    export POOLER_URL='postgresql://postgres.ref:s3ntinel-pw@127.0.0.1:6543/postgres'
    run -6 --separate-stderr pgdump-rows --dsn-env POOLER_URL --table public.ikeys --key id
    assert_output ""
    [[ $stderr == *"port 6543"* ]]
    [[ $stderr == *"5432"* ]]
    [[ $stderr != *s3ntinel-pw* ]]
}

@test "--output writes through a temp file; a failed dump leaves no file" {
    run -0 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.ikeys \
        --key id --output "$BATS_TEST_TMPDIR/ikeys.rs"
    assert_output ""
    run -0 --separate-stderr rowcat --count "$BATS_TEST_TMPDIR/ikeys.rs"
    assert_output "7"
    run -5 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.nosuch \
        --key id --output "$BATS_TEST_TMPDIR/nosuch.rs"
    run -4 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.dups \
        --key g --output "$BATS_TEST_TMPDIR/dups.rs"
    assert_equal "$(cd "$BATS_TEST_TMPDIR" && ls | grep -E '^(nosuch|dups)\.rs' || :)" ""
}

@test "--max-row-bytes: a larger row is refused with exit 4, naming key and column" {
    run -4 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.wide \
        --key id --max-row-bytes 1K
    [[ $stderr == *"(id)=(2)"* ]]
    [[ $stderr == *'"big"'* ]]
    [[ $stderr != *xxxxxxxx* ]]
    run -0 --separate-stderr dump_csv --table public.wide --key id --max-row-bytes 8K
}

@test "--progress reports on stderr; without it stderr stays empty" {
    run -0 --separate-stderr dump_csv --table public.ikeys --key id --progress
    [[ $stderr == *"table public.ikeys: 7 rows in"* ]]
    run -0 --separate-stderr dump_csv --table public.ikeys --key id
    assert_equal "$stderr" ""
}

@test "a truncated dump is seen as truncated by the reader" {
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.every --key id --level 1 \
        >"$BATS_TEST_TMPDIR/full.rs"
    head -c 100 "$BATS_TEST_TMPDIR/full.rs" >"$BATS_TEST_TMPDIR/cut.rs"
    run -4 --separate-stderr rowcat --count "$BATS_TEST_TMPDIR/cut.rs"
}

@test "a full stdout: exit 3" {
    run -3 --separate-stderr bash -c \
        'pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.ikeys --key id >/dev/full'
    [[ $stderr == *"could not write"* ]]
}

@test "--key-set dumps only the rows of a key set, in key order; a set with another key exits 4" {
    local d="$BATS_TEST_TMPDIR"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --query "SELECT k FROM public.tkeys WHERE v IN (2, 4, 6, 8)" \
        --name public.tkeys --key k --output "$d/tset.rs"
    run -0 --separate-stderr dump_csv --table public.tkeys --key k --key-set "$d/tset.rs"
    assert_output "$(printf '%s\n' B,2 ab,8 b,4 é,6)"
    # Integer keys, looked up as numbers; keys absent from the table are no rows.
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --query "SELECT g AS id FROM generate_series(-5, 3) g" \
        --name ids --key id --output "$d/iset.rs"
    run -0 --separate-stderr dump_csv --table public.ikeys --key id --key-set "$d/iset.rs"
    assert_output "$(printf '%s\n' '-5,minus five' '-1,minus one' 0,zero 1,one 2,two)"
    # A composite key.
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --query "SELECT i, t FROM public.ckeys ORDER BY i, t LIMIT 2" \
        --name public.ckeys --key i,t --output "$d/cset.rs"
    run -0 --separate-stderr dump_csv --table public.ckeys --key i,t --key-set "$d/cset.rs"
    assert_equal "${#lines[@]}" 2
    run -4 --separate-stderr pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.ikeys --key id \
        --key-set "$d/tset.rs"
    [[ $stderr == *"key set"* ]]
    # A truncated key set: no trailer on the output, exit 4.
    head -c 40 "$d/iset.rs" >"$d/cut.rs"
    run -4 --separate-stderr dump_csv --table public.ikeys --key id --key-set "$d/cut.rs"
}
