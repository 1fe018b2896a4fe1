# An idle guest costs no host CPU (tickless): a guest halted with nothing to wake it sleeps in the
# host until a signal. Two ways to be idle: `hlt` with the virtual IF off (emulated), and the
# HALT hypercall with no timer armed (lgtest=idle, once the guest has it). Each runs 10 s; the
# launcher's CPU time over that span must stay under 0.2 s. Then SIGINT ends it cleanly.
# timeout: 120
. /scenarios/lib.sh
load_lg
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
for mode in hlt idle; do
    lguest 32m /lg/lgtest lgtest=$mode < /dev/null > /tmp/o 2>&1 &
    pid=$!
    sleep 2
    if ! kill -0 $pid 2>/dev/null; then
        if grep -q "unknown mode" /tmp/o; then echo "skip $mode: not in this lgtest"; continue; fi
        cat /tmp/o; fail "$mode: the guest did not stay idle"
    fi
    t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    sleep 10
    t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    ms=$(( (t1 - t0) * 1000 / hz ))
    echo "$mode: the idle guest's launcher used ${ms} ms of CPU in 10 s"
    kill -INT $pid
    wait $pid; rc=$?
    [ $rc = 130 ] || fail "$mode: launcher exit $rc after SIGINT, want 130"
    [ $ms -lt 200 ] || fail "$mode: an idle guest used ${ms} ms of host CPU in 10 s"
done
check_unpinned
unload_lg
