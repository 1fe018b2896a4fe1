# `make bench` (tests/harness: vmtest bench), run by /init for lgmode=bench; not a test scenario.
# Between "@@ BENCH-BEGIN" and "@@ BENCH-END" it prints, for the harness to tabulate:
#   native: <name> <cycles> cycles                 nativebench, this VM's own cost of <name>
#   bench: <name> <cycles> cycles <exits> exits    the lgtest guest's cost, both per operation
#   info: <key> <value>                            what the numbers were measured on
#   guest: lgtest=<mode> exit <status>             which guest runs the bench lines came from
#   note: <text>                                   anything that went wrong (a number is missing)
# Everything runs pinned to CPU 0. Benchmarks, not tests: nothing here judges a number.
. /scenarios/lib.sh

# guest MODE: run the test guest in MODE; echo its bench lines. Returns 2 if it has no such mode.
guest() {
    out=/tmp/bench-guest.$1
    taskset -c 0 lguest 32m /lg/lgtest "lgtest=$1" < /dev/null > "$out" 2>&1
    rc=$?
    tr -d '\r' < "$out" > "$out.clean"
    if grep -q "unknown mode '$1'" "$out.clean"; then
        echo "guest: lgtest=$1 unknown"
        return 2
    fi
    echo "guest: lgtest=$1 exit $rc"
    khz=$(sed -n 's/^lgtest: guest .* tsc \([0-9]*\) kHz.*/\1/p' "$out.clean" | head -1)
    [ -n "$khz" ] && echo "info: guest-tsc-khz $khz"
    grep '^bench: ' "$out.clean"
    if [ $rc -ne 0 ]; then
        echo "note: lguest ... lgtest=$1 exited $rc; its last lines:"
        tail -5 "$out.clean" | sed 's/^/note:   /'
    fi
    return 0
}

echo "@@ BENCH-BEGIN"
echo "info: vm-cpu-model $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "info: vm-cpus $(grep -c ^processor /proc/cpuinfo)"
echo "info: vm-kernel $(uname -r)"

if [ -x /lg/nativebench ]; then
    taskset -c 0 /lg/nativebench > /tmp/bench-native 2>&1
    rc=$?
    cat /tmp/bench-native
    [ $rc -eq 0 ] || echo "note: nativebench exited $rc"
else
    echo "note: /lg/nativebench missing (make userspace); no native numbers"
fi

if insmod $LGKO 2>/tmp/bench-insmod && [ -c /dev/lguest ]; then
    # The guest's own bench mode if it has one; else the benches the suites end with.
    if ! guest bench; then
        guest suite
        guest user
    fi
    rmmod lg || echo "note: rmmod lg failed"
else
    echo "note: insmod lg.ko failed: $(cat /tmp/bench-insmod); no guest numbers"
fi

bad=$(dmesg | grep -cE 'WARNING: CPU:|BUG:|Oops|general protection fault|soft lockup')
[ "$bad" -eq 0 ] || echo "note: the kernel log has $bad warnings or oopses (see the VM log)"
echo "@@ BENCH-END"
