#!/bin/sh
# mtty-2 in the guest: the PCI identity, the 8250 driver's two 16550A ports at the two I/O BARs,
# and bytes looped back through each port by the interrupt-driven driver.
. /tests/lib.sh
dev=$(pci_device 0x4348 0x3253) || { echo "E2E-FAILED no 4348:3253 device"; exit 1; }
echo "E2E-DEVICE vendor=$(cat $dev/vendor) device=$(cat $dev/device) class=$(cat $dev/class) subsystem=$(cat $dev/subsystem_vendor):$(cat $dev/subsystem_device) revision=$(cat $dev/revision)"
i=0
while read start end flags; do
  [ $i -lt 2 ] && echo "E2E-BAR $i $start $end $flags"
  i=$((i + 1))
done < $dev/resource
dmesg | grep -E "ttyS[0-9]+ at I/O" | sed 's/^\[[^]]*\] //; s/^/E2E-UART /'
bdf=$(basename $dev)
ports=$(dmesg | sed -n "s/.*$bdf: \(ttyS[0-9]*\) at I\/O.*/\1/p")
echo "E2E-PORTS" $ports
# e2e.enumerate: no interrupts reach this guest (a relay that drops fds), and a write to a port
# would wait forever for its transmit interrupt: stop at enumeration.
grep -qw e2e.enumerate /proc/cmdline && exit 0
for p in $ports; do
  irq=$(dmesg | sed -n "s/.*$p at I\/O .*(irq = \([0-9]*\),.*/\1/p" | head -1)
  stty -F /dev/$p raw -echo cs8 -parenb -cstopb clocal -crtscts 115200 || echo "E2E-FAILED stty $p"
  # A short message, then 4 KiB of random bytes (far more than the 16-byte FIFO).
  head -c 4096 /dev/urandom > /tmp/$p.src
  cat /dev/$p > /tmp/$p.out &
  reader=$!
  sleep 0.5
  # The IRQ is listed in /proc/interrupts only while the port is open: count with the reader running.
  before=$(irq_count $irq)
  printf "hello from $p\n" > /dev/$p
  sleep 0.5
  cat /tmp/$p.src > /dev/$p
  n=0
  while [ $n -lt 40 ] && [ "$(wc -c < /tmp/$p.out)" -lt $((4096 + 15)) ]; do sleep 0.25; n=$((n + 1)); done
  after=$(irq_count $irq)
  kill $reader
  head -n 1 /tmp/$p.out | sed "s/^/E2E-READ $p /"
  tail -c 4096 /tmp/$p.out > /tmp/$p.bulk
  if cmp -s /tmp/$p.src /tmp/$p.bulk; then echo "E2E-BULK $p ok $(wc -c < /tmp/$p.out)"; else echo "E2E-BULK $p mismatch $(wc -c < /tmp/$p.out)"; fi
  echo "E2E-IRQ $p irq=$irq before=$before after=$after"
done
