import Support
import Synchronization
import SystemPackage
import VfioUserProto

/// The five interrupt indexes of a vfio PCI device: INTx, MSI, MSI-X, ERR and REQ.
///
/// Holds the eventfds a client assigned with SET_IRQS, each vector's mask and pending state, and
/// INTx's line level. Devices raise interrupts from any thread (`trigger`, `setINTx`); the session
/// applies SET_IRQS. An interrupt that cannot be delivered (vector masked, no eventfd yet, function
/// masked, INTx disabled in the command register) sets the vector's pending bit and is delivered
/// when the obstacle goes away, never lost.
///
/// Eventfds are written outside the lock: the fd object is retained, so a concurrent SET_IRQS that
/// replaces it only means the interrupt lands on the eventfd that was current when it was raised.
public final class InterruptEngine: Sendable {
    /// Per-index size and flags, as GET_IRQ_INFO reports them.
    public struct IndexInfo: Sendable, Equatable {
        /// Vectors the index has (0 when the device lacks it).
        public var count: Int
        /// EVENTFD, MASKABLE, AUTOMASKED, NORESIZE.
        public var flags: IRQInfoFlags
        /// An index of `count` vectors.
        public init(count: Int, flags: IRQInfoFlags) {
            self.count = count
            self.flags = flags
        }
    }

    struct Vector {
        var trigger: OwnedFileDescriptor?
        var masked = false
        var pending = false
    }

    struct IndexState {
        var info: IndexInfo
        var vectors: [Vector]
        /// MSI/MSI-X: enabled by the config-space enable bit or by SET_IRQS (the two are kept equal by
        /// `PCIFunction`). INTx, ERR and REQ are always enabled.
        var enabled: Bool
        /// MSI-X function mask (message control bit 14).
        var functionMasked = false
        var signalled = 0
        /// Vectors with their pending bit set: lets `flushPending` skip an index without scanning it.
        var pendingCount = 0

        mutating func setPending(_ n: Int, _ pending: Bool) {
            guard vectors[n].pending != pending else { return }
            vectors[n].pending = pending
            pendingCount += pending ? 1 : -1
        }
    }

    struct State {
        var indexes: [IndexState]
        /// The device's INTx line.
        var intxLevel = false
        /// Command register bit 10.
        var intxDisabled = false
        /// INTx unmask eventfd (SET_IRQS EVENTFD|UNMASK): the client signals it to unmask.
        var intxUnmaskEventfd: OwnedFileDescriptor?
        /// Stopped for migration: the device raises no interrupt (VFIO's STOP: "must not generate
        /// interrupts"); what it raises meanwhile stays pending. ERR and REQ are the server's own
        /// notifications and go through.
        var suspended = false
    }

    let state: Locked<State>
    /// `state.intxLevel`, readable without the lock: a model that sets its line low after every
    /// register access (mtty does) costs no lock while the line stays low. Written under the lock.
    let intxLine = Atomic<Bool>(false)

    package init(intx: Bool, msiVectors: Int, msiMaskable: Bool, msixVectors: Int) {
        func index(_ count: Int, _ flags: IRQInfoFlags, enabled: Bool) -> IndexState {
            IndexState(info: IndexInfo(count: count, flags: count == 0 ? [] : flags),
                       vectors: Array(repeating: Vector(), count: count), enabled: enabled)
        }
        state = Locked(State(indexes: [
            index(intx ? 1 : 0, [.eventfd, .maskable, .automasked], enabled: true),
            // MSI vectors are allocated as one block (NORESIZE), as the kernel's vfio-pci reports.
            index(msiVectors, msiMaskable ? [.eventfd, .maskable, .noResize] : [.eventfd, .noResize], enabled: false),
            // No NORESIZE: QEMU then adds MSI-X vectors one SET_IRQS at a time as the guest uses them.
            index(msixVectors, [.eventfd, .maskable], enabled: false),
            // ERR and REQ: one notification eventfd each, as libvfio-user and the kernel offer.
            index(1, [.eventfd], enabled: true),
            index(1, [.eventfd], enabled: true),
        ]))
    }

    // MARK: Queries

    /// The index's size and flags; nil past the five indexes.
    public func info(_ index: IRQIndex) -> IndexInfo? {
        guard index.rawValue < IRQIndex.count else { return nil }
        return state.withLock { $0.indexes[Int(index.rawValue)].info }
    }

    /// Whether the driver enabled the index (MSI or MSI-X enable; INTx is enabled while it has a trigger).
    public func isEnabled(_ index: IRQIndex) -> Bool {
        state.withLock { $0.indexes[Int(index.rawValue)].enabled }
    }

    /// Whether the client gave the vector an eventfd.
    public func hasTrigger(_ index: IRQIndex, vector: Int = 0) -> Bool {
        state.withLock { s in
            let i = Int(index.rawValue)
            return vector < s.indexes[i].vectors.count && s.indexes[i].vectors[vector].trigger != nil
        }
    }

    /// Whether the vector is masked (per-vector mask; the function mask is separate).
    public func isMasked(_ index: IRQIndex, vector: Int) -> Bool {
        state.withLock { s in
            let i = Int(index.rawValue)
            return vector < s.indexes[i].vectors.count && s.indexes[i].vectors[vector].masked
        }
    }

    /// Whether an interrupt waits on the vector for its obstacle to go away.
    public func isPending(_ index: IRQIndex, vector: Int) -> Bool {
        state.withLock { s in
            let i = Int(index.rawValue)
            return vector < s.indexes[i].vectors.count && s.indexes[i].vectors[vector].pending
        }
    }

    /// Interrupts delivered on an index so far.
    public func signalledCount(_ index: IRQIndex) -> Int {
        state.withLock { $0.indexes[Int(index.rawValue)].signalled }
    }

    /// Pending bits of `index` as little-endian QWORDs: the MSI-X Pending Bit Array.
    public func pendingBits(_ index: IRQIndex) -> [UInt64] {
        state.withLock { s in
            let vectors = s.indexes[Int(index.rawValue)].vectors
            var words = [UInt64](repeating: 0, count: (vectors.count + 63) / 64)
            for (n, vector) in vectors.enumerated() where vector.pending { words[n / 64] |= 1 << UInt64(n % 64) }
            return words
        }
    }

    /// The fds currently assigned (tests count them; nothing else needs them).
    public var assignedEventfdCount: Int {
        state.withLock { s in
            s.indexes.reduce(0) { $0 + $1.vectors.filter { $0.trigger != nil }.count } + (s.intxUnmaskEventfd == nil ? 0 : 1)
        }
    }

    // MARK: Raising interrupts (device side, any thread)

    /// Raises vector `vector` of an MSI, MSI-X, ERR or REQ index. Returns whether it was delivered now
    /// (false: recorded as pending, or the index is disabled).
    @discardableResult
    public func trigger(_ index: IRQIndex, vector: Int) -> Bool {
        let fd: OwnedFileDescriptor? = state.withLock { s in
            let i = Int(index.rawValue)
            guard i < s.indexes.count, vector < s.indexes[i].vectors.count else { return nil }
            if index == .intx { return Self.assertINTx(&s, pulse: true) }
            return Self.deliver(&s, i, vector)
        }
        guard let fd else { return false }
        try? fd.signalEventfd()
        return true
    }

    /// Sets the device's INTx line. INTx is level-triggered and automasked: a high line is signalled
    /// once, then stays masked until the client unmasks; if it is still high then, it is signalled
    /// again (the kernel's vfio-pci INTx model).
    public func setINTx(asserted: Bool) {
        if !asserted && !intxLine.load(ordering: .acquiring) { return } // low already
        let fd: OwnedFileDescriptor? = state.withLock { s in
            guard !s.indexes[0].vectors.isEmpty, s.intxLevel != asserted || asserted else { return nil }
            s.intxLevel = asserted
            intxLine.store(asserted, ordering: .releasing)
            if !asserted {
                s.indexes[0].setPending(0, false)
                return nil
            }
            return Self.assertINTx(&s, pulse: false)
        }
        try? fd?.signalEventfd()
    }

    /// Whether INTA# is asserted now (the status register's Interrupt Status bit).
    public var intxLevel: Bool { state.withLock { $0.intxLevel } }

    static func assertINTx(_ s: inout State, pulse: Bool) -> OwnedFileDescriptor? {
        let vector = s.indexes[0].vectors[0]
        guard let fd = vector.trigger, !vector.masked, !s.intxDisabled, !s.suspended else {
            s.indexes[0].setPending(0, true)
            return nil
        }
        // Already signalled and not yet unmasked: nothing new to say.
        if vector.pending && !pulse { return nil }
        s.indexes[0].vectors[0].masked = true // automask
        s.indexes[0].setPending(0, false)
        s.indexes[0].signalled += 1
        return fd
    }

    static func deliver(_ s: inout State, _ i: Int, _ n: Int) -> OwnedFileDescriptor? {
        guard s.indexes[i].enabled else { return nil }
        let vector = s.indexes[i].vectors[n]
        guard let fd = vector.trigger, !vector.masked, !s.indexes[i].functionMasked,
              !s.suspended || i >= Int(IRQIndex.err.rawValue) else {
            s.indexes[i].setPending(n, true)
            return nil
        }
        s.indexes[i].setPending(n, false)
        s.indexes[i].signalled += 1
        return fd
    }

    /// After something unmasked: deliver whatever is pending and now deliverable.
    static func flushPending(_ s: inout State) -> [OwnedFileDescriptor] {
        var fds: [OwnedFileDescriptor] = []
        if !s.indexes[0].vectors.isEmpty, s.indexes[0].vectors[0].pending || s.intxLevel,
           s.indexes[0].vectors[0].trigger != nil, !s.indexes[0].vectors[0].masked, !s.intxDisabled, !s.suspended {
            if let fd = assertINTx(&s, pulse: true) { fds.append(fd) }
        }
        for i in 1..<s.indexes.count where s.indexes[i].pendingCount > 0 {
            for n in s.indexes[i].vectors.indices where s.indexes[i].vectors[n].pending {
                if let fd = deliver(&s, i, n) { fds.append(fd) }
            }
        }
        return fds
    }

    func applyAndFlush(_ body: (inout State) -> Void) {
        let fds = state.withLock { s in
            body(&s)
            return Self.flushPending(&s)
        }
        for fd in fds { try? fd.signalEventfd() }
    }

    // MARK: State driven by config space (PCIFunction)

    package func setEnabled(_ index: IRQIndex, _ enabled: Bool) {
        applyAndFlush { s in
            let i = Int(index.rawValue)
            s.indexes[i].enabled = enabled
            if !enabled && s.indexes[i].pendingCount > 0 {
                for n in s.indexes[i].vectors.indices { s.indexes[i].setPending(n, false) }
            }
        }
    }

    package func setFunctionMasked(_ index: IRQIndex, _ masked: Bool) {
        applyAndFlush { $0.indexes[Int(index.rawValue)].functionMasked = masked }
    }

    package func setMasked(_ index: IRQIndex, vector: Int, _ masked: Bool) {
        applyAndFlush { s in
            let i = Int(index.rawValue)
            guard vector < s.indexes[i].vectors.count else { return }
            s.indexes[i].vectors[vector].masked = masked
        }
    }

    /// Masks every vector of `index` that has no eventfd: the MSI-X power-on state (every vector
    /// masked), for vectors the client has not claimed.
    package func maskUnassigned(_ index: IRQIndex) {
        state.withLock { s in
            let i = Int(index.rawValue)
            for n in s.indexes[i].vectors.indices where s.indexes[i].vectors[n].trigger == nil {
                s.indexes[i].vectors[n].masked = true
            }
        }
    }

    /// Migration's stopped states hold every device interrupt pending; resuming delivers them.
    package func setSuspended(_ suspended: Bool) {
        applyAndFlush { $0.suspended = suspended }
    }

    /// Whether migration holds interrupts back (the device is stopped).
    public var isSuspended: Bool { state.withLock { $0.suspended } }

    /// Sets the pending bit of each vector in `bits` (u64 words, as `pendingBits` returns them):
    /// pending interrupts carried over by a migration, delivered once deliverable.
    package func restorePending(_ index: IRQIndex, bits: [UInt64]) {
        applyAndFlush { s in
            let i = Int(index.rawValue)
            for n in s.indexes[i].vectors.indices where n / 64 < bits.count && bits[n / 64] & (1 << UInt64(n % 64)) != 0 {
                s.indexes[i].setPending(n, true)
            }
        }
    }

    /// Command register INTx Disable.
    package func setINTxDisabled(_ disabled: Bool) {
        applyAndFlush { $0.intxDisabled = disabled }
    }
}
