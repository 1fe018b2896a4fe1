# Hostile DMA (docs/abi.md §3): bad descriptors and bindings kill only the guest that made them,
# with a reason naming the problem; edge cases that are legal are survived. Then guests misbehave
# against live peers on a --sharenet: one binds receive buffers and crashes while a peer storms
# it, a storm hits a guest running smoltcp (which must still answer pings afterwards), a guest
# rebinds its buffers under a storm, and one whose receive buffers point outside its memory is
# killed by the first delivery while the sender carries on. The host stays clean.
# timeout: 400
. /scenarios/lib.sh
load_lg
base_tables=$(lg_param table_pages)
ran=0
# mode | launcher exit status | texts the output must contain (separated by ' && ') | lguest args
cat > /tmp/table <<'TABLE'
dma-outside-memory|1|guest killed: SEND_DMA: DMA section 0 (16 bytes at 0x10000000000) leaves guest memory or crosses a page boundary|
dma-cross-page|1|guest killed: SEND_DMA: DMA section 0 (200 bytes at 0x|
dma-huge-len|1|guest killed: SEND_DMA: DMA section 0 (65535 bytes at 0x|
dma-irq-32|1|guest killed: BIND_DMA: BIND_DMA irq 32 is not in 0..=31|
dma-zero-len|0|dma-zero-len: used_len 0 (console), 0 (unserved key), 0 (list ended early) && ok: survived dma-zero-len|
dma-overlap|0|dma-overlap: 01234567890123456789abcdefghijklmnopqrstuvwxyz && block write of overlapping sections: result 1 used 1024 && ok: survived dma-overlap|--block=/tmp/overlap.img
dma-bind-33|0|dma-bind-33: 32 bindings accepted, refused at bind 33 && ok: survived dma-bind-33|
dma-bind-top|0|ok: survived dma-bind-top|
TABLE
dd if=/dev/zero of=/tmp/overlap.img bs=1024 count=64 2>/dev/null
while IFS='|' read -r mode want texts args; do
    [ -n "$mode" ] || continue
    ran=$((ran + 1))
    # shellcheck disable=SC2086
    timeout -s KILL 60 lguest 32m /lg/lgtest $args lgtest="$mode" < /dev/null > /tmp/o 2>&1
    verdict "$mode" $? "$want" "$texts" /tmp/o && grep "^$mode: " /tmp/o | sed 's/^/    /'
done < /tmp/table
all_ran /tmp/table $ran "hostile DMA modes"
# The overlapping block write really wrote 512 bytes of the text, then 512 from 256 bytes on.
head -c 13 /tmp/overlap.img | grep -q '^dma-overlap: $' || fail "the overlapping block write did not land"

# Against live peers on a sharenet.
lan=/tmp/lan-hostile
rm -f $lan
# guest NAME ARGS...: a guest on the sharenet in the background, output in /tmp/NAME, pid in
# $pid_NAME (guest_bg); `expect` judges how it ended.
guest() {
    local name=$1
    shift
    guest_bg "$name" 90 --sharenet=$lan "$@"
}

# 1. A guest binds its receive buffers and crashes while a peer storms it.
guest dier lgtest=dma-bind-and-die
guest_up dier 'waiting for a frame'
guest storm1 lgtest=dma-storm peer=any
expect dier 1 'guest crashed: dma-bind-and-die: crashing with receive buffers bound'
grep -q '^dma-bind-and-die: a frame arrived' /tmp/dier || {
    echo "not ok - dma-bind-and-die died before any frame arrived"
    fails=$((fails + 1))
}
expect storm1 0 'ok: survived dma-storm'
grep '^dma-storm:' /tmp/storm1

# 2. A storm against a guest running smoltcp, which still answers pings afterwards.
echo_guest echo --sharenet=$lan 10.0.1.1
guest storm2 lgtest=dma-storm peer=any
expect storm2 0 'ok: survived dma-storm'
grep '^dma-storm:' /tmp/storm2
guest pinger lgtest=net-ping ip=10.0.1.2/24 peer=10.0.1.1 count=3
expect pinger 0 'net: 3/3 replies'
# It survived the storm.
stop_guest echo 'guest killed'

# 3. A guest rebinds and rewrites its receive buffers while a peer storms it.
guest rebind lgtest=dma-rebind-storm
guest_up rebind 'rebinding at slot'
guest storm3 lgtest=dma-storm peer=any
expect rebind 0 'ok: survived dma-rebind-storm'
expect storm3 0 'ok: survived dma-storm'
grep '^dma-rebind-storm:' /tmp/rebind

# 4. Receive buffers outside guest memory: the first delivery kills their owner, not the sender.
guest badrx lgtest=dma-rx-outside-memory
guest_up badrx 'waiting for a sender'
guest storm4 lgtest=dma-storm peer=any
expect badrx 1 "guest killed: another guest found this guest's DMA receive buffer at 0x10000000000 invalid"
expect storm4 0 'ok: survived dma-storm'

# 5. The same while the broken receiver sleeps in HALT: its death must wake it.
guest badrx2 lgtest=dma-rx-outside-memory wait=halt
guest_up badrx2 'waiting for a sender'
guest storm5 lgtest=dma-storm peer=any
expect badrx2 1 "guest killed: another guest found this guest's DMA receive buffer at 0x10000000000 invalid"
expect storm5 0 'ok: survived dma-storm'

check_clean "$base_tables"
no_fails "hostile DMA guests"
unload_lg
