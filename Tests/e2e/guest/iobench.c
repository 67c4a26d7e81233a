// iobench: the guest benchmark's timed loops, which shell tools are far too slow to run.
//
//   iobench port PORT COUNT             COUNT one-byte reads of an I/O port (ioperm)
//   iobench mmio BDF BAR OFFSET COUNT   COUNT 16-bit reads of a BAR register, through sysfs resourceN
//   iobench send ADDRESS PORT BYTES     connects over TCP and sends BYTES of a known stream
//   iobench recv PORT                   accepts one TCP connection and checks every byte it brings
//   iobench echo PORT                   accepts TCP connections one after another, echoing each
//   iobench rr ADDRESS PORT COUNT       COUNT round trips of 64 bytes to an echo, each checked
//
// Reads print "ns-per-read MEDIAN mean MEAN", round trips "ns-per-rr MEDIAN mean MEAN"; recv
// prints "received BYTES bytes in NS ns ok" or "... mismatch at OFFSET". The stream is xorshift64
// from a fixed seed, so the receiver knows every byte it should get. Built static for the guest
// and as is for the host (the end-to-end tree's gcc).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "iobench: %s: %s\n", what, strerror(errno));
    return 1;
}

// The stream both ends agree on: xorshift64 states, each stored little-endian. It is made a word
// at a time, since a TCG guest that made it a byte at a time could not feed a NIC.
struct stream { uint64_t state; uint8_t word[8]; int used; };
static void stream_init(struct stream *s) { s->state = 0x9E3779B97F4A7C15u; s->used = 8; }
static void stream_step(struct stream *s) {
    s->state ^= s->state << 13;
    s->state ^= s->state >> 7;
    s->state ^= s->state << 17;
    memcpy(s->word, &s->state, 8);
    s->used = 0;
}
// The next n bytes of the stream.
static void stream_fill(struct stream *s, uint8_t *out, size_t n) {
    size_t i = 0;
    while (i < n && s->used < 8) out[i++] = s->word[s->used++];
    for (; n - i >= 8; i += 8) {
        stream_step(s);
        memcpy(out + i, s->word, 8);
        s->used = 8;
    }
    if (i < n) stream_step(s);
    while (i < n) out[i++] = s->word[s->used++];
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

// Prints the median and the mean of the timed steps: the host's other work lands on a few of them
// (a preemption, a migration between CPUs), which move the mean far more than the median.
static void report(const char *what, uint64_t *times, long count, unsigned last) {
    uint64_t total = 0;
    for (long i = 0; i < count; i++) total += times[i];
    qsort(times, (size_t)count, sizeof *times, by_value);
    printf("ns-per-%s %llu mean %llu value 0x%x\n", what, (unsigned long long)times[count / 2],
           (unsigned long long)(total / (uint64_t)count), last);
}

static int port_reads(unsigned port, long count) {
    if (ioperm(port, 1, 1) != 0) return fail("ioperm");
    uint64_t *times = calloc((size_t)count, sizeof *times);
    if (!times) return fail("calloc");
    uint8_t last = 0;
    for (long i = 0; i < count; i++) {
        uint64_t start = now_ns();
        last = inb(port);
        times[i] = now_ns() - start;
    }
    report("read", times, count, last);
    free(times);
    return 0;
}

static int mmio_reads(const char *bdf, int bar, unsigned long offset, long count) {
    char path[128];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource%d", bdf, bar);
    int fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) return fail(path);
    unsigned long page = offset & ~4095ul;
    volatile uint8_t *base = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)page);
    if (base == MAP_FAILED) return fail("mmap");
    volatile uint16_t *reg = (volatile uint16_t *)(base + (offset - page));
    uint64_t *times = calloc((size_t)count, sizeof *times);
    if (!times) return fail("calloc");
    uint16_t last = 0;
    for (long i = 0; i < count; i++) {
        uint64_t start = now_ns();
        last = *reg;
        times[i] = now_ns() - start;
    }
    report("read", times, count, last);
    free(times);
    return 0;
}

// A TCP connection to ADDRESS:PORT, retried for 30 s: the listener may come up a moment after this
// starts. -1 on failure, with the reason printed.
static int tcp_connect(const char *address, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (fd < 0 || inet_pton(AF_INET, address, &to.sin_addr) != 1) return fail("socket"), -1;
    for (int tries = 0; connect(fd, (struct sockaddr *)&to, sizeof to) != 0; tries++) {
        if (tries == 300) return fail("connect"), -1;
        close(fd);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        usleep(100000);
    }
    return fd;
}

// Reads exactly n bytes; 0 when they all came, -1 at an error or the end of the stream.
static int read_all(int fd, uint8_t *out, size_t n) {
    for (size_t done = 0; done < n;) {
        ssize_t r = read(fd, out + done, n - done);
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *data, size_t n) {
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, data + done, n - done);
        if (w <= 0) return -1;
        done += (size_t)w;
    }
    return 0;
}

static int tcp_send(const char *address, int port, long long bytes) {
    int fd = tcp_connect(address, port);
    if (fd < 0) return 1;
    static uint8_t buffer[65536];
    struct stream s;
    stream_init(&s);
    uint64_t start = now_ns();
    for (long long left = bytes; left > 0;) {
        size_t n = left < (long long)sizeof buffer ? (size_t)left : sizeof buffer;
        stream_fill(&s, buffer, n);
        if (write_all(fd, buffer, n) != 0) return fail("write");
        left -= (long long)n;
    }
    close(fd);
    printf("sent %lld bytes in %llu ns\n", bytes, (unsigned long long)(now_ns() - start));
    return 0;
}

static int tcp_listen(int port) {
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in at = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY) };
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (listener < 0 || bind(listener, (struct sockaddr *)&at, sizeof at) != 0 || listen(listener, 1) != 0) return fail("listen"), -1;
    return listener;
}

static int tcp_recv(int port) {
    int listener = tcp_listen(port);
    if (listener < 0) return 1;
    printf("listening %d\n", port);
    fflush(stdout);
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) return fail("accept");
    static uint8_t buffer[65536], expected[65536];
    struct stream s;
    stream_init(&s);
    long long total = 0, mismatch = -1;
    uint64_t start = 0;
    for (;;) {
        ssize_t r = read(fd, buffer, sizeof buffer);
        if (r < 0) return fail("read");
        if (r == 0) break;
        if (total == 0) start = now_ns();
        stream_fill(&s, expected, (size_t)r);
        if (mismatch < 0 && memcmp(buffer, expected, (size_t)r) != 0) {
            ssize_t i = 0;
            while (buffer[i] == expected[i]) i++;
            mismatch = total + i;
        }
        total += r;
    }
    uint64_t elapsed = total ? now_ns() - start : 0;
    if (mismatch >= 0) printf("received %lld bytes in %llu ns mismatch at %lld\n", total, (unsigned long long)elapsed, mismatch);
    else printf("received %lld bytes in %llu ns ok\n", total, (unsigned long long)elapsed);
    return 0;
}

// Each request's reply goes out in one segment at once (no Nagle delay), as a request-response
// protocol's would.
static void no_delay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int tcp_echo(int port) {
    int listener = tcp_listen(port);
    if (listener < 0) return 1;
    static uint8_t buffer[65536];
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) return fail("accept");
        no_delay(fd);
        ssize_t r;
        while ((r = read(fd, buffer, sizeof buffer)) > 0)
            if (write_all(fd, buffer, (size_t)r) != 0) break;
        close(fd);
    }
}

// Round trips as a request-response protocol makes them: 64 bytes of the stream out, the same 64
// back (checked), then the next. Each trip is timed alone.
static int tcp_rr(const char *address, int port, long count) {
    int fd = tcp_connect(address, port);
    if (fd < 0) return 1;
    no_delay(fd);
    uint64_t *times = calloc((size_t)count, sizeof *times);
    if (!times) return fail("calloc");
    uint8_t request[64], reply[64];
    struct stream s;
    stream_init(&s);
    for (long i = 0; i < count; i++) {
        stream_fill(&s, request, sizeof request);
        uint64_t start = now_ns();
        if (write_all(fd, request, sizeof request) != 0) return fail("write");
        if (read_all(fd, reply, sizeof reply) != 0) return fail("read");
        times[i] = now_ns() - start;
        if (memcmp(request, reply, sizeof reply) != 0) {
            fprintf(stderr, "iobench: round trip %ld: the echo differs\n", i);
            return 1;
        }
    }
    close(fd);
    report("rr", times, count, reply[0]);
    free(times);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "port") == 0) return port_reads((unsigned)strtoul(argv[2], NULL, 0), atol(argv[3]));
    if (argc == 6 && strcmp(argv[1], "mmio") == 0)
        return mmio_reads(argv[2], atoi(argv[3]), strtoul(argv[4], NULL, 0), atol(argv[5]));
    if (argc == 5 && strcmp(argv[1], "send") == 0) return tcp_send(argv[2], atoi(argv[3]), atoll(argv[4]));
    if (argc == 3 && strcmp(argv[1], "recv") == 0) return tcp_recv(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "echo") == 0) return tcp_echo(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "rr") == 0) return tcp_rr(argv[2], atoi(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: iobench port PORT COUNT | mmio BDF BAR OFFSET COUNT | send ADDRESS PORT BYTES | recv PORT | echo PORT | rr ADDRESS PORT COUNT\n");
    return 2;
}
