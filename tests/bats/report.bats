#!/usr/bin/env bats
# scripts/report: a migrate run of the shop fixture (load, drift 1, migrate,
# validate into the same run directory) rendered from its run directory and
# from the state schema; report.json against share/report/report.schema.json;
# the HTML self-contained, its SVG well-formed, rendered by headless Chromium
# when it is installed; every string escaped for JSON and HTML.

load helpers

SCHEMA="$REPO/share/report/report.schema.json"

setup_file() {
    scratch_setup_file
    [[ ${SKIP_DB:-} == 1 ]] && return 0
    shop_load
    "$REPO/scripts/shop-fixture" drift 1 >/dev/null
    export RUN="$BATS_FILE_TMPDIR/run"
    # Rejected rows (exit 1) are a result the report must show, not a failure here.
    local rc=0
    "$REPO/scripts/migrate" --map "$SHOP/shop.map" --run-dir "$RUN" --quiet 2>/dev/null || rc=$?
    if ((rc > 1)); then
        echo "setup_file: migrate exited $rc" >&2
        return 1
    fi
    rc=0
    "$REPO/scripts/validate" --map "$SHOP/shop.map" --run-dir "$RUN" --quiet >/dev/null 2>&1 || rc=$?
    if ((rc > 1)); then
        echo "setup_file: validate exited $rc" >&2
        return 1
    fi
}

teardown_file() {
    scratch_teardown_file
}

# check_schema FILE: FILE against the report schema, with the jsonschema
# module when python3 has it, else with the small validator below, which
# knows the keywords the schema uses (and fails on any other).
check_schema() {
    python3 - "$SCHEMA" "$1" <<'EOF'
import json, re, sys

schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
try:
    import jsonschema
except ImportError:
    jsonschema = None
if jsonschema is not None:
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
    for e in errors:
        print("jsonschema:", list(e.absolute_path), e.message)
    sys.exit(1 if errors else 0)

KNOWN = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "required",
         "additionalProperties", "properties", "items", "enum", "const", "minimum",
         "maximum", "minLength", "pattern", "oneOf", "anyOf"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}

def is_type(v, t):
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, TYPES[t])

def check(v, s, path):
    unknown = set(s) - KNOWN
    if unknown:
        raise SystemExit("mini validator: unsupported keywords %s" % sorted(unknown))
    if "$ref" in s:
        ref = s["$ref"]
        assert ref.startswith("#/$defs/"), ref
        return check(v, schema["$defs"][ref[8:]], path)
    errs = []
    if "type" in s:
        ts = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(is_type(v, t) for t in ts):
            return ["%s: %r is not of type %s" % (path, v, ts)]
    if "const" in s and v != s["const"]:
        errs.append("%s: %r is not %r" % (path, v, s["const"]))
    if "enum" in s and v not in s["enum"]:
        errs.append("%s: %r not in %r" % (path, v, s["enum"]))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            errs.append("%s: %r < %r" % (path, v, s["minimum"]))
        if "maximum" in s and v > s["maximum"]:
            errs.append("%s: %r > %r" % (path, v, s["maximum"]))
    if isinstance(v, str):
        if "minLength" in s and len(v) < s["minLength"]:
            errs.append("%s: too short" % path)
        if "pattern" in s and not re.search(s["pattern"], v):
            errs.append("%s: %r does not match %s" % (path, v, s["pattern"]))
    if isinstance(v, dict):
        for k in s.get("required", []):
            if k not in v:
                errs.append("%s: %s is required" % (path, k))
        props = s.get("properties", {})
        for k, x in v.items():
            if k in props:
                errs += check(x, props[k], path + "." + k)
            elif s.get("additionalProperties") is False:
                errs.append("%s: %s is not allowed" % (path, k))
    if isinstance(v, list) and "items" in s:
        for i, x in enumerate(v):
            errs += check(x, s["items"], "%s[%d]" % (path, i))
    if "oneOf" in s:
        ok = [b for b in s["oneOf"] if not check(v, b, path)]
        if len(ok) != 1:
            errs.append("%s: matches %d of oneOf" % (path, len(ok)))
    if "anyOf" in s and not any(not check(v, b, path) for b in s["anyOf"]):
        errs.append("%s: matches none of anyOf" % path)
    return errs

errors = check(doc, schema, "$")
for e in errors:
    print("schema:", e)
sys.exit(1 if errors else 0)
EOF
}

@test "report --run-dir writes report.json, report.txt and report.html, owner-only" {
    scratch_setup
    rm -f "$RUN"/report.*
    run -0 --separate-stderr report --run-dir "$RUN" --quiet
    [[ -z $output ]]
    for f in report.json report.txt report.html; do
        [[ -s $RUN/$f ]] || fail "$f is missing or empty"
        [[ $(stat -c %a "$RUN/$f") == 600 ]] || fail "$f is readable by others: $(stat -c %a "$RUN/$f")"
    done
    # Without --quiet it prints the text report and where the page is.
    run -0 --separate-stderr report --run-dir "$RUN"
    assert_output --partial "public.customers"
    assert_output --partial "$RUN/report.html"
    # The text report carries migrate's own per-table counts.
    while IFS=' ' read -r table ins upd del unch fail; do
        grep -Eq "^$table +$ins +$upd +$del +$unch +$fail " "$RUN/report.txt" ||
            fail "report.txt lacks $table $ins $upd $del $unch $fail"
    done < <(python3 -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r["table"], r["inserted"], r["updated"], r["deleted"], r["unchanged"], r["failed"])
' "$RUN/summary.jsonl")
}

@test "report.json validates against the schema and holds the run's counts and validation" {
    scratch_setup
    run -0 --separate-stderr report --run-dir "$RUN" --quiet
    run -0 check_schema "$RUN/report.json"
    run -0 python3 - "$RUN" <<'EOF'
import json, sys
d = sys.argv[1]
rep = json.load(open(d + "/report.json"))
summary = {r["table"]: r for r in map(json.loads, open(d + "/summary.jsonl"))}
run_id = int(open(d + "/run.id").read())
assert rep["run"]["id"] == run_id, rep["run"]
assert rep["run"]["status"] in ("ok", "rejects"), rep["run"]
assert rep["run"]["exit_code"] == (0 if rep["run"]["status"] == "ok" else 1), rep["run"]
assert rep["source"] == "run-dir+state", rep["source"]
assert rep["run"]["host"] and rep["run"]["db_user"] == "target_owner", rep["run"]
assert [t["table"] for t in rep["tables"]] == [l.strip() for l in open(d + "/tables")]
for t in rep["tables"]:
    s = summary[t["table"]]
    for k in ("inserted", "updated", "deleted", "unchanged", "failed"):
        assert t[k] == s[k], (t["table"], k, t[k], s[k])
    assert len(t["rejects"]) == min(t["failed"], 50), t
    assert t["seconds"]["compute"] is not None and t["seconds"]["apply"] is not None, t
for k in ("inserted", "updated", "deleted", "failed"):
    assert rep["totals"][k] == sum(t[k] for t in rep["tables"]), k
assert rep["totals"]["inserted"] > 0 and rep["totals"]["deleted"] > 0, rep["totals"]
assert {s["stage"] for s in rep["stages"]} >= {"compute", "upsert", "delete"}, rep["stages"]
v = [json.loads(l) for l in open(d + "/validate.jsonl")]
assert rep["validate"] is not None and len(rep["validate"]["tables"]) == len(v)
for a, b in zip(rep["validate"]["tables"], v):
    assert (a["table"], a["missing"], a["extra"], a["result"]) == (b["table"], b["missing"], b["extra"], b["result"])
EOF
}

@test "report RUN_ID from the state schema gives the same per-table counts" {
    scratch_setup
    run -0 --separate-stderr report --run-dir "$RUN" --quiet
    id=$(cat "$RUN/run.id")
    run -0 --separate-stderr report "$id" --out "$BATS_TEST_TMPDIR/state" --quiet
    run -0 check_schema "$BATS_TEST_TMPDIR/state/report.json"
    run -0 python3 - "$RUN/report.json" "$BATS_TEST_TMPDIR/state/report.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert b["source"] == "state", b["source"]
assert a["run"]["id"] == b["run"]["id"] and a["run"]["status"] == b["run"]["status"]
keys = ("table", "inserted", "updated", "deleted", "unchanged", "failed")
ta = [tuple(t[k] for k in keys) for t in a["tables"]]
tb = [tuple(t[k] for k in keys) for t in b["tables"]]
assert ta == tb, (ta, tb)
ra = sorted((t["table"], r["key"], r["reason"]) for t in a["tables"] for r in t["rejects"])
rb = sorted((t["table"], r["key"], r["reason"]) for t in b["tables"] for r in t["rejects"])
assert ra == rb, (ra, rb)
assert b["totals"] == {**a["totals"], "rows_per_s": b["totals"]["rows_per_s"]}, (a["totals"], b["totals"])
EOF
    # The default output directory for a RUN_ID is ./report-RUN_ID.
    cd "$BATS_TEST_TMPDIR"
    run -0 --separate-stderr report "$id" --quiet
    [[ -s $BATS_TEST_TMPDIR/report-$id/report.html ]]
}

@test "the HTML report is self-contained, shows the counts and has well-formed SVG charts" {
    scratch_setup
    run -0 --separate-stderr report --run-dir "$RUN" --quiet
    html="$RUN/report.html"
    run -0 grep -c '<svg' "$html"
    ((output >= 2)) || fail "expected the two charts, found $output <svg>"
    # Nothing to fetch: no scripts, links, images, imports or external URLs.
    run -1 grep -Eio '<script|<link|<img|@import|url\(|src=|href=' "$html"
    run -1 grep -Eo 'https?://[^"]*' <(grep -v 'xmlns="http://www.w3.org/2000/svg"' "$html")
    run -0 python3 - "$html" "$RUN/report.json" <<'EOF'
import html.parser, json, re, sys
import xml.etree.ElementTree as ET
page = open(sys.argv[1], encoding="utf-8").read()
rep = json.load(open(sys.argv[2]))
svgs = re.findall(r"<svg.*?</svg>", page, re.S)
for s in svgs:
    root = ET.fromstring(s)
    assert root.tag.endswith("svg") and len(list(root.iter())) > 5
class Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.text = []
    def handle_data(self, d):
        self.text.append(d)
p = Text()
p.feed(page)
text = " ".join(p.text)
def fmt(n):
    return "{:,}".format(n)
for t in rep["tables"]:
    assert t["table"] in text, t["table"]
tot = rep["totals"]
for k in ("inserted", "updated", "deleted", "failed"):
    assert re.search(r"\b%s\s+%s\b" % (re.escape(fmt(tot[k])), k), text), (k, tot[k])
# every table's counts in its row of the table
tables = page[page.index("<h2>Tables</h2>"):]
tables = tables[:tables.index("</table>")]
rows = re.findall(r"<tr><td class=\"name\">(.*?)</td>(.*?)</tr>", tables)
byname = {html.unescape(n): re.findall(r">([0-9,]+)<", r) for n, r in rows}
for t in rep["tables"]:
    cells = byname[t["table"]]
    assert cells[:3] == [fmt(t["inserted"]), fmt(t["updated"]), fmt(t["deleted"])], (t["table"], cells)
EOF
}

@test "the HTML report renders in headless Chromium and shows the run's counts" {
    scratch_setup
    local chromium
    chromium=$(command -v chromium || command -v chromium-browser || true)
    [[ -n $chromium ]] || skip "chromium is not installed"
    run -0 --separate-stderr report --run-dir "$RUN" --quiet
    shot="$BATS_TEST_TMPDIR/report.png"
    run -0 --separate-stderr timeout 120 "$chromium" --headless --no-sandbox --disable-gpu \
        --user-data-dir="$BATS_TEST_TMPDIR/chromium" --window-size=1200,2400 \
        --screenshot="$shot" "file://$RUN/report.html"
    [[ -s $shot ]] || fail "no screenshot"
    run -0 python3 -c '
import struct, sys
b = open(sys.argv[1], "rb").read(24)
assert b[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", b[16:24])
assert w >= 1000 and h >= 1000, (w, h)
' "$shot"
    run -0 --separate-stderr timeout 120 "$chromium" --headless --no-sandbox --disable-gpu \
        --user-data-dir="$BATS_TEST_TMPDIR/chromium" --dump-dom "file://$RUN/report.html"
    dom=$output
    read -r ins upd del fail < <(python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))["totals"]
print("{:,} {:,} {:,} {:,}".format(t["inserted"], t["updated"], t["deleted"], t["failed"]))
' "$RUN/report.json")
    [[ $dom == *"<svg"* ]] || fail "the rendered page has no svg"
    for n in "$ins" "$upd" "$del" "$fail"; do
        [[ $dom == *"<div class=\"n\">$n</div>"* ]] || fail "the rendered page does not show $n"
    done
    [[ $dom == *public.customers* ]]
}

# A run directory made by hand: a table whose name needs escaping everywhere.
weird_run_dir() {
    local d="$1" t="$2"
    mkdir -p "$d/stats"
    printf '%s\n' "$t" 'public.plain' >"$d/tables"
    printf '%s\n' 7 >"$d/run.id"
    local jt
    jt=$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$t")
    printf '{"table":%s,"source_rows":12,"target_rows":10,"insert":3,"update":2,"delete":1,"unchanged":6}\n' "$jt" >"$d/stats/$t.diff.json"
    printf '0.25\n' >"$d/stats/$t.compute.seconds"
    printf '{"table": %s, "inserted": 3, "updated": 2, "deleted": 0, "failed": 0, "batches": 1, "seconds": 0.5}\n' "$jt" >"$d/stats/$t.upsert.json"
    printf '{"table": %s, "inserted": 0, "updated": 0, "deleted": 1, "failed": 0, "batches": 1, "seconds": 0.25}\n' "$jt" >"$d/stats/$t.delete.json"
    printf '{"table":"public.plain","source_rows":1,"target_rows":1,"insert":0,"update":0,"delete":0,"unchanged":1}\n' >"$d/stats/public.plain.diff.json"
    printf '0.125\n' >"$d/stats/public.plain.compute.seconds"
    printf '{"table":%s,"source_rows":12,"target_rows":12,"missing":0,"extra":0,"different":0,"uuid_mismatch":0,"matched":12,"success_rate":100.00,"result":"match","missing_keys":[],"extra_keys":[],"different_keys":[],"uuid_mismatch_keys":[]}\n' "$jt" >"$d/validate.jsonl"
    {
        echo '2026-01-02T03:04:05Z INFO run=7 table=- stage=prepare run directory x'
        echo '2026-01-02T03:04:09Z INFO run=7 table=- stage=finish exit 0'
    } >"$d/log"
}

@test "report escapes table names for JSON, HTML and text (quotes, <, &, backslash, non-ASCII)" {
    t=$'public.we"ird<b>&\'x\\y ü'
    d="$BATS_TEST_TMPDIR/weird"
    weird_run_dir "$d" "$t"
    run -0 --separate-stderr report --run-dir "$d" --no-state --quiet
    run -0 check_schema "$d/report.json"
    run -0 python3 - "$d/report.json" "$t" <<'EOF'
import json, sys
rep = json.load(open(sys.argv[1], encoding="utf-8"))
t = sys.argv[2]
assert rep["source"] == "run-dir" and rep["run"]["id"] == 7 and rep["run"]["status"] == "ok", rep["run"]
assert rep["run"]["started_at"] == "2026-01-02T03:04:05Z" and rep["run"]["seconds"] == 4, rep["run"]
w = rep["tables"][0]
assert w["table"] == t, w["table"]
assert (w["inserted"], w["updated"], w["deleted"], w["unchanged"], w["failed"]) == (3, 2, 1, 6, 0), w
assert w["seconds"] == {"compute": 0.25, "upsert": 0.5, "delete": 0.25, "retry": None, "apply": 0.75, "total": 1.0}, w["seconds"]
assert rep["validate"]["tables"][0]["table"] == t
EOF
    html=$(cat "$d/report.html")
    [[ $html == *'public.we&quot;ird&lt;b&gt;&amp;&#39;x\y ü'* ]] || fail "the table name is not escaped in the HTML"
    [[ $html != *'<b>'* && $html != *'ird"'* ]] || fail "a raw table name reached the HTML"
    run -0 python3 -c '
import re, sys
import xml.etree.ElementTree as ET
page = open(sys.argv[1], encoding="utf-8").read()
for s in re.findall(r"<svg.*?</svg>", page, re.S):
    ET.fromstring(s)
' "$d/report.html"
    run -0 grep -F "$t" "$d/report.txt"
}

@test "report: usage errors exit 2, an unknown run 2, a missing run directory 3" {
    run -2 --separate-stderr report
    [[ $stderr == *"RUN_ID or --run-dir"* && $stderr == *"Try 'report --help'"* ]]
    run -2 --separate-stderr report --bogus
    [[ $stderr == *"unrecognized option '--bogus'"* ]]
    run -2 --separate-stderr report 12abc
    run -2 --separate-stderr report 1 2
    run -2 --separate-stderr report 1 --run-dir "$BATS_TEST_TMPDIR"
    run -2 --separate-stderr report --run-dir
    run -3 --separate-stderr report --run-dir /nonexistent/run
    run -0 report --help
    [[ ${lines[0]} == "Usage: report --run-dir DIR [OPTION]..." ]]
    run -0 report --version
    assert_output "report (driftless) 0.1.0"
    scratch_setup
    run -2 --separate-stderr report 999999 --out "$BATS_TEST_TMPDIR/none"
    [[ $stderr == *"run 999999: no such run"* ]]
}

@test "report --run-dir on a dead target falls back to the files and says so" {
    d="$BATS_TEST_TMPDIR/dead"
    weird_run_dir "$d" public.t
    TARGET_DATABASE_URL="host=/nonexistent port=1 dbname=x user=y password=SENTINEL-report" \
        run -0 --separate-stderr report --run-dir "$d" --quiet
    [[ $stderr == *"could not be read"* ]] || fail "no warning: $stderr"
    [[ $stderr != *SENTINEL* ]] || fail "the password was printed"
    run -1 grep -r SENTINEL "$d"
    run -0 python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["source"] == "run-dir", r["source"]' "$d/report.json"
}
