# A guest that spins forever with its (virtual) interrupts off must not take the host with it:
# the host timer still forces exits, other processes run, and Ctrl-C stops the launcher cleanly.
# timeout: 60
. /scenarios/lib.sh
load_lg
lguest 32m /lg/lgtest lgtest=irq-off-loop < /dev/null > /tmp/o 2>&1 &
pid=$!
sleep 1
grep -q '^looping' /tmp/o || fail "the guest did not start looping: $(cat /tmp/o)"
# The host stays responsive while the guest spins (on -smp 1 it shares the only CPU).
t0=$(cut -d' ' -f1 /proc/uptime)
i=0; while [ $i -lt 2000 ]; do i=$((i + 1)); done
t1=$(cut -d' ' -f1 /proc/uptime)
echo "a 2000-step shell loop beside the spinning guest took $(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}') s"
kill -0 $pid || fail "the launcher died on its own"
kill -INT $pid
k=0; while kill -0 $pid 2>/dev/null && [ $k -lt 50 ]; do sleep 0.1; k=$((k + 1)); done
kill -0 $pid 2>/dev/null && fail "the launcher ignored SIGINT for 5 s"
wait $pid; rc=$?
[ $rc = 130 ] || fail "launcher exit status $rc after SIGINT, want 130"
grep -q 'stopped by SIGINT' /tmp/o || fail "no 'stopped by SIGINT' message: $(cat /tmp/o)"
ok "SIGINT stopped the spinning guest (exit 130) after $((k * 100)) ms"
check_unpinned
unload_lg
