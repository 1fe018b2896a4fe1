# The launcher inside the VM: --help and --version work, and its errors name their cause.
. /scenarios/lib.sh
lguest --help > /tmp/help || fail "lguest --help exited $?"
grep -q 'Usage' /tmp/help || fail "lguest --help printed no usage"
grep -q -- '--block' /tmp/help || fail "lguest --help does not describe --block"
ok "lguest --help"
lguest --version | grep -q '^lguest ' || fail "lguest --version"
ok "lguest --version: $(lguest --version)"

# No module loaded: the launcher says how to fix it.
echo guest > /tmp/kernel
if lguest 64m /tmp/kernel 2>/tmp/err; then fail "lguest succeeded without lg.ko"; fi
grep -q 'is lg.ko loaded' /tmp/err || fail "missing-module error was: $(cat /tmp/err)"
ok "without lg.ko: $(cat /tmp/err)"

if lguest 64x /tmp/kernel 2>/tmp/err; then fail "lguest accepted a bad memory size"; fi
[ "$(wc -l < /tmp/err)" -eq 1 ] || fail "bad size error is not one line: $(cat /tmp/err)"
ok "bad size: $(cat /tmp/err)"
if lguest 64m /nonexistent 2>/tmp/err; then fail "lguest accepted a missing kernel"; fi
grep -q '/nonexistent' /tmp/err || fail "missing kernel error does not name it: $(cat /tmp/err)"
ok "missing kernel: $(cat /tmp/err)"
