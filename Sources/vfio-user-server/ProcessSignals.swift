#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM and SIGINT end the server cleanly (the spec's backend conventions): they are blocked in
/// every thread and collected by `waitForTermination` on the main thread. SIGPIPE is ignored;
/// sockets are written with MSG_NOSIGNAL anyway.
enum ProcessSignals {
    static func blockTermination() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Blocks until SIGTERM, SIGINT or SIGHUP arrives; returns its number.
    static func waitForTermination() -> CInt {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGHUP)
        var received: CInt = 0
        while sigwait(&set, &received) != 0 {}
        return received
    }
}
