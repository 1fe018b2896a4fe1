#!/usr/bin/env bash
# Build the guest kernels (for now: lgtest) and check they are images the launcher will load.
#   guests/build.sh         release build -> target/guests/<name>, verified with readelf
#   guests/build.sh lint    cargo fmt --check and clippy -D warnings (guest target, and host tests)
#   guests/build.sh test    the guests' pure logic, unit-tested on the host
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="$root/target/guests-build"
out_dir="$root/target/guests"
guests=(lgtest)
target=x86_64-unknown-none
host_target=x86_64-unknown-linux-gnu

# An explicit RUSTFLAGS replaces the [target.x86_64-unknown-none] rustflags of .cargo/config.toml,
# which are the kernel module's (nightly-only -Z flags). A guest is a static ELF executable linked
# at -2 GiB (code-model=kernel); each guest's build.rs adds its linker script and link options.
guest_rustflags="-C relocation-model=static -C code-model=kernel -C no-redzone=yes -C panic=abort"

build_one() {
    local name="$1" dir="$here/$1"
    RUSTFLAGS="$guest_rustflags" \
        cargo build --quiet --release --manifest-path "$dir/Cargo.toml" --target "$target"
    mkdir -p "$out_dir"
    cp "$CARGO_TARGET_DIR/$target/release/$name" "$out_dir/$name"
    verify "$out_dir/$name"
    echo "guests: $out_dir/$name ($(stat -c %s "$out_dir/$name") bytes)"
}

# The launcher's requirements (docs/abi.md §2.1): ELF64, x86_64, ET_EXEC, loadable segments at
# or above 1 MiB, and a PT_NOTE holding the "lguest" boot note.
verify() {
    local elf="$1" hdr notes
    hdr="$(readelf -h "$elf")"
    grep -q 'Class:[[:space:]]*ELF64' <<<"$hdr" || fail "$elf: not ELF64"
    grep -q 'Machine:[[:space:]]*Advanced Micro Devices X86-64' <<<"$hdr" || fail "$elf: not x86_64"
    grep -q 'Type:[[:space:]]*EXEC' <<<"$hdr" || fail "$elf: not ET_EXEC"
    readelf -lW "$elf" | grep -q '^[[:space:]]*NOTE' || fail "$elf: no PT_NOTE segment"
    notes="$(readelf -nW "$elf")"
    grep -q 'lguest[[:space:]]*0x00000018[[:space:]]*Unknown note type: (0x4c470001)' <<<"$notes" ||
        fail "$elf: no lguest boot note (name \"lguest\", type 0x4c470001, 24 bytes)"
    # Every PT_LOAD's physical address must be at or above LOW_RESERVED (1 MiB).
    local paddr
    for paddr in $(readelf -lW "$elf" | awk '$1 == "LOAD" { print $4 }'); do
        ((paddr >= 0x100000)) || fail "$elf: a PT_LOAD segment below 1 MiB physical ($paddr)"
    done
}

fail() {
    echo "guests: $*" >&2
    exit 1
}

case "${1:-build}" in
build)
    for g in "${guests[@]}"; do build_one "$g"; done
    ;;
lint)
    for g in "${guests[@]}"; do
        dir="$here/$g"
        cargo fmt --manifest-path "$dir/Cargo.toml" --check
        RUSTFLAGS="$guest_rustflags" \
            cargo clippy --quiet --release --manifest-path "$dir/Cargo.toml" --target "$target" \
            -- -D warnings
        RUSTFLAGS="" cargo clippy --quiet --manifest-path "$dir/Cargo.toml" \
            --target "$host_target" --lib --tests -- -D warnings
    done
    ;;
test)
    for g in "${guests[@]}"; do
        RUSTFLAGS="" cargo test --quiet --manifest-path "$here/$g/Cargo.toml" \
            --target "$host_target" --lib
    done
    ;;
*)
    fail "usage: $0 [build|lint|test]"
    ;;
esac
