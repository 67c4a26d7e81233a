#!/usr/bin/env bash
# Benchmarks measured from inside a real guest (QEMU 11.1.3, TCG, the end-to-end tree), each beside
# its reference from the same boot, in interleaved rounds:
#   - trapped register reads, ns per read: an mtty I/O port and an mbochs MMIO register, from a
#     server that polls its socket and from one that does not, beside the same registers of
#     devices QEMU emulates itself (COM1's 16550, a bochs-display); the servers' CPU meanwhile and
#     while the guest idles. Once with the scheduler placing every thread, once with the servers
#     on a CPU of their own (the last) and QEMU on the others;
#   - framebuffer fill: 8-byte stores into an mbochs BAR0, mapped against trapped (mmap=off);
#   - TCP request-response round trips, 64 bytes each way, through our virtio-net (from a server
#     that polls and from one that does not) and through QEMU's own virtio-net-pci, each NIC on its
#     own TAP: with memfd guest RAM, with plain RAM, and with memfd and the servers on a CPU of
#     their own;
#   - TCP streams both ways through ours and through QEMU's, with memfd and with plain RAM.
#   Every byte of the TCP traffic is checked where it arrives.
# Needs root, as the end-to-end tests. BENCH_ROUNDS (5), BENCH_SECONDS (fill, 3) and BENCH_MIB (each
# TCP stream, 32) size it; BENCH_POLL sets the polling servers' --poll (adaptive); SERVER_BIN
# measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-packages.sh build e2e
if [ -z "${SERVER_BIN:-}" ]; then
  swift build -c release --product vfio-user-server >&2
  export SERVER_BIN=$PWD/.build/release/vfio-user-server
fi
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
MEMORY=memfd BENCH_PARTS=reads,fill,rr,net RESULTS=$results/memfd Tests/e2e/guest-bench.sh >&2
MEMORY=anon BENCH_PARTS=rr,net RESULTS=$results/anon Tests/e2e/guest-bench.sh >&2
MEMORY=memfd BENCH_PARTS=reads,rr PLACEMENT=pinned RESULTS=$results/pinned Tests/e2e/guest-bench.sh >&2

# figure FILE KEY: the median of the values under KEY.
figure() { awk -v k="$2" '$1 == k { print $2 }' "$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'; }
m=$results/memfd a=$results/anon
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r); guest under TCG, ${BENCH_ROUNDS:-5} rounds"
echo
# reads FILE TITLE: the trapped reads of one boot, polling against not, and the servers' CPU.
reads() {
  local f=$1
  echo "Trapped register reads from the guest, $2, ns per read (each round's median and mean; the median of the rounds)"
  printf '  %-46s %9s %9s\n' "" median mean
  for row in "mtty-poll|mtty I/O port, our server polling" "mtty-nopoll|mtty I/O port, our server not polling" \
             "qemu-16550|16550 I/O port emulated by QEMU" "mbochs-poll|mbochs MMIO register, our server polling" \
             "mbochs-nopoll|mbochs MMIO register, our server not polling" "qemu-bochs-display|bochs-display MMIO register emulated by QEMU"; do
    printf '  %-46s %9.0f %9.0f\n' "${row#*|}" "$(figure $f read-${row%%|*})" "$(figure $f mean-${row%%|*})"
  done
  for stat in read mean; do
    awk -v s=$stat -v a="$(figure $f $stat-mtty-nopoll)" -v b="$(figure $f $stat-mtty-poll)" -v c="$(figure $f $stat-mbochs-nopoll)" -v d="$(figure $f $stat-mbochs-poll)" \
      'BEGIN { printf "  polling, by the %s: reads %.2fx as fast (I/O port), %.2fx (MMIO)\n", s == "read" ? "median" : "mean", a / b, c / d }'
  done
  awk '$1 == "clock-ticks" { hz = $2 } $1 ~ /^cpu-/ { t[$1] = $2; p[$1] = $3; s[$1] = $4 }
    END {
      w = t["cpu-idle"] - t["cpu-reads"]; i = t["cpu-idle-end"] - t["cpu-idle"]
      printf "  servers'\'' CPU during the reads: polling %.0f%%, not polling %.0f%% of one CPU\n", 100 * (p["cpu-idle"] - p["cpu-reads"]) / hz / w, 100 * (s["cpu-idle"] - s["cpu-reads"]) / hz / w
      printf "  servers'\'' CPU while the guest idles (%.1f s): polling %.1f%%, not polling %.1f%%\n", i, 100 * (p["cpu-idle-end"] - p["cpu-idle"]) / hz / i, 100 * (s["cpu-idle-end"] - s["cpu-idle"]) / hz / i
    }' "$f"
}
reads "$m" "the scheduler placing every thread"
echo
reads "$results/pinned" "the servers on CPU $(($(nproc) - 1)) and QEMU on the others"
echo
echo "Framebuffer fill from the guest (8-byte stores to BAR0 of an mbochs-small, ${BENCH_SECONDS:-3} s each)"
awk -v mp="$(figure $m fill-mapped)" -v tr="$(figure $m fill-trapped)" 'BEGIN {
  printf "  %-34s %12.2f MB/s\n  %-34s %12.4f MB/s\n  %-34s %12.0fx\n", "BAR0 mapped (the client maps it)", mp / 1e6, "BAR0 trapped (mmap=off)", tr / 1e6, "mapped / trapped", mp / tr }'
echo
echo "TCP round trips through virtio-net, 64 bytes each way, µs per trip (each round's median; the median of the rounds;"
echo "polling: how much faster ours is than ours not polling; vs QEMU's: how much faster than QEMU's own)"
printf '  %-34s %8s %17s %8s %9s %9s\n' "" ours "ours, not polling" "QEMU's" polling "vs QEMU's"
for row in "memfd|memfd RAM" "anon|plain RAM" "pinned|memfd RAM, servers on CPU $(($(nproc) - 1))"; do
  f=$results/${row%%|*}
  awk -v l="${row#*|}" -v o="$(figure $f rr-ours)" -v n="$(figure $f rr-ours-nopoll)" -v q="$(figure $f rr-qemu)" \
    'BEGIN { printf "  %-34s %8.0f %17.0f %8.0f %8.2fx %8.2fx\n", l, o / 1000, n / 1000, q / 1000, n / o, q / o }'
done
echo
echo "TCP through virtio-net, MB/s (median of the rounds; every byte checked where it arrived)"
printf '  %-28s %8s %8s %7s\n' "" ours "QEMU's" ratio
for memory in memfd anon; do
  for way in tx rx; do
    f=$results/$memory
    [ $way = tx ] && what="guest to host" || what="host to guest"
    [ $memory = memfd ] && label="memfd RAM, $what" || label="plain RAM, $what"
    awk -v l="$label" -v o="$(figure $f $way-ours)" -v q="$(figure $f $way-qemu)" 'BEGIN { printf "  %-28s %8.1f %8.1f %6.2fx\n", l, o, q, o / q }'
  done
done
