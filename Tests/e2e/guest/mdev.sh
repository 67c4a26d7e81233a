#!/bin/sh
# Mediated devices of one server in one guest: the mtty-2 checks, the virtio-net ones, then the
# mbochs ones when the host attached a display too (the host checks what it attached).
. /tests/lib.sh
/tests/mtty.sh || echo "E2E-FAILED mtty checks exit $?"
/tests/virtio-net.sh || echo "E2E-FAILED virtio-net checks exit $?"
if pci_device 0x1234 0x1111 >/dev/null; then /tests/mbochs.sh || echo "E2E-FAILED mbochs checks exit $?"; fi
