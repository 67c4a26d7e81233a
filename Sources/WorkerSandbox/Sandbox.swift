import CLinux
import CSeccomp
import Support
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What an isolated worker gives up before it serves: another user, every capability, and every
/// system call but those it needs to serve one device (a seccomp filter built with libseccomp).
/// Any other call kills the worker; its manager reports it as failed and the others go on.
public enum Sandbox {
    /// One allowed system call, with the arguments it may take when it is restricted.
    public struct Rule: Sendable {
        public let name: String
        /// (argument index, allowed values); nil allows any arguments.
        public let argument: (index: UInt32, values: [UInt64])?

        init(_ name: String, argument index: UInt32? = nil, in values: [UInt64] = []) {
            self.name = name
            argument = index.map { ($0, values) }
        }
    }

    /// Every system call a worker may make, and why, by group.
    public static let rules: [Rule] = [
        // Messages, eventfds, a TAP or a datagram cable, and the management channel.
        "read", "write", "readv", "writev", "recvmsg", "sendmsg", "recvfrom", "sendto", "poll", "ppoll", "close", "shutdown",
        "accept4", "getsockopt", "fcntl", "dup", "eventfd2",
        // The datagram cable's own socket (UNIX only: a worker opens no network socket), its
        // buffers, and its file, replaced when the instance restarts.
        Rule("socket", argument: 0, in: [UInt64(AF_UNIX)]), "bind", "connect", "setsockopt", "unlink",
        // The TAP handed over is checked for what it is; its offloads follow what the guest negotiated.
        Rule("ioctl", argument: 1, in: [UInt64(clinux_tungetiff()), UInt64(clinux_tunsetoffload())]),
        // Guest memory, region and framebuffer mappings, migration data.
        "mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "memfd_create", "ftruncate", "fstat", "newfstatat", "lseek",
        // Threads and their synchronisation, names and timing.
        "clone", "clone3", "futex", "set_robust_list", "rseq", "sched_yield", "sched_getaffinity", "gettid", "getpid",
        Rule("prctl", argument: 0, in: [UInt64(PR_SET_NAME)]),
        "clock_gettime", "gettimeofday", "clock_nanosleep", "nanosleep", "getrandom",
        // Signals: the DMA fault guard's handler, and a crash's report.
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "tgkill",
        "exit", "exit_group",
    ]

    /// Why a worker could not enter its sandbox.
    public struct Failure: Error, CustomStringConvertible {
        public let step: String
        public let errno: Errno
        public var description: String { "\(step): \(errno.name)" }
    }

    /// Drops to `user` (uid, gid) when given, then every capability, sets no_new_privs and loads
    /// the filter for every thread. Call it before any client can connect.
    public static func enter(user: (uid: uid_t, gid: gid_t)?) throws(Failure) {
        clinux_drop_capability_bounds()
        if let user, clinux_become_user(user.uid, user.gid) != 0 { throw Failure(step: "becoming uid \(user.uid)", errno: Errno(rawValue: errno)) }
        guard clinux_clear_capabilities() == 0 else { throw Failure(step: "dropping capabilities", errno: Errno(rawValue: errno)) }
        guard clinux_set_no_new_privs() == 0 else { throw Failure(step: "PR_SET_NO_NEW_PRIVS", errno: Errno(rawValue: errno)) }
        try loadFilter()
    }

    private static func loadFilter() throws(Failure) {
        guard let filter = seccomp_init(cseccomp_action_kill_process()) else { throw Failure(step: "seccomp_init", errno: .noMemory) }
        defer { seccomp_release(filter) }
        for rule in rules {
            let number = seccomp_syscall_resolve_name(rule.name)
            guard number != __NR_SCMP_ERROR else { throw Failure(step: "no system call \(rule.name)", errno: .invalidArgument) }
            let values = rule.argument.map { $0.values.map(Optional.some) } ?? [nil]
            for value in values {
                var comparisons = [scmp_arg_cmp]()
                if let value, let index = rule.argument?.index { comparisons.append(scmp_arg_cmp(arg: index, op: SCMP_CMP_EQ, datum_a: value, datum_b: 0)) }
                let status = seccomp_rule_add_array(filter, cseccomp_action_allow(), number, UInt32(comparisons.count), comparisons)
                guard status == 0 else { throw Failure(step: "seccomp rule for \(rule.name)", errno: Errno(rawValue: -status)) }
            }
        }
        // Every thread, those serving already included, gets the filter at once.
        var status = seccomp_attr_set(filter, SCMP_FLTATR_CTL_TSYNC, 1)
        if status == 0 { status = seccomp_load(filter) }
        guard status == 0 else { throw Failure(step: "seccomp_load", errno: Errno(rawValue: -status)) }
    }
}

extension Sandbox.Rule: ExpressibleByStringLiteral {
    public init(stringLiteral name: String) { self.init(name) }
}
