#!/bin/sh
# Hot-plug rounds (the host adds and removes the mtty-2 through QEMU's QMP): each round waits for
# the device to appear, loops a line through each of its ports, reports, then waits for it to go.
. /tests/lib.sh
rounds=$(sed -n 's/.*e2e.rounds=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "E2E-HOTPLUG-READY $rounds"
for n in $(seq "$rounds"); do
  t=0
  until dev=$(pci_device 0x4348 0x3253) && [ -e "$dev/driver" ]; do
    sleep 0.2; t=$((t + 1)); [ $t -lt 600 ] || { echo "E2E-FAILED round $n: the device did not come"; exit 1; }
  done
  bdf=$(basename "$dev")
  sleep 1
  ports=$(dmesg | sed -n "s/.*$bdf: \(ttyS[0-9]*\) at I\/O.*/\1/p" | tail -2)
  looped=0
  for p in $ports; do
    stty -F /dev/$p raw -echo cs8 -parenb -cstopb clocal -crtscts 115200 || echo "E2E-FAILED stty $p"
    cat /dev/$p > /tmp/$p.out &
    reader=$!
    sleep 0.3
    printf "round $n via $p\n" > /dev/$p
    m=0; while [ $m -lt 40 ] && ! grep -q "round $n via $p" /tmp/$p.out; do sleep 0.1; m=$((m + 1)); done
    kill $reader
    grep -q "round $n via $p" /tmp/$p.out && looped=$((looped + 1))
  done
  echo "E2E-HOTPLUG-UP $n $bdf ports=$(echo $ports | wc -w) looped=$looped"
  t=0
  while [ -e "$dev" ]; do
    sleep 0.2; t=$((t + 1)); [ $t -lt 600 ] || { echo "E2E-FAILED round $n: the device did not go"; exit 1; }
  done
  echo "E2E-HOTPLUG-DOWN $n gone"
done
