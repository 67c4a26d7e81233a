#!/bin/sh
# The guest's side of scripts/guest-bench.sh: figures measured from inside the guest, each printed
# as an E2E-BENCH line. Framebuffer fill: 8-byte stores into BAR0 of the two mbochs devices
# (00:10.0 mapped, 00:11.0 trapped), through their sysfs resource0, for a few seconds each; no
# driver is bound to them, the memory decoding is switched on by hand.
. /tests/lib.sh
seconds=${BENCH_SECONDS:-3}
for arg in $(cat /proc/cmdline); do case $arg in e2e.seconds=*) seconds=${arg#e2e.seconds=};; esac; done
for slot in 10 11; do
  dev=/sys/bus/pci/devices/0000:00:$slot.0
  [ -e $dev ] || { echo "E2E-FAILED no device at 00:$slot.0"; continue; }
  echo 1 > $dev/enable
  /tests/fbtool fill 0000:00:$slot.0 $seconds | sed "s/^E2E-FILL /E2E-BENCH fill-$slot /"
done
