#!/usr/bin/env bats
# The throwaway cluster that every database test stands on: it must look like
# a Supabase target (non-superuser owner, exposed public, RLS roles) and a
# read-only legacy source, with a default collation that is not "C".

load helpers

setup_file() {
    scratch_setup_file
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    scratch_setup
}

@test "pgscratch: the cluster is running and status prints its address" {
    run -0 --separate-stderr "$PGSCRATCH" status "$PGSCRATCH_DIR"
    assert_output --partial "PGHOST='$PGSCRATCH_DIR'"
    assert_output --partial "TARGET_DATABASE_URL='host=$PGSCRATCH_DIR port=$PGPORT dbname=target user=target_owner'"
    assert_equal "$stderr" ""
    run -0 --separate-stderr psql_super postgres -c 'SELECT 1'
    assert_output "1"
}

@test "pgscratch: listens on its socket only, not on TCP" {
    run -0 --separate-stderr psql_super postgres -c 'SHOW listen_addresses'
    assert_output ""
    run -0 --separate-stderr psql_super postgres -c 'SHOW unix_socket_directories'
    assert_output "$PGSCRATCH_DIR"
}

@test "pgscratch: the default collation is ICU en-US, not C" {
    run -0 --separate-stderr psql_super postgres -c \
        "SELECT datname || ' ' || datlocprovider::text || ' ' || daticulocale FROM pg_database
         WHERE datname IN ('legacy', 'target') ORDER BY datname"
    assert_output "$(printf 'legacy i en-US\ntarget i en-US')"
    # Under "C", 'B' sorts before 'a'; under en-US it does not.
    run -0 --separate-stderr psql_as target_owner target -c "SELECT 'a' < 'B'"
    assert_output "t"
    run -0 --separate-stderr psql_as legacy_reader legacy -c "SELECT 'a' < 'B', 'a' < 'B' COLLATE \"C\""
    assert_output "t|f"
}

@test "pgscratch: roles have the attributes of Supabase's" {
    run -0 --separate-stderr psql_super postgres -c \
        "SELECT rolname, rolsuper, rolcanlogin, rolinherit, rolbypassrls FROM pg_roles
         WHERE rolname IN ('anon', 'authenticated', 'service_role', 'legacy_owner',
                           'legacy_reader', 'target_owner') ORDER BY rolname"
    assert_output "$(printf '%s\n' \
        'anon|f|f|f|f' \
        'authenticated|f|f|f|f' \
        'legacy_owner|f|t|t|f' \
        'legacy_reader|f|t|t|f' \
        'service_role|f|f|f|t' \
        'target_owner|f|t|t|f')"
    run -0 --separate-stderr psql_super postgres -c \
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    assert_output "t"
}

@test "pgscratch: databases are owned by legacy_owner and target_owner" {
    run -0 --separate-stderr psql_super postgres -c \
        "SELECT datname || ' ' || pg_get_userbyid(datdba) FROM pg_database
         WHERE datname IN ('legacy', 'target') ORDER BY datname"
    assert_output "$(printf 'legacy legacy_owner\ntarget target_owner')"
}

@test "pgscratch: legacy_reader reads legacy_owner's tables and cannot write" {
    psql_as legacy_owner legacy -c \
        "CREATE TABLE public.reader_probe (id int PRIMARY KEY, name text);
         INSERT INTO public.reader_probe VALUES (1, 'one');
         CREATE SCHEMA other; CREATE TABLE other.probe2 (id int); INSERT INTO other.probe2 VALUES (7)"
    run -0 --separate-stderr psql_as legacy_reader legacy -c \
        "SELECT id, name FROM public.reader_probe"
    assert_output "1|one"
    run -0 --separate-stderr psql_as legacy_reader legacy -c "SELECT id FROM other.probe2"
    assert_output "7"
    run -1 --separate-stderr psql_as legacy_reader legacy -c \
        "INSERT INTO public.reader_probe VALUES (2, 'two')"
    assert_output ""
    [[ $stderr == *"permission denied for table reader_probe"* ]]
    run -1 --separate-stderr psql_as legacy_reader legacy -c \
        "CREATE TABLE public.reader_made (id int)"
    [[ $stderr == *"permission denied for schema public"* ]]
    run -0 --separate-stderr psql_super legacy -c "SELECT count(*) FROM public.reader_probe"
    assert_output "1"
}

@test "pgscratch: target_owner is not a superuser and cannot read legacy" {
    run -1 --separate-stderr psql_as target_owner target -c "SET session_replication_role = replica"
    [[ $stderr == *"permission denied"* ]]
    run -0 --separate-stderr psql_as target_owner target -c "SELECT current_setting('is_superuser')"
    assert_output "off"
    psql_as legacy_owner legacy -c "CREATE TABLE public.owner_only (id int)"
    run -1 --separate-stderr psql_as target_owner legacy -c "SELECT * FROM public.owner_only"
    [[ $stderr == *"permission denied for table owner_only"* ]]
}

@test "pgscratch: tables target_owner creates in public are granted to anon" {
    psql_as target_owner target -c "CREATE TABLE public.exposed (id int)"
    run -0 --separate-stderr psql_super target -c \
        "SELECT r, has_table_privilege(r, 'public.exposed', 'SELECT, INSERT, UPDATE, DELETE')
         FROM unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r ORDER BY r"
    assert_output "$(printf 'anon|t\nauthenticated|t\nservice_role|t')"
    run -0 --separate-stderr psql_super target -c \
        "SET ROLE anon; INSERT INTO public.exposed VALUES (1); SELECT count(*) FROM public.exposed"
    assert_output "1"
}

@test "pgscratch: target_owner can create its own state schema, not exposed" {
    run -0 --separate-stderr psql_as target_owner target -c \
        "CREATE SCHEMA scratch_state; CREATE TABLE scratch_state.runs (id int);
         SELECT has_table_privilege('anon', 'scratch_state.runs', 'SELECT')"
    assert_output "f"
}

@test "pgscratch: extensions.moddatetime keeps updated_at current" {
    psql_as target_owner target -c \
        "CREATE TABLE public.stamped (id int, v text,
             updated_at timestamptz NOT NULL DEFAULT '2000-01-01');
         CREATE TRIGGER stamp BEFORE UPDATE ON public.stamped FOR EACH ROW
             EXECUTE FUNCTION extensions.moddatetime(updated_at);
         INSERT INTO public.stamped (id, v) VALUES (1, 'a');
         UPDATE public.stamped SET v = 'b'"
    run -0 --separate-stderr psql_super target -c \
        "SELECT updated_at > '2020-01-01' FROM public.stamped"
    assert_output "t"
}

@test "pgscratch: service_role bypasses row security, anon sees nothing" {
    psql_as target_owner target -c \
        "CREATE TABLE public.secured (id int); INSERT INTO public.secured VALUES (1), (2);
         ALTER TABLE public.secured ENABLE ROW LEVEL SECURITY"
    run -0 --separate-stderr psql_super target -c \
        "SET ROLE anon; SELECT count(*) FROM public.secured"
    assert_output "0"
    run -0 --separate-stderr psql_super target -c \
        "SET ROLE service_role; SELECT count(*) FROM public.secured"
    assert_output "2"
    run -0 --separate-stderr psql_as target_owner target -c "SELECT count(*) FROM public.secured"
    assert_output "2"
}

@test "checksum_table: changes when a value changes, NULL differs from ''" {
    psql_as target_owner target -c \
        "CREATE TABLE public.summed (id int, v text); INSERT INTO public.summed VALUES (1, 'x'), (2, NULL)"
    run -0 --separate-stderr checksum_table target public.summed
    local before="$output"
    [[ $before =~ ^[0-9a-f]{32}$ ]]
    run -0 --separate-stderr checksum_table target public.summed
    assert_output "$before"
    psql_as target_owner target -c "UPDATE public.summed SET v = '' WHERE id = 2"
    run -0 --separate-stderr checksum_table target public.summed
    refute_output "$before"
}

@test "pgscratch: stop stops the server and removes the directory" {
    local dir
    dir="$(mktemp -d /tmp/dlpg.XXXXXX)"
    run -0 --separate-stderr "$PGSCRATCH" start --port 5433 "$dir"
    assert_output --partial "PGPORT='5433'"
    assert_equal "$stderr" ""
    run -0 --separate-stderr "$PGSCRATCH" status "$dir"
    run -0 --separate-stderr "$PGBIN/pg_isready" -q -h "$dir" -p 5433
    run -0 --separate-stderr "$PGSCRATCH" stop "$dir"
    assert_output ""
    [[ ! -e $dir ]]
    run -3 --separate-stderr "$PGSCRATCH" status "$dir"
}

@test "pgscratch: a server that cannot start exits 5 with the log's tail" {
    local dir
    dir="$(mktemp -d /tmp/dlpg.XXXXXX)"
    run -5 --separate-stderr "$PGSCRATCH" start -c shared_buffers=bogus "$dir"
    assert_output ""
    [[ $stderr == *"pgscratch: the server could not start"* ]]
    [[ $stderr == *'invalid value for parameter "shared_buffers"'* ]]
    run -5 --separate-stderr "$PGSCRATCH" status "$dir"
    run -0 --separate-stderr "$PGSCRATCH" stop "$dir"
    [[ ! -e $dir ]]
}

@test "pgscratch: refuses to touch a directory it did not make" {
    local dir
    dir="$(mktemp -d /tmp/dlpg.XXXXXX)"
    touch "$dir/keep"
    run -6 --separate-stderr "$PGSCRATCH" stop "$dir"
    [[ -e $dir/keep ]]
    run -2 --separate-stderr "$PGSCRATCH" start "$dir"
    [[ $stderr == *"not empty"* ]]
    rm -r "$dir"
}

@test "pgscratch: usage errors exit 2 with a hint, --help and --version exit 0" {
    run -2 --separate-stderr "$PGSCRATCH" --bogus
    assert_output ""
    [[ $stderr == *"unrecognized option '--bogus'"* ]]
    [[ $stderr == *"Try 'pgscratch --help' for more information."* ]]
    run -2 --separate-stderr "$PGSCRATCH" start
    run -2 --separate-stderr "$PGSCRATCH" start --port 70000 /tmp/dlpg.never
    [[ ! -e /tmp/dlpg.never ]]
    run -2 --separate-stderr "$PGSCRATCH" frobnicate /tmp/x
    run -0 --separate-stderr "$PGSCRATCH" --version
    assert_output "pgscratch (driftless) 0.1.0"
    run -0 --separate-stderr "$PGSCRATCH" --help
    assert_line --index 0 --partial "Usage: pgscratch start"
    assert_equal "$stderr" ""
    local long
    long="$(printf '%s\n' "$output" | awk 'length > 80')"
    assert_equal "$long" ""
}
