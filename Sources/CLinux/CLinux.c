#include "CLinux.h"
#include <pthread.h>
#include <signal.h>

// The fault guard (see CLinux.h). Slots are read by the signal handler without a lock: a slot's
// range is published with release stores after its fields are set and withdrawn before the memory
// is unmapped, and no access to a range can be in flight when it is withdrawn (the DMA layer only
// unmaps memory that no mapping, hence no pin, refers to).
#define FAULT_GUARD_SLOTS 4096

struct fault_guard_slot {
    uintptr_t start; // 0: free
    uintptr_t end;
    int protection;
    uint64_t faults;
};

static struct fault_guard_slot fault_guard_slots[FAULT_GUARD_SLOTS];
static long fault_guard_high; // slots [0, high) may be in use
uint64_t clinux_fault_guard_total;
static pthread_mutex_t fault_guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction fault_guard_previous;
static int fault_guard_installed;

static void fault_guard_handler(int signal, siginfo_t *info, void *context) {
    uintptr_t address = (uintptr_t)info->si_addr;
    long high = __atomic_load_n(&fault_guard_high, __ATOMIC_ACQUIRE);
    for (long i = 0; i < high; i++) {
        struct fault_guard_slot *slot = &fault_guard_slots[i];
        uintptr_t start = __atomic_load_n(&slot->start, __ATOMIC_ACQUIRE);
        if (start == 0 || address < start || address >= slot->end) continue;
        uintptr_t page = address & ~(uintptr_t)4095;
        void *replaced = (void *)syscall(SYS_mmap, (void *)page, (size_t)4096, slot->protection,
                                         MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, (off_t)0);
        if (replaced != MAP_FAILED) {
            __atomic_fetch_add(&slot->faults, 1, __ATOMIC_RELEASE);
            __atomic_fetch_add(&clinux_fault_guard_total, 1, __ATOMIC_RELEASE);
            return; // the faulting instruction runs again, on the zero page
        }
        break;
    }
    if (fault_guard_previous.sa_flags & SA_SIGINFO) {
        if (fault_guard_previous.sa_sigaction) { fault_guard_previous.sa_sigaction(signal, info, context); return; }
    } else if (fault_guard_previous.sa_handler != SIG_DFL && fault_guard_previous.sa_handler != SIG_IGN) {
        fault_guard_previous.sa_handler(signal);
        return;
    }
    // Not ours and nobody else's: die of it as if no handler had been installed.
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &fallback, NULL);
}

long clinux_fault_guard_register(void *base, size_t length, int protection) {
    long found = -1;
    pthread_mutex_lock(&fault_guard_lock);
    if (!fault_guard_installed) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = fault_guard_handler;
        action.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&action.sa_mask);
        if (sigaction(SIGBUS, &action, &fault_guard_previous) == 0) fault_guard_installed = 1;
    }
    for (long i = 0; i < FAULT_GUARD_SLOTS && fault_guard_installed; i++) {
        if (fault_guard_slots[i].start != 0) continue;
        fault_guard_slots[i].end = (uintptr_t)base + length;
        fault_guard_slots[i].protection = protection;
        __atomic_store_n(&fault_guard_slots[i].faults, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&fault_guard_slots[i].start, (uintptr_t)base, __ATOMIC_RELEASE);
        if (i + 1 > fault_guard_high) __atomic_store_n(&fault_guard_high, i + 1, __ATOMIC_RELEASE);
        found = i;
        break;
    }
    pthread_mutex_unlock(&fault_guard_lock);
    return found;
}

void clinux_fault_guard_unregister(long slot) {
    if (slot < 0) return;
    pthread_mutex_lock(&fault_guard_lock);
    __atomic_store_n(&fault_guard_slots[slot].start, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&fault_guard_lock);
}

uint64_t clinux_fault_guard_faults(long slot) {
    return slot < 0 ? 0 : __atomic_load_n(&fault_guard_slots[slot].faults, __ATOMIC_ACQUIRE);
}
