#!/bin/busybox sh
# /init of the test VM. Runs the scenarios named by the kernel parameter lgtest= (comma-separated,
# or "all") and reports each on the serial console:
#   @@ BEGIN <name>
#   ...scenario output...
#   @@ RESULT <name> PASS            or  @@ RESULT <name> FAIL <reason>
#   @@ DONE
# After every scenario the kernel log is checked for warnings, oopses, lockups and new taint; any
# of those fails the scenario even if its own checks passed. lgmode=run shows the demo instead;
# lgmode=bench runs the benchmarks (scenarios/bench.sh, for `make bench`).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/lg
cd /

# Find hangs quickly instead of after two minutes.
echo 20 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
echo 1 > /proc/sys/kernel/softlockup_panic 2>/dev/null || true

BAD='WARNING: CPU:|cut here|BUG:|kernel BUG|Oops|general protection fault|Call Trace:|Unknown rela|invalid relocation|missing return thunk|stack-protector|double fault|Unable to handle|soft lockup|hard LOCKUP|rcu_sched self-detected|rcu: INFO|blocked for more than|corruption|UBSAN|Bad page|Kernel panic|segfault at'
# Taint bits we accept: O (out-of-tree module, 4096) and E (unsigned module, 8192).
ALLOWED_TAINT=12288

echo "@@ BOOTED uptime=$(cut -d' ' -f1 /proc/uptime) cpus=$(grep -c ^processor /proc/cpuinfo) la57=$(grep -qw la57 /proc/cpuinfo && echo 1 || echo 0)"

mode=${lgmode:-test}
if [ "$mode" = run ]; then
    sh /scenarios/demo.sh
    echo "@@ DONE"
    poweroff -f
fi
if [ "$mode" = bench ]; then
    sh /scenarios/bench.sh
    echo "@@ DONE"
    poweroff -f
fi

list=${lgtest:-all}
if [ "$list" = all ]; then
    list=$(cat /scenarios/ORDER)
else
    list=$(echo "$list" | tr ',' ' ')
fi

dmesg -c > /dev/null
for name in $list; do
    echo "@@ BEGIN $name"
    script=/scenarios/$name.sh
    if [ ! -f "$script" ]; then
        echo "@@ RESULT $name FAIL no such scenario"
        continue
    fi
    limit=$(sed -n 's/^# timeout: *\([0-9]*\).*/\1/p' "$script")
    taint_before=$(cat /proc/sys/kernel/tainted)
    start=$(cut -d' ' -f1 /proc/uptime)
    timeout -s KILL "${limit:-120}" sh "$script"
    rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    reason=
    # Leave the next scenario a clean slate; a module that cannot be removed is a failure.
    if grep -q '^lg ' /proc/modules && ! rmmod lg 2>/tmp/rmmod; then
        reason="lg.ko cannot be unloaded afterwards: $(cat /tmp/rmmod)"
    fi
    dmesg -c > /tmp/dmesg
    if [ $rc -eq 137 ]; then
        reason="${reason:+$reason; }timed out after ${limit:-120}s"
    elif [ $rc -ne 0 ]; then
        reason="${reason:+$reason; }exit status $rc"
    fi
    if grep -E "$BAD" /tmp/dmesg > /tmp/bad; then
        echo "--- kernel log of $name:"
        cat /tmp/dmesg
        echo "---"
        reason="${reason:+$reason; }kernel log: $(head -1 /tmp/bad)"
    fi
    taint=$(cat /proc/sys/kernel/tainted)
    new_taint=$(( (taint & ~taint_before) & ~ALLOWED_TAINT ))
    if [ $new_taint -ne 0 ]; then
        reason="${reason:+$reason; }kernel tainted $taint (new bits $new_taint)"
    fi
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
    if [ -z "$reason" ]; then
        echo "@@ RESULT $name PASS ${secs}s"
    else
        echo "@@ RESULT $name FAIL $reason"
    fi
done
echo "@@ DONE"
poweroff -f
