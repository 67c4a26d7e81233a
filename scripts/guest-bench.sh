#!/usr/bin/env bash
# Benchmarks measured from inside a real guest (QEMU 11.1.3, TCG, the end-to-end tree), each beside
# its reference from the same run:
#   - framebuffer fill: 8-byte stores into an mbochs-small's BAR0, mapped (the client maps the
#     framebuffer's memfd) against the same BAR trapped (--param mmap=off: every store a message).
# Needs root (as the end-to-end tests). BENCH_SECONDS sets how long each figure is measured (3).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-packages.sh build e2e
swift build -c release --product vfio-user-server >&2
export SERVER_BIN=$PWD/.build/release/vfio-user-server
source Tests/e2e/lib.sh
e2e_setup guest-bench
server_start mapped.sock --type mbochs-small --param mmap=on
server_start trapped.sock --type mbochs-small --param mmap=off
device() { printf '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"%s/%s"},"addr":"%s"}' "$guest_dir" "$1" "$2"; }
GUEST_ARGS="e2e.seconds=${BENCH_SECONDS:-3}" e2e_boot guest-bench -device "$(device mapped.sock 0x10)" -device "$(device trapped.sock 0x11)"
check_guest_clean
mapped=$(sed -n 's/^E2E-BENCH fill-10 [^ ]* \([0-9]*\) bytes.*/\1/p' "$work/console.log" | tr -d '\r')
trapped=$(sed -n 's/^E2E-BENCH fill-11 [^ ]* \([0-9]*\) bytes.*/\1/p' "$work/console.log" | tr -d '\r')
[ -n "$mapped" ] && [ -n "$trapped" ] || fail "no fill figures: $(grep E2E-BENCH "$work/console.log")"
server_stop
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r); guest under TCG"
echo
echo "Framebuffer fill from the guest (8-byte stores to BAR0 of an mbochs-small, ${BENCH_SECONDS:-3} s each)"
awk -v m="$mapped" -v t="$trapped" 'BEGIN {
  printf "  %-34s %14.2f MB/s\n", "BAR0 mapped (the client maps it)", m / 1e6
  printf "  %-34s %14.4f MB/s\n", "BAR0 trapped (mmap=off)", t / 1e6
  printf "  %-34s %14.0fx\n", "mapped / trapped", m / t
}'
