# Hostile guests: each lgtest mode does one thing a malicious kernel would; the host must kill
# only that guest, with a reason naming the cause, and stay clean (the harness checks dmesg).
# Each line: mode | launcher exit status | text the reason must contain.
# timeout: 400
. /scenarios/lib.sh
load_lg
base_tables=$(lg_param table_pages)
la57=0; grep -qw la57 /proc/cpuinfo && la57=1
# SYSENTER in long mode: AMD raises #UD; Intel, with SYSENTER_CS=0 (set by lg.ko), #GP(0).
sysenter_fault='unhandled #UD'
grep -q GenuineIntel /proc/cpuinfo && sysenter_fault='unhandled #GP (vector 13, error 0x0)'
ran=0
cat > /tmp/table <<'TABLE'
bad-hcall-nr|1|guest killed: unknown hypercall 9999
bad-hcall-noncanonical|1|guest killed: non-canonical address 0x8000000000000000
bad-hcall-oob|1|guest killed: page table root 0x10000000000 is not a page-aligned address inside guest memory
bad-hcall-unaligned|1|guest killed: page table root 0x1234 is not a page-aligned address
trap-bad-flags|1|guest killed: SET_TRAP vector 6: unknown flags 0x80
trap-noncanonical|1|guest killed: non-canonical SET_TRAP handler
trap-in-switcher|1|is inside the reserved switcher range
pt-switcher|1|guest killed: touched the reserved switcher range
pt-beyond-memory|1|beyond its memory
iret-ring0|1|guest killed: IRET to CS 0x8 SS 0x18
iret-noncanonical|1|guest killed: non-canonical IRET instruction pointer
native-iret-ring0|1|guest killed: unhandled #GP (vector 13, error 0x8)
syscall|1|guest killed: unhandled #UD
sysenter|1|guest killed: @SYSENTER@
int80|1|guest killed: unhandled #GP
int-host-vector|1|guest killed: unhandled #GP
int-nmi|1|guest killed: unhandled #GP
cli|1|guest killed: unhandled #GP (vector 13, error 0x0)
sti|1|guest killed: unhandled #GP (vector 13, error 0x0)
wrmsr|1|guest killed: unhandled #GP (vector 13, error 0x0)
mov-cr3|1|guest killed: unhandled #GP (vector 13, error 0x0)
lgdt|1|guest killed: unhandled #GP (vector 13, error 0x0)
swapgs|1|guest killed: unhandled #GP (vector 13, error 0x0)
ac-df|0|ok: survived ac-df
double-fault|1|guest killed: double fault: cannot deliver #PF
stack-in-switcher|1|inside the switcher range
crash|1|guest crashed: deliberate crash from lgtest
unhandled-ud|1|guest killed: unhandled #UD
user-syscall-noncanonical-rcx|1|guest killed: non-canonical IRET instruction pointer 0x800000000000
user-hypercall|1|guest crashed: user int $0x1f raised #GP
stack-user|1|the kernel stack must be 16-byte aligned and in the upper
stack-unaligned|1|the kernel stack must be 16-byte aligned
set-stack-switcher|1|is inside the reserved switcher range
TABLE
while IFS='|' read -r mode want text; do
    [ -n "$mode" ] || continue
    ran=$((ran + 1))
    text=$(echo "$text" | sed "s/@SYSENTER@/$sysenter_fault/")
    timeout -s KILL 60 lguest 32m /lg/lgtest lgtest="$mode" < /dev/null > /tmp/o 2>&1
    rc=$?
    if grep -q '^SKIP: no reserved range' /tmp/o && [ $la57 = 1 ] && [ $rc = 0 ]; then
        echo "ok - $mode: skipped (5-level host: the switcher is out of a 4-level guest's reach)"
        continue
    fi
    verdict "$mode" $rc "$want" "$text" /tmp/o
done < /tmp/table
all_ran /tmp/table $ran "hostile modes"
check_clean "$base_tables"
no_fails "hostile guests"
unload_lg
