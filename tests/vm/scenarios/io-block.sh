# Block devices (docs/abi.md §3.4) with lgtest's driver: the guest writes a pattern to a 1 MiB
# file and we check every byte; we fill the file with random data and the guest's MD5 of lgba
# must be md5sum's; a guest acknowledging one-sector writes is SIGKILLed and every acknowledged
# sector must be in the file; requests the launcher must refuse come back with result 2.
# timeout: 300
. /scenarios/lib.sh
load_lg
img=/tmp/lgba.img

# 1. The pattern: sector i holds the u64s 64i .. 64i+63, so the file is one counter.
dd if=/dev/zero of=$img bs=1024 count=1024 2>/dev/null
lguest 32m /lg/lgtest --block=$img lgtest=block-write-pattern < /dev/null > /tmp/o 2>&1
rc=$?
grep '^block:' /tmp/o
[ $rc = 0 ] && grep -q '^block: wrote 2048 sectors$' /tmp/o || { cat /tmp/o; fail "block-write-pattern: exit $rc"; }
check=$(od -A n -t u8 -v -w8 $img | awk '$1 != NR - 1 { bad++ } END { print bad + 0, NR }')
[ "$check" = "0 131072" ] || fail "the file does not hold the pattern (bad words, words: $check)"
ok "block-write-pattern: all 131072 words of the file hold the pattern"

# 2. Random data: the guest's MD5 of lgba is md5sum's.
dd if=/dev/urandom of=$img bs=1024 count=1024 2>/dev/null
want=$(md5sum $img | cut -d' ' -f1)
lguest 32m /lg/lgtest --block=$img lgtest=block-read-checksum < /dev/null > /tmp/o 2>&1
rc=$?
grep '^block:' /tmp/o
got=$(sed -n 's/^block: 2048 sectors md5 \([0-9a-f]*\) .*/\1/p' /tmp/o)
[ $rc = 0 ] && [ "$got" = "$want" ] || { cat /tmp/o; fail "block-read-checksum: exit $rc, md5 '$got', want '$want'"; }
ok "block-read-checksum: md5 $got matches md5sum"

# 3. Acknowledged writes survive SIGKILL of the launcher.
dd if=/dev/zero of=$img bs=1024 count=1024 2>/dev/null
lguest 32m /lg/lgtest --block=$img lgtest=block-ack-loop < /dev/null > /tmp/ack 2>&1 &
pid=$!
n=0
tries=0
while [ "$n" -lt 100 ]; do
    usleep 20000
    n=$(grep -c '^acked [0-9]*$' /tmp/ack)
    tries=$((tries + 1))
    [ $tries -lt 1500 ] || { kill -9 $pid; cat /tmp/ack | tail; fail "block-ack-loop: only $n acks in 30 s"; }
done
kill -9 $pid
wait $pid
last=$(grep '^acked [0-9]*$' /tmp/ack | tail -1 | cut -d' ' -f2)
[ "$last" -ge 99 ] && [ "$last" -lt 2048 ] || fail "block-ack-loop: last ack '$last'"
words=$(((last + 1) * 64))
check=$(od -A n -t u8 -v -w8 -N $((words * 8)) $img | awk '$1 != NR - 1 { bad++ } END { print bad + 0, NR }')
[ "$check" = "0 $words" ] || fail "block-ack-loop: acked sectors 0..$last not all in the file ($check)"
ok "block-ack-loop: SIGKILL after $(grep -c '^acked' /tmp/ack) acks: sectors 0..$last hold their patterns"

# 4. Bad requests: result 2, the guest keeps running.
lguest 32m /lg/lgtest --block=$img lgtest=block-edges < /dev/null > /tmp/o 2>&1
rc=$?
grep -E '^(ok|not ok|SUMMARY)' /tmp/o
suite_passed /tmp/o && [ $rc = 0 ] || { cat /tmp/o; fail "block-edges: exit $rc"; }
grep 'lguest: device 0' /tmp/o
check_unpinned
unload_lg
