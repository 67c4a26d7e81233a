#ifndef CSECCOMP_SHIM_H
#define CSECCOMP_SHIM_H
#include <seccomp.h>
#include <errno.h>

// The actions are function-like macros, which Swift does not import.
static inline uint32_t cseccomp_action_kill_process(void) { return SCMP_ACT_KILL_PROCESS; }
static inline uint32_t cseccomp_action_allow(void) { return SCMP_ACT_ALLOW; }
static inline uint32_t cseccomp_action_errno(int value) { return SCMP_ACT_ERRNO(value); }
#endif
