#!/usr/bin/env bats
# The manual and the README (issue 9): a section 1 page for every program in cmd/ (NAME.1)
# and every script in scripts/ (driftless-NAME.1, the name make install gives
# it), each rendering without a warning and naming every option its --help
# lists; make install installs a page for everything it puts in bin/.

load helpers

MAN="$REPO/share/man"

# programs: the names of cmd/NAME.c and cmd/NAME/, as the Makefile finds them.
programs() {
    local f
    for f in "$REPO"/cmd/*.c "$REPO"/cmd/*/; do
        f=${f%/}
        f=${f##*/}
        printf '%s\n' "${f%.c}"
    done | sort -u
}

# scripts: what make install puts in bin/ as driftless-NAME.
scripts() {
    local f
    for f in "$REPO"/scripts/*; do
        case $f in *.sql | *.md | *.sh) continue ;; esac
        printf '%s\n' "${f##*/}"
    done
}

# page_of NAME KIND: the page of a program (cmd) or a script.
page_of() {
    if [[ $2 == cmd ]]; then
        printf '%s/%s.1\n' "$MAN" "$1"
    else
        printf '%s/driftless-%s.1\n' "$MAN" "$1"
    fi
}

# lint PAGE: groff's warnings (all of them, -ww) for PAGE; empty when clean.
lint() {
    LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$1" 2>&1
}

# options: the long options (--name) named in the text on stdin, sorted.
options() {
    grep -oE -- '(^|[^[:alnum:]-])--[a-z][a-z0-9-]*' | sed 's/^[^-]*//' | sort -u
}

setup() {
    command -v groff >/dev/null || fail "groff is missing (Debian package groff-base)"
}

@test "docs: every program and script has a section 1 page" {
    local p missing=()
    [[ -n $(programs) && -n $(scripts) ]] || fail "found no programs or scripts"
    for p in $(programs); do
        [[ -f $(page_of "$p" cmd) ]] || missing+=("$p: $(page_of "$p" cmd)")
    done
    for p in $(scripts); do
        [[ -f $(page_of "$p" script) ]] || missing+=("scripts/$p: $(page_of "$p" script)")
    done
    ((${#missing[@]} == 0)) || fail "no manual page for: ${missing[*]}"
}

@test "docs: the lint check finds a broken page" {
    printf '.TH X 1\n.SH NAME\nx \\- y\n.BOGUS\n' >"$BATS_TEST_TMPDIR/bad.1"
    [[ -n $(lint "$BATS_TEST_TMPDIR/bad.1") ]] || fail "groff -ww found nothing wrong"
}

@test "docs: every page renders without a warning and has the usual sections" {
    local f out name want have sec
    for f in "$MAN"/*.[15]; do
        out=$(lint "$f")
        [[ -z $out ]] || fail "${f##*/}: $out"
        name=${f##*/}
        name=${name%.*}
        # .TH carries the page's own name, upper case, - or \-.
        head -n 1 "$f" | sed 's/\\-/-/g' | grep -qi "^\.TH \"\?${name}\"\? [15] " ||
            fail "${f##*/}: .TH does not name $name"
        want=(NAME DESCRIPTION 'SEE ALSO')
        [[ $f == *.5 ]] || want+=(SYNOPSIS OPTIONS 'EXIT STATUS')
        have=$(sed -n 's/^\.SH "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$f")
        for sec in "${want[@]}"; do
            grep -qxF "$sec" <<<"$have" || fail "${f##*/}: no $sec section"
        done
    done
}

@test "docs: every option a --help lists is in the page" {
    local p kind cmd help page missing=()
    for kind in cmd script; do
        for p in $(if [[ $kind == cmd ]]; then programs; else scripts; fi); do
            page=$(page_of "$p" "$kind")
            [[ -f $page ]] || continue # the first test names it
            if [[ $kind == cmd ]]; then
                cmd=$BIN/$p
                [[ -x $cmd ]] || fail "$p is not built"
            else
                cmd=$REPO/scripts/$p
            fi
            help=$("$cmd" --help) || fail "$p --help failed"
            # The options as typed in the page's source (\- and fonts undone).
            missing+=($(comm -23 <(options <<<"$help") \
                <(sed 's/\\-/-/g; s/\\f[BIRP]//g' "$page" | options) | sed "s/^/$p:/"))
        done
    done
    ((${#missing[@]} == 0)) || fail "options in --help but not in the page: ${missing[*]}"
}

@test "docs: make install puts a page beside every program it installs" {
    local dest=$BATS_TEST_TMPDIR/stage f name
    # A make that runs this test must not lend its jobserver or flags.
    run env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$REPO" install PREFIX=/usr DESTDIR="$dest"
    [[ $status -eq 0 ]] || fail "make install: $output"
    [[ -n $(ls "$dest/usr/bin") ]] || fail "make install installed no program"
    for f in "$dest"/usr/bin/*; do
        name=${f##*/}
        [[ -f $dest/usr/share/man/man1/$name.1 ]] || fail "no page installed for $name"
    done
    [[ -f $dest/usr/share/man/man5/driftless-map.5 ]] || fail "driftless-map(5) not installed"
    # And make uninstall takes them away again.
    run env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$REPO" uninstall PREFIX=/usr DESTDIR="$dest"
    [[ $status -eq 0 ]] || fail "make uninstall: $output"
    run find "$dest" -type f
    [[ -z $output ]] || fail "make uninstall left: $output"
}

@test "docs: the README names every program and script, and its first commands exist" {
    local p missing=()
    for p in $(programs) $(scripts); do
        grep -qF -- "| \`$p\` |" "$REPO/README.md" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) || fail "not in the README's tables: ${missing[*]}"
    # The two commands at the top: the demo and the tests.
    run awk '/^```sh$/ { n++; next } n == 1 && /^```$/ { exit } n == 1 { print $1 }' "$REPO/README.md"
    assert_output $'scripts/demo\n./.ci/run'
    [[ -x $REPO/scripts/demo && -x $REPO/.ci/run ]] || fail "a first command is not executable"
    run "$REPO/.ci/run" --help
    assert_output --partial "--install-only"
}
