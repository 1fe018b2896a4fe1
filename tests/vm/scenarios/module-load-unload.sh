# lg.ko loads and unloads 20 times; every load maps the switcher and registers /dev/lguest, every
# unload removes both. Free memory (counting pages parked in the per-CPU free lists) must not drift
# by more than 2 MiB over 20 more cycles after a warm-up: module memory is freed lazily by vmalloc,
# so the first cycles move the baseline.
# timeout: 120
. /scenarios/lib.sh
cycles() {
    i=0
    while [ $i -lt 20 ]; do
        load_lg
        grep -q '^lg ' /proc/modules || fail "lg missing from /proc/modules (cycle $i)"
        unload_lg
        i=$((i + 1))
    done
}
# Free pages, including those cached on the per-CPU lists (not in MemFree), in kB.
free_kb() {
    pcp=$(awk '$1 == "count:" { s += $2 } END { print s * 4 }' /proc/zoneinfo)
    echo $(( $(meminfo MemFree) + pcp ))
}
cycles
settle
before=$(free_kb)
cycles
settle
after=$(free_kb)
drift=$((before - after))
echo "free memory before=${before}kB after=${after}kB drift=${drift}kB"
[ $drift -lt 2048 ] || fail "free memory dropped by ${drift} kB over 20 load/unload cycles"
dmesg | grep -q "switcher pages" || fail "module did not report its switcher mapping"
ok "20 load/unload cycles"
