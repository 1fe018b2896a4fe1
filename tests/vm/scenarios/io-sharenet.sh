# Guests on one --sharenet file (docs/abi.md §3.4): frames go guest to guest through lg.ko's DMA
# (shared keys in the file's page), smoltcp on lgtest's network driver on top. Two guests ping
# each other both ways, then move 10 MB over TCP with matching checksums; three guests broadcast
# until each has heard the others. No guest page stays pinned.
# timeout: 400
. /scenarios/lib.sh
load_lg
lan=/tmp/lan0
rm -f $lan
bytes=10485760

# ping_between PINGER PINGER_IP ECHO ECHO_IP: guest PINGER at PINGER_IP pings a net-echo guest
# ECHO at ECHO_IP five times (output in /tmp/PINGER and /tmp/ECHO); all must come back.
ping_between() {
    echo_guest "$3" --sharenet=$lan "$4"
    timeout -s KILL 60 lguest 32m /lg/lgtest --sharenet=$lan lgtest=net-ping ip="$2"/24 peer="$4" count=5 < /dev/null > /tmp/"$1" 2>&1
    rc=$?
    grep '^net:' /tmp/"$1"
    [ $rc = 0 ] && grep -q '^net: 5/5 replies$' /tmp/"$1" || { cat /tmp/"$3" /tmp/"$1"; die "ping $2 -> $4: exit $rc"; }
    stop_guest "$3"
    ok "$2 pinged $4: $(grep rtt /tmp/"$1")"
}

# 1. Ping both ways.
ping_between b 10.0.0.2 a 10.0.0.1
ping_between a 10.0.0.1 b 10.0.0.2

# 2. 10 MB over TCP.
guest_bg srv 300 --sharenet=$lan lgtest=net-tcp-server ip=10.0.0.1/24
guest_up srv '^net: tcp server listening'
start=$(cut -d' ' -f1 /proc/uptime)
timeout -s KILL 280 lguest 32m /lg/lgtest --sharenet=$lan lgtest=net-tcp-client ip=10.0.0.2/24 peer=10.0.0.1 bytes=$bytes < /dev/null > /tmp/cli 2>&1
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
wait $pid_srv
src=$?
grep '^net:' /tmp/srv /tmp/cli
[ $rc = 0 ] && [ $src = 0 ] || { cat /tmp/srv /tmp/cli; die "TCP transfer: client exit $rc, server exit $src"; }
sum=$(sed -n "s/^net: sent $bytes bytes, checksum \(0x[0-9a-f]*\) matches$/\1/p" /tmp/cli)
[ -n "$sum" ] || { cat /tmp/cli; die "the client's checksum line is missing"; }
grep -q "^net: received $bytes bytes fnv64 $sum " /tmp/srv || { cat /tmp/srv; die "the server did not receive $bytes bytes with checksum $sum"; }
ok "10 MB over TCP, fnv64 $sum on both ends, $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s wall"

# 3. Three guests broadcasting.
for id in 1 2 3; do
    guest_bg bc$id 120 --sharenet=$lan lgtest=net-bcast ip=10.0.0.1$id/24 id=$id peers=3
done
for id in 1 2 3; do
    eval wait \$pid_bc$id
    rc=$?
    grep '^net: \(heard all\|bcast done\)' /tmp/bc$id
    [ $rc = 0 ] && grep -q '^net: heard all peers' /tmp/bc$id || { cat /tmp/bc$id; die "net-bcast id=$id: exit $rc"; }
done
ok "three guests heard each other's broadcasts"

check_unpinned
unload_lg
