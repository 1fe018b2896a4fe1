# `make run`: what works so far, shown live in the test VM.
. /scenarios/lib.sh
modprobe tun 2>/dev/null
echo "== loading lg.ko"
load_lg
dmesg | grep 'lg:' | sed 's/^\[[^]]*\] /   /'

echo "== a guest kernel at ring 1 with a block device and a network card:"
echo "   lguest 64m /lg/lgtest --block=/tmp/disk --tunnet=192.168.19.1 lgtest=net-echo ip=192.168.19.2/24"
dd if=/dev/zero of=/tmp/disk bs=1M count=1 2>/dev/null
lguest 64m /lg/lgtest --verbose --block=/tmp/disk --tunnet=192.168.19.1 lgtest=net-echo ip=192.168.19.2/24 \
    < /dev/null > /tmp/echo 2>&1 &
echo_pid=$!
k=0; while ! grep -q '^net: echo on' /tmp/echo && [ $k -lt 300 ]; do sleep 0.1; k=$((k + 1)); done
sed 's/^/   | /' /tmp/echo
echo "== the host pings the guest over the TAP device:"
ping -c 3 192.168.19.2 | sed 's/^/   /'
kill -INT $echo_pid; wait $echo_pid

echo "== the guest writes its disk: lguest 64m /lg/lgtest --block=/tmp/disk lgtest=block-write-pattern"
lguest 64m /lg/lgtest --block=/tmp/disk lgtest=block-write-pattern < /dev/null | sed 's/^/   | /'
echo "== the host reads the file back (first 32 bytes of sector 1):"
od -A d -t x8 -j 512 -N 32 /tmp/disk | sed 's/^/   /'

echo "== two guests on one shared LAN (--sharenet=/tmp/lan0), frames go guest to guest:"
lguest 32m /lg/lgtest --sharenet=/tmp/lan0 lgtest=net-echo ip=10.0.0.1/24 < /dev/null > /tmp/a 2>&1 &
a=$!
k=0; while ! grep -q '^net: echo on' /tmp/a && [ $k -lt 300 ]; do sleep 0.1; k=$((k + 1)); done
lguest 32m /lg/lgtest --sharenet=/tmp/lan0 lgtest=net-ping ip=10.0.0.2/24 peer=10.0.0.1 count=3 < /dev/null \
    | sed 's/^/   | /'
kill -INT $a; wait $a

echo "== the test guest's suite:"
lguest 32m /lg/lgtest lgtest=suite < /dev/null | grep -E 'SUMMARY|bench' | sed 's/^/   | /'
echo "== a hostile guest: lguest 32m /lg/lgtest lgtest=iret-ring0"
lguest 32m /lg/lgtest lgtest=iret-ring0 < /dev/null 2>&1 | tail -1 | sed 's/^/   | /'
echo "== guest pages still pinned: $(cat /sys/module/lg/parameters/pinned_pages)"
unload_lg
echo "== lg.ko unloaded; kernel warnings since boot: $(dmesg | grep -cE 'WARNING|BUG|Oops')"
