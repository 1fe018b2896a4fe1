# lg.ko refuses, with a clear message, hosts it cannot serve (Xen PV, SME, SEV/TDX guests). The
# test VM is none of these, so the module's test-only parameter simulate_host= stands in.
. /scenarios/lib.sh
for kind in xenpv sme tdx; do
    dmesg -c > /dev/null
    if insmod $LGKO simulate_host=$kind 2>/tmp/err; then
        rmmod lg
        fail "lg.ko loaded on a simulated $kind host"
    fi
    dmesg | grep -q "lg: refusing to load" || fail "no 'refusing to load' message for $kind"
    [ ! -e /dev/lguest ] || fail "/dev/lguest exists after refused load ($kind)"
    ok "refused $kind: $(dmesg | grep 'refusing to load' | sed 's/^\[[^]]*\] //')"
done
load_lg
unload_lg
ok "loads normally afterwards"
