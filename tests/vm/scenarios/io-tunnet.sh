# A guest on a host TAP device (--tunnet, docs/abi.md §3.4): frames to slot 0 go to the launcher,
# which writes them to the TAP device; frames from it land in the guest's receive buffers. The
# guest runs smoltcp (lgtest=net-echo): the VM pings it and talks to its UDP and TCP echo. Then
# the same through a bridge (--tunnet=bridge:br0), and a bridge that does not exist is refused.
# timeout: 300
. /scenarios/lib.sh
load_lg
# Every guest started in the background: a failure kills them all (lg.ko must unload).
bg=
die() {
    for p in $bg; do kill -9 "$p" 2>/dev/null; done
    fail "$@"
}
modprobe tun 2>/dev/null
modprobe bridge 2>/dev/null

wait_for() { # FILE TEXT SECONDS
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        usleep 100000
        i=$((i + 1))
        [ $i -lt $(($3 * 10)) ] || return 1
    done
}

# echo_guest TUNNET IP: a net-echo guest on --tunnet=TUNNET at IP; its pid in $pid, output in /tmp/g.
echo_guest() {
    timeout -s KILL 120 lguest 32m /lg/lgtest --tunnet="$1" lgtest=net-echo ip="$2"/24 < /dev/null > /tmp/g 2>&1 &
    pid=$!
    bg="$bg $pid"
    wait_for /tmp/g '^net: echo on' 30 || { cat /tmp/g; die "net-echo at $2 did not come up"; }
}

stop_guest() {
    kill $pid 2>/dev/null
    wait $pid
    grep -q 'FAIL\|PANIC\|UNEXPECTED' /tmp/g && { cat /tmp/g; die "the guest reported a failure"; }
    return 0
}

# ping_guest IP: three pings must all come back.
ping_guest() {
    ping -c 3 -W 5 "$1" > /tmp/p 2>&1
    cat /tmp/p
    grep -q '3 packets transmitted, 3 packets received' /tmp/p || { cat /tmp/g; die "ping $1"; }
}

# 1. --tunnet=IP: the TAP device gets 192.168.19.1, the guest is 192.168.19.2.
echo_guest 192.168.19.1 192.168.19.2
ping_guest 192.168.19.2
ok "ping 192.168.19.2 over --tunnet=192.168.19.1"
# UDP: busybox has no UDP netcat, but its TFTP client sends a datagram to any port (a read
# request) and listens for the answer: the echo comes back to its socket, which the kernel counts.
udp_in() { awk '$1 == "Udp:" && $2 ~ /^[0-9]+$/ { print $2 }' /proc/net/snmp; }
before=$(udp_in)
(timeout -s KILL 3 tftp -g -r hello-udp -l /tmp/t 192.168.19.2 7 > /dev/null 2>&1)
after=$(udp_in)
grep -q '^net: udp echo 1: [0-9]* bytes to 192.168.19.1:' /tmp/g || { cat /tmp/g; die "the guest did not echo the datagram"; }
[ "$after" -gt "$before" ] || die "no echoed datagram reached the VM (Udp InDatagrams $before -> $after)"
ok "UDP echo on port 7: $(grep '^net: udp echo 1' /tmp/g), Udp InDatagrams $before -> $after"
got=$(echo hello-tcp | timeout -s KILL 10 nc 192.168.19.2 7)
[ "$got" = hello-tcp ] || { cat /tmp/g; die "TCP echo: got '$got'"; }
ok "TCP echo on port 7"
stop_guest
grep '^net:' /tmp/g

# 2. --tunnet=bridge:br0: the TAP device joins br0, which has 192.168.20.1.
brctl addbr br0 || die "brctl addbr br0"
ip addr add 192.168.20.1/24 dev br0
ip link set br0 up
echo_guest bridge:br0 192.168.20.2
[ -n "$(ls /sys/class/net/br0/brif)" ] || die "no TAP device joined br0"
echo "br0 ports: $(ls /sys/class/net/br0/brif)"
ping_guest 192.168.20.2
ok "ping 192.168.20.2 through bridge br0"
stop_guest
ip link set br0 down
brctl delbr br0

# 3. A bridge that does not exist.
lguest 32m /lg/lgtest --tunnet=bridge:nope lgtest=net-echo ip=192.168.21.2/24 < /dev/null > /tmp/o 2>&1
rc=$?
cat /tmp/o
[ $rc != 0 ] && grep -q "bridge 'nope' does not exist" /tmp/o || die "--tunnet=bridge:nope: exit $rc"
ok "--tunnet=bridge:nope refused"

[ "$(cat /sys/module/lg/parameters/pinned_pages)" = 0 ] || die "pages still pinned"
unload_lg
