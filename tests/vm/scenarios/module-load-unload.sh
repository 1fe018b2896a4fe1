# lg.ko loads and unloads 20 times; every load maps the switcher and registers /dev/lguest, every
# unload removes both. Free memory must not drift by more than 1 MiB over the cycles.
# timeout: 120
. /scenarios/lib.sh
load_lg
unload_lg
settle
before=$(meminfo MemFree)
i=0
while [ $i -lt 20 ]; do
    load_lg
    grep -q '^lg ' /proc/modules || fail "lg missing from /proc/modules (cycle $i)"
    unload_lg
    i=$((i + 1))
done
settle
after=$(meminfo MemFree)
drift=$((before - after))
echo "MemFree before=${before}kB after=${after}kB drift=${drift}kB"
[ $drift -lt 1024 ] || fail "MemFree dropped by ${drift} kB over 20 load/unload cycles"
dmesg | grep -q "switcher pages" || fail "module did not report its switcher mapping"
ok "20 load/unload cycles"
