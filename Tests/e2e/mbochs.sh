#!/usr/bin/env bash
# End to end: QEMU attaches an mbochs-medium served by vfio-user-server; QEMU maps its framebuffer
# (BAR0) from the fd that comes with GET_REGION_INFO. The guest's stock bochs DRM driver binds,
# takes the EDID's mode and draws its console there; the server's screenshots must show that
# console and then, pixel for pixel, a pattern the guest draws into /dev/fb0.
# MEMORY=anon runs it with plain guest RAM.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
e2e_setup "mbochs-${MEMORY:-memfd}"
uuid=83b8f4f2-509f-382f-3c1e-e6bfe0fa1b0c
server_start fb.sock --type mbochs-medium --uuid $uuid ${SERVER_TRACE:+--trace}
display_screenshots_setup $uuid "$work/control-fb.sock"
e2e_boot mbochs -device "$(device_json fb.sock)"
check_mbochs_guest 1024 768
check_guest_clean
server_stop
# While a region is mmap-able, QEMU sends every BAR write replied, never posted.
summary=$(grep "session summary" "$work/server-fb.sock.log" | tail -1)
posted=$(echo "$summary" | sed 's/.*(\([0-9]*\) posted).*/\1/')
[ "$posted" -eq 0 ] || fail "with BAR0 mmap-able QEMU should post nothing: $summary"
log "ok: BAR0 mmap-able: QEMU posted no write, every BAR write waited for its reply ($summary)"
log "PASS"
