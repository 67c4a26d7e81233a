// Linux interfaces Swift's Glibc module does not import: eventfd, memfd, and the CMSG macros
// SCM_RIGHTS needs. Inline wrappers only; no logic lives here.
#ifndef CLINUX_H
#define CLINUX_H

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/memfd.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sched.h>
#include <string.h>

static inline size_t clinux_cmsg_space(size_t length) { return CMSG_SPACE(length); }
static inline size_t clinux_cmsg_len(size_t length) { return CMSG_LEN(length); }
static inline struct cmsghdr *clinux_cmsg_firsthdr(struct msghdr *message) { return CMSG_FIRSTHDR(message); }
static inline struct cmsghdr *clinux_cmsg_nxthdr(struct msghdr *message, struct cmsghdr *header) {
    return CMSG_NXTHDR(message, header);
}
static inline unsigned char *clinux_cmsg_data(struct cmsghdr *header) { return CMSG_DATA(header); }

static inline int clinux_eventfd(unsigned int initial, int flags) { return eventfd(initial, flags); }
// memfd_create(2) needs _GNU_SOURCE in glibc's headers, which would make this module's view of libc
// differ from the other modules'; the raw system call avoids that.
static inline int clinux_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

static inline int clinux_accept4(int socket, int flags) {
    return (int)syscall(SYS_accept4, socket, NULL, NULL, flags);
}

static inline void clinux_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

/// Full memory barrier, for rings shared with another process (virtio used-ring publication).
static inline void clinux_memory_barrier(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

#endif
