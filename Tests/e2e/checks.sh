# What the host checks in a guest's console, per device; shared by the tests that attach the
# device alone and the one that attaches several from one server. Sourced by lib.sh.

# check_mtty_enumerated: the guest saw the mtty-2, and the 8250 driver found a 16550A at each BAR.
check_mtty_enumerated() {
  expect '^E2E-DEVICE vendor=0x4348 device=0x3253 class=0x070002 subsystem=0x4348:0x3253 revision=0x10' \
    "the guest sees 4348:3253 class 0x070002 rev 0x10"
  local port start i
  ports=$(console_value E2E-PORTS)
  [ "$(echo $ports | wc -w)" -eq 2 ] || fail "expected two serial ports, got '$ports'"
  log "ok: the PCI device has two tty ports: $ports"
  for i in 0 1; do
    start=$(awk -v i=$i '$1 == "E2E-BAR" && $2 == i { print $3 }' "$work/console.log" | tr -d '\r')
    port=$(printf '0x%x' "$start")
    expect "^E2E-UART .*ttyS[0-9]+ at I/O $port .* is a 16550A" "BAR$i (I/O $port) is a 16550A port"
  done
}

# check_mtty_guest: the guest saw the mtty-2 and looped bytes through both ports with interrupts.
check_mtty_guest() {
  check_mtty_enumerated
  local p line before after
  for p in $ports; do
    expect "^E2E-READ $p hello from $p" "$p loops a line back"
    expect "^E2E-BULK $p ok" "$p loops 4 KiB of random bytes back intact"
    line=$(grep "^E2E-IRQ $p " "$work/console.log" | tr -d '\r')
    before=$(echo "$line" | sed 's/.*before=\([0-9]*\).*/\1/'); after=$(echo "$line" | sed 's/.*after=\([0-9]*\).*/\1/')
    [ -n "$before" ] && [ -n "$after" ] && [ "$after" -gt "$before" ] || fail "$p: no interrupts counted ($line)"
    log "ok: $p was interrupt-driven ($((after - before)) INTx interrupts)"
  done
}

# The stream the namespace sends the guest (guest/virtio-net.sh listens for it on port 5001).
rx_bulk_bytes=$((24 << 20))

# tap_peer_setup: the namespace's end of the guest's link: 10.99.0.1 on vtap0 (made by the
# server), a TCP listener on port 5000 writing to $work/received, and a sender that streams
# $work/rx-blob to the guest's port 5001 once the guest says it listens (E2E-RX-LISTEN), keeping
# the namespace's TCP counters (RetransSegs among them) from before and after in $work/rx-snmp.
tap_peer_setup() {
  for _ in $(seq 50); do in_netns ip link show vtap0 >/dev/null 2>&1 && break; sleep 0.1; done
  in_netns ip addr add 10.99.0.1/24 dev vtap0
  in_netns ip link set vtap0 up
  # busybox nc stops at the end of its own stdin: give it a FIFO held open, which never ends.
  mkfifo "$work/nc-input"
  exec 7<>"$work/nc-input"
  in_netns busybox nc -l -p 5000 < "$work/nc-input" > "$work/received" &
  helper_pids+=($!)
  head -c $rx_bulk_bytes /dev/urandom > "$work/rx-blob"
  (
    for _ in $(seq $((E2E_TIMEOUT * 10))); do grep -q '^E2E-RX-LISTEN' "$work/console.log" 2>/dev/null && break; sleep 0.1; done
    in_netns cat /proc/net/snmp > "$work/rx-snmp-before"
    in_netns socat -u "FILE:$work/rx-blob" TCP:10.99.0.2:5001,retry=50,interval=0.2 2>"$work/rx-sender.log"
    in_netns cat /proc/net/snmp > "$work/rx-snmp.tmp" && mv "$work/rx-snmp.tmp" "$work/rx-snmp"
  ) &
  helper_pids+=($!)
}

# check_virtio_net_guest MAC: the guest's virtio_net drove the NIC: link, ping, 10 MiB intact, MSI-X.
check_virtio_net_guest() {
  local mac=$1 sent received size msix
  expect '^E2E-DEVICE vendor=0x1af4 device=0x1041 class=0x020000 driver=virtio-pci' "the guest's virtio-pci binds 1af4:1041 class 0x020000"
  expect "^E2E-IFACE eth[0-9]+ mac=$mac" "virtio_net made an interface with the device's MAC"
  expect '^E2E-LINK up' "the link is up"
  expect '^E2E-PING ok' "the guest pings the namespace's address through the TAP"
  expect '^E2E-SENT ok' "the guest sent 10 MiB over TCP"
  for _ in $(seq 50); do [ "$(stat -c %s "$work/received")" -ge 10485760 ] && break; sleep 0.1; done
  sent=$(console_value E2E-MD5)
  received=$(md5sum < "$work/received" | cut -d' ' -f1)
  size=$(stat -c %s "$work/received")
  [ "$size" -eq 10485760 ] || fail "received $size bytes, not 10485760"
  [ "$sent" = "$received" ] || fail "checksum mismatch: guest sent $sent, namespace received $received"
  log "ok: 10 MiB arrived intact (md5 $received)"
  msix=$(grep '^E2E-INTR .*virtio[0-9]*-\(input\|output\)' "$work/console.log" | grep -c 'PCI-MSIX' || true)
  [ "$msix" -ge 2 ] || fail "the queues did not use MSI-X interrupts: $(grep E2E-INTR "$work/console.log")"
  grep '^E2E-INTR .*virtio[0-9]*-input' "$work/console.log" | awk '{ n = 0; for (i = 3; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; exit !(n > 0) }' \
    || fail "no receive interrupts counted"
  log "ok: the guest's queues take MSI-X interrupts ($msix vectors)"
  check_virtio_net_receive
}

# tcp_retransmissions FILE: RetransSegs in a copy of /proc/net/snmp.
tcp_retransmissions() {
  awk '$1 == "Tcp:" { if (!column) { for (i = 2; i <= NF; i++) if ($i == "RetransSegs") column = i } else print $column }' "$1"
}

# check_virtio_net_receive: the stream from the namespace arrived in the guest intact, and Linux's
# virtio_net counted no receive error: a frame whose buffers were not all published when it
# looked is an rx_length_error (receive_mergeable) and a drop.
check_virtio_net_receive() {
  local line md5 size expected stats packets bytes value name retransmitted
  expect '^E2E-RX-MD5 ' "the guest took in the host's stream"
  line=$(console_value E2E-RX-MD5)
  md5=${line% *}; size=${line#* }
  expected=$(md5sum < "$work/rx-blob" | cut -d' ' -f1)
  [ "$size" -eq $rx_bulk_bytes ] || fail "the guest received $size bytes, not $rx_bulk_bytes ($(cat "$work/rx-sender.log" 2>/dev/null))"
  [ "$md5" = "$expected" ] || fail "checksum mismatch: the namespace sent $expected, the guest received $md5"
  stats=$(console_value E2E-RX-STATS)
  for name in errors dropped length_errors; do
    value=$(echo "$stats" | sed "s/.* $name=\([0-9]*\).*/\1/")
    [ "$value" = 0 ] || fail "the guest's interface counted rx_$name=$value ($stats)"
  done
  packets=$(echo "$stats" | sed 's/.*packets=\([0-9]*\).*/\1/')
  bytes=$(echo "$stats" | sed 's/.* bytes=\([0-9]*\).*/\1/')
  for _ in $(seq 50); do [ -s "$work/rx-snmp" ] && break; sleep 0.1; done
  retransmitted=$(( $(tcp_retransmissions "$work/rx-snmp") - $(tcp_retransmissions "$work/rx-snmp-before") ))
  log "ok: $((rx_bulk_bytes >> 20)) MiB from the host arrived intact (md5 $md5) in $packets frames of $((bytes / packets)) bytes on average; rx_errors, rx_dropped and rx_length_errors 0; TCP retransmissions: ${retransmitted:-?}"
}

# check_guest_clean: the guest script reported no failure.
check_guest_clean() {
  if grep -q "E2E-FAILED" "$work/console.log"; then fail "guest reported: $(grep E2E-FAILED "$work/console.log")"; fi
}

# display_screenshots_setup UUID CONTROL: takes screenshots of display instance UUID through the
# server's control socket while the guest holds its picture: $work/console.png once the console
# shows E2E-CONSOLE-READY, $work/pattern.png once it shows E2E-PATTERN-READY.
display_screenshots_setup() {
  local uuid=$1 control=$2
  (
    for shot in E2E-CONSOLE-READY:console E2E-PATTERN-READY:pattern; do
      for _ in $(seq $((E2E_TIMEOUT * 10))); do grep -q "^${shot%%:*}" "$work/console.log" 2>/dev/null && break; sleep 0.1; done
      "$SERVER_BIN" screenshot --uuid "$uuid" --control "$control" --output "$work/${shot#*:}.png" >"$work/screenshot-${shot#*:}.log" 2>&1
    done
  ) &
  helper_pids+=($!)
}

# check_mbochs_guest WIDTH HEIGHT: the guest's bochs driver bound, made /dev/fb0 at the EDID's mode,
# and the server's screenshots show its console and then, pixel for pixel, the pattern it drew.
check_mbochs_guest() {
  local width=$1 height=$2 result
  expect '^E2E-DISPLAY vendor=0x1234 device=0x1111 class=0x038000 subsystem=0x1af4:0x1100 driver=bochs-drm' \
    "the guest's bochs driver binds 1234:1111 class 0x038000"
  expect "^E2E-FB name=bochs-drmdrmfb mode=$width,$height bpp=32" "/dev/fb0 is ${width}x${height}, the EDID's preferred mode"
  for _ in $(seq 100); do [ -s "$work/screenshot-pattern.log" ] && break; sleep 0.1; done
  result=$(python3 "$E2E_DIR/png-check.py" drawn "$work/console.png" "$width" "$height" 2>&1) \
    || fail "the console screenshot: $result $(cat "$work/screenshot-console.log" 2>/dev/null)"
  log "ok: a screenshot shows the guest's console ($result)"
  [ -n "${E2E_SCREENSHOT:-}" ] && cp "$work/console.png" "$E2E_SCREENSHOT" && log "kept it as $E2E_SCREENSHOT"
  expect '^E2E-PATTERN-DRAWN' "the guest drew the pattern into /dev/fb0"
  result=$(python3 "$E2E_DIR/png-check.py" pattern "$work/pattern.png" "$width" "$height" 2>&1) \
    || fail "the pattern screenshot: $result $(cat "$work/screenshot-pattern.log" 2>/dev/null)"
  log "ok: $result"
}
