#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM and SIGINT end the server cleanly (the spec's backend conventions): a command that
/// serves blocks them before it starts any thread, so every thread inherits the mask, and collects
/// them with `waitForTermination` on the main thread. SIGPIPE is ignored there; sockets are written
/// with MSG_NOSIGNAL anyway. Tools that only run to completion leave the signals alone.
enum ProcessSignals {
    /// Call first in a serving command's `run`, before any thread exists.
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
