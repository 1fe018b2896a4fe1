# NMIs injected (QEMU monitor `nmi`, which targets CPU 0) while a guest runs on CPU 0: each must
# reach the host's NMI handler (none may be lost in guest mode or mid-switch), and the guest must
# be unaffected. ("Uhhuh. NMI received for unknown reason" in dmesg is the host's normal reaction
# to an NMI with no source.)
# timeout: 300
. /scenarios/lib.sh
load_lg
nmis() { awk '/^ *NMI:/ { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s }' /proc/interrupts; }
before=$(nmis)
n=0
while [ $n -lt 4 ]; do
    taskset 1 lguest 32m /lg/lgtest lgtest=suite < /dev/null > /tmp/o 2>&1 &
    pid=$!
    echo "@@ NMI 5"
    wait $pid; rc=$?
    suite_passed /tmp/o || { cat /tmp/o; fail "suite failed under NMIs (run $n)"; }
    [ $rc = 0 ] || fail "launcher exit $rc (run $n)"
    n=$((n + 1))
done
# The injections trail the guests a little; wait for them (a lost NMI never arrives).
k=0
while [ $(( $(nmis) - before )) -lt 20 ] && [ $k -lt 100 ]; do sleep 0.1; k=$((k + 1)); done
after=$(nmis)
echo "host NMIs handled: $before -> $after (20 injected)"
[ $((after - before)) -ge 20 ] || fail "only $((after - before)) of 20 injected NMIs reached the host"
unload_lg
