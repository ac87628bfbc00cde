#!/usr/bin/env bats
# scripts/rollback on the shop fixture plus a table of awkward values (public.odd:
# NULL, '', 'NULL', tabs, newlines, backslashes, unicode, every byte, jsonb,
# a JSON null and an SQL NULL in jsonb and in json, json text with odd spacing
# and duplicate keys, arrays with NULLs and with lower bounds other than 1,
# 30-digit numerics, infinities, NaN; an identity, a generated column and an
# updated_at trigger in the target) and a table with a column named t (the
# alias of the row in the images' SQL: public.tcol). The target is reached as
# target_owner; every result is checked with SQL: the checksums of every table
# (and of the crosswalk) before a run and after its rollback.

load helpers

setup_file() {
    scratch_setup_file
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    shop_load
    psql_as legacy_owner legacy -c "CREATE TABLE public.odd (id int PRIMARY KEY, txt text, b bytea,
            j jsonb, a text[], n numeric, f float8, ts timestamptz, d date);
        GRANT SELECT ON public.odd TO legacy_reader;
        INSERT INTO public.odd VALUES
            (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
            (2, '', '\\x', '{}', '{}', 0, 'NaN', 'infinity', 'infinity'),
            (3, 'NULL', '\\x00ff', '{\"a\": [1, null, \"\\\\u00e9\"]}', '{x,NULL,\"NULL\",\"\"}',
             123456789012345678901234567890.5, '-Infinity', '-infinity', '-infinity'),
            (4, E'\\\\N tab\\there\\nnew\\rcr \\\\ back \"q\" ''s'' ☃ 😀', NULL, '\"x\"',
             '{\"a\\tb\",\"c\\\\d\"}', -1, 1e-300, '2000-02-29 12:00:00.000001+00', '2000-02-29');
        INSERT INTO public.odd SELECT 5, 'every byte',
            (SELECT string_agg(set_byte('\\x00'::bytea, 0, g), ''::bytea ORDER BY g)
             FROM generate_series(0, 255) g), '[1, 2.50, true, null]', '{NULL}', 1e-30, 'Infinity',
            '1999-12-31 23:59:59.999999+00', '1970-01-01';
        ALTER TABLE public.odd ADD COLUMN js json, ADD COLUMN ia int[];
        UPDATE public.odd SET js = '{\"a\": 1}', ia = '{1,2}' WHERE id = 2;
        INSERT INTO public.odd (id, txt, j, js, ia) VALUES
            (6, 'json null', 'null', ' { \"b\" : 1,  \"a\":2, \"a\" : [ 3 ] } ', '[0:2]={1,2,3}'),
            (7, 'json null too', NULL, 'null', '[-2:-1]={NULL,7}')" >/dev/null
    psql_as legacy_owner legacy -c "CREATE TABLE public.tcol (id int PRIMARY KEY, t text, n int);
        GRANT SELECT ON public.tcol TO legacy_reader;
        INSERT INTO public.tcol VALUES (1, 'one', 1), (2, 'two', 2), (3, NULL, 3)" >/dev/null
    psql_as target_owner target -c "CREATE TABLE public.odd (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(), legacy_id int UNIQUE,
            txt text, b bytea, j jsonb, a text[], n numeric, f float8, ts timestamptz, d date,
            js json, ia int[], seq bigint GENERATED ALWAYS AS IDENTITY,
            txt_len int GENERATED ALWAYS AS (length(txt)) STORED,
            updated_at timestamptz DEFAULT now());
        CREATE TRIGGER odd_updated_at BEFORE UPDATE ON public.odd
            FOR EACH ROW EXECUTE FUNCTION extensions.moddatetime(updated_at);
        ALTER TABLE public.odd ENABLE ROW LEVEL SECURITY;
        CREATE TABLE public.tcol (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            legacy_id int UNIQUE, t text, n int);
        ALTER TABLE public.tcol ENABLE ROW LEVEL SECURITY" >/dev/null
    cat >>"$MAP" <<'EOF'

[public.odd]
source      = public.odd
legacy_key  = legacy_id
source_key  = id
uuid_column = id
columns     = txt, b, j, a, n, f, ts, d, js, ia
mapping     = column

[public.tcol]
source      = public.tcol
legacy_key  = legacy_id
source_key  = id
uuid_column = id
columns     = t, n
mapping     = column
EOF
    # The first run registers every table and fills public.odd.
    "$REPO/scripts/migrate" --map "$MAP" --run-dir "$BATS_FILE_TMPDIR/first" --quiet
}

teardown_file() {
    scratch_teardown_file
}

setup() {
    scratch_setup
}

# checksums: every target table and the crosswalk, one line each.
checksums() {
    local t
    for t in regions customers orders order_items employees stores product_tags events odd tcol; do
        printf '%s %s\n' "$t" "$(checksum_table target "public.$t")"
    done
    printf 'crosswalk %s\n' "$(checksum_table target driftless.crosswalk)"
    printf 'owned_keys %s\n' "$(psql_super target -c "SELECT md5(string_agg(table_name || ' ' || legacy_key,
        E'\\n' ORDER BY table_name || ' ' || legacy_key COLLATE \"C\")) FROM driftless.owned_keys")"
}

# odd_drift: change the awkward rows in the source: other awkward values,
# updates of rows with JSON nulls, json text and array bounds (their
# before-images), deletes, inserts; in public.tcol too.
odd_drift() {
    psql_as legacy_owner legacy -c "
        UPDATE public.odd SET txt = E'back\\\\slash\\nand\\ttab', a = '{NULL,NULL}', n = 'NaN',
            f = 'NaN', j = '{\"z\": {\"y\": []}}' WHERE id = 4;
        UPDATE public.odd SET b = (SELECT string_agg(set_byte('\\x00'::bytea, 0, g), ''::bytea
            ORDER BY g DESC) FROM generate_series(0, 255) g), d = 'infinity' WHERE id = 5;
        UPDATE public.odd SET txt = 'not NULL any more' WHERE id = 1;
        UPDATE public.odd SET txt = 'changed' WHERE id = 6;
        DELETE FROM public.odd WHERE id IN (3, 7);
        INSERT INTO public.odd VALUES (9, E'new\\r\\n', '\\xdeadbeef', 'null', '{\"\"}',
            99999999999999999999999999999.99, 0, 'epoch', 'epoch');
        UPDATE public.tcol SET t = 'uno' WHERE id = 1;
        DELETE FROM public.tcol WHERE id = 2;
        INSERT INTO public.tcol VALUES (4, 'four', 4)" >/dev/null
}

# odd_values: the values that to_jsonb would not keep, as the target holds them.
odd_values() {
    psql_super target -c "SELECT legacy_id, j IS NULL, j::text, js IS NULL, js::text, ia::text
        FROM public.odd WHERE legacy_id IN (1, 6, 7) ORDER BY legacy_id"
}

# run_id DIR: the run id that migrate recorded in its run directory.
run_id() {
    cat "$1/run.id"
}

@test "rollback: a run over awkward values and updated_at triggers is undone exactly; UUIDs kept" {
    before=$(checksums)
    uuid3=$(psql_super target -c "SELECT id FROM public.odd WHERE legacy_id = 3")
    [[ -n $uuid3 ]]
    # An SQL NULL and a JSON null in jsonb and json, json text as written, array bounds.
    run -0 odd_values
    assert_output '1|t||t||
6|f|null|f| { "b" : 1,  "a":2, "a" : [ 3 ] } |[0:2]={1,2,3}
7|t||f|null|[-2:-1]={NULL,7}'
    local odd_before=$output
    "$REPO/scripts/shop-fixture" drift 1
    odd_drift
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    rid=$(run_id "$BATS_TEST_TMPDIR/run")
    # The run changed the tables, the trigger moved updated_at of updated rows.
    [[ $(checksums) != "$before" ]] || fail "the run changed nothing"
    run -0 psql_super target -c "SELECT count(*) FROM public.odd WHERE legacy_id = 3"
    assert_output 0
    run -0 psql_super target -c "SELECT count(*) FROM public.odd WHERE legacy_id = 4
        AND updated_at > now() - interval '10 minutes' AND n = 'NaN'"
    assert_output 1

    run -0 --separate-stderr rollback --run-dir "$BATS_TEST_TMPDIR/rb" "$rid"
    assert_line --partial "public.odd: deleted 1 (inserted by the run), restored 4 (updated), re-inserted 2 (deleted)"
    assert_line --partial "public.tcol: deleted 1 (inserted by the run), restored 1 (updated), re-inserted 1 (deleted)"
    [[ $(checksums) == "$before" ]] || fail "not the target before the run: $(diff <(echo "$before") <(checksums))"
    run -0 odd_values
    assert_output "$odd_before"
    # The deleted row is back under its UUID, its identity value too.
    run -0 psql_super target -c "SELECT id FROM public.odd WHERE legacy_id = 3"
    assert_output "$uuid3"
    # The triggers are enabled again; the runs are linked; the rollback is a run.
    run -0 psql_super target -c "SELECT string_agg(tgname || ' ' || tgenabled::text, ',' ORDER BY tgname)
        FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN ('public.odd'::regclass, 'public.customers'::regclass)"
    assert_output "customers_updated_at O,odd_updated_at O"
    rb=$(cat "$BATS_TEST_TMPDIR/rb/run.id")
    run -0 psql_super target -c "SELECT r.rolled_back_by, b.program, b.status, b.rollback_of
        FROM driftless.runs r, driftless.runs b WHERE r.id = $rid AND b.id = $rb"
    assert_output "$rb|rollback|ok|$rid"
    # Its changes are recorded (audited) and its report written.
    run -0 psql_super target -c "SELECT op, count(*) FROM driftless.changes
        WHERE run_id = $rb AND table_name = 'public.odd' GROUP BY op ORDER BY op"
    assert_output "D|1
I|2
U|4"
    run -0 python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["run"]["program"])' \
        "$BATS_TEST_TMPDIR/rb/report.json"
    assert_output rollback
    [[ -s $BATS_TEST_TMPDIR/rb/report.html ]]
}

@test "rollback: a run killed half-way is rolled back to the state before it began" {
    before=$(checksums)
    "$REPO/scripts/shop-fixture" drift 2
    DRIFTLESS_FAILPOINT=pgapply:after-commit:3 run setsid "$REPO/scripts/migrate" --map "$MAP" \
        --run-dir "$BATS_TEST_TMPDIR/run" --batch-rows 2 --quiet
    [[ $status -eq 137 ]] || fail "the failpoint did not stop the run: exit $status"
    rid=$(run_id "$BATS_TEST_TMPDIR/run")
    run -0 psql_super target -c "SELECT status, (SELECT count(*) > 0 FROM driftless.batches WHERE run_id = $rid)
        FROM driftless.runs WHERE id = $rid"
    assert_output "running|t"
    [[ $(checksums) != "$before" ]] || fail "no batch was committed"
    run -0 --separate-stderr rollback --quiet --run-dir "$BATS_TEST_TMPDIR/rb" "$rid"
    [[ -z $output ]]
    [[ $stderr == *"still marked running"* ]]
    [[ $(checksums) == "$before" ]] || fail "not the target before the run: $(diff <(echo "$before") <(checksums))"
}

@test "rollback: refuses (exit 6) a row the application changed since the run, naming it; --force proceeds" {
    before=$(checksums)
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    rid=$(run_id "$BATS_TEST_TMPDIR/run")
    key=$(psql_super target -c "SELECT legacy_key FROM driftless.changes WHERE run_id = $rid
        AND table_name = 'public.customers' AND op = 'U' ORDER BY legacy_key LIMIT 1")
    [[ -n $key ]] || fail "the run updated no customer"
    # The application edits the row (its trigger moves updated_at).
    psql_as target_owner target -c "UPDATE public.customers SET nickname = 'edited by the app'
        WHERE legacy_id = $key"
    edited=$(checksums)
    runs=$(psql_super target -c "SELECT count(*) FROM driftless.runs")
    run -6 --separate-stderr rollback --run-dir "$BATS_TEST_TMPDIR/rb1" "$rid"
    [[ $stderr == *"table public.customers, legacy key \"$key\": changed since the run"* ]] ||
        fail "the row is not named: $stderr"
    [[ $stderr == *"--force"* ]]
    [[ $(checksums) == "$edited" ]] || fail "a refused rollback changed the target"
    run -0 psql_super target -c "SELECT rolled_back_by IS NULL FROM driftless.runs WHERE id = $rid"
    assert_output t
    # The refused rollback is a failed run of its own.
    run -0 psql_super target -c "SELECT program, status, exit_code FROM driftless.runs WHERE id > $runs"
    assert_output "rollback|failed|6"

    run -0 --separate-stderr rollback --force --quiet --run-dir "$BATS_TEST_TMPDIR/rb2" "$rid"
    [[ $stderr == *"legacy key \"$key\""* && $stderr == *"--force"* ]]
    [[ $(checksums) == "$before" ]] || fail "not the target before the run: $(diff <(echo "$before") <(checksums))"
    # A run is rolled back once.
    run -6 --separate-stderr rollback "$rid"
    [[ $stderr == *"run $rid was rolled back already, by run $(cat "$BATS_TEST_TMPDIR/rb2/run.id")"* ]]
    run -6 --separate-stderr rollback --dry-run "$rid"
}

@test "rollback --dry-run: prints the counts per table and writes nothing" {
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    rid=$(run_id "$BATS_TEST_TMPDIR/run")
    sums=$(checksums)
    state=$(for t in runs batches changes crosswalk owned_keys; do checksum_table target "driftless.$t"; done)
    want=$(psql_super target -c "SELECT table_name || ': would delete ' || count(*) FILTER (WHERE op = 'I')
            || ' (inserted by the run), restore ' || count(*) FILTER (WHERE op = 'U')
            || ' (updated), re-insert ' || count(*) FILTER (WHERE op = 'D') || ' (deleted)'
        FROM driftless.changes WHERE run_id = $rid GROUP BY table_name ORDER BY table_name")
    [[ $want == *public.odd:* ]] || fail "the run did not change public.odd"
    cd "$BATS_TEST_TMPDIR"
    run -0 --separate-stderr rollback --dry-run "$rid"
    assert_line --index 0 "dry run: rollback of run $rid (status ok); nothing was written"
    while IFS= read -r line; do
        assert_line "$line"
    done <<<"$want"
    [[ $(checksums) == "$sums" ]] || fail "the dry run changed the target"
    [[ $(for t in runs batches changes crosswalk owned_keys; do checksum_table target "driftless.$t"; done) == "$state" ]] ||
        fail "the dry run changed the state schema"
    [[ ! -e runs ]] || fail "the dry run made a run directory"
}

@test "rollback: refuses (exit 6) a run whose before-images are in the older to_jsonb form" {
    psql_as legacy_owner legacy -c "UPDATE public.tcol SET n = n + 1 WHERE id = 3" >/dev/null
    run -0 --separate-stderr migrate --map "$MAP" --run-dir "$BATS_TEST_TMPDIR/run" --quiet
    rid=$(run_id "$BATS_TEST_TMPDIR/run")
    run -0 psql_super target -c "SELECT image_form, (SELECT count(*) > 0 FROM driftless.changes
        WHERE run_id = $rid) FROM driftless.runs WHERE id = $rid"
    assert_output "text|t"
    # A run recorded before state version 3 has no image_form.
    psql_super target -c "UPDATE driftless.runs SET image_form = NULL WHERE id = $rid"
    sums=$(checksums)
    runs=$(psql_super target -c "SELECT count(*) FROM driftless.runs")
    run -6 --separate-stderr rollback --run-dir "$BATS_TEST_TMPDIR/rb" "$rid"
    [[ $stderr == *"refused: run $rid recorded its before-images in the older to_jsonb form"* ]] ||
        fail "not refused for its image form: $stderr"
    run -6 --separate-stderr rollback --dry-run "$rid"
    [[ $(checksums) == "$sums" ]] || fail "the refused rollback changed the target"
    run -0 psql_super target -c "SELECT count(*) FROM driftless.runs"
    assert_output "$runs"
}

@test "rollback: usage errors exit 2; an unknown run 2; --help and --version" {
    run -2 --separate-stderr rollback
    [[ $stderr == *"a RUN_ID is required"* && $stderr == *"Try 'rollback --help'"* ]]
    run -2 --separate-stderr rollback --bogus 1
    [[ $stderr == *"unrecognized option '--bogus'"* ]]
    run -2 --separate-stderr rollback abc
    run -2 --separate-stderr rollback 1 2
    run -2 --separate-stderr rollback --target-env 'host=x password=SENTINEL' 1
    [[ $stderr == *"not a connection string"* && $stderr != *SENTINEL* ]]
    run -2 --separate-stderr rollback 999999
    [[ $stderr == *"run 999999: no such run"* ]]
    run -0 --separate-stderr rollback --help
    [[ ${lines[0]} == "Usage: rollback [OPTION]... RUN_ID" && $output == *"Exit status"* ]]
    run -0 awk 'length($0) > 80' <<<"$output"
    assert_output ""
    run -0 --separate-stderr rollback --version
    assert_output "rollback (driftless) 0.1.0"
}
