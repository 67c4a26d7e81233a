// The guest's framebuffer tool, built static into the end-to-end initramfs (busybox sh cannot
// write millions of pixels, nor time a loop of stores).
//
//   fbtool pattern           draws the test pattern into /dev/fb0 at its current mode
//   fbtool fill PCI SECONDS  fills BAR0 of the PCI device (its sysfs resource0, mapped) again and
//                            again for SECONDS, with 8-byte stores, and prints the bytes per second
//
// The pattern, pixel (x, y) in XRGB8888: red = x mod 256, green = y mod 256,
// blue = (7x + 13y) mod 256. The host's check computes the same.
#include <fcntl.h>
#include <linux/fb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint32_t pattern_pixel(uint32_t x, uint32_t y) {
    return (x & 0xFF) << 16 | (y & 0xFF) << 8 | ((7 * x + 13 * y) & 0xFF);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int pattern(void) {
    int fd = open("/dev/fb0", O_RDWR);
    if (fd < 0) { perror("/dev/fb0"); return 1; }
    struct fb_var_screeninfo var;
    struct fb_fix_screeninfo fix;
    if (ioctl(fd, FBIOGET_VSCREENINFO, &var) || ioctl(fd, FBIOGET_FSCREENINFO, &fix)) { perror("FBIOGET"); return 1; }
    if (var.bits_per_pixel != 32) { fprintf(stderr, "%u bits per pixel\n", var.bits_per_pixel); return 1; }
    uint8_t *fb = mmap(NULL, fix.smem_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fb == MAP_FAILED) { perror("mmap /dev/fb0"); return 1; }
    for (uint32_t y = 0; y < var.yres; y++) {
        uint32_t *row = (uint32_t *)(fb + (size_t)(y + var.yoffset) * fix.line_length) + var.xoffset;
        for (uint32_t x = 0; x < var.xres; x++) row[x] = pattern_pixel(x, y);
    }
    msync(fb, fix.smem_len, MS_SYNC);
    printf("E2E-PATTERN-DRAWN %ux%u stride=%u\n", var.xres, var.yres, fix.line_length);
    return 0;
}

static int fill(const char *device, double seconds) {
    char path[256];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource0", device);
    int fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) { perror(path); return 1; }
    struct stat status;
    if (fstat(fd, &status)) { perror("fstat"); return 1; }
    size_t size = status.st_size;
    volatile uint64_t *bar = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (bar == MAP_FAILED) { perror("mmap resource0"); return 1; }
    double start = now(), elapsed = 0;
    uint64_t bytes = 0, value = 0x0123456789ABCDEFull;
    size_t words = size / 8, at = 0;
    while (elapsed < seconds) {
        // 64 KiB between looks at the clock, or the clock would be most of the work.
        for (int i = 0; i < 8192; i++) {
            bar[at] = value++;
            at = at + 1 == words ? 0 : at + 1;
        }
        bytes += 8192 * 8;
        elapsed = now() - start;
    }
    printf("E2E-FILL %s %.0f bytes/s (%llu bytes in %.2f s)\n", device, bytes / elapsed, (unsigned long long)bytes, elapsed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "pattern") == 0) return pattern();
    if (argc == 4 && strcmp(argv[1], "fill") == 0) return fill(argv[2], atof(argv[3]));
    fprintf(stderr, "usage: fbtool pattern | fbtool fill PCI-ADDRESS SECONDS\n");
    return 2;
}
