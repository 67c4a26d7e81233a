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
#include <grp.h>
#include <linux/capability.h>
#include <unistd.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sched.h>
#include <spawn.h>
#include <string.h>
#include <stdint.h>

// ThreadSanitizer's annotations (compiler-rt's tsan_interface.h), called only by builds made with
// -DTSAN, which link the ThreadSanitizer runtime that defines them.
void __tsan_acquire(void *address);
void __tsan_release(void *address);
static inline void clinux_tsan_acquire(void *address) { __tsan_acquire(address); }
static inline void clinux_tsan_release(void *address) { __tsan_release(address); }

static inline size_t clinux_cmsg_space(size_t length) { return CMSG_SPACE(length); }
static inline size_t clinux_cmsg_len(size_t length) { return CMSG_LEN(length); }
static inline struct cmsghdr *clinux_cmsg_firsthdr(struct msghdr *message) { return CMSG_FIRSTHDR(message); }
static inline struct cmsghdr *clinux_cmsg_nxthdr(struct msghdr *message, struct cmsghdr *header) {
    return CMSG_NXTHDR(message, header);
}
static inline unsigned char *clinux_cmsg_data(struct cmsghdr *header) { return CMSG_DATA(header); }

// POLLRDHUP (the peer closed or shut down its end): <poll.h> defines it only under _GNU_SOURCE.
static const short clinux_pollrdhup = 0x2000;

static inline int clinux_eventfd(unsigned int initial, int flags) { return eventfd(initial, flags); }
// memfd_create(2) needs _GNU_SOURCE in glibc's headers, which would make this module's view of libc
// differ from the other modules'; the raw system call avoids that.
static inline int clinux_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

// File seals (F_ADD_SEALS and F_SEAL_*: <fcntl.h> names them only under _GNU_SOURCE).
static inline int clinux_seal_size(int fd) {
    const int addSeals = 1024 + 9, sealSeal = 1, sealShrink = 2, sealGrow = 4;
    return fcntl(fd, addSeals, sealSeal | sealShrink | sealGrow);
}

static inline int clinux_accept4(int socket, int flags) {
    return (int)syscall(SYS_accept4, socket, NULL, NULL, flags);
}

static inline void clinux_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

/// The calling thread's kernel id, as /proc/self/task names it.
static inline int clinux_gettid(void) { return (int)syscall(SYS_gettid); }

/// Pins the calling thread (and threads it creates afterwards) to one CPU.
static inline int clinux_pin_to_cpu(int cpu) {
    unsigned long mask[16] = {0};
    mask[cpu / (8 * sizeof(unsigned long))] |= 1UL << (cpu % (8 * sizeof(unsigned long)));
    return (int)syscall(SYS_sched_setaffinity, 0, sizeof(mask), mask);
}

/// A posix_spawn action that closes every fd from `from` up (glibc 2.34, declared only under
/// _GNU_SOURCE): a child gets the fds it is given and no others.
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);
static inline int clinux_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

/// Empties the capability bounding and ambient sets. Dropping from the bounding set needs
/// CAP_SETPCAP, so this comes before a change of user; without it the sets stay as they are.
static inline void clinux_drop_capability_bounds(void) {
    for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

/// Empties the effective, permitted and inheritable capability sets of the calling thread.
static inline int clinux_clear_capabilities(void) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    return (int)syscall(SYS_capset, &header, data);
}

// setresuid(2) and setresgid(2) are declared only under _GNU_SOURCE.
extern int setresuid(uid_t ruid, uid_t euid, uid_t suid);
extern int setresgid(gid_t rgid, gid_t egid, gid_t sgid);

/// Raises (`on`) or lowers one capability in the calling thread's effective set; raising works only
/// for a capability still in its permitted set.
static inline int clinux_set_effective_capability(int cap, int on) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    if (on) data[cap / 32].effective |= 1u << (cap % 32); else data[cap / 32].effective &= ~(1u << (cap % 32));
    return (int)syscall(SYS_capset, &header, data);
}
static inline int clinux_cap_net_admin(void) { return CAP_NET_ADMIN; }

/// Becomes `uid`/`gid` with no supplementary groups, for real, effective and saved ids.
static inline int clinux_become_user(uid_t uid, gid_t gid) {
    if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0) return -1;
    return setresuid(uid, uid, uid);
}

/// No execve may raise privileges again (set-user-ID bits, file capabilities); needed by seccomp.
static inline int clinux_set_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }

/// Closes every fd from `from` up (close_range(2), which glibc declares only under _GNU_SOURCE).
static inline void clinux_close_from(int from) { syscall(SYS_close_range, (unsigned)from, ~0U, 0); }

/// "SEGV" for SIGSEGV; NULL for a number that is no signal (sigabbrev_np is declared only under _GNU_SOURCE).
extern const char *sigabbrev_np(int sig);
static inline const char *clinux_signal_name(int sig) { return sigabbrev_np(sig); }

/// TUNSETOFFLOAD, the one ioctl a worker's TAP makes.
static inline unsigned long clinux_tunsetoffload(void) { return TUNSETOFFLOAD; }

/// rename(2) that fails with EEXIST rather than replace what is at `to` (renameat2's
/// RENAME_NOREPLACE, which glibc declares only under _GNU_SOURCE).
static inline int clinux_rename_noreplace(const char *from, const char *to) {
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */);
}

/// Attaches `fd` (an open /dev/net/tun) to the TAP interface `name` (created if missing), with
/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: every frame carries a 12-byte virtio-net header.
static inline int clinux_tap_attach(int fd, const char *name) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &request) < 0) return -1;
    int size = 12; /* struct virtio_net_hdr_v1 / virtio_net_hdr_mrg_rxbuf */
    return ioctl(fd, TUNSETVNETHDRSZ, &size);
}

/// TUNSETOFFLOAD: which offloads (TUN_F_CSUM, TUN_F_TSO4, ...) the reader accepts from the kernel.
/// Whether `fd` is a TAP with a virtio-net header (TUNGETIFF): 1 yes, 0 another kind of fd.
static inline int clinux_is_vnet_tap(int fd) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (ioctl(fd, TUNGETIFF, &request) < 0) return 0;
    return (request.ifr_flags & (IFF_TAP | IFF_VNET_HDR)) == (IFF_TAP | IFF_VNET_HDR);
}
static inline unsigned long clinux_tungetiff(void) { return TUNGETIFF; }
static inline int clinux_tap_set_offload(int fd, unsigned int offloads) { return ioctl(fd, TUNSETOFFLOAD, offloads); }
static inline unsigned int clinux_tun_f_csum(void) { return TUN_F_CSUM; }
static inline unsigned int clinux_tun_f_tso4(void) { return TUN_F_TSO4; }
static inline unsigned int clinux_tun_f_tso6(void) { return TUN_F_TSO6; }
static inline unsigned int clinux_tun_f_tso_ecn(void) { return TUN_F_TSO_ECN; }

/// Loads and stores of ring indexes shared with another process (virtqueues).
static inline uint16_t clinux_load_acquire_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline void clinux_store_release_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }

/// Atomic bit operations on memory shared between threads (dirty-page bitmaps).
static inline void clinux_atomic_or_u64(uint64_t *p, uint64_t bits) { __atomic_fetch_or(p, bits, __ATOMIC_RELAXED); }
static inline uint64_t clinux_atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t clinux_atomic_and_u64(uint64_t *p, uint64_t bits) { return __atomic_fetch_and(p, bits, __ATOMIC_RELAXED); }

/// Full memory barrier, for rings shared with another process (virtio used-ring publication).
static inline void clinux_memory_barrier(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/// Client memory that may shrink under the server (a memfd truncated after DMA_MAP): a SIGBUS on a
/// registered range is answered by mapping a private zero page over the faulting page, so the access
/// completes instead of killing the server, and the range's fault count goes up for the DMA layer to
/// refuse further use. A SIGBUS anywhere else goes to the handler that was there before (or kills).
/// Registration returns a slot (or -1 when all are taken: the range is then unguarded).
long clinux_fault_guard_register(void *base, size_t length, int protection);
void clinux_fault_guard_unregister(long slot);
/// Pages of the slot's range replaced so far (an atomic load: cheap on every access).
uint64_t clinux_fault_guard_faults(long slot);
/// Pages replaced in any range so far: while none was, no range needs its own count looked up.
extern uint64_t clinux_fault_guard_total;
static inline int clinux_fault_guard_any(void) { return __atomic_load_n(&clinux_fault_guard_total, __ATOMIC_ACQUIRE) != 0; }

/// libFuzzer's driver (linked only into fuzz targets built with -sanitize=fuzzer): runs `callback`
/// on inputs as libFuzzer's own main would, for targets that have a main of their own.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
