# The console device (docs/abi.md §3.4) with lgtest's driver: output by SEND_DMA (the device page
# is found at boot), input in buffers bound at the console page + 8: lines typed before the guest
# has bound them wait in the launcher, and every line comes back.
# timeout: 120
. /scenarios/lib.sh
load_lg
printf 'hello\nsecond line\nquit\n' | lguest --verbose 32m /lg/lgtest lgtest=console-echo > /tmp/o 2>&1
rc=$?
cat /tmp/o
[ $rc = 0 ] || fail "console-echo: exit $rc"
grep -q '^io: device 0: console irq 1 pfn 0x2001 features 0x0 status 0x7$' /tmp/o || fail "the console is not device 0 with status ACKNOWLEDGE|DRIVER|DRIVER_OK"
for line in hello 'second line' quit; do
    grep -q "^console: got '$line'$" /tmp/o || fail "line '$line' did not come back"
done
# The guest counts what it got.
grep -q '^console: 3 lines, 0 bytes dropped$' /tmp/o || fail "wrong line count"
ok "console input and output through the console device"
unload_lg
