#if canImport(Glibc)
import Glibc
#endif

/// How long a thread spins for what it waits on before it sleeps, as QEMU's iothreads do with
/// `poll-max-ns`: what arrives while it spins is taken without the wake-up a sleeping thread
/// costs (tens of µs when it lands on another CPU).
///
/// The window adapts. After a sleep that a longer window would have covered (shorter than
/// `maximum`), it doubles, from 4 µs up to `maximum`; after a sleep longer than `maximum`, it
/// halves, down to nothing. A busy peer keeps it open; an idle one closes it, so an idle thread
/// sleeps and costs no CPU.
public struct PollPolicy: Sendable, Equatable, CustomStringConvertible {
    /// The longest spin before each sleep, in nanoseconds; 0 turns polling off.
    public var maximumNanoseconds: UInt64

    public init(maximumNanoseconds: UInt64) { self.maximumNanoseconds = maximumNanoseconds }

    /// No spinning: every wait is a sleep.
    public static let off = PollPolicy(maximumNanoseconds: 0)
    /// Up to 256 µs: longer than a guest's turn from one trapped access to the next through QEMU
    /// under TCG on a loaded host, which is what a window must cover to pay off.
    public static let adaptive = PollPolicy(maximumNanoseconds: 256_000)

    /// "off", "adaptive", or the maximum in microseconds (up to 10,000).
    public init?(_ text: String) {
        switch text {
        case "off": self = .off
        case "adaptive": self = .adaptive
        default:
            guard let microseconds = UInt64(text), microseconds <= 10_000 else { return nil }
            self.init(maximumNanoseconds: microseconds * 1000)
        }
    }

    public var description: String {
        switch self {
        case .off: "off"
        case .adaptive: "adaptive"
        default: String(maximumNanoseconds / 1000)
        }
    }
}

/// One waiting thread's window (see `PollPolicy`).
public struct AdaptivePoll: Sendable {
    static let smallest: UInt64 = 4000
    public let maximum: UInt64
    public private(set) var window: UInt64 = 0

    public init(_ policy: PollPolicy) { maximum = policy.maximumNanoseconds }

    /// Tries `done` until it says yes or the window has passed; false if it never did. Between
    /// tries the thread yields, so a thread of the peer that wakes on this CPU runs at once.
    public func spin(until done: () -> Bool) -> Bool {
        guard window > 0 else { return false }
        let start = monotonicNanoseconds()
        repeat {
            if done() { return true }
            sched_yield()
        } while monotonicNanoseconds() - start < window
        return done()
    }

    /// Runs `wait`, a blocking wait, and tunes the window by how long it slept.
    public mutating func sleep<T>(_ wait: () -> T) -> T {
        guard maximum > 0 else { return wait() }
        let start = monotonicNanoseconds()
        let result = wait()
        slept(monotonicNanoseconds() - start)
        return result
    }

    /// The thread slept `nanoseconds` (after spinning through the window, if any).
    mutating func slept(_ nanoseconds: UInt64) {
        if nanoseconds > maximum {
            window /= 2
            if window < Self.smallest { window = 0 }
        } else if window < maximum {
            window = min(maximum, max(window * 2, Self.smallest))
        }
    }
}
