#!/usr/bin/env bats
# pgapply on the shop fixture: --register (the crosswalk filled before the
# first compute, from a legacy column or an imported mapping), a table whose
# legacy key lives in the crosswalk only (regions: the earlier migration kept
# its ids in a CSV), and the stores <-> employees foreign-key cycle applied as
# one group. Change streams are made as scripts/migrate makes them (crosswalk
# maps -> idmap -> rowhash -> rowdiff); outcomes are checked with SQL and with
# shop-fixture export (both sides in source form).

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
    export FX="$BATS_TEST_TMPDIR/fx"
    shop-fixture load --dir "$FX"
}

src() {
    psql_as legacy_owner legacy "$@"
}

tgt() {
    psql_as target_owner target "$@"
}

apply() {
    pgapply --dsn-env TARGET_DATABASE_URL "$@"
}

# json_field FILE NAME [LINE]: a number from pgapply's --stats (line LINE, default 1).
json_field() {
    sed -n "${3:-1}s/.*\"$2\": \\([0-9.]*\\).*/\\1/p" "$1"
}

# regions_map OUT: the fixture's mapping CSV as a map stream, as scripts/migrate reads it.
regions_map() {
    rowcat --from-csv --table public.regions --types legacy_id:bigint,uuid:text \
        --key legacy_id <"${2:-$FX/regions-map.csv}" >"$1"
}

register_regions() {
    regions_map regions.map.rs
    apply --register --table public.regions --uuid-column id --import-map regions.map.rs
}

# cw_map TABLE: the table's map from the crosswalk (what compute reads before any write).
cw_map() {
    pgdump-rows --dsn-env TARGET_DATABASE_URL --name "public.$1" --key legacy_id \
        --query "SELECT c.legacy_key::bigint AS legacy_id, c.uuid FROM driftless.crosswalk AS c
                 WHERE c.table_name = 'public.$1'" -o "cw.$1.rs"
}

# new_map TABLE: every source key with its UUID, issued ones kept (idmap --map-out).
new_map() {
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name "public.$1" --key legacy_id \
        --query "SELECT id AS legacy_id FROM public.$1" |
        idmap -q --table "public.$1" --uuid-column id --map "cw.$1.rs" \
            --map-out "map.$1.rs" >/dev/null
}

# diff_streams TABLE: ch.TABLE.rs from s.TABLE.rs and t.TABLE.rs.
diff_streams() {
    local rc=0
    rowdiff -q --allow-all -o "ch.$1.rs" "s.$1.rs" "t.$1.rs" || rc=$?
    [[ $rc -le 1 ]]
}

# regions_changes: ch.public.regions.rs in target form; the target's legacy ids
# come from the crosswalk, as the table has none.
regions_changes() {
    cw_map regions && new_map regions || return 1
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.regions --key legacy_id \
        --query "SELECT id AS legacy_id, name FROM public.regions" |
        idmap -q --table public.regions --uuid-column id --map map.regions.rs |
        rowhash -o s.regions.rs || return 1
    pgdump-rows --dsn-env TARGET_DATABASE_URL --name public.regions --key legacy_id \
        --query "SELECT c.legacy_key::bigint AS legacy_id, t.id, t.name FROM public.regions AS t
                 JOIN driftless.crosswalk AS c ON c.table_name = 'public.regions' AND c.uuid = t.id" |
        rowhash -o t.regions.rs || return 1
    diff_streams regions
}

# cycle_changes: ch.employees.rs and ch.stores.rs, foreign keys mapped both ways.
cycle_changes() {
    local t
    for t in employees stores; do
        cw_map $t && new_map $t || return 1
    done
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.employees --key legacy_id \
        --query "SELECT id AS legacy_id, manager_id, store_id, name FROM public.employees" |
        idmap -q --table public.employees --uuid-column id --map map.employees.rs \
            --fk manager_id=map.employees.rs --fk store_id=map.stores.rs |
        rowhash -o s.employees.rs || return 1
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.stores --key legacy_id \
        --query "SELECT id AS legacy_id, manager_id, name FROM public.stores" |
        idmap -q --table public.stores --uuid-column id --map map.stores.rs \
            --fk manager_id=map.employees.rs | rowhash -o s.stores.rs || return 1
    pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.employees --key legacy_id \
        --columns id,manager_id,store_id,name --skip-null-keys | rowhash -o t.employees.rs || return 1
    pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.stores --key legacy_id \
        --columns id,manager_id,name --skip-null-keys | rowhash -o t.stores.rs || return 1
    diff_streams employees && diff_streams stores
}

register_cycle() {
    apply --register --table public.employees --uuid-column id --legacy-key legacy_id &&
        apply --register --table public.stores --uuid-column id --legacy-key legacy_id
}

apply_cycle() {
    apply --uuid-column id --stream public.employees=ch.employees.rs \
        --stream public.stores=ch.stores.rs "$@"
}

# assert_same TABLE...: the tables are equal on both sides, in source form.
assert_same() {
    rm -rf xs xt
    shop-fixture export source xs && shop-fixture export target xt --dir "$FX" || return 1
    local t
    for t in "$@"; do
        run -0 diff "xs/public.$t.copy" "xt/public.$t.copy"
    done
}

# uuids TABLE: "legacy_id uuid" of the table's migrated rows.
uuids() {
    tgt -c "SELECT legacy_id || ' ' || id FROM public.$1 WHERE legacy_id IS NOT NULL ORDER BY 1"
}

# ---- --register ----

@test "register: fills the crosswalk from the legacy column; registered again, nothing moves" {
    run -0 --separate-stderr apply --register --table public.customers --uuid-column id \
        --legacy-key legacy_id
    assert_output ""
    assert_equal "$stderr" ""
    run -0 tgt -c "SELECT key_columns, uuid_column, migrated_rows FROM driftless.tables"
    assert_output "{legacy_id}|id|302"
    # every migrated row, and only those (2 customers were born in the target)
    run -0 tgt -c "SELECT count(*) FROM public.customers AS t JOIN driftless.crosswalk AS c
                   ON c.table_name = 'public.customers' AND c.legacy_key = t.legacy_id::text
                   AND c.uuid = t.id"
    assert_output 302
    run -0 tgt -c "SELECT count(*) FROM driftless.crosswalk"
    assert_output 302
    local before
    before="$(tgt -c "SELECT md5(string_agg(c::text, ',' ORDER BY legacy_key)) FROM driftless.crosswalk c")"
    run -0 --separate-stderr apply --register --table public.customers --uuid-column id \
        --legacy-key legacy_id
    assert_equal "$stderr" ""
    run -0 tgt -c "SELECT md5(string_agg(c::text, ',' ORDER BY legacy_key)) FROM driftless.crosswalk c"
    assert_output "$before"
    run -0 tgt -c "SELECT count(*) FROM driftless.tables"
    assert_output 1
    # the same table under another key is not the same registration
    run -6 --separate-stderr apply --register --table public.customers --uuid-column id \
        --legacy-key email
    [[ $stderr == *"registered with another legacy key (legacy_id)"* ]]
}

@test "register: --import-map fills the crosswalk of a table without a legacy column" {
    run -0 --separate-stderr register_regions
    assert_equal "$stderr" ""
    # the crosswalk holds exactly the CSV's pairs
    run -0 tgt -c "SELECT legacy_key || ',' || uuid FROM driftless.crosswalk ORDER BY legacy_key::int"
    assert_output "$(tail -n +2 "$FX/regions-map.csv")"
    run -0 tgt -c "SELECT key_columns, uuid_column, migrated_rows FROM driftless.tables"
    assert_output "{legacy_id}|id|6"
    # idempotent: the table is registered, the map is not read again
    printf 'legacy_id,uuid\n1,bad\n' >bad.csv
    regions_map bad.rs bad.csv
    run -0 --separate-stderr apply --register --table public.regions --uuid-column id \
        --import-map bad.rs
    run -0 tgt -c "SELECT count(*) FROM driftless.crosswalk"
    assert_output 6
}

@test "register: a mapping table read by pgdump-rows --query is a map too" {
    # the earlier migration's mapping as a table in the source
    src -c "CREATE TABLE public.region_ids (legacy_id bigint PRIMARY KEY, uuid uuid NOT NULL)" \
        -c "GRANT SELECT ON public.region_ids TO legacy_reader"
    psql_as legacy_owner legacy -c "\\copy public.region_ids FROM '$FX/regions-map.csv' CSV HEADER"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.regions --key legacy_id \
        --query "SELECT legacy_id, uuid FROM public.region_ids" -o map.rs
    run -0 --separate-stderr apply --register --table public.regions --import-map map.rs
    run -0 tgt -c "SELECT count(*) FROM public.regions AS t JOIN driftless.crosswalk AS c
                   ON c.uuid = t.id AND c.table_name = 'public.regions'"
    assert_output 6
}

@test "register: a bad mapping is refused with exit 4, each problem by record and line; nothing written" {
    # line 3: malformed; line 5: the UUID of line 4 again; line 6: a UUID no region has;
    # line 7: empty (NULL)
    {
        echo "legacy_id,uuid"
        sed -n 2p "$FX/regions-map.csv"
        echo "2,not-a-uuid"
        sed -n 4p "$FX/regions-map.csv"
        sed -n 4p "$FX/regions-map.csv" | sed 's/^3,/4,/'
        echo "5,00000000-0000-0000-0000-000000000001"
        echo "6,"
    } >bad.csv
    regions_map bad.rs bad.csv
    run -4 --separate-stderr apply --register --table public.regions --uuid-column id \
        --import-map bad.rs
    assert_output ""
    [[ $stderr == *"map bad.rs: record 2 (line 3 of a CSV with a header), key (legacy_id)=(2): malformed UUID"* ]]
    [[ $stderr == *"record 6 (line 7 of a CSV with a header), key (legacy_id)=(6): malformed UUID"* ]]
    [[ $stderr == *"record 4 (line 5 of a CSV with a header), key (legacy_id)=(4): UUID given twice (first in record 3, line 4)"* ]]
    [[ $stderr == *"record 5 (line 6 of a CSV with a header), key (legacy_id)=(5): no row of the table has this UUID"* ]]
    [[ $stderr == *"4 problems; nothing was written"* ]]
    # the malformed value itself is not printed
    [[ $stderr != *not-a-uuid* ]]
    run -0 tgt -c "SELECT (SELECT count(*) FROM driftless.crosswalk), (SELECT count(*) FROM
                   driftless.tables)"
    assert_output "0|0"

    # a legacy key twice never becomes a stream (the key order check, exit 4)
    printf 'legacy_id,uuid\n1,%s\n1,%s\n' "$(uuidgen)" "$(uuidgen)" >dup.csv
    run -4 --separate-stderr regions_map dup.rs dup.csv
    [[ $stderr == *"line 3: duplicate key (legacy_id)=(1)"* ]]

    # a crosswalk entry made before (by hand here) that the map contradicts
    tgt -c "INSERT INTO driftless.crosswalk (table_name, legacy_key, uuid)
            VALUES ('public.regions', '3', (SELECT id FROM public.regions WHERE name = 'North'))"
    regions_map good.rs
    run -4 --separate-stderr apply --register --table public.regions --import-map good.rs
    [[ $stderr == *"record 3 (line 4 of a CSV with a header), key (legacy_id)=(3): the crosswalk already maps this key to another UUID"* ]]
    [[ $stderr == *"record 1 (line 2 of a CSV with a header), key (legacy_id)=(1): the crosswalk already maps this UUID to another key"* ]]
    run -0 tgt -c "SELECT count(*) FROM driftless.tables"
    assert_output 0
}

@test "register: a map that contradicts the table's own legacy column is refused" {
    # customers 1 and 2 swapped
    {
        echo "legacy_id,uuid"
        tgt -c "SELECT CASE legacy_id WHEN 1 THEN 2 WHEN 2 THEN 1 ELSE legacy_id END || ',' || id
                FROM public.customers WHERE legacy_id BETWEEN 1 AND 5 ORDER BY 1"
    } >cust.csv
    rowcat --from-csv --table public.customers --types legacy_id:bigint,uuid:text \
        --key legacy_id <cust.csv >cust.rs
    run -4 --separate-stderr apply --register --table public.customers --uuid-column id \
        --import-map cust.rs
    [[ $stderr == *"key (legacy_id)=(1): the table's row with this UUID has another legacy key"* ]]
    [[ $stderr == *"key (legacy_id)=(2): the table's row with this UUID has another legacy key"* ]]
    [[ $stderr == *"2 problems"* ]]
    run -0 tgt -c "SELECT count(*) FROM driftless.crosswalk"
    assert_output 0
}

# ---- a legacy key kept in the crosswalk only ----

@test "crosswalk-only key: unregistered is refused (exit 6) with the way out" {
    regions_map regions.map.rs
    # what compute would produce from the CSV, before any registration
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.regions --key legacy_id \
        --query "SELECT id AS legacy_id, name FROM public.regions" | rowhash -o s.rs
    pgdump-rows --dsn-env TARGET_DATABASE_URL --name public.regions --key legacy_id \
        --query "SELECT 1::bigint AS legacy_id, name FROM public.regions WHERE false" |
        rowhash -o t.rs
    rowdiff -q --allow-all -o ch.rs s.rs t.rs || [[ $? == 1 ]]
    local sum
    sum="$(checksum_table target public.regions)"
    run -6 --separate-stderr apply --uuid-column id ch.rs
    [[ $stderr == *"legacy key (legacy_id) is no column of the table, and the table is not registered"* ]]
    [[ $stderr == *"hint: import the earlier migration's mapping first: pgapply --register --table public.regions"* ]]
    run -6 --separate-stderr apply --uuid-column id --dry-run ch.rs
    run -0 checksum_table target public.regions
    assert_output "$sum"
}

@test "crosswalk-only key: inserts, updates and deletes converge; UUIDs kept; a second run changes nothing" {
    register_regions
    local north mitte
    north="$(tgt -c "SELECT id FROM public.regions WHERE name = 'North'")"
    mitte="$(tgt -c "SELECT id FROM public.regions WHERE name = 'Zentral – Mitte'")"
    # region 6 has no customers; 7 is new; 5 is renamed
    src -c "UPDATE public.regions SET name = 'Mitte' WHERE id = 5" \
        -c "DELETE FROM public.regions WHERE id = 6" \
        -c "INSERT INTO public.regions VALUES (7, 'Nowhere'), (8, E'Tab\\there')"
    regions_changes
    run -0 rowcat --count ch.regions.rs
    assert_output 4
    run -0 --separate-stderr apply --uuid-column id --dry-run ch.regions.rs
    assert_output --partial "would insert 2, update 1, delete 1"
    run -0 --separate-stderr apply --uuid-column id --stats st.json ch.regions.rs
    assert_equal "$stderr" ""
    assert_equal "$(json_field st.json inserted)" 2
    assert_equal "$(json_field st.json updated)" 1
    assert_equal "$(json_field st.json deleted)" 1
    assert_same regions customers
    # the renamed row and the others kept their UUIDs; the new ones took idmap's
    run -0 tgt -c "SELECT id FROM public.regions WHERE name = 'North'"
    assert_output "$north"
    run -0 tgt -c "SELECT id FROM public.regions WHERE name = 'Mitte'"
    assert_output "$mitte"
    run -0 bash -c "rowcat --csv map.regions.rs | grep '^7,' | cut -d, -f2"
    local issued="$output"
    run -0 tgt -c "SELECT id FROM public.regions WHERE name = 'Nowhere'"
    assert_output "$issued"
    # the crosswalk was extended with the inserts and keeps the deleted key
    run -0 tgt -c "SELECT string_agg(legacy_key, ',' ORDER BY legacy_key::int) FROM driftless.crosswalk"
    assert_output "1,2,3,4,5,6,7,8"
    run -0 tgt -c "SELECT op, legacy_key, before_image->>'name', after_hash IS NOT NULL
                   FROM driftless.changes ORDER BY legacy_key::int"
    assert_output $'U|5|Zentral – Mitte|t\nD|6|Antarctica|f\nI|7||t\nI|8||t'
    run -0 tgt -c "SELECT count(*) FROM driftless.changes c JOIN public.regions r ON r.id = c.uuid
                   WHERE c.after_hash = md5(jsonb_build_object('id', r.id::text, 'name', r.name)::text)"
    assert_output 3
    # a second compute finds nothing to do, after the run directory is gone
    rm -f ./*.rs
    regions_changes
    run -0 rowcat --count ch.regions.rs
    assert_output 0
    # a region deleted and coming back gets its UUID back from the crosswalk
    local old
    old="$(tgt -c "SELECT uuid FROM driftless.crosswalk WHERE legacy_key = '6'")"
    src -c "INSERT INTO public.regions VALUES (6, 'Antarctica again')"
    regions_changes
    run -0 apply --uuid-column id ch.regions.rs
    run -0 tgt -c "SELECT id FROM public.regions WHERE name = 'Antarctica again'"
    assert_output "$old"
    assert_same regions
}

@test "crosswalk-only key: a row the crosswalk maps elsewhere, or a reused UUID, stops the run" {
    register_regions
    src -c "INSERT INTO public.regions VALUES (7, 'Nowhere')" \
        -c "UPDATE public.regions SET name = 'Nord' WHERE id = 1"
    regions_changes
    # between compute and apply, an application inserts a row with the UUID idmap chose
    run -0 bash -c "rowcat --csv map.regions.rs | grep '^7,' | cut -d, -f2"
    tgt -c "INSERT INTO public.regions (id, name) VALUES ('$output', 'app row')"
    local sum
    sum="$(checksum_table target public.regions)"
    run -6 --separate-stderr apply --uuid-column id ch.regions.rs
    [[ $stderr == *"key (legacy_id)=(7): refused: its UUID is already used by another row of the target"* ]]
    run -0 checksum_table target public.regions
    assert_output "$sum"
    run -0 tgt -c "SELECT count(*) FROM driftless.changes"
    assert_output 0

    # a deleted region whose target-born customer (app-1, in North) would block the delete
    tgt -c "DELETE FROM public.regions WHERE name = 'app row'"
    src -c "DELETE FROM public.regions WHERE id = 7" \
        -c "UPDATE public.customers SET region_id = 2 WHERE region_id = 1" \
        -c "DELETE FROM public.regions WHERE id = 1"
    regions_changes
    sum="$(checksum_table target public.regions)"
    run -6 --separate-stderr apply --uuid-column id ch.regions.rs
    [[ $stderr == *"key (legacy_id)=(1): refused: the delete would cascade into, or be blocked by, row (id)="*" of public.customers, born in the target (constraint \"customers_region_id_fkey\")"* ]]
    [[ $(grep -c 'born in the target' <<<"$stderr") == 1 ]]
    run -0 checksum_table target public.regions
    assert_output "$sum"
}

@test "crosswalk-only key: as a child, its rows outside the crosswalk are born in the target" {
    register_regions
    # a region born in the target (no crosswalk entry) and a migrated one, both
    # pointing at customer 5 through a column only the target has
    tgt -c "ALTER TABLE public.regions ADD COLUMN sponsor uuid REFERENCES public.customers (id)" \
        -c "INSERT INTO public.regions (id, name, sponsor) SELECT
                '00000000-0000-0000-0000-0000000000bb', 'app region', id
            FROM public.customers WHERE legacy_id = 5" \
        -c "UPDATE public.regions SET sponsor = (SELECT id FROM public.customers
            WHERE legacy_id = 5) WHERE name = 'North'"
    src -c "DELETE FROM public.customers WHERE id = 5"
    pgdump-rows --dsn-env SOURCE_DATABASE_URL --name public.customers --key legacy_id \
        --query "SELECT id AS legacy_id, name FROM public.customers" | rowhash -o s.rs
    pgdump-rows --dsn-env TARGET_DATABASE_URL --table public.customers --key legacy_id \
        --columns name --skip-null-keys | rowhash -o t.rs
    rowdiff -q --allow-all -o ch.rs s.rs t.rs || [[ $? == 1 ]]
    run -0 rowcat --csv ch.rs
    assert_output --regexp '^D,5,'
    run -6 --separate-stderr apply --uuid-column id ch.rs
    [[ $stderr == *"key (legacy_id)=(5): refused: the delete would cascade into, or be blocked by, row (id)=(00000000-0000-0000-0000-0000000000bb) of public.regions, born in the target (constraint \"regions_sponsor_fkey\")"* ]]
    # the migrated region (in the crosswalk) is the sync's own: not named
    [[ $(grep -c 'born in the target' <<<"$stderr") == 1 ]]
    run -0 tgt -c "SELECT count(*) FROM public.customers WHERE legacy_id = 5"
    assert_output 1
}

# ---- cycle groups ----

@test "group: a new store whose manager is a new employee working there converges in one transaction" {
    register_cycle
    local before_e before_s
    before_e="$(uuids employees)"
    before_s="$(uuids stores)"
    src -c "BEGIN" -c "SET CONSTRAINTS ALL DEFERRED" \
        -c "INSERT INTO public.stores VALUES (101, 501, 'New store')" \
        -c "INSERT INTO public.employees (id, manager_id, store_id, name)
            VALUES (501, 1, 101, 'Its manager'), (502, 501, 101, 'Its clerk')" -c "COMMIT"
    cycle_changes
    # either table alone cannot be applied: its partner is missing (nothing committed)
    run -6 --separate-stderr apply --uuid-column id --stream public.stores=ch.stores.rs
    [[ $stderr == *"row (id)="*" of public.stores references a row of public.employees that is not there (constraint \"stores_manager_id_fkey\")"* ]]
    [[ $stderr == *"nothing of this phase was committed"* ]]
    run -0 tgt -c "SELECT (SELECT count(*) FROM driftless.batches) + (SELECT count(*) FROM
                   driftless.changes) + (SELECT count(*) FROM public.stores WHERE legacy_id = 101)"
    assert_output 0

    run -0 --separate-stderr apply_cycle --stats st.json
    assert_equal "$stderr" ""
    assert_equal "$(json_field st.json inserted 1)" 2
    assert_equal "$(json_field st.json inserted 2)" 1
    run -0 grep -c '"table": "public.stores"' st.json
    assert_same employees stores
    run -0 tgt -c "SELECT e.legacy_id, e.store_id = s.id FROM public.stores s
                   JOIN public.employees e ON e.id = s.manager_id WHERE s.legacy_id = 101"
    assert_output "501|t"
    # one checkpoint per table, both written by one transaction
    run -0 tgt -c "SELECT count(*), count(DISTINCT xmin::text) FROM driftless.batches"
    assert_output "2|1"
    run -0 tgt -c "SELECT tables, status FROM driftless.runs ORDER BY id DESC LIMIT 1"
    assert_output "{public.employees,public.stores}|ok"
    # issued UUIDs unchanged; nothing left to do
    run -0 tgt -c "SELECT legacy_id || ' ' || id FROM public.employees
                   WHERE legacy_id < 500 ORDER BY 1"
    assert_output "$before_e"
    run -0 tgt -c "SELECT legacy_id || ' ' || id FROM public.stores
                   WHERE legacy_id < 100 ORDER BY 1"
    assert_output "$before_s"
    cycle_changes
    run -0 rowcat --count ch.employees.rs
    assert_output 0

    # a store closed with all its staff: the delete phase, one transaction too
    src -c "BEGIN" -c "SET CONSTRAINTS ALL DEFERRED" \
        -c "DELETE FROM public.employees WHERE store_id = 101" \
        -c "DELETE FROM public.stores WHERE id = 101" -c "COMMIT"
    cycle_changes
    run -0 --separate-stderr apply_cycle --stats st2.json
    assert_equal "$(json_field st2.json deleted 1)" 2
    assert_equal "$(json_field st2.json deleted 2)" 1
    assert_same employees stores
}

@test "group: killed after the upsert phase's commit, run again, converges" {
    register_cycle
    src -c "BEGIN" -c "SET CONSTRAINTS ALL DEFERRED" \
        -c "INSERT INTO public.stores VALUES (101, 501, 'New store')" \
        -c "INSERT INTO public.employees (id, manager_id, store_id, name)
            VALUES (501, 1, 101, 'Its manager')" \
        -c "DELETE FROM public.employees WHERE store_id = 10" \
        -c "DELETE FROM public.stores WHERE id = 10" -c "COMMIT"
    cycle_changes
    DRIFTLESS_FAILPOINT=pgapply:after-commit:1 run -137 setsid pgapply \
        --dsn-env TARGET_DATABASE_URL --uuid-column id --batch-rows 1 \
        --stream public.employees=ch.employees.rs --stream public.stores=ch.stores.rs
    # the whole upsert phase, nothing of the deletes
    run -0 tgt -c "SELECT phase, count(*) FROM driftless.batches GROUP BY 1"
    assert_output "upsert|2"
    run -0 tgt -c "SELECT count(*) FROM public.stores WHERE legacy_id IN (10, 101)"
    assert_output 2
    run -0 --separate-stderr apply_cycle --batch-rows 1 --stats st.json
    assert_equal "$(json_field st.json skipped_batches 1)" 1
    assert_equal "$(json_field st.json skipped_batches 2)" 1
    assert_same employees stores
    run -0 tgt -c "SELECT count(*), count(DISTINCT (table_name, legacy_key)) FROM driftless.changes"
    assert_output "9|9"
}

@test "group: a cycle through a NOT NULL key that is not DEFERRABLE is refused by name" {
    register_cycle
    src -c "BEGIN" -c "SET CONSTRAINTS ALL DEFERRED" \
        -c "INSERT INTO public.stores VALUES (101, 501, 'New store')" \
        -c "INSERT INTO public.employees (id, manager_id, store_id, name)
            VALUES (501, 1, 101, 'Its manager')" -c "COMMIT"
    cycle_changes
    tgt -c "ALTER TABLE public.stores ALTER CONSTRAINT stores_manager_id_fkey NOT DEFERRABLE"
    local sum
    sum="$(checksum_table target public.stores)"
    run -6 --separate-stderr apply_cycle
    [[ $stderr == *"foreign key \"stores_manager_id_fkey\" of public.stores (manager_id) references public.employees and is neither DEFERRABLE nor nullable"* ]]
    run -0 checksum_table target public.stores
    assert_output "$sum"
    # not deferrable but nullable: accepted (applied parents first)
    tgt -c "ALTER TABLE public.stores ALTER CONSTRAINT stores_manager_id_fkey DEFERRABLE" \
        -c "ALTER TABLE public.employees ALTER CONSTRAINT employees_store_id_fkey NOT DEFERRABLE"
    run -0 --separate-stderr apply_cycle --dry-run
    # the group's size limit
    run -6 --separate-stderr apply_cycle --group-max-rows 1
    [[ $stderr == *"group: refused: 2 changes, more than --group-max-rows (1)"* ]]
    run -0 checksum_table target public.stores
    assert_output "$sum"
}

@test "group: rejected rows are reported once, after the group's commit" {
    register_cycle
    tgt -c "ALTER TABLE public.employees ADD CONSTRAINT no_x CHECK (name <> 'x')"
    src -c "BEGIN" -c "SET CONSTRAINTS ALL DEFERRED" \
        -c "INSERT INTO public.stores VALUES (101, 501, 'New store')" \
        -c "INSERT INTO public.employees (id, manager_id, store_id, name)
            VALUES (501, 1, 101, 'Its manager'), (502, 1, 1, 'x')" -c "COMMIT"
    cycle_changes
    run -1 --separate-stderr apply_cycle --reject-file 'rej.{table}.rs'
    [[ $stderr == *"table public.employees: key (legacy_id)=(502): rejected: check_violation (23514)"* ]]
    [[ $(grep -c 'rejected' <<<"$stderr") == 1 ]]
    run -0 rowcat --count rej.public.employees.rs
    assert_output 1
    run -0 rowcat --count rej.public.stores.rs
    assert_output 0
    run -0 tgt -c "SELECT count(*) FROM public.stores WHERE legacy_id = 101"
    assert_output 1
}

@test "pgapply: the new options' usage errors exit 2" {
    run -2 --separate-stderr pgapply --register
    [[ $stderr == *"--register needs --table"* ]]
    run -2 --separate-stderr pgapply --register --table public.regions
    [[ $stderr == *"--legacy-key or --import-map"* ]]
    run -2 --separate-stderr pgapply --import-map x.rs ch.rs
    run -2 --separate-stderr pgapply --register --table t --legacy-key id ch.rs
    run -2 --separate-stderr pgapply --stream public.stores
    [[ $stderr == *"TABLE=FILE"* ]]
    run -2 --separate-stderr pgapply --stream a=x --stream a=y
    run -2 --separate-stderr pgapply --stream a=x --table a
    run -2 --separate-stderr pgapply --stream a=x ch.rs
    run -2 --separate-stderr pgapply --stream a=x --reject-file r.rs
    [[ $stderr == *"{table}"* ]]
    run -2 --separate-stderr pgapply --stream a=x --uuid-column b=id
    run -2 --separate-stderr pgapply --stream a=x --group-max-rows 0
    run -2 --separate-stderr pgapply --install-state --register --table t --legacy-key id
}
