# Guests on one --sharenet file (docs/abi.md §3.4): frames go guest to guest through lg.ko's DMA
# (shared keys in the file's page), smoltcp on lgtest's network driver on top. Two guests ping
# each other both ways, then move 10 MB over TCP with matching checksums; three guests broadcast
# until each has heard the others. No guest page stays pinned.
# timeout: 400
. /scenarios/lib.sh
load_lg
# Every guest started in the background: a failure kills them all (lg.ko must unload).
bg=
die() {
    for p in $bg; do kill -9 "$p" 2>/dev/null; done
    fail "$@"
}
lan=/tmp/lan0
rm -f $lan
bytes=10485760

# wait_for FILE TEXT SECONDS: until FILE has a line with TEXT.
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        usleep 100000
        i=$((i + 1))
        [ $i -lt $(($3 * 10)) ] || return 1
    done
}

# echo_guest IP LOG: a net-echo guest in the background; its pid in $echo_pid.
echo_guest() {
    timeout -s KILL 120 lguest 32m /lg/lgtest --sharenet=$lan lgtest=net-echo ip=$1/24 < /dev/null > "$2" 2>&1 &
    echo_pid=$!
    bg="$bg $echo_pid"
    wait_for "$2" '^net: echo on' 30 || { cat "$2"; die "net-echo at $1 did not come up"; }
}

stop_guest() { # PID LOG
    kill "$1" 2>/dev/null
    wait "$1"
    grep -q 'FAIL\|PANIC\|UNEXPECTED' "$2" && { cat "$2"; die "the guest in $2 reported a failure"; }
    return 0
}

# 1. Ping both ways.
echo_guest 10.0.0.1 /tmp/a
timeout -s KILL 60 lguest 32m /lg/lgtest --sharenet=$lan lgtest=net-ping ip=10.0.0.2/24 peer=10.0.0.1 count=5 < /dev/null > /tmp/b 2>&1
rc=$?
grep '^net:' /tmp/b
[ $rc = 0 ] && grep -q '^net: 5/5 replies$' /tmp/b || { cat /tmp/a /tmp/b; die "ping 10.0.0.2 -> 10.0.0.1: exit $rc"; }
stop_guest $echo_pid /tmp/a
ok "10.0.0.2 pinged 10.0.0.1: $(grep rtt /tmp/b)"
echo_guest 10.0.0.2 /tmp/b
timeout -s KILL 60 lguest 32m /lg/lgtest --sharenet=$lan lgtest=net-ping ip=10.0.0.1/24 peer=10.0.0.2 count=5 < /dev/null > /tmp/a 2>&1
rc=$?
grep '^net:' /tmp/a
[ $rc = 0 ] && grep -q '^net: 5/5 replies$' /tmp/a || { cat /tmp/a /tmp/b; die "ping 10.0.0.1 -> 10.0.0.2: exit $rc"; }
stop_guest $echo_pid /tmp/b
ok "10.0.0.1 pinged 10.0.0.2: $(grep rtt /tmp/a)"

# 2. 10 MB over TCP.
timeout -s KILL 300 lguest 32m /lg/lgtest --sharenet=$lan lgtest=net-tcp-server ip=10.0.0.1/24 < /dev/null > /tmp/srv 2>&1 &
srv=$!
bg="$bg $srv"
wait_for /tmp/srv '^net: tcp server listening' 30 || { cat /tmp/srv; die "the TCP server did not come up"; }
start=$(cut -d' ' -f1 /proc/uptime)
timeout -s KILL 280 lguest 32m /lg/lgtest --sharenet=$lan lgtest=net-tcp-client ip=10.0.0.2/24 peer=10.0.0.1 bytes=$bytes < /dev/null > /tmp/cli 2>&1
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
wait $srv
src=$?
grep '^net:' /tmp/srv /tmp/cli
[ $rc = 0 ] && [ $src = 0 ] || { cat /tmp/srv /tmp/cli; die "TCP transfer: client exit $rc, server exit $src"; }
sum=$(sed -n "s/^net: sent $bytes bytes, checksum \(0x[0-9a-f]*\) matches$/\1/p" /tmp/cli)
[ -n "$sum" ] || { cat /tmp/cli; die "the client's checksum line is missing"; }
grep -q "^net: received $bytes bytes fnv64 $sum " /tmp/srv || { cat /tmp/srv; die "the server did not receive $bytes bytes with checksum $sum"; }
ok "10 MB over TCP, fnv64 $sum on both ends, $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s wall"

# 3. Three guests broadcasting.
for id in 1 2 3; do
    timeout -s KILL 120 lguest 32m /lg/lgtest --sharenet=$lan lgtest=net-bcast ip=10.0.0.1$id/24 id=$id peers=3 < /dev/null > /tmp/bc$id 2>&1 &
    eval bc$id=\$!
    bg="$bg $!"
done
for id in 1 2 3; do
    eval wait \$bc$id
    rc=$?
    grep '^net: \(heard all\|bcast done\)' /tmp/bc$id
    [ $rc = 0 ] && grep -q '^net: heard all peers' /tmp/bc$id || { cat /tmp/bc$id; die "net-bcast id=$id: exit $rc"; }
done
ok "three guests heard each other's broadcasts"

[ "$(cat /sys/module/lg/parameters/pinned_pages)" = 0 ] || die "pages still pinned"
unload_lg
