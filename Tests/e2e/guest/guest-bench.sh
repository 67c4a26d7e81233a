#!/bin/sh
# The guest's side of scripts/guest-bench.sh: figures measured from inside the guest, printed as
# E2E-BENCH lines, in interleaved rounds. Which parts run is on the kernel command line
# (e2e.bench=reads,fill,rr,net), with e2e.rounds, e2e.seconds (fill) and e2e.mib (TCP).
#   reads: /tests/iobench times trapped reads: the scratch register of two mtty-2s (00:12, whose
#          server polls, and 00:13, whose server does not), the DISPI ID register of two mbochs
#          (00:14 polled, 00:15 not), and the same registers of devices QEMU emulates itself:
#          COM1's scratch register and a bochs-display (00:16). Then 3 s of nothing (idle CPU).
#   fill:  8-byte stores into BAR0 of the mbochs at 00:10 (mapped) and 00:11 (trapped).
#   rr:    TCP request-response round trips, 64 bytes each way, through our virtio-net (00:17,
#          10.99.0.2, whose server polls), another (00:19, 10.97.0.2, not polling) and QEMU's own
#          virtio-net-pci (00:18, 10.98.0.2); each reply is checked.
#   net:   TCP streams both ways through 00:17 and 00:18; the receiving end checks every byte.
. /tests/lib.sh
bench=reads,fill,rr,net; rounds=5; seconds=3; mib=32
for arg in $(cat /proc/cmdline); do
  case $arg in
    e2e.bench=*) bench=${arg#e2e.bench=};;
    e2e.rounds=*) rounds=${arg#e2e.rounds=};;
    e2e.seconds=*) seconds=${arg#e2e.seconds=};;
    e2e.mib=*) mib=${arg#e2e.mib=};;
  esac
done
has() { case ",$bench," in *",$1,"*) return 0;; esac; return 1; }
dev() { echo /sys/bus/pci/devices/0000:00:$1.0; }

# read_one NAME IOBENCH-ARGS...: one timed run, as "E2E-BENCH read NAME MEDIAN-NS MEAN-NS".
read_one() {
  local name=$1 out
  shift
  out=$(/tests/iobench "$@") || { echo "E2E-FAILED iobench $*"; return; }
  set -- $out
  echo "E2E-BENCH read $name $2 $4"
}

if has reads; then
  for slot in 14 15 16; do echo 1 > "$(dev $slot)/enable"; done
  # The I/O BAR's base is the first field of the device's resource file.
  mtty_poll=$(( $(cut -d' ' -f1 "$(dev 12)/resource" | head -1) + 7 ))
  mtty_nopoll=$(( $(cut -d' ' -f1 "$(dev 13)/resource" | head -1) + 7 ))
  echo "E2E-BENCH phase reads"
  round=1
  while [ $round -le $rounds ]; do
    read_one mtty-poll port $mtty_poll 2000
    read_one mtty-nopoll port $mtty_nopoll 2000
    read_one qemu-16550 port 0x3ff 100000
    read_one mbochs-poll mmio 0000:00:14.0 2 0x500 2000
    read_one mbochs-nopoll mmio 0000:00:15.0 2 0x500 2000
    read_one qemu-bochs-display mmio 0000:00:16.0 2 0x500 100000
    round=$((round + 1))
  done
  echo "E2E-BENCH phase idle"
  sleep 3
  echo "E2E-BENCH phase idle-end"
fi

if has fill; then
  for slot in 10 11; do
    echo 1 > "$(dev $slot)/enable"
    /tests/fbtool fill 0000:00:$slot.0 $seconds | sed "s/^E2E-FILL /E2E-BENCH fill-$slot /"
  done
fi

if has rr || has net; then
  for module in failover net_failover virtio_net; do insmod /modules/$module.ko || echo "E2E-FAILED insmod $module"; done
  ip link set lo up
  for pair in "17 10.99.0" "18 10.98.0" "19 10.97.0"; do
    set -- $pair
    iface=$(ls "$(dev $1)"/virtio*/net 2>/dev/null | head -1)
    [ -n "$iface" ] || { echo "E2E-FAILED no interface at 00:$1"; continue; }
    ip addr add $2.2/24 dev $iface
    ip link set $iface up
    n=0
    while [ "$(cat /sys/class/net/$iface/operstate)" != up ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    ping -c 1 -W 10 $2.1 > /dev/null 2>&1 || echo "E2E-FAILED no answer from $2.1"
  done
fi

if has rr; then
  round=1
  while [ $round -le $rounds ]; do
    for pair in "ours 10.99.0.1" "ours-nopoll 10.97.0.1" "qemu 10.98.0.1"; do
      set -- $pair
      out=$(/tests/iobench rr $2 6100 2000) || { echo "E2E-FAILED round trips through $1"; continue; }
      set -- $1 $out
      echo "E2E-BENCH rr $1 $3 $5"
    done
    round=$((round + 1))
  done
fi

if has net; then
  bytes=$((mib * 1048576))
  round=1
  while [ $round -le $rounds ]; do
    # Guest to host: the host's receivers (port 6000 ours, 6001 QEMU's) check and time it.
    /tests/iobench send 10.99.0.1 6000 $bytes > /dev/null || echo "E2E-FAILED send through ours"
    /tests/iobench send 10.98.0.1 6001 $bytes > /dev/null || echo "E2E-FAILED send through QEMU's"
    # Host to guest: the host sends once it sees the line (its sender retries until this listens).
    for nic in ours qemu; do
      echo "E2E-NET-LISTEN $nic 7000"
      /tests/iobench recv 7000 | sed -n "s/^received /E2E-BENCH rx $nic /p"
    done
    round=$((round + 1))
  done
fi
