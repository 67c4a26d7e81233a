#!/bin/sh
# Two mediated devices of one server in one guest: the mtty-2 checks, then the virtio-net ones.
/tests/mtty.sh || echo "E2E-FAILED mtty checks exit $?"
/tests/virtio-net.sh || echo "E2E-FAILED virtio-net checks exit $?"
