# A guest on a host TAP device (--tunnet, docs/abi.md §3.4): frames to slot 0 go to the launcher,
# which writes them to the TAP device; frames from it land in the guest's receive buffers. The
# guest runs smoltcp (lgtest=net-echo): the VM pings it and talks to its UDP and TCP echo. Then
# the same through a bridge (--tunnet=bridge:br0), and a bridge that does not exist is refused.
# timeout: 300
. /scenarios/lib.sh
load_lg
modprobe tun 2>/dev/null
modprobe bridge 2>/dev/null

# The guest on the TAP device is background guest g (echo_guest), its output in /tmp/g.
# ping_guest IP: three pings to it must all come back.
ping_guest() {
    ping -c 3 -W 5 "$1" > /tmp/p 2>&1
    cat /tmp/p
    grep -q '3 packets transmitted, 3 packets received' /tmp/p || { cat /tmp/g; die "ping $1"; }
}

# 1. --tunnet=IP: the TAP device gets 192.168.19.1, the guest is 192.168.19.2.
echo_guest g --tunnet=192.168.19.1 192.168.19.2
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
stop_guest g
grep '^net:' /tmp/g

# 2. --tunnet=bridge:br0: the TAP device joins br0, which has 192.168.20.1.
brctl addbr br0 || die "brctl addbr br0"
ip addr add 192.168.20.1/24 dev br0
ip link set br0 up
echo_guest g --tunnet=bridge:br0 192.168.20.2
[ -n "$(ls /sys/class/net/br0/brif)" ] || die "no TAP device joined br0"
echo "br0 ports: $(ls /sys/class/net/br0/brif)"
ping_guest 192.168.20.2
ok "ping 192.168.20.2 through bridge br0"
stop_guest g
ip link set br0 down
brctl delbr br0

# 3. A bridge that does not exist.
lguest 32m /lg/lgtest --tunnet=bridge:nope lgtest=net-echo ip=192.168.21.2/24 < /dev/null > /tmp/o 2>&1
rc=$?
cat /tmp/o
[ $rc != 0 ] && grep -q "bridge 'nope' does not exist" /tmp/o || die "--tunnet=bridge:nope: exit $rc"
ok "--tunnet=bridge:nope refused"

check_unpinned
unload_lg
