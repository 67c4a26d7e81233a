#!/bin/sh
# mbochs in the guest: the stock bochs DRM driver binds to 1234:1111, reads the EDID and sets its
# preferred mode, and fbcon draws the console into the framebuffer the server holds. The host takes
# a screenshot of the console, then of a pattern drawn into /dev/fb0.
. /tests/lib.sh
for module in drm drm_kms_helper ttm drm_ttm_helper drm_vram_helper bochs; do
  insmod /modules/$module.ko || echo "E2E-FAILED insmod $module"
done
dev=$(pci_device 0x1234 0x1111) || { echo "E2E-FAILED no 1234:1111 device"; exit 1; }
n=0
while [ ! -e /sys/class/graphics/fb0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
driver=$(basename "$(readlink $dev/driver)")
echo "E2E-DISPLAY vendor=$(cat $dev/vendor) device=$(cat $dev/device) class=$(cat $dev/class) subsystem=$(cat $dev/subsystem_vendor):$(cat $dev/subsystem_device) driver=$driver"
[ -e /sys/class/graphics/fb0 ] || { echo "E2E-FAILED no /dev/fb0"; dmesg | grep -i -E "bochs|drm" | tail -20; exit 1; }
echo "E2E-FB name=$(cat /sys/class/graphics/fb0/name) mode=$(cat /sys/class/graphics/fb0/virtual_size) bpp=$(cat /sys/class/graphics/fb0/bits_per_pixel) stride=$(cat /sys/class/graphics/fb0/stride)"
for connector in /sys/class/drm/card*-*; do
  [ -e "$connector/modes" ] && echo "E2E-MODES $(head -1 $connector/modes) (first of $(wc -l < $connector/modes)) edid=$(wc -c < $connector/edid)"
done
# The console: text on tty1, which fbcon shows; the cursor stops blinking so the picture holds still.
echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null
printf '\033[2J\033[H' > /dev/tty1
printf 'vfio-user-swift: mbochs\n\nThe guest'"'"'s bochs DRM driver drew this console\ninto a framebuffer the server holds.\n\n' > /dev/tty1
echo "fb0: $(cat /sys/class/graphics/fb0/name), $(cat /sys/class/graphics/fb0/virtual_size | tr , x), $(cat /sys/class/graphics/fb0/bits_per_pixel) bits per pixel" > /dev/tty1
uname -sr > /dev/tty1
echo "E2E-CONSOLE-READY"
sleep "${E2E_HOLD:-6}"
# The pattern: fbcon lets go of the framebuffer first, or its cursor would draw over it.
for vtcon in /sys/class/vtconsole/vtcon*; do
  grep -q "frame buffer" "$vtcon/name" && echo 0 > "$vtcon/bind"
done
/tests/fbtool pattern || echo "E2E-FAILED fbtool pattern"
sleep 1
echo "E2E-PATTERN-READY"
sleep "${E2E_HOLD:-6}"
