# Helpers for the guest test scripts (busybox sh).

# pci_device VENDOR DEVICE: the sysfs directory of the first PCI function with these IDs.
pci_device() {
  for d in /sys/bus/pci/devices/*; do
    # 2>/dev/null: a device being ejected may vanish between the glob and the read.
    if [ "$(cat "$d/vendor" 2>/dev/null)" = "$1" ] && [ "$(cat "$d/device" 2>/dev/null)" = "$2" ]; then echo "$d"; return 0; fi
  done
  return 1
}

# irq_count IRQ: interrupts counted on that line, over all CPUs.
irq_count() {
  awk -v irq="$1:" '$1 == irq { n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print n }' /proc/interrupts
}
