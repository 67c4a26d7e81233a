#!/usr/bin/env bash
# One boot of scripts/guest-bench.sh: the end-to-end guest with the devices the asked parts need,
# running guest/guest-bench.sh, and its figures written as "key value" lines to $RESULTS.
#   BENCH_PARTS: reads,fill,rr,net (any of them); MEMORY: memfd or anon; BENCH_ROUNDS,
#   BENCH_SECONDS, BENCH_MIB size it. Devices: our virtio-net at 00:17 on vtap0 (10.99.0.1 here, .2
#   in the guest) from a polling server, another at 00:19 on vtap1 (10.97.0.x) from one that does
#   not poll, and QEMU's virtio-net-pci at 00:18 on qtap0 (10.98.0.x); for reads two mtty-2 (00:12
#   polling, 00:13 not), two trapped mbochs (00:14, 00:15) and a bochs-display; for fill two mbochs
#   (00:10 mapped, 00:11 trapped). QEMU runs in the test's network namespace, so its TAP is there
#   too.
#   PLACEMENT=pinned gives the servers the last CPU and QEMU the others, as a deployment that pins
#   QEMU leaves the device servers a CPU of their own; by default the scheduler places them all.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
parts=${BENCH_PARTS:-reads,fill,rr,net}
qemu_cpus=()
if [ "${PLACEMENT:-}" = pinned ]; then
  last=$(($(nproc) - 1))
  [ $last -ge 1 ] || fail "PLACEMENT=pinned needs two CPUs"
  export SERVER_CPUS=$last
  qemu_cpus=(taskset -c "0-$((last - 1))")
fi
rounds=${BENCH_ROUNDS:-5}
mib=${BENCH_MIB:-32}
: "${RESULTS:?RESULTS names the file for the figures}"
e2e_setup "guest-bench-${MEMORY:-memfd}"
netns_create

device_at() { printf '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"%s/%s"},"addr":"%s"}' "$guest_dir" "$1" "$2"; }
# cpu_ticks PID...: user and system time of the processes, in clock ticks.
cpu_ticks() { [ $# -gt 0 ] || { echo 0; return; }; for pid in "$@"; do cat "/proc/$pid/stat"; done | awk '{ n += $14 + $15 } END { print n }'; }

devices=()
server_start net.sock --type virtio-net --tap vtap0 --mac 52:54:00:e2:e0:01 --poll "${BENCH_POLL:-adaptive}"
server_start net-nopoll.sock --type virtio-net --tap vtap1 --mac 52:54:00:e2:e0:03 --poll off
devices+=(-device "$(device_at net.sock 0x17)" -device "$(device_at net-nopoll.sock 0x19)")
devices+=(-netdev tap,id=qnet,ifname=qtap0,script=no,downscript=no -device virtio-net-pci,netdev=qnet,addr=0x18,mac=52:54:00:e2:e0:02)
polling=() sleeping=()
if [[ $parts == *reads* ]]; then
  server_start mtty-poll.sock --type mtty-2 --poll "${BENCH_POLL:-adaptive}"; polling+=("${server_pids[-1]}")
  server_start mtty-nopoll.sock --type mtty-2 --poll off; sleeping+=("${server_pids[-1]}")
  server_start mbochs-poll.sock --type mbochs-small --param mmap=off --poll "${BENCH_POLL:-adaptive}"; polling+=("${server_pids[-1]}")
  server_start mbochs-nopoll.sock --type mbochs-small --param mmap=off --poll off; sleeping+=("${server_pids[-1]}")
  devices+=(-device "$(device_at mtty-poll.sock 0x12)" -device "$(device_at mtty-nopoll.sock 0x13)"
            -device "$(device_at mbochs-poll.sock 0x14)" -device "$(device_at mbochs-nopoll.sock 0x15)"
            -device bochs-display,addr=0x16)
fi
if [[ $parts == *fill* ]]; then
  server_start mapped.sock --type mbochs-small --param mmap=on
  server_start trapped.sock --type mbochs-small --param mmap=off
  devices+=(-device "$(device_at mapped.sock 0x10)" -device "$(device_at trapped.sock 0x11)")
fi
in_netns ip addr add 10.99.0.1/24 dev vtap0
in_netns ip addr add 10.97.0.1/24 dev vtap1
in_netns ip link set vtap0 up
in_netns ip link set vtap1 up

# The host's ends of the TCP streams: receivers for the guest's sends (6000 through ours, 6001
# through QEMU's), one connection after another, each checked byte by byte.
gcc -O2 -Wall -o "$work/iobench" "$E2E_DIR/guest/iobench.c" || fail "cannot build iobench"
for port in 6000 6001; do
  (while in_netns "$work/iobench" recv $port; do :; done) > "$work/recv-$port.log" 2>&1 &
  helper_pids+=($!)
done
# The echo for the guest's request-response round trips, through every NIC.
in_netns "$work/iobench" echo 6100 > "$work/echo.log" 2>&1 &
helper_pids+=($!)

GUEST_ARGS="e2e.bench=$parts e2e.rounds=$rounds e2e.seconds=${BENCH_SECONDS:-3} e2e.mib=$mib" qemu_command guest-bench "${devices[@]}"
in_netns "${qemu_cpus[@]}" "${qemu_args[@]}" > "$work/console.log" 2>&1 &
qemu=$!
helper_pids+=($qemu)
for _ in $(seq 100); do in_netns ip link show qtap0 > /dev/null 2>&1 && break; sleep 0.1; done
in_netns ip addr add 10.98.0.1/24 dev qtap0
in_netns ip link set qtap0 up

# Follows the console: the host sends when the guest listens, and the servers' CPU time is taken
# at each phase line of the reads.
done_lines=0
deadline=$((SECONDS + E2E_TIMEOUT))
: > "$work/cpu.log"
while kill -0 $qemu 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { kill $qemu; fail "guest did not finish within ${E2E_TIMEOUT}s"; }
  mapfile -t lines < <(grep -a '^E2E-NET-LISTEN\|^E2E-BENCH phase' "$work/console.log" | tr -d '\r')
  while [ $done_lines -lt ${#lines[@]} ]; do
    set -- ${lines[$done_lines]}
    done_lines=$((done_lines + 1))
    if [ "$1" = E2E-BENCH ]; then
      echo "cpu-$3 $(date +%s.%N) $(cpu_ticks "${polling[@]}") $(cpu_ticks "${sleeping[@]}")" >> "$work/cpu.log"
    else
      [ "$2" = ours ] && address=10.99.0.2 || address=10.98.0.2
      in_netns "$work/iobench" send $address "$3" $((mib * 1048576)) >> "$work/send.log" 2>&1 || fail "the host could not send to $address"
    fi
  done
  sleep 0.1
done
wait $qemu || true
grep -q "E2E-DONE" "$work/console.log" || fail "the guest did not reach the end"
! grep -a "E2E-FAILED" "$work/console.log" || fail "the guest reported a failure"
! grep -a "mismatch" "$work/console.log" "$work"/recv-*.log || fail "a TCP stream arrived with wrong bytes"

{
  echo "clock-ticks $(getconf CLK_TCK)"
  cat "$work/cpu.log"
  tr -d '\r' < "$work/console.log" | awk '/^E2E-BENCH (read|rr) / { print $2 "-" $3, $4; print $2 "mean-" $3, $5 }' | sed 's/^readmean-/mean-/'
  sed -n 's/^E2E-BENCH fill-10 [^ ]* \([0-9]*\) bytes.*/fill-mapped \1/p; s/^E2E-BENCH fill-11 [^ ]* \([0-9]*\) bytes.*/fill-trapped \1/p' "$work/console.log" | tr -d '\r'
  # Megabytes per second of every stream that arrived whole: "received N bytes in T ns ok".
  awk '/ ok$/ { print "tx-ours", $2 * 1000 / $5 }' "$work/recv-6000.log"
  awk '/ ok$/ { print "tx-qemu", $2 * 1000 / $5 }' "$work/recv-6001.log"
  tr -d '\r' < "$work/console.log" | awk '/^E2E-BENCH rx .* ok$/ { print "rx-" $3, $4 * 1000 / $7 }'
} >> "$RESULTS"
check_guest_clean
server_stop
log "PASS"
