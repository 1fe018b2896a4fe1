# Helpers sourced by every scenario. A scenario fails by exiting non-zero; `fail` says why.
LGKO=/lg.ko
# Pids of the guests started in the background (`guest_bg`): `die` kills them all.
bg=
# Guest runs judged "not ok" so far (`verdict`); `no_fails` fails the scenario if there are any.
fails=0

fail() {
    echo "FAIL: $*"
    exit 1
}

ok() {
    echo "ok - $*"
}

# die WHY: fail, killing every background guest first (lg.ko must unload afterwards).
die() {
    local p
    for p in $bg; do kill -9 "$p" 2>/dev/null; done
    fail "$@"
}

load_lg() {
    insmod $LGKO "$@" || fail "insmod lg.ko $* failed"
    [ -c /dev/lguest ] || fail "/dev/lguest missing after insmod"
}

unload_lg() {
    rmmod lg || fail "rmmod lg failed (module still in use?)"
    [ ! -e /dev/lguest ] || fail "/dev/lguest still exists after rmmod"
}

# lg_param NAME: one of lg.ko's counters in /sys/module/lg/parameters (pinned_pages, table_pages).
lg_param() {
    cat /sys/module/lg/parameters/"$1"
}

# check_unpinned: no guest page may stay pinned once the guests are gone.
check_unpinned() {
    local pinned
    pinned=$(lg_param pinned_pages)
    [ "$pinned" = 0 ] || die "$pinned guest pages still pinned"
}

# check_clean TABLES: after all guests nothing is pinned, and lg.ko holds TABLES page-table pages
# again (what it held before them: the switcher's own).
check_clean() {
    local pinned tables
    pinned=$(lg_param pinned_pages)
    tables=$(lg_param table_pages)
    echo "after all guests: pinned pages $pinned, page-table pages $tables (switcher's own: $1)"
    [ "$pinned" = 0 ] || die "$pinned guest pages still pinned"
    [ "$tables" = "$1" ] || die "shadow page tables leaked: $tables, want $1"
}

# meminfo FIELD: the value in kB.
meminfo() {
    awk -v f="$1:" '$1==f {print $2}' /proc/meminfo
}

settle() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
    sleep 1
}

# suite_passed FILE: the test guest's summary line in FILE counts no failure.
suite_passed() {
    grep -q '^SUMMARY: [0-9]* tests, 0 failures' "$1"
}

# wait_for FILE TEXT SECONDS: until FILE has a line matching TEXT (a grep pattern); status 1 if
# SECONDS pass first.
wait_for() {
    local i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        usleep 100000
        i=$((i + 1))
        [ $i -lt $(($3 * 10)) ] || return 1
    done
}

# guest_bg NAME SECONDS ARGS...: the test guest (32 MiB, stdin closed) with ARGS in the
# background, killed after SECONDS; its output in /tmp/NAME, its pid in $pid_NAME and in $bg.
guest_bg() {
    local name=$1 secs=$2
    shift 2
    timeout -s KILL "$secs" lguest 32m /lg/lgtest "$@" < /dev/null > /tmp/"$name" 2>&1 &
    eval "pid_$name=\$!"
    bg="$bg $!"
}

# guest_up NAME TEXT: background guest NAME prints a line matching TEXT within 30 s, or the
# scenario dies with its output.
guest_up() {
    wait_for /tmp/"$1" "$2" 30 || { cat /tmp/"$1"; die "guest $1 did not come up (no '$2')"; }
}

# echo_guest NAME NET IP: a net-echo guest at IP on NET (--sharenet=FILE or --tunnet=...) in the
# background (see guest_bg), once it is up.
echo_guest() {
    guest_bg "$1" 120 "$2" lgtest=net-echo ip="$3"/24
    guest_up "$1" '^net: echo on'
}

# stop_guest NAME [ALSO]: end background guest NAME; its output must have no line matching FAIL,
# PANIC, UNEXPECTED (or the pattern ALSO).
stop_guest() {
    local pid bad='FAIL\|PANIC\|UNEXPECTED'
    [ -z "$2" ] || bad="$bad\\|$2"
    eval "pid=\$pid_$1"
    kill "$pid" 2>/dev/null
    wait "$pid"
    if grep -q "$bad" /tmp/"$1"; then
        cat /tmp/"$1"
        die "the guest in /tmp/$1 reported a failure"
    fi
}

# has_texts FILE TEXTS: FILE contains every one of TEXTS, fixed strings separated by ' && '.
has_texts() {
    local rest="$2" text
    while [ -n "$rest" ]; do
        text=${rest%% && *}
        [ "$text" = "$rest" ] && rest= || rest=${rest#* && }
        grep -qF -- "$text" "$1" || return 1
    done
}

# verdict NAME RC WANT TEXTS FILE: a guest run that had to exit with status WANT and print TEXTS
# (see has_texts) into FILE, and exited with RC: "ok - NAME ..." or "not ok - NAME ..." with the
# end of FILE, counted in $fails. Status 0 for ok.
verdict() {
    if [ "$2" = "$3" ] && has_texts "$5" "$4"; then
        echo "ok - $1: exit $2: $(tail -1 "$5")"
        return 0
    fi
    echo "not ok - $1: exit $2 (want $3), want '$4', got:"
    sed 's/^/    /' "$5" | tail -8
    fails=$((fails + 1))
    return 1
}

# expect NAME EXIT TEXTS: wait for background guest NAME; it must exit with EXIT and print TEXTS
# (see verdict).
expect() {
    eval "wait \$pid_$1"
    verdict "$1" $? "$2" "$3" /tmp/"$1"
}

# all_ran TABLE RAN WHAT: RAN is the number of rows of TABLE (one `|`-separated row per run).
all_ran() {
    local rows
    rows=$(grep -c '|' "$1")
    [ "$2" = "$rows" ] || die "only $2 of $rows $3 ran"
}

# no_fails WHAT: no guest run was judged "not ok".
no_fails() {
    [ "$fails" = 0 ] || die "$fails $1 were not handled as expected"
}

# hop PID USECS: move PID to the next CPU every USECS microseconds until it exits; the CPUs in
# $ncpu, the moves made in $moves.
hop() {
    ncpu=$(grep -c ^processor /proc/cpuinfo)
    moves=0
    while kill -0 "$1" 2>/dev/null; do
        taskset -p $((1 << (moves % ncpu))) "$1" > /dev/null 2>&1 && moves=$((moves + 1))
        usleep "$2"
    done
}
