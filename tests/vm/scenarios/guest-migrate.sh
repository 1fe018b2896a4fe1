# The launcher is moved between host CPUs every few milliseconds while the guest runs its suite
# (five times over): per-CPU switcher state must follow it. With one CPU this still re-pins.
# timeout: 300
. /scenarios/lib.sh
load_lg
ncpu=$(grep -c ^processor /proc/cpuinfo)
n=0
while [ $n -lt 5 ]; do
    lguest 32m /lg/lgtest lgtest=suite < /dev/null > /tmp/o 2>&1 &
    pid=$!
    moves=0
    while kill -0 $pid 2>/dev/null; do
        cpu=$((moves % ncpu))
        taskset -p $((1 << cpu)) $pid > /dev/null 2>&1 && moves=$((moves + 1))
        usleep 3000
    done
    wait $pid; rc=$?
    grep -q '^SUMMARY: [0-9]* tests, 0 failures' /tmp/o || { cat /tmp/o; fail "suite failed while migrating (run $n)"; }
    [ $rc = 0 ] || fail "launcher exit $rc (run $n)"
    echo "run $n: suite passed while moved $moves times across $ncpu CPUs"
    n=$((n + 1))
done
[ "$(cat /sys/module/lg/parameters/pinned_pages)" = 0 ] || fail "pages left pinned"
unload_lg
