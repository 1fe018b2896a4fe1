#!/bin/sh
# `make test`: every check, in order, each reported as PASS/FAIL with its time, then one summary
# line "N passed, M failed". A failing step does not stop the ones that do not depend on it.
#   1. cargo fmt --check            6. gate self-test (the gates can fail)
#   2. clippy, host                 7. static userspace, guest kernels (+ their lint and tests)
#   3. clippy, kernel target        8. the QEMU VM matrix: every scenario in every cell counts,
#   4. host unit tests                 plus an Intel-vendor cell for the guest scenarios
#   5. lg.ko build (Rust object gates: relocations, TLS, symbols)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LOG=$ROOT/target/test-logs
mkdir -p "$LOG"
passed=0
failed=0
failures=

now() { date +%s; }
T0=$(now)

step() { # step NAME COMMAND...
    name=$1; shift
    t=$(now)
    if "$@" > "$LOG/$name.log" 2>&1; then
        passed=$((passed + 1))
        echo "PASS $name ($(( $(now) - t ))s)"
        return 0
    fi
    failed=$((failed + 1))
    failures="$failures $name"
    echo "FAIL $name ($(( $(now) - t ))s), last lines of $LOG/$name.log:"
    tail -25 "$LOG/$name.log" | sed 's/^/     | /'
    return 1
}

step fmt cargo fmt --all --check
step clippy-host cargo clippy --quiet --workspace --all-targets -- -D warnings
step clippy-kernel env RUSTFLAGS="" cargo clippy --quiet -p lg-kmod -p lg-core \
    --target x86_64-unknown-none -- -D warnings
step unit-tests cargo test --quiet --workspace
module_ok=0
step module make --no-print-directory module && module_ok=1
step gates-selftest tests/gates-selftest.sh
user_ok=0
step userspace make --no-print-directory userspace && user_ok=1
guests_ok=0
step guests guests/build.sh && guests_ok=1
step guests-lint guests/build.sh lint
step guests-unit-tests guests/build.sh test

vm() { # vm NAME HARNESS-ARGS...: one harness run; its scenarios count one each
    name=$1; shift
    t=$(now)
    cargo run --quiet --release -p harness -- test "$@" > "$LOG/$name.log" 2>&1
    grep -E '^(PASS|FAIL|     \|)' "$LOG/$name.log"
    vp=$(sed -n 's/^vmtest: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$LOG/$name.log")
    vf=$(sed -n 's/^vmtest: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$LOG/$name.log")
    if [ -z "$vp" ]; then
        echo "FAIL $name: the harness did not finish ($LOG/$name.log)"
        tail -20 "$LOG/$name.log" | sed 's/^/     | /'
        vp=0; vf=1
    fi
    echo "$name: $vp passed, $vf failed ($(( $(now) - t ))s)"
    passed=$((passed + vp))
    failed=$((failed + vf))
    [ "$vf" -eq 0 ] || failures="$failures $name"
}

if [ $module_ok = 1 ] && [ $user_ok = 1 ] && [ $guests_ok = 1 ]; then
    vm vm-matrix --parallel 2 ${VMTEST_ARGS:-}
    # AMD and Intel differ for SYSENTER (#UD vs #GP with SYSENTER_CS=0): one Intel cell.
    vm vm-intel --cells "max,vendor=GenuineIntel:1" --scenarios guest-suite,guest-hostile
else
    echo "FAIL vm-matrix: not run (the module, the userspace programs or the guests did not build)"
    failed=$((failed + 1))
    failures="$failures vm-matrix"
fi

echo "make test: $(( $(now) - T0 ))s${failures:+; failed:$failures}"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
