import Support
import VfioUserProto

/// A joinable thread for tests.
public final class Thread: @unchecked Sendable { // The done flag is guarded by the lock.
    private let lock = ConditionLock()
    private var done = false

    public init(_ body: @escaping @Sendable () -> Void) {
        try! spawnThread(name: "test") { [self] in // tests never run out of threads
            body()
            lock.withLock {
                done = true
                lock.broadcast()
            }
        }
    }

    public func join() {
        lock.withLock { while !done { lock.wait() } }
    }
}

