import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Starts `program` with posix_spawn. `arguments` is its argv, argv[0] first. Its environment is
/// this process's, with `environment` entries ("NAME=value") in place of inherited ones of the
/// same name. Signals are at their defaults and none is blocked: a serving process blocks SIGTERM
/// and ignores SIGPIPE, which its children must not inherit. `files` sets up the child's fds;
/// `newProcessGroup` gives it a process group of its own; `searchPath` looks `program` up in PATH.
public func spawnProcess(_ program: String, arguments: [String], environment: [String] = [], newProcessGroup: Bool = false,
                         searchPath: Bool = false, files: (inout posix_spawn_file_actions_t) -> Void) throws(Errno) -> pid_t {
    let replaced = Set(environment.map { $0.prefix { $0 != "=" } })
    var entries = environment
    var index = 0
    while let entry = environ[index] {
        let text = String(cString: entry)
        if !replaced.contains(text.prefix { $0 != "=" }) { entries.append(text) }
        index += 1
    }
    var cArguments = arguments.map { strdup($0) } + [nil]
    defer { cArguments.forEach { free($0) } }
    var cEnvironment = entries.map { strdup($0) } + [nil]
    defer { cEnvironment.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    files(&actions)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    var all = sigset_t()
    sigemptyset(&none)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &all)
    var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
    if newProcessGroup {
        posix_spawnattr_setpgroup(&attributes, 0)
        flags |= POSIX_SPAWN_SETPGROUP
    }
    posix_spawnattr_setflags(&attributes, Int16(flags))
    var spawned: pid_t = 0
    let result = searchPath ? posix_spawnp(&spawned, program, &actions, &attributes, &cArguments, &cEnvironment)
                            : posix_spawn(&spawned, program, &actions, &attributes, &cArguments, &cEnvironment)
    guard result == 0 else { throw Errno(rawValue: result) }
    return spawned
}
