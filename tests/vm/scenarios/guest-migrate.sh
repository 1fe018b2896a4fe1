# The launcher is moved between host CPUs every few milliseconds while the guest runs its suite
# (five times over): per-CPU switcher state must follow it. With one CPU this still re-pins.
# timeout: 300
. /scenarios/lib.sh
load_lg
n=0
while [ $n -lt 5 ]; do
    lguest 32m /lg/lgtest lgtest=suite < /dev/null > /tmp/o 2>&1 &
    pid=$!
    hop $pid 3000
    wait $pid; rc=$?
    suite_passed /tmp/o || { cat /tmp/o; fail "suite failed while migrating (run $n)"; }
    [ $rc = 0 ] || fail "launcher exit $rc (run $n)"
    echo "run $n: suite passed while moved $moves times across $ncpu CPUs"
    n=$((n + 1))
done
check_unpinned
unload_lg
