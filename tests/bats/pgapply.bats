#!/usr/bin/env bats
# pgapply against a scratch cluster: change streams made by the real pipeline
# (pgdump-rows of both sides -> rowhash -> rowdiff), applied as the target's
# non-superuser owner, and every outcome checked with SQL, not by pgapply.

load helpers

setup_file() {
    scratch_setup_file
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    scratch_setup
    cd "$BATS_TEST_TMPDIR" || return 1
    reset_databases
}

src() {
    psql_as legacy_owner legacy "$@"
}

tgt() {
    psql_as target_owner target "$@"
}

# A source users table and its earlier migration in the target: uuid primary
# key, legacy_id, an updated_at trigger, a generated column, a CHECK, RLS,
# rows born in the target, and a child table.
reset_databases() {
    src -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS public.users, public.items, public.odd" \
        -c "CREATE TABLE public.users (id bigint PRIMARY KEY, email text UNIQUE, name text, age int)" \
        -c "GRANT SELECT ON public.users TO legacy_reader" >/dev/null
    tgt -c "SET client_min_messages = warning" \
        -c "DROP SCHEMA IF EXISTS driftless CASCADE" \
        -c "DROP TABLE IF EXISTS public.orders, public.users, public.items, public.odd, public.later, public.tags" \
        -c "CREATE TABLE public.users (
                id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                legacy_id bigint UNIQUE,
                email text UNIQUE,
                name text,
                age int CHECK (age >= 0 AND age < 150),
                name_len int GENERATED ALWAYS AS (length(name)) STORED,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now())" \
        -c "CREATE TRIGGER users_updated_at BEFORE UPDATE ON public.users
                FOR EACH ROW EXECUTE FUNCTION extensions.moddatetime(updated_at)" \
        -c "ALTER TABLE public.users ENABLE ROW LEVEL SECURITY" \
        -c "CREATE TABLE public.orders (
                id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                legacy_id bigint UNIQUE,
                user_id uuid REFERENCES public.users (id) ON DELETE CASCADE,
                note text)" >/dev/null
}

# users N: source rows 1..N, and the same rows migrated to the target, plus
# two rows born in the target (legacy_id NULL).
users() {
    src -c "INSERT INTO public.users SELECT g, 'u' || g || '@x', 'name ' || g, g % 90
            FROM generate_series(1, $1) g" >/dev/null
    tgt -c "INSERT INTO public.users (legacy_id, email, name, age)
            SELECT g, 'u' || g || '@x', 'name ' || g, g % 90 FROM generate_series(1, $1) g" \
        -c "INSERT INTO public.users (legacy_id, email, name, age)
            VALUES (NULL, 'born1@t', 'born in the target', 7), (NULL, 'born2@t', 'also', 8)" \
        >/dev/null
}

# changes OUT: the change stream that makes target users equal to source users.
changes() {
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.users --key legacy_id \
        --query "SELECT id AS legacy_id, email, name, age FROM public.users" |
        rowhash -o src.rs || return 1
    pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.users --key legacy_id \
        --columns email,name,age --skip-null-keys | rowhash -o tgt.rs || return 1
    local rc=0
    rowdiff --allow-all -q -o "$1" src.rs tgt.rs || rc=$?
    [[ $rc -le 1 ]]
}

# The migrated rows of both sides in source form: equal when converged.
source_rows() {
    src -c "SELECT id, email, name, age FROM public.users ORDER BY id"
}
target_rows() {
    tgt -c "SELECT legacy_id, email, name, age FROM public.users
            WHERE legacy_id IS NOT NULL ORDER BY legacy_id"
}
assert_converged() {
    local want
    want="$(source_rows)"
    run -0 target_rows
    assert_output "$want"
}

uuids() {
    tgt -c "SELECT legacy_id || ' ' || id FROM public.users WHERE legacy_id IS NOT NULL
            ORDER BY legacy_id"
}

born() {
    tgt -c "SELECT t::text FROM public.users t WHERE legacy_id IS NULL ORDER BY email"
}

apply() {
    pgapply --dsn-env TARGET_DATABASE_URL "$@"
}

# json_field FILE NAME: a number from pgapply's --stats line.
json_field() {
    sed -n "s/.*\"$2\": \\([0-9.]*\\).*/\\1/p" "$1"
}

@test "pgapply: inserts, updates and deletes converge; UUIDs, target-born rows kept" {
    users 30
    src -c "UPDATE public.users SET name = 'changed ' || id WHERE id IN (3, 4)" \
        -c "DELETE FROM public.users WHERE id IN (5, 6)" \
        -c "INSERT INTO public.users VALUES (31, 'n31@x', 'new', 31), (32, 'n32@x', NULL, 32)"
    local before_uuids before_born
    before_born="$(born)"
    before_uuids="$(uuids | grep -v -E '^(5|6) ')"
    changes ch.rs

    run -0 --separate-stderr apply --stats st.json ch.rs
    assert_output ""
    assert_equal "$stderr" ""
    assert_converged
    assert_equal "$(json_field st.json inserted)" 2
    assert_equal "$(json_field st.json updated)" 2
    assert_equal "$(json_field st.json deleted)" 2
    assert_equal "$(json_field st.json failed)" 0
    # every UUID issued before is unchanged; the two new rows have new ones
    run -0 tgt -c "SELECT legacy_id || ' ' || id FROM public.users
                   WHERE legacy_id <= 30 ORDER BY legacy_id"
    assert_output "$before_uuids"
    run -0 born
    assert_output "$before_born"
    # the trigger kept updated_at; the generated column follows the new name
    run -0 tgt -c "SELECT legacy_id, updated_at > created_at, name_len FROM public.users
                   WHERE legacy_id IN (3, 31) ORDER BY 1"
    assert_output $'3|t|9\n31|f|3'
    # one record per change, with before-images and after-hashes of the stored row
    run -0 tgt -c "SELECT op, legacy_key, before_image IS NOT NULL, after_hash IS NOT NULL
                   FROM driftless.changes ORDER BY legacy_key::int"
    assert_output $'U|3|t|t\nU|4|t|t\nD|5|t|f\nD|6|t|f\nI|31|f|t\nI|32|f|t'
    # the after-hash: md5 of the row's image, every column's text form (NULL: JSON null)
    run -0 tgt -c "SET TimeZone = 'UTC'" -c "SET DateStyle = 'ISO, MDY'" \
        -c "SELECT count(*) FROM driftless.changes c JOIN public.users u ON u.legacy_id::text = c.legacy_key
                   WHERE c.after_hash = md5(jsonb_build_object('id', u.id::text,
                       'legacy_id', u.legacy_id::text, 'email', u.email, 'name', u.name,
                       'age', u.age::text, 'name_len', u.name_len::text,
                       'created_at', u.created_at::text, 'updated_at', u.updated_at::text)::text)
                   AND c.uuid = u.id"
    assert_output 4
    run -0 tgt -c "SELECT (before_image->>'name') FROM driftless.changes WHERE legacy_key = '3'"
    assert_output "name 3"
    run -0 tgt -c "SELECT before_image->>'age', before_image->>'name_len' FROM driftless.changes
                   WHERE legacy_key = '4'"
    assert_output "4|6"
    run -0 tgt -c "SELECT status, exit_code, resumed FROM driftless.runs"
    assert_output "ok|0|f"
}

@test "pgapply: the crosswalk is filled on the first run and matches every row" {
    users 20
    src -c "INSERT INTO public.users VALUES (21, 'n21@x', 'new', 21)" \
        -c "DELETE FROM public.users WHERE id = 2"
    changes ch.rs
    run -0 apply ch.rs
    # the 20 migrated rows on the first run, then the inserted one; deletes keep theirs
    run -0 tgt -c "SELECT count(*), count(DISTINCT uuid) FROM driftless.crosswalk"
    assert_output "21|21"
    run -0 tgt -c "SELECT count(*) FROM public.users u JOIN driftless.crosswalk c
                   ON c.table_name = 'public.users' AND c.legacy_key = u.legacy_id::text
                   WHERE c.uuid = u.id"
    assert_output 20
    run -0 tgt -c "SELECT count(*) FROM public.users u WHERE legacy_id IS NOT NULL AND NOT
                   EXISTS (SELECT 1 FROM driftless.crosswalk c WHERE c.legacy_key =
                   u.legacy_id::text AND c.uuid = u.id)"
    assert_output 0
    run -0 tgt -c "SELECT migrated_rows, uuid_column, key_columns FROM driftless.tables"
    assert_output "20|id|{legacy_id}"
    # a row deleted and coming back later gets its UUID back from the crosswalk
    local old
    old="$(tgt -c "SELECT uuid FROM driftless.crosswalk WHERE legacy_key = '2'")"
    src -c "INSERT INTO public.users VALUES (2, 'u2@x', 'back', 2)"
    changes ch2.rs
    run -0 apply ch2.rs
    run -0 tgt -c "SELECT id FROM public.users WHERE legacy_id = 2"
    assert_output "$old"
    assert_converged
}

@test "pgapply: the same stream again skips every batch; a different stream skips none" {
    users 50
    src -c "UPDATE public.users SET age = age + 1 WHERE id <= 25"
    changes ch.rs
    run -0 apply --batch-rows 10 --stats st1.json ch.rs
    assert_equal "$(json_field st1.json batches)" 3
    local rows ctids
    rows="$(tgt -c "SELECT count(*) FROM driftless.changes")"
    ctids="$(tgt -c "SELECT string_agg(ctid::text, ',' ORDER BY ctid) FROM public.users")"
    run -0 apply --batch-rows 10 --stats st2.json ch.rs
    assert_equal "$(json_field st2.json skipped_batches)" 3
    assert_equal "$(json_field st2.json batches)" 0
    assert_equal "$(json_field st2.json updated)" 0
    # no row was written again, no change recorded twice
    run -0 tgt -c "SELECT string_agg(ctid::text, ',' ORDER BY ctid) FROM public.users"
    assert_output "$ctids"
    run -0 tgt -c "SELECT count(*) FROM driftless.changes"
    assert_output "$rows"
    # a new stream has batch 1 too: it is applied, not skipped
    src -c "UPDATE public.users SET name = 'again' WHERE id IN (1, 40)"
    changes ch2.rs
    run -0 apply --batch-rows 10 --stats st3.json ch2.rs
    assert_equal "$(json_field st3.json skipped_batches)" 0
    assert_equal "$(json_field st3.json updated)" 2
    assert_converged
}

@test "pgapply: killed after a committed batch, run again, converges with no duplicates" {
    users 1000
    src -c "INSERT INTO public.users SELECT g, 'u' || g || '@x', 'name ' || g, g % 90
            FROM generate_series(1001, 5000) g" \
        -c "UPDATE public.users SET name = 'upd' WHERE id % 10 = 0 AND id <= 1000" \
        -c "DELETE FROM public.users WHERE id % 10 = 1 AND id <= 1000"
    local before_uuids
    before_uuids="$(tgt -c "SELECT legacy_id || ' ' || id FROM public.users
                           WHERE legacy_id % 10 <> 1 ORDER BY legacy_id")"
    changes ch.rs
    run -0 rowcat --count ch.rs
    assert_output 4200
    # the failpoint kills the process group: give pgapply one of its own
    DRIFTLESS_FAILPOINT=pgapply:after-commit:1 run -137 setsid pgapply \
        --dsn-env TARGET_DATABASE_URL --batch-rows 1000 ch.rs
    run -0 tgt -c "SELECT count(*), sum(rows) FROM driftless.batches"
    assert_output "1|1000"
    run -0 tgt -c "SELECT count(*) FROM driftless.changes"
    assert_output 1000
    run -0 tgt -c "SELECT status FROM driftless.runs"
    assert_output running

    run -0 --separate-stderr apply --batch-rows 1000 --stats st.json ch.rs
    assert_equal "$(json_field st.json skipped_batches)" 1
    assert_converged
    run -0 tgt -c "SELECT count(*) FROM (SELECT legacy_id FROM public.users
                   WHERE legacy_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d"
    assert_output 0
    # each change recorded once, across both runs
    run -0 tgt -c "SELECT count(*), count(DISTINCT legacy_key) FROM driftless.changes"
    assert_output "4200|4200"
    run -0 tgt -c "SELECT op, count(*) FROM driftless.changes GROUP BY op ORDER BY op"
    assert_output $'D|100\nI|4000\nU|100'
    # no UUID reissued: the surviving migrated rows keep theirs
    run -0 tgt -c "SELECT legacy_id || ' ' || id FROM public.users
                   WHERE legacy_id <= 1000 ORDER BY legacy_id"
    assert_output "$before_uuids"
    run -0 tgt -c "SELECT count(*) FROM public.users u JOIN driftless.crosswalk c
                   ON c.legacy_key = u.legacy_id::text AND c.uuid = u.id"
    assert_output 4900
}

@test "pgapply: a row breaking a CHECK is rejected with its reason; the rest applies; exit 1" {
    users 10
    src -c "UPDATE public.users SET age = 200, name = 'too old' WHERE id = 4" \
        -c "UPDATE public.users SET name = 'fine' WHERE id IN (3, 5)" \
        -c "INSERT INTO public.users VALUES (11, 'n11@x', 'new', -1), (12, 'n12@x', 'ok', 12)"
    changes ch.rs
    local before4
    before4="$(tgt -c "SELECT t::text FROM public.users t WHERE legacy_id = 4")"
    run -1 --separate-stderr apply --reject-file rej.rs --stats st.json ch.rs
    assert_output ""
    [[ $stderr == *"key (legacy_id)=(4): rejected: check_violation (23514)"*users_age_check* ]]
    [[ $stderr == *"key (legacy_id)=(11): rejected: check_violation (23514)"* ]]
    # no value of the row is printed
    [[ $stderr != *200* && $stderr != *"too old"* ]]
    assert_equal "$(json_field st.json failed)" 2
    assert_equal "$(json_field st.json updated)" 2
    assert_equal "$(json_field st.json inserted)" 1
    run -0 tgt -c "SELECT legacy_id, name FROM public.users WHERE legacy_id IN (3, 5, 12)
                   ORDER BY 1"
    assert_output $'3|fine\n5|fine\n12|ok'
    run -0 tgt -c "SELECT t::text FROM public.users t WHERE legacy_id = 4"
    assert_output "$before4"
    run -0 tgt -c "SELECT count(*) FROM public.users WHERE legacy_id = 11"
    assert_output 0
    # the reject stream: the rejected changes with a _reason column, in key order
    run -0 rowcat --csv --header-row rej.rs
    assert_line --index 0 "_op,legacy_id,email,name,age,_hash,_reason"
    assert_line --index 1 --regexp '^U,4,u4@x,too old,200,[0-9a-f]{32},"check_violation \(23514\): .*""users_age_check"""$'
    assert_line --index 2 --regexp '^I,11,n11@x,new,-1,'
    assert_equal "${#lines[@]}" 3
    run -0 tgt -c "SELECT status, exit_code FROM driftless.runs"
    assert_output "rejects|1"
}

@test "pgapply: a row deleted and re-created with the same unique e-mail converges in one run" {
    users 10
    src -c "DELETE FROM public.users WHERE id = 7" \
        -c "INSERT INTO public.users VALUES (30, 'u7@x', 'same person, new id', 40)"
    changes ch.rs
    run -0 --separate-stderr apply --stats st.json ch.rs
    assert_equal "$stderr" ""
    assert_equal "$(json_field st.json deferred)" 1
    assert_equal "$(json_field st.json failed)" 0
    assert_converged
    run -0 tgt -c "SELECT op, legacy_key, phase FROM driftless.changes ORDER BY seq"
    assert_output $'D|7|delete\nI|30|retry'
}

@test "pgapply: two rows swapping a unique value are rejected naming the constraint and both keys" {
    users 10
    src -c "UPDATE public.users SET email = 'tmp' WHERE id = 2" \
        -c "UPDATE public.users SET email = 'u2@x' WHERE id = 3" \
        -c "UPDATE public.users SET email = 'u3@x' WHERE id = 2"
    changes ch.rs
    local before
    before="$(target_rows)"
    run -1 --separate-stderr apply ch.rs
    [[ $stderr == *"key (legacy_id)=(2): rejected: unique_violation (23505): constraint \"users_email_key\", value held by key (legacy_id)=(3)"* ]]
    [[ $stderr == *"key (legacy_id)=(3): rejected: unique_violation (23505): constraint \"users_email_key\", value held by key (legacy_id)=(2)"* ]]
    # never half-applied
    run -0 target_rows
    assert_output "$before"
}

@test "pgapply: deleting a parent of a target-born child stops with exit 6 naming the child" {
    users 10
    tgt -c "INSERT INTO public.orders (id, legacy_id, user_id, note)
            SELECT '00000000-0000-0000-0000-0000000000aa', NULL, id, 'born in the target'
            FROM public.users WHERE legacy_id = 4" \
        -c "INSERT INTO public.orders (legacy_id, user_id, note)
            SELECT 77, id, 'migrated' FROM public.users WHERE legacy_id = 5"
    src -c "DELETE FROM public.users WHERE id IN (4, 5)" \
        -c "UPDATE public.users SET name = 'x' WHERE id = 9"
    changes ch.rs
    local users_sum orders_sum
    users_sum="$(checksum_table target public.users)"
    orders_sum="$(checksum_table target public.orders)"
    run -6 --separate-stderr apply ch.rs
    [[ $stderr == *"key (legacy_id)=(4): refused: the delete would cascade into"* ]]
    [[ $stderr == *"row (id)=(00000000-0000-0000-0000-0000000000aa) of public.orders"* ]]
    [[ $stderr == *orders_user_id_fkey* ]]
    [[ $stderr != *"legacy_id)=(5)"* ]]
    # checked before the first write: not even the upsert of key 9 happened
    run -0 checksum_table target public.orders
    assert_output "$orders_sum"
    run -0 checksum_table target public.users
    assert_output "$users_sum"
    run -0 tgt -c "SELECT count(*) FROM driftless.changes"
    assert_output 0
}

@test "pgapply: --dry-run reports the counts and writes nothing, not even the state schema" {
    users 10
    src -c "UPDATE public.users SET name = 'x' WHERE id = 1" \
        -c "DELETE FROM public.users WHERE id = 2" \
        -c "INSERT INTO public.users VALUES (11, 'n@x', 'n', 1), (12, 'm@x', 'm', 2)"
    changes ch.rs
    local sum
    sum="$(checksum_table target public.users)"
    run -0 --separate-stderr apply --dry-run --stats st.json ch.rs
    assert_output --partial "would insert 2, update 1, delete 1"
    assert_equal "$stderr" ""
    run -0 checksum_table target public.users
    assert_output "$sum"
    run -0 tgt -c "SELECT to_regnamespace('driftless') IS NULL"
    assert_output t
    run -0 grep -c '"dry_run": true' st.json
    # once the state exists a dry run reads it, and still writes nothing
    run -0 apply --install-state
    run -0 apply --dry-run ch.rs
    run -0 tgt -c "SELECT (SELECT count(*) FROM driftless.runs) + (SELECT count(*) FROM
                   driftless.batches) + (SELECT count(*) FROM driftless.crosswalk)"
    assert_output 0
    run -0 checksum_table target public.users
    assert_output "$sum"
}

@test "pgapply: a truncated or corrupt stream exits 4 before any write" {
    users 10
    src -c "UPDATE public.users SET name = 'x'"
    changes ch.rs
    local sum size
    sum="$(checksum_table target public.users)"
    size=$(stat -c %s ch.rs)
    head -c $((size - 9)) ch.rs > cut.rs
    run -4 --separate-stderr apply cut.rs
    assert_output ""
    [[ -n $stderr ]]
    run -4 --separate-stderr apply < cut.rs
    printf 'not a stream at all' > junk.rs
    run -4 --separate-stderr apply junk.rs
    run -0 checksum_table target public.users
    assert_output "$sum"
    run -0 tgt -c "SELECT to_regnamespace('driftless') IS NULL"
    assert_output t
    # a row stream is not a change stream
    run -4 --separate-stderr apply src.rs
    [[ $stderr == *"not a change stream"* ]]
}

@test "pgapply: a piped stream is spooled; --spool keeps it under its checksum" {
    users 10
    src -c "UPDATE public.users SET name = 'piped' WHERE id < 4"
    changes ch.rs
    mkdir spool
    run -0 bash -c "cat ch.rs | pgapply --dsn-env TARGET_DATABASE_URL --spool spool"
    run -0 ls spool
    assert_output --regexp '^public\.users\.[0-9a-f]{16}\.changes$'
    cmp ch.rs spool/*.changes
    assert_converged
}

@test "pgapply: the state schema has RLS on every table and no grants to the API roles" {
    run -0 apply --install-state
    run -0 apply --install-state
    run -0 tgt -c "SELECT count(*) FROM driftless.schema_version"
    assert_output 5
    run -0 tgt -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'driftless'::regnamespace
                   AND relkind IN ('r', 'p') AND NOT relrowsecurity"
    assert_output 0
    run -0 tgt -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'driftless'::regnamespace
                   AND relkind = 'r'"
    assert_output 9
    run -0 psql_super target -c "SELECT r, p FROM unnest(ARRAY['anon', 'authenticated',
        'service_role', 'public']) r, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p,
        pg_class c WHERE c.relnamespace = 'driftless'::regnamespace AND c.relkind = 'r'
        AND has_table_privilege(r, c.oid, p)"
    assert_output ""
    run -0 psql_super target -c "SELECT has_schema_privilege('anon', 'driftless', 'USAGE'),
        has_schema_privilege('authenticated', 'driftless', 'USAGE'),
        has_schema_privilege('public', 'driftless', 'USAGE')"
    assert_output "f|f|f"
    # even a grant made by hand is taken back by the next install
    tgt -c "GRANT SELECT ON driftless.crosswalk TO anon" -c "GRANT USAGE ON SCHEMA driftless TO anon"
    run -0 apply --install-state
    run -0 psql_super target -c "SELECT has_table_privilege('anon', 'driftless.crosswalk',
        'SELECT'), has_schema_privilege('anon', 'driftless', 'USAGE')"
    assert_output "f|f"
    run -0 apply --print-state-sql
    assert_output --partial 'CREATE TABLE "driftless".crosswalk'
    run -2 --separate-stderr apply --install-state --state-schema public
}

@test "pgapply: --begin-run and --end-run keep the runs table for scripts" {
    echo '{"table": "a", "inserted": 1}' > c1.json
    echo '{"table": "b", "inserted": 2}' >> c1.json
    run -0 --separate-stderr apply --begin-run --tables public.users,public.orders \
        --source-dsn-env SOURCE_DATABASE_URL
    assert_output --regexp '^[0-9]+$'
    local id="$output"
    run -0 apply --end-run "$id" --status ok --exit-code 0 --counts-json c1.json
    run -0 tgt -c "SELECT status, exit_code, tables, jsonb_array_length(counts),
                   length(source_fingerprint), length(target_fingerprint), finished_at IS NOT NULL
                   FROM driftless.runs WHERE id = $id"
    assert_output "ok|0|{public.users,public.orders}|2|32|32|t"
    run -2 --separate-stderr apply --end-run 999 --status ok --exit-code 0
    run -2 --separate-stderr apply --end-run "$id" --status bogus --exit-code 0
    run -2 --separate-stderr apply --end-run "$id"
    # changes are recorded under a given run
    users 5
    src -c "UPDATE public.users SET name = 'r' WHERE id = 1"
    changes ch.rs
    run -0 apply --run-id "$id" ch.rs
    run -0 tgt -c "SELECT run_id FROM driftless.changes"
    assert_output "$id"
}

@test "pgapply: an integer-key table never touches the application's rows; a collision exits 6" {
    src -c "CREATE TABLE public.items (id bigint PRIMARY KEY, name text)" \
        -c "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 10) g" \
        -c "GRANT SELECT ON public.items TO legacy_reader"
    tgt -c "CREATE TABLE public.items (id bigint PRIMARY KEY, name text,
                updated_at timestamptz DEFAULT now())" \
        -c "INSERT INTO public.items (id, name) SELECT g, 'item ' || g FROM generate_series(1, 10) g" \
        -c "INSERT INTO public.items (id, name) VALUES (1001, 'app a'), (1002, 'app b')"
    item_changes() {
        pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.items --key id | rowhash -o s.rs
        pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.items --key id --columns name |
            rowhash -o t.rs
        rowdiff --allow-all -q -o "$1" s.rs t.rs || [[ $? == 1 ]]
    }
    src -c "UPDATE public.items SET name = 'renamed' WHERE id = 3" \
        -c "INSERT INTO public.items VALUES (11, 'eleven')"
    item_changes ch.rs
    local app
    app="$(tgt -c "SELECT t::text FROM public.items t WHERE id > 1000 ORDER BY id")"
    run -0 --separate-stderr apply --dry-run ch.rs
    assert_output --partial "would insert 1, update 1, delete 0; 0 rejected, 0 not found, 2 not owned"
    run -0 --separate-stderr apply --stats st.json ch.rs
    [[ $stderr == *"2 rows found only in the target are taken as the application's"* ]]
    assert_equal "$(json_field st.json not_owned)" 2
    assert_equal "$(json_field st.json deleted)" 0
    run -0 tgt -c "SELECT t::text FROM public.items t WHERE id > 1000 ORDER BY id"
    assert_output "$app"
    run -0 tgt -c "SELECT id, name FROM public.items WHERE id IN (3, 11) ORDER BY id"
    assert_output $'3|renamed\n11|eleven'
    run -0 tgt -c "SELECT count(*) FROM driftless.owned_keys"
    assert_output 11
    # later runs: the source deletes a row it owns (gone), the app's stay
    src -c "DELETE FROM public.items WHERE id = 11"
    item_changes ch2.rs
    run -0 --separate-stderr apply ch2.rs
    assert_equal "$stderr" ""
    run -0 tgt -c "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.items WHERE id > 9"
    assert_output "10,1001,1002"
    # the source issues a key the application already used: stop, change nothing
    src -c "INSERT INTO public.items VALUES (1001, 'from the source')"
    item_changes ch3.rs
    local sum
    sum="$(checksum_table target public.items)"
    run -6 --separate-stderr apply ch3.rs
    [[ $stderr == *"key (id)=(1001): refused: a row with this key was created by the application"* ]]
    run -0 checksum_table target public.items
    assert_output "$sum"
}

# items_tables: an integer-key table in both sides: source items 1..10 (no 6:
# deleted since the earlier migration), target 1..10 plus the application's
# 1001 and 1002.
items_tables() {
    src -c "CREATE TABLE public.items (id bigint PRIMARY KEY, name text)" \
        -c "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 10) g WHERE g <> 6" \
        -c "GRANT SELECT ON public.items TO legacy_reader"
    tgt -c "CREATE TABLE public.items (id bigint PRIMARY KEY, name text)" \
        -c "INSERT INTO public.items (id, name) SELECT g, 'item ' || g FROM generate_series(1, 10) g" \
        -c "INSERT INTO public.items (id, name) VALUES (1001, 'app a'), (1002, 'app b')"
}

# items_changes OUT: the change stream of items, the target read through its owned keys
# once registered (as migrate reads it).
items_changes() {
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --table public.items --key id | rowhash -o s.rs
    if [[ $(tgt -c "SELECT to_regclass('driftless.tables') IS NOT NULL AND EXISTS
            (SELECT 1 FROM driftless.tables WHERE table_name = 'public.items')") == t ]]; then
        pgdump-rows --dsn-env TARGET_DATABASE_URL --name public.items --key id \
            --query "SELECT t.id, t.name FROM public.items t WHERE EXISTS (SELECT 1 FROM
                driftless.owned_keys o WHERE o.table_name = 'public.items' AND o.legacy_key = t.id::text)"
    else
        pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.items --key id --columns name
    fi | rowhash -o t.rs
    rowdiff --allow-all -q -o "$1" s.rs t.rs || [[ $? == 1 ]]
}

@test "pgapply: --register --app-rows none owns every key: rows the source lost are deleted" {
    items_tables
    run -0 --separate-stderr apply --register --table public.items --legacy-key id --app-rows none
    run -0 tgt -c "SELECT migrated_rows, application_rows, uuid_column IS NULL FROM driftless.tables"
    assert_output "12|0|t"
    run -0 tgt -c "SELECT string_agg(legacy_key, ',' ORDER BY legacy_key::int) FROM driftless.owned_keys"
    assert_output "1,2,3,4,5,6,7,8,9,10,1001,1002"
    # registered once: again is a no-op
    run -0 --separate-stderr apply --register --table public.items --legacy-key id --app-rows none
    items_changes ch.rs
    run -0 --separate-stderr apply --stats st.json ch.rs
    [[ $stderr != *"application's"* ]] || fail "$stderr"
    assert_equal "$(json_field st.json deleted)" 3
    assert_equal "$(json_field st.json not_owned)" 0
    run -0 tgt -c "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.items"
    assert_output "1,2,3,4,5,7,8,9,10"
    run -0 tgt -c "SELECT count(*) FROM driftless.owned_keys"
    assert_output 9
    # the default needs the first change stream; a UUID table has no owned keys
    tgt -c "CREATE TABLE public.later (id int PRIMARY KEY)"
    run -2 --separate-stderr apply --register --table public.later --legacy-key id
    [[ $stderr == *"registered by its first apply, or here with --app-rows none"* ]] || fail "$stderr"
    run -2 --separate-stderr apply --register --table public.users --legacy-key legacy_id --app-rows none
    [[ $stderr == *"--app-rows none is for a table that kept its keys"* ]] || fail "$stderr"
    run -0 tgt -c "SELECT count(*) FROM driftless.tables"
    assert_output 1
}

@test "pgapply: --declare-migrated makes application rows driftless's; a bad key declares nothing" {
    items_tables
    # before the first run, nothing is registered: the map's app_rows decides
    run -6 --separate-stderr apply --declare-migrated --table public.items 1001
    [[ $stderr == *"public.items: refused: it is not registered"* ]] || fail "$stderr"
    [[ $stderr == *"app_rows = none"* ]] || fail "$stderr"
    items_changes ch.rs
    run -0 --separate-stderr apply ch.rs
    [[ $stderr == *"first run: 3 rows found only in the target are taken as the application's"* ]] ||
        fail "$stderr"
    [[ $stderr == *"keys 6, 1001, 1002)"* ]] || fail "$stderr"
    [[ $stderr == *"hint: if the earlier migration copied them, declare them migrated: pgapply --declare-migrated --table public.items KEY..."* ]] ||
        fail "$stderr"
    run -0 tgt -c "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.items WHERE id IN (6, 1001, 1002)"
    assert_output "6,1001,1002"
    local owned
    owned=$(tgt -c "SELECT string_agg(legacy_key, ',' ORDER BY legacy_key) FROM driftless.owned_keys")
    # a key no row has (or in another form: 007 is not 7): exit 4, nothing declared
    run -4 --separate-stderr apply --declare-migrated --table public.items 6 99 007
    [[ $stderr == *"public.items: key 99: no row of the table has it"* ]] || fail "$stderr"
    [[ $stderr == *"public.items: key 007: no row of the table has it"* ]] || fail "$stderr"
    [[ $stderr != *"key 6:"* ]] || fail "$stderr"
    run -0 tgt -c "SELECT string_agg(legacy_key, ',' ORDER BY legacy_key) FROM driftless.owned_keys"
    assert_output "$owned"
    # 6 came from the earlier migration: declared, the next run deletes it
    run -0 --separate-stderr apply --declare-migrated --table public.items 6 5
    assert_output "table public.items: 1 keys declared migrated, 1 already driftless's"
    items_changes ch2.rs
    run -0 --separate-stderr apply --stats st.json ch2.rs
    assert_equal "$(json_field st.json deleted)" 1
    run -0 tgt -c "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.items WHERE id > 5"
    assert_output "7,8,9,10,1001,1002"
    # keys from standard input, one a line
    run -0 --separate-stderr bash -c 'printf "1001\n\n1002\r\n" | pgapply --dsn-env TARGET_DATABASE_URL --declare-migrated --table public.items -'
    assert_output "table public.items: 2 keys declared migrated, 0 already driftless's"
    run -0 tgt -c "SELECT count(*) FROM driftless.owned_keys WHERE legacy_key IN ('1001', '1002')"
    assert_output 2
    # a composite key as messages print it: a JSON array, spaced and escaped as you like;
    # tags registered empty, then the application adds rows
    tgt -c "CREATE TABLE public.tags (sku text, tag text, weight int, PRIMARY KEY (sku, tag))"
    apply --register --table public.tags --legacy-key sku,tag --app-rows none
    tgt -c "INSERT INTO public.tags VALUES ('a', 'x', 1), ('b', E'tab\there', 2), ('c', 'ü \"q\"', 3)"
    run -0 --separate-stderr apply --declare-migrated --table public.tags \
        '["a","x"]' '[ "b" , "tab\there" ]' '["c", "\u00fc \"q\""]'
    assert_output "table public.tags: 3 keys declared migrated, 0 already driftless's"
    run -0 tgt -c "SELECT string_agg(legacy_key, ' ' ORDER BY legacy_key) FROM driftless.owned_keys
        WHERE table_name = 'public.tags'"
    assert_output '["a", "x"] ["b", "tab\there"] ["c", "ü \"q\""]'
    run -4 --separate-stderr apply --declare-migrated --table public.tags '["a"]'
    [[ $stderr == *'public.tags: key ["a"]: not a key of 2 columns'* ]] || fail "$stderr"
    run -4 --separate-stderr bash -c 'printf "[\"a\", \"x\"]\n[\"a\", x]\n" | pgapply --dsn-env TARGET_DATABASE_URL --declare-migrated --table public.tags -'
    [[ $stderr == *"public.tags: standard input, line 2: not a key of 2 columns"* ]] || fail "$stderr"
    # a table with a UUID column has no owned keys
    users 2
    changes u.rs
    apply u.rs
    run -6 --separate-stderr apply --declare-migrated --table public.users 1
    [[ $stderr == *"public.users: refused: it has a UUID column"* ]] || fail "$stderr"
    # usage
    run -2 --separate-stderr apply --declare-migrated --table public.items
    [[ $stderr == *"needs a KEY"* ]] || fail "$stderr"
    run -2 --separate-stderr apply --declare-migrated 1
    run -2 --separate-stderr apply --app-rows none ch.rs
    [[ $stderr == *"--app-rows goes with --register"* ]] || fail "$stderr"
    run -2 --separate-stderr apply --register --table public.items --legacy-key id --app-rows some
    [[ $stderr == *"invalid value for --app-rows"* ]] || fail "$stderr"
}

@test "pgapply: awkward values arrive exactly" {
    src -c "CREATE TABLE public.odd (id int PRIMARY KEY, t text, b bytea, j jsonb, a int[],
                n numeric, ts timestamptz, d date, f float8)" \
        -c "GRANT SELECT ON public.odd TO legacy_reader" \
        -c "INSERT INTO public.odd VALUES
            (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
            (2, '', '\\x', '{}', '{}', 0, '2024-01-01 00:00:00.123456+00', 'infinity', 'NaN'),
            (3, 'NULL', '\\x00ff', '{\"a\": [1, null]}', '{1,NULL,3}',
             123456789012345678901234567890.5, '1999-12-31 23:59:59.999999+00', '-infinity',
             '-Infinity'),
            (4, E'\\\\N tab\\there\\nnew\\rcr \\\\ back \"q\" ''s'' ☃ 😀', NULL, '\"x\"',
             NULL, -1, NULL, '2000-02-29', 1e-300)" \
        -c "INSERT INTO public.odd SELECT 5, repeat('x', 10 * 1024 * 1024),
            (SELECT string_agg(set_byte('\\x00'::bytea, 0, g), ''::bytea)
             FROM generate_series(0, 255) g), NULL, NULL, NULL, NULL, NULL, NULL"
    tgt -c "CREATE TABLE public.odd (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                legacy_id int UNIQUE, t text, b bytea, j jsonb, a int[], n numeric,
                ts timestamptz, d date, f float8)"
    odd_dump() {
        pgdump-rows --dsn-env "$1" --name public.odd --key legacy_id \
            --query "SELECT $2 AS legacy_id, t, b, j, a, n, ts, d, f FROM public.odd"
    }
    odd_dump SOURCE_DATABASE_URL id | rowhash -o s.rs
    odd_dump TARGET_DATABASE_URL legacy_id | rowhash -o t.rs
    rowdiff --allow-all -q -o ch.rs s.rs t.rs || [[ $? == 1 ]]
    run -0 --separate-stderr apply ch.rs
    odd_dump TARGET_DATABASE_URL legacy_id | rowhash -o t2.rs
    run -0 rowdiff -q s.rs t2.rs
    run -0 bash -c "rowcat --csv s.rs | md5sum"
    local want="$output"
    run -0 bash -c "rowcat --csv t2.rs | md5sum"
    assert_output "$want"
    # The after-hashes are of the rows, not of their column t (the row alias).
    run -0 tgt -c "SET TimeZone = 'UTC'" -c "SET DateStyle = 'ISO, MDY'" -c "SET extra_float_digits = 3" \
        -c "SELECT count(*) FROM driftless.changes c JOIN public.odd o ON o.id = c.uuid
        WHERE c.after_hash = md5(jsonb_build_object('id', o.id::text, 'legacy_id', o.legacy_id::text,
            't', o.t, 'b', o.b::text, 'j', o.j::text, 'a', o.a::text, 'n', o.n::text,
            'ts', o.ts::text, 'd', o.d::text, 'f', o.f::text)::text)"
    assert_output 5
}

@test "pgapply: --phase upsert then --phase delete converge; the set-aside row waits" {
    users 10
    src -c "DELETE FROM public.users WHERE id = 7" \
        -c "INSERT INTO public.users VALUES (30, 'u7@x', 'new id', 40)" \
        -c "UPDATE public.users SET name = 'u' WHERE id = 1"
    changes ch.rs
    run -0 apply --phase upsert --stats st.json ch.rs
    assert_equal "$(json_field st.json deferred)" 1
    run -0 tgt -c "SELECT count(*) FROM public.users WHERE legacy_id = 30"
    assert_output 0
    run -0 --separate-stderr apply --phase delete ch.rs
    assert_equal "$stderr" ""
    assert_converged
}

@test "pgapply: a UUID is never rewritten; an insert meeting a taken legacy key exits 6" {
    users 10
    # a first run (nothing to change) fills the crosswalk
    changes ch0.rs
    run -0 apply ch0.rs
    src -c "INSERT INTO public.users VALUES (11, 'n11@x', 'new', 11)"
    changes ch.rs
    # between compute and apply, a row with legacy key 11 appears under another UUID
    tgt -c "INSERT INTO public.users (legacy_id, email, name, age) VALUES (11, 'x@x', 'x', 1)"
    local sum
    sum="$(checksum_table target public.users)"
    run -6 --separate-stderr apply ch.rs
    [[ $stderr == *"key (legacy_id)=(11): refused: an insert meets an existing row with this legacy key under another UUID"* ]]
    run -0 checksum_table target public.users
    assert_output "$sum"
    run -0 tgt -c "SELECT count(*) FROM driftless.changes"
    assert_output 0

    # a stream that carries the UUID column with another value for a row: refused
    reset_databases
    users 5
    src -c "UPDATE public.users SET name = 'x' WHERE id = 2"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.users --key legacy_id \
        --query "SELECT id AS legacy_id, md5(id::text)::uuid AS id, email, name, age
                 FROM public.users" | rowhash --ignore id -o s.rs
    pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.users --key legacy_id \
        --columns id,email,name,age --skip-null-keys | rowhash --ignore id -o t.rs
    run -1 rowdiff --allow-all -q -o ch2.rs s.rs t.rs
    sum="$(checksum_table target public.users)"
    run -6 --separate-stderr apply --uuid-column id ch2.rs
    [[ $stderr == *"key (legacy_id)=(2): refused: the stream's UUID differs from the row's"* ]]
    run -0 checksum_table target public.users
    assert_output "$sum"
}

@test "pgapply: with --uuid-column, new rows take the stream's UUID (the idmap case)" {
    src -c "INSERT INTO public.users SELECT g, 'u' || g || '@x', 'n', 1 FROM generate_series(1, 6) g"
    tgt -c "INSERT INTO public.users (id, legacy_id, email, name, age)
            SELECT md5(g::text)::uuid, g, 'u' || g || '@x', 'n', 1 FROM generate_series(1, 5) g"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.users --key legacy_id \
        --query "SELECT id AS legacy_id, md5(id::text)::uuid AS id, email, name, age
                 FROM public.users" | rowhash --ignore id -o s.rs
    pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.users --key legacy_id \
        --columns id,email,name,age --skip-null-keys | rowhash --ignore id -o t.rs
    run -1 rowdiff --allow-all -q -o ch.rs s.rs t.rs
    run -0 --separate-stderr apply --uuid-column id ch.rs
    run -0 tgt -c "SELECT id = md5('6')::uuid FROM public.users WHERE legacy_id = 6"
    assert_output t
    run -0 tgt -c "SELECT uuid = md5('6')::uuid FROM driftless.crosswalk WHERE legacy_key = '6'"
    assert_output t
}

@test "pgapply: a stream that would write a generated column is refused" {
    users 3
    src -c "UPDATE public.users SET name = 'longer name' WHERE id = 1"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.users --key legacy_id \
        --query "SELECT id AS legacy_id, name, length(name) AS name_len FROM public.users" |
        rowhash -o s.rs
    pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.users --key legacy_id \
        --columns name,name_len --skip-null-keys | rowhash -o t.rs
    run -1 rowdiff --allow-all -q -o ch.rs s.rs t.rs
    run -6 --separate-stderr apply ch.rs
    [[ $stderr == *'column "name_len" is generated'* ]]
    run -0 tgt -c "SELECT name FROM public.users WHERE legacy_id = 1"
    assert_output "name 1"
}

@test "pgapply: a row that moves to another partition stays one row with its UUID" {
    src -c "CREATE TABLE public.odd (id int PRIMARY KEY, region text, v text)" \
        -c "INSERT INTO public.odd VALUES (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'eu', 'c')" \
        -c "GRANT SELECT ON public.odd TO legacy_reader"
    tgt -c "CREATE TABLE public.odd (id uuid DEFAULT gen_random_uuid(), legacy_id int,
                region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)" \
        -c "CREATE TABLE public.odd_eu PARTITION OF public.odd FOR VALUES IN ('eu')" \
        -c "CREATE TABLE public.odd_us PARTITION OF public.odd FOR VALUES IN ('us')" \
        -c "CREATE INDEX ON public.odd (legacy_id)" \
        -c "INSERT INTO public.odd (legacy_id, region, v) VALUES (1, 'eu', 'a'), (2, 'us', 'b'),
            (3, 'eu', 'c')"
    src -c "UPDATE public.odd SET region = 'us', v = 'moved' WHERE id = 1" \
        -c "DELETE FROM public.odd WHERE id = 3"
    local before
    before="$(tgt -c "SELECT id FROM public.odd WHERE legacy_id = 1")"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.odd --key legacy_id \
        --query "SELECT id AS legacy_id, region, v FROM public.odd" | rowhash -o s.rs
    pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.odd --key legacy_id \
        --columns region,v --skip-null-keys | rowhash -o t.rs
    run -1 rowdiff --allow-all -q -o ch.rs s.rs t.rs
    run -0 --separate-stderr apply --uuid-column id ch.rs
    run -0 tgt -c "SELECT tableoid::regclass, legacy_id, v, id = '$before' FROM public.odd
                   ORDER BY legacy_id"
    assert_output $'odd_us|1|moved|t\nodd_us|2|b|f'
    run -0 tgt -c "SELECT op, legacy_key FROM driftless.changes ORDER BY legacy_key"
    assert_output $'U|1\nD|3'
}

@test "pgapply: usage errors exit 2" {
    run -2 --separate-stderr pgapply --phase sideways
    [[ $stderr == *"--phase"* ]]
    run -2 --separate-stderr pgapply --batch-rows 0
    run -2 --separate-stderr pgapply a b
    run -2 --separate-stderr pgapply --install-state --begin-run
    run -2 --separate-stderr pgapply --status ok
    run -2 --separate-stderr pgapply --dsn-env 'postgresql://u:secret@h/db'
    [[ $stderr != *secret* ]]
    DRIFTLESS_FAILPOINT=pgapply:nonsense run -2 --separate-stderr pgapply /dev/null
}
