#!/usr/bin/env bats
# idmap: legacy keys and foreign keys to UUIDs. Streams are made from CSV with
# rowcat --from-csv and read back with rowcat --csv; no database is needed.

load helpers

V4='[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}'
U1=11111111-1111-4111-8111-111111111111
U3=33333333-3333-4333-8333-333333333333
U9=99999999-9999-4999-8999-999999999999
AUTH=aaaaaaaa-0000-4000-8000-00000000000a

setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
    # The crosswalk of customers as the earlier migration left it: 9 is gone from the source.
    printf 'legacy_id,uuid\n1,%s\n3,%s\n9,%s\n' "$U1" "$U3" "$U9" |
        mkmap customers >cust_old.map
    printf 'legacy_id,name\n1,ann\n2,bob\n3,cy\n4,di\n' |
        mkrows public.customers legacy_id:bigint >cust.rs
}

# mkrows TABLE TYPES [KEY]: CSV on stdin to a rows stream keyed by legacy_id.
mkrows() {
    rowcat --from-csv --table "$1" --types "$2" --key "${3:-legacy_id}"
}

# mkmap TABLE [TYPES] [KEY]: a map stream (legacy_id bigint -> uuid) from CSV.
mkmap() {
    rowcat --from-csv --table "$1" --types "${2:-legacy_id:bigint,uuid:uuid}" \
        --key "${3:-legacy_id}"
}

# field CSVFILE KEY N: column N of the CSV line whose first field is KEY.
field() {
    awk -F, -v k="$2" -v n="$3" '$1 == k { print $n }' "$1"
}

# customers through idmap: cust_t.rs (target form) and cust.map (map-out).
map_customers() {
    idmap -q --uuid-column id --map cust_old.map --map-out cust.map -o cust_t.rs cust.rs
}

@test "idmap: --help, --version and a bad option" {
    run -0 --separate-stderr idmap --help
    assert_output --partial "Usage: idmap"
    assert_output --partial "COLS[=>NAME]=MAP[:POLICY]"
    assert_equal "$stderr" ""
    run -0 --separate-stderr idmap --version
    assert_output "idmap (driftless) 0.1.0"
    run -2 --separate-stderr idmap --bogus
    assert_output ""
    [[ $stderr == *"unrecognized option '--bogus'"* ]]
    [[ $stderr == *"Try 'idmap --help'"* ]]
}

@test "idmap: existing keys keep their UUIDs, new keys get distinct new v4 UUIDs" {
    run -0 --separate-stderr map_customers
    run -0 --separate-stderr rowcat --csv cust_t.rs
    printf '%s\n' "$output" >cust_t.csv
    assert_line --index 0 "1,$U1,ann"
    assert_line --index 2 "3,$U3,cy"
    [[ ${lines[1]} =~ ^2,($V4),bob$ ]]
    u2=${BASH_REMATCH[1]}
    [[ ${lines[3]} =~ ^4,($V4),di$ ]]
    u4=${BASH_REMATCH[1]}
    [[ $u2 != "$u4" && $u2 != "$U9" ]]
    assert_equal "${#lines[@]}" 4

    # The map-out: every key of the rows, sorted, new=t for what this run issued.
    run -0 --separate-stderr rowcat --csv --header-row cust.map
    assert_output "$(printf '%s\n' legacy_id,uuid,new "1,$U1,f" "2,$u2,t" "3,$U3,f" "4,$u4,t")"
    run -0 --separate-stderr rowcat --header cust.map
    assert_line "kind	map"
    assert_line "table	public.customers"
    assert_line "column	1	legacy_id	bigint	key	int"
    assert_line "column	2	uuid	uuid	data	-"
    assert_line "column	3	new	boolean	data	-"
}

@test "idmap: the uuid column comes right after the keys; types and the table name" {
    run -0 --separate-stderr idmap -q --uuid-column id --table public.clients -o t.rs cust.rs
    run -0 --separate-stderr rowcat --header t.rs
    assert_line "kind	rows"
    assert_line "table	public.clients"
    assert_line "column	1	legacy_id	bigint	key	int"
    assert_line "column	2	id	uuid	data	-"
    assert_line "column	3	name	text	data	-"
}

@test "idmap: a second run over its own map-out reissues nothing" {
    map_customers
    rowcat --csv cust.map | cut -d, -f1,2 >first.csv
    run -0 --separate-stderr idmap -q -u id --map cust.map --map-out again.map -o again.rs cust.rs
    run -0 --separate-stderr rowcat --csv again.map
    assert_output "$(sed 's/$/,f/' first.csv)"
    run -0 --separate-stderr rowcat --csv again.rs
    assert_output "$(paste -d, first.csv <(printf '%s\n' ann bob cy di))"
}

@test "idmap: a foreign key through the parent's map-out; NULL stays NULL; others pass through" {
    map_customers
    printf 'legacy_id,customer_id,user_id,note\n10,1,%s,x\n11,,,y\n12,2,%s,z\n13,4,,w\n' \
        "$AUTH" "$AUTH" |
        mkrows public.orders legacy_id:bigint,customer_id:bigint,user_id:uuid >ord.rs
    run -0 --separate-stderr idmap -q -u id --fk customer_id=cust.map -o ord_t.rs ord.rs
    rowcat --csv cust.map >cust.csv
    rowcat --csv ord_t.rs >ord_t.csv
    assert_equal "$(field ord_t.csv 10 3)" "$U1"
    assert_equal "$(field ord_t.csv 11 3)" ""
    assert_equal "$(field ord_t.csv 12 3)" "$(field cust.csv 2 2)"
    assert_equal "$(field ord_t.csv 13 3)" "$(field cust.csv 4 2)"
    # user_id references a table outside the map (auth.users): untouched.
    assert_equal "$(field ord_t.csv 10 4)" "$AUTH"
    assert_equal "$(field ord_t.csv 13 4)" ""
    assert_equal "$(field ord_t.csv 12 5)" "z"
    run -0 --separate-stderr rowcat --header ord_t.rs
    assert_line "column	3	customer_id	uuid	data	-"
    assert_line "column	4	user_id	uuid	data	-"
    # The order rows' own UUIDs are new and distinct.
    run -0 --separate-stderr bash -c "cut -d, -f2 ord_t.csv | sort -u | grep -cE '^$V4\$'"
    assert_output "4"
}

@test "idmap: =>NAME renames the foreign key's uuid column" {
    map_customers
    printf 'legacy_id,customer_id\n10,3\n' | mkrows public.orders legacy_id:bigint,customer_id:int >ord.rs
    run -0 --separate-stderr idmap -q --fk 'customer_id=>customer=cust.map' -o o.rs ord.rs
    run -0 --separate-stderr rowcat --csv --header-row o.rs
    assert_output "$(printf 'legacy_id,customer\n10,%s' "$U3")"
}

@test "idmap: a dangling reference stops with exit 4, names table, column and key, no trailer" {
    map_customers
    printf 'legacy_id,customer_id,note\n10,1,x\n11,77,y\n12,2,z\n13,78,w\n' |
        mkrows public.orders legacy_id:bigint,customer_id:bigint >ord.rs
    run -4 --separate-stderr bash -c 'idmap -u id --fk customer_id=cust.map \
        --map-out ord.map ord.rs >out.rs'
    [[ $stderr == *"table public.orders: column customer_id: 2 rows refer to a key not in cust.map"* ]]
    [[ $stderr == *"row (legacy_id)=(11): (customer_id)=(77)"* ]]
    [[ $stderr == *"row (legacy_id)=(13): (customer_id)=(78)"* ]]
    # Nothing downstream can apply it.
    run -4 --separate-stderr rowcat --count out.rs
    [[ ! -e ord.map ]]
    run -4 --separate-stderr idmap -u id --fk customer_id=cust.map -o out2.rs ord.rs
    [[ ! -e out2.rs ]]
    [[ -z $(ls out2.rs.tmp.* 2>/dev/null) ]]
}

@test "idmap: dangling with error names the first 10 keys and counts the rest" {
    map_customers
    {
        echo legacy_id,customer_id
        for i in $(seq 100 114); do echo "$i,$((i + 1000))"; done
    } | mkrows public.orders legacy_id:bigint,customer_id:bigint >ord.rs
    run -4 --separate-stderr idmap -q -u id --fk customer_id=cust.map --stats st.json -o o.rs ord.rs
    [[ $stderr == *"15 rows refer to a key not in cust.map"* ]]
    [[ $stderr == *"row (legacy_id)=(109): (customer_id)=(1109)"* ]]
    [[ $stderr != *"(legacy_id)=(110)"* ]]
    [[ $stderr == *"and 5 more"* ]]
    grep -q '"dangling_error":15,' st.json
}

@test "idmap: dangling with :null writes NULL, with :skip leaves the row out" {
    map_customers
    printf 'legacy_id,customer_id,note\n10,1,x\n11,77,y\n12,,z\n' |
        mkrows public.orders legacy_id:bigint,customer_id:bigint >ord.rs
    run -0 --separate-stderr idmap -q -u id --fk customer_id=cust.map:null --stats n.json \
        --map-out n.map -o n.rs ord.rs
    rowcat --csv n.rs >n.csv
    assert_equal "$(field n.csv 10 3)" "$U1"
    assert_equal "$(field n.csv 11 3)" ""
    assert_equal "$(field n.csv 11 4)" "y"
    assert_equal "$(wc -l <n.csv)" 3
    grep -q '"rows":3,"written":3,' n.json
    grep -q '"dangling_error":0,"dangling_null":1,"dangling_skip":0,' n.json

    run -0 --separate-stderr idmap -q -u id --fk customer_id=cust.map:skip --stats s.json \
        --map-out s.map -o s.rs ord.rs
    run -0 --separate-stderr rowcat --csv s.rs
    assert_equal "${#lines[@]}" 2
    [[ ${lines[0]} == 10,* && ${lines[1]} == 12,* ]]
    grep -q '"rows":3,"written":2,' s.json
    grep -q '"dangling_skip":1,' s.json
    # A skipped row is not in the map-out: its children would dangle too.
    run -0 --separate-stderr bash -c 'rowcat --csv s.map | cut -d, -f1'
    assert_output "$(printf '10\n12')"
}

@test "idmap: the summary line and --quiet" {
    run -0 --separate-stderr idmap -u id --map cust_old.map -o t.rs cust.rs
    [[ $stderr == *"table public.customers: 4 rows, 4 written (2 mapped, 2 new)"* ]]
    run -0 --separate-stderr idmap -q -u id --map cust_old.map -o t.rs cust.rs
    assert_equal "$stderr" ""
}

@test "idmap: self-reference to a later, new row gets that row's UUID" {
    printf 'legacy_id,uuid\n1,%s\n' "$U1" | mkmap employees >emp_old.map
    # Row 2's manager is row 5, which comes later and is new.
    printf 'legacy_id,manager_id,name\n1,,boss\n2,5,x\n3,1,y\n5,1,z\n' |
        mkrows public.employees legacy_id:bigint,manager_id:bigint >emp.rs
    rowcat --from-csv --table public.employees --types legacy_id:bigint --key legacy_id \
        <<<$'legacy_id\n1\n2\n3\n5' >emp.keys
    run -0 --separate-stderr idmap -q -u id --map emp_old.map --fk manager_id=self \
        --self-keys emp.keys --map-out emp.map -o emp_t.rs emp.rs
    rowcat --csv emp_t.rs >emp.csv
    rowcat --csv emp.map >map.csv
    u5=$(field emp.csv 5 2)
    [[ $u5 =~ ^$V4$ ]]
    assert_equal "$(field emp.csv 2 3)" "$u5"
    assert_equal "$(field emp.csv 1 2)" "$U1"
    assert_equal "$(field emp.csv 1 3)" ""
    assert_equal "$(field emp.csv 3 3)" "$U1"
    assert_equal "$(field emp.csv 5 3)" "$U1"
    assert_equal "$(field map.csv 5 2)" "$u5"
    assert_equal "$(field map.csv 5 3)" "t"
    assert_equal "$(field map.csv 1 3)" "f"
    assert_equal "$(field map.csv 2 2)" "$(field emp.csv 2 2)"
}

@test "idmap: self-reference to a key not in --self-keys is dangling" {
    printf 'legacy_id,manager_id\n1,\n2,6\n' |
        mkrows public.employees legacy_id:bigint,manager_id:bigint >emp.rs
    run -4 --separate-stderr idmap -q -u id --fk manager_id=self --self-keys emp.rs -o o.rs emp.rs
    [[ $stderr == *"table public.employees: column manager_id: 1 row refers to a key not in"* ]]
    [[ $stderr == *"row (legacy_id)=(2): (manager_id)=(6)"* ]]
    [[ ! -e o.rs ]]
    run -0 --separate-stderr idmap -q -u id --fk manager_id=self:null --self-keys emp.rs -o o.rs emp.rs
    run -0 --separate-stderr bash -c 'rowcat --csv o.rs | cut -d, -f1,3'
    assert_output "$(printf '1,\n2,')"
}

@test "idmap: a row referred to by others but skipped is refused" {
    printf 'legacy_id,manager_id\n1,\n2,5\n5,6\n' |
        mkrows public.employees legacy_id:bigint,manager_id:bigint >emp.rs
    run -4 --separate-stderr idmap -q -u id --fk manager_id=self:skip --self-keys emp.rs -o o.rs emp.rs
    [[ $stderr == *"rows refer to rows of this table that were not written"* ]]
    [[ $stderr == *"key (5)"* ]]
    [[ ! -e o.rs ]]
}

@test "idmap: a row missing from --self-keys (another snapshot) is refused" {
    printf 'legacy_id,manager_id\n1,\n2,1\n' |
        mkrows public.employees legacy_id:bigint,manager_id:bigint >emp.rs
    rowcat --from-csv --table public.employees --types legacy_id:bigint --key legacy_id \
        <<<$'legacy_id\n1' >emp.keys
    run -4 --separate-stderr idmap -q -u id --fk manager_id=self --self-keys emp.keys -o o.rs emp.rs
    [[ $stderr == *"row (legacy_id)=(2) is not in --self-keys emp.keys"* ]]
}

@test "idmap: a composite foreign key maps to one uuid column" {
    printf 'store_id,region,uuid\n1,eu,%s\n1,us,%s\n2,eu,%s\n' "$U1" "$U3" "$U9" |
        mkmap stores store_id:int,uuid:uuid store_id,region >stores.map
    printf 'legacy_id,store_id,store_region,v\n1,1,us,a\n2,2,eu,b\n3,,eu,c\n4,1,,d\n' |
        mkrows public.staff legacy_id:bigint,store_id:int >staff.rs
    run -0 --separate-stderr idmap -q -u id \
        --fk 'store_id,store_region=>store_uuid=stores.map' -o t.rs staff.rs
    run -0 --separate-stderr rowcat --csv --header-row t.rs
    assert_line --index 0 "legacy_id,id,store_uuid,v"
    [[ ${lines[1]} =~ ^1,$V4,$U3,a$ ]]
    [[ ${lines[2]} =~ ^2,$V4,$U9,b$ ]]
    # A NULL in any column of the key is no reference (MATCH SIMPLE).
    [[ ${lines[3]} =~ ^3,$V4,,c$ ]]
    [[ ${lines[4]} =~ ^4,$V4,,d$ ]]

    printf 'legacy_id,store_id,store_region\n1,2,us\n' |
        mkrows public.staff legacy_id:bigint,store_id:int >bad.rs
    run -4 --separate-stderr idmap -q --fk 'store_id,store_region=>store_uuid=stores.map' \
        -o t.rs bad.rs
    [[ $stderr == *"column store_id,store_region: 1 row refers to a key not in stores.map"* ]]
    [[ $stderr == *"row (legacy_id)=(1): (store_id, store_region)=(2, us)"* ]]
}

@test "idmap: a table keyed by text, and a text parent key" {
    printf 'code,uuid\nAB,%s\nZZ,%s\n' "$U1" "$U3" | mkmap countries code:text,uuid:uuid code >c_old.map
    printf 'code,name\nAB,x\nCD,y\nZZ,z\n' | mkrows public.countries code:text code >c.rs
    run -0 --separate-stderr idmap -q -u id --map c_old.map --map-out c.map -o c_t.rs c.rs
    rowcat --csv c.map >c.csv
    assert_equal "$(field c.csv AB 2)" "$U1"
    assert_equal "$(field c.csv ZZ 2)" "$U3"
    assert_equal "$(field c.csv CD 3)" "t"
    printf 'legacy_id,country\n1,CD\n2,ab\n' | mkrows public.cities legacy_id:bigint >city.rs
    run -4 --separate-stderr idmap -q --fk country=c.map -o o.rs city.rs
    [[ $stderr == *"row (legacy_id)=(2): (country)=(ab)"* ]]
    run -0 --separate-stderr idmap -q --fk country=c.map:null -o o.rs city.rs
    run -0 --separate-stderr rowcat --csv o.rs
    assert_output "$(printf '1,%s\n2,' "$(field c.csv CD 2)")"
}

@test "idmap: a map with a duplicate key or out of order is refused (exit 4)" {
    printf 'legacy_id,uuid\n1,%s\n2,%s\n3,%s\n' "$U1" "$U3" "$U9" | mkmap customers >good.map
    # Rewrite record 2's key inside the zstd frame: 1,1,3 (duplicate) and 1,5,3 (unsorted).
    zstd -qdc good.map >plain
    LC_ALL=C perl -0777 -pe 's/r\x022\x25/r\x021\x25/' plain | zstd -q >dup.map
    LC_ALL=C perl -0777 -pe 's/r\x022\x25/r\x025\x25/' plain | zstd -q >unsorted.map
    run -1 cmp -s plain <(zstd -qdc dup.map)
    run -4 --separate-stderr idmap -q -u id --map dup.map -o o.rs cust.rs
    [[ $stderr == *"dup.map"*"duplicate key"* ]]
    [[ ! -e o.rs ]]
    run -4 --separate-stderr idmap -q -u id --map unsorted.map -o o.rs cust.rs
    [[ $stderr == *"unsorted.map"*"order"* ]]
    # The same as a parent's map.
    printf 'legacy_id,customer_id\n10,1\n' | mkrows public.orders legacy_id:bigint,customer_id:int >ord.rs
    run -4 --separate-stderr idmap -q --fk customer_id=dup.map -o o.rs ord.rs
    [[ $stderr == *"duplicate key"* ]]
    run -4 --separate-stderr idmap -q --fk customer_id=unsorted.map -o o.rs ord.rs
    [[ $stderr == *"order"* ]]
}

@test "idmap: a map with a bad or NULL uuid, or other key columns, is refused (exit 4)" {
    printf 'legacy_id,uuid\n1,%s\n2,not-a-uuid\n' "$U1" | mkmap m legacy_id:bigint >bad.map
    run -4 --separate-stderr idmap -q -u id --map bad.map -o o.rs cust.rs
    [[ $stderr == *"map bad.map: record 2: key (legacy_id)=(2): the uuid is not a valid UUID"* ]]
    printf 'legacy_id,uuid\n1,\n' | mkmap m >null.map
    run -4 --separate-stderr idmap -q -u id --map null.map -o o.rs cust.rs
    [[ $stderr == *"the uuid is NULL"* ]]
    printf 'legacy_id,uuid\n1,%s\n' "$U1" | mkmap m legacy_id:text,uuid:uuid >text.map
    run -4 --separate-stderr idmap -q -u id --map text.map -o o.rs cust.rs
    [[ $stderr == *"key columns differ: (legacy_id i) vs (legacy_id t)"* ]]
    printf 'legacy_id,id\n1,%s\n' "$U1" | mkmap m legacy_id:bigint,id:uuid >nouuid.map
    run -4 --separate-stderr idmap -q -u id --map nouuid.map -o o.rs cust.rs
    [[ $stderr == *'no data column "uuid"'* ]]
    [[ ! -e o.rs ]]
}

@test "idmap: a truncated rows stream or map gives exit 4 and no trailer" {
    head -c $(($(stat -c %s cust.rs) - 3)) cust.rs >cut.rs
    run -4 --separate-stderr bash -c 'idmap -q -u id cut.rs >out.rs'
    run -4 --separate-stderr rowcat --count out.rs
    head -c $(($(stat -c %s cust_old.map) - 3)) cust_old.map >cut.map
    run -4 --separate-stderr bash -c 'idmap -q -u id --map cut.map --map-out m.map cust.rs >out.rs'
    run -4 --separate-stderr rowcat --count out.rs
    [[ ! -e m.map ]]
    printf 'legacy_id,customer_id\n10,1\n' | mkrows public.orders legacy_id:bigint,customer_id:int >ord.rs
    run -4 --separate-stderr idmap -q --fk customer_id=cut.map -o o.rs ord.rs
    [[ ! -e o.rs ]]
}

@test "idmap: a full output device gives exit 3" {
    run -3 --separate-stderr bash -c 'idmap -q -u id --map cust_old.map cust.rs >/dev/full'
    [[ $stderr == *"idmap:"* ]]
    run -3 --separate-stderr idmap -q -u id --map cust_old.map --map-out /dev/full/x.map -o o.rs cust.rs
    [[ ! -e o.rs ]]
}

@test "idmap: usage errors exit 2" {
    run -2 --separate-stderr idmap --map cust_old.map cust.rs
    [[ $stderr == *"--map needs --uuid-column"* ]]
    run -2 --separate-stderr idmap --map-out x.map cust.rs
    run -2 --separate-stderr idmap -u id --fk a=self cust.rs
    [[ $stderr == *"--self-keys"* ]]
    run -2 --separate-stderr idmap --fk 'a,b=p.map' cust.rs
    [[ $stderr == *"composite foreign key needs '=>NAME'"* ]]
    run -2 --separate-stderr idmap --fk 'a' cust.rs
    run -2 --separate-stderr idmap --fk 'a=' cust.rs
    run -2 --separate-stderr idmap --fk 'a=p.map:null' --fk 'b=-' -
    [[ $stderr == *"standard input"* ]]
    run -2 --separate-stderr idmap -q --fk nope=cust_old.map cust.rs
    [[ $stderr == *'table public.customers has no column "nope"'* ]]
    run -2 --separate-stderr idmap -q --fk legacy_id=cust_old.map cust.rs
    [[ $stderr == *"key column"* ]]
    run -2 --separate-stderr idmap -q -u name cust.rs
    [[ $stderr == *'two columns named "name"'* ]]
    run -2 --separate-stderr idmap --level 99 cust.rs
    assert_output ""
}

@test "idmap: --stats counts rows and map memory, at most 40 bytes per integer entry" {
    {
        echo legacy_id,uuid
        seq 1 20000 | awk '{ printf "%d,%08x-0000-4000-8000-%012x\n", $1, $1, $1 }'
    } | mkmap big >big.map
    {
        echo legacy_id,customer_id
        seq 1 50 | awk '{ print $1 "," $1 * 400 }'
    } | mkrows public.orders legacy_id:bigint,customer_id:bigint >ord.rs
    run -0 --separate-stderr idmap -q -u id --fk customer_id=big.map --stats st.json -o o.rs ord.rs
    run -0 --separate-stderr cat st.json
    [[ $output == '{"table":"public.orders","rows":50,"written":50,"mapped":0,"new":50,'* ]]
    [[ $output =~ \"map_entries\":20000, ]]
    [[ $output =~ \"bytes_per_entry\":([0-9.]+)\} ]]
    per=${BASH_REMATCH[1]}
    awk -v p="$per" 'BEGIN { exit !(p >= 24 && p <= 40) }'
    run -0 --separate-stderr bash -c 'rowcat --csv o.rs | awk -F, "\$1 == 7 { print \$3 }"'
    assert_output "00000af0-0000-4000-8000-000000000af0"
}
