// vfio-user-echo: the benchmarks' reference peer. A vfio-user server that does no work: every
// command gets the reply a server would send, of the size a client expects (a REGION_READ gets
// its count of zero bytes, VERSION an empty capabilities object, REGION_WRITE and DMA_UNMAP their
// request echoed, anything else a header), and posted commands (No_reply) none. Like the server
// it reads as many messages as the socket holds in one system call and writes their replies in
// one, so a comparison with it measures the server's work, not how it batches. Fds that come
// with a message (DMA_MAP, SET_IRQS) are dropped unread: read(2) closes them.
//
//   vfio-user-echo SOCKET       serves one client after another on SOCKET until killed
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { HEADER = 16, REPLY = 0x1, NO_REPLY = 0x10 };
enum { VERSION = 1, DMA_UNMAP = 3, REGION_READ = 9, REGION_WRITE = 10 };

static uint32_t u32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }

// Appends the reply to the message at `in` to `out`; returns its size.
static size_t reply(const uint8_t *in, uint32_t size, uint8_t *out) {
    uint16_t command = in[2] | in[3] << 8;
    uint32_t payload = 0;
    memcpy(out, in, HEADER);
    memset(out + 8, 0, 8);
    put32(out + 8, REPLY);
    switch (command) {
    case VERSION: {
        static const char json[] = "{}";
        memset(out + HEADER, 0, 4);
        memcpy(out + HEADER + 4, json, sizeof json);
        payload = 4 + sizeof json;
        break;
    }
    case REGION_READ: {
        uint32_t count = size >= HEADER + 16 ? u32(in + HEADER + 12) : 0;
        if (count > (1 << 20)) count = 0;
        memcpy(out + HEADER, in + HEADER, 16);
        memset(out + HEADER + 16, 0, count);
        payload = 16 + count;
        break;
    }
    case REGION_WRITE:
    case DMA_UNMAP:
        payload = command == REGION_WRITE ? 16 : 24;
        if (payload > size - HEADER) payload = size - HEADER;
        memcpy(out + HEADER, in + HEADER, payload);
        break;
    }
    put32(out + 4, HEADER + payload);
    return HEADER + payload;
}

static void serve(int client) {
    size_t capacity = 4 << 20, held = 0;
    uint8_t *in = malloc(capacity), *out = malloc(capacity + (1 << 21));
    if (!in || !out) exit(1);
    for (;;) {
        ssize_t got = read(client, in + held, capacity - held);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        held += got;
        size_t at = 0, written = 0;
        while (held - at >= HEADER) {
            uint32_t size = u32(in + at + 4);
            if (size < HEADER || size > capacity) goto done; // a framing error ends the session
            if (held - at < size) break;
            if (!(u32(in + at + 8) & NO_REPLY)) written += reply(in + at, size, out + written);
            at += size;
            if (written > capacity) break;
        }
        for (size_t sent = 0; sent < written;) {
            ssize_t n = write(client, out + sent, written - sent);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) goto done;
            sent += n;
        }
        memmove(in, in + at, held - at);
        held -= at;
    }
done:
    free(in);
    free(out);
    close(client);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: vfio-user-echo SOCKET\n");
        return 2;
    }
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    if (strlen(argv[1]) >= sizeof address.sun_path) {
        fprintf(stderr, "vfio-user-echo: socket path too long\n");
        return 2;
    }
    strcpy(address.sun_path, argv[1]);
    unlink(argv[1]);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 16)) {
        perror("vfio-user-echo");
        return 1;
    }
    for (;;) {
        int client = accept(listener, NULL, NULL);
        if (client >= 0) serve(client);
    }
}
