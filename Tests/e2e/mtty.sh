#!/usr/bin/env bash
# End to end: QEMU attaches an mtty-2 served by vfio-user-server; the Linux guest's 8250 driver
# binds two 16550A ports at the two I/O BARs and loops bytes through each (interrupt-driven: INTx).
# MEMORY=anon runs it with plain guest RAM: QEMU's DMA maps then carry no fd (message mode).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
e2e_setup "mtty-${MEMORY:-memfd}"
server_start mtty.sock --type mtty-2 --trace
e2e_boot mtty -device "$(device_json mtty.sock)"

expect '^E2E-DEVICE vendor=0x4348 device=0x3253 class=0x070002 subsystem=0x4348:0x3253 revision=0x10' \
  "the guest sees 4348:3253 class 0x070002 rev 0x10"
ports=$(console_value E2E-PORTS)
[ "$(echo $ports | wc -w)" -eq 2 ] || fail "expected two serial ports, got '$ports'"
log "ok: the PCI device has two tty ports: $ports"
for i in 0 1; do
  start=$(awk -v i=$i '$1 == "E2E-BAR" && $2 == i { print $3 }' "$work/console.log" | tr -d '\r')
  port=$(printf '0x%x' "$start")
  expect "^E2E-UART .*ttyS[0-9]+ at I/O $port .* is a 16550A" "BAR$i (I/O $port) is a 16550A port"
done
for p in $ports; do
  expect "^E2E-READ $p hello from $p" "$p loops a line back"
  expect "^E2E-BULK $p ok" "$p loops 4 KiB of random bytes back intact"
  line=$(grep "^E2E-IRQ $p " "$work/console.log" | tr -d '\r')
  before=$(echo "$line" | sed 's/.*before=\([0-9]*\).*/\1/'); after=$(echo "$line" | sed 's/.*after=\([0-9]*\).*/\1/')
  [ -n "$before" ] && [ -n "$after" ] && [ "$after" -gt "$before" ] || fail "$p: no interrupts counted ($line)"
  log "ok: $p was interrupt-driven ($((after - before)) INTx interrupts)"
done
grep -q "E2E-FAILED" "$work/console.log" && fail "guest reported: $(grep E2E-FAILED "$work/console.log")"
server_stop
log "ok: server exited 0 on SIGTERM and removed its socket"
summary=$(grep "session summary" "$work/server-mtty.sock.log" | tail -1)
with_fd=$(echo "$summary" | sed 's/.* \([0-9]*\) DMA maps with an fd.*/\1/')
without_fd=$(echo "$summary" | sed 's/.* \([0-9]*\) without.*/\1/')
! grep -q "DMA_MAP reply error" "$work/server-mtty.sock.log" || fail "a DMA_MAP was refused"
if [ "${MEMORY:-memfd}" = anon ]; then [ "$with_fd" -eq 0 ] && [ "$without_fd" -gt 0 ] || fail "anonymous RAM: $summary"
else [ "$with_fd" -gt 0 ] || fail "memfd RAM but no DMA_MAP carried an fd: $summary"; fi
log "ok: QEMU's DMA maps were all accepted ($with_fd with an fd, $without_fd without)"
log "PASS"
