import Support
import Synchronization
import VfioUserProto

/// Migration v2 for one device: its state, the stream it is saving or loading, and what each
/// state allows. Driven by the session thread (MIG_DEVICE_STATE, MIG_DATA_READ/WRITE, resets);
/// the lock is for readers on other threads.
///
/// On every move between running and stopped states the model is quiesced or resumed and the
/// device's interrupts are held or released, so a stopped device neither does DMA nor interrupts.
final class MigrationEngine: Sendable {
    let machine: MigrationStateMachine
    let model: MigratableDevice

    private struct State {
        var current = MigrationState.running
        /// What MIG_DATA_READ hands out, and how much of it has gone.
        var outgoing: [UInt8] = []
        var readOffset = 0
        /// The stream being loaded in RESUMING.
        var incoming: MigrationStreamParser?
    }

    private let state = Locked(State())
    /// `state.current` for the access check every region access makes, read without the lock;
    /// written under it whenever `current` changes.
    private let published = Atomic<UInt32>(MigrationState.running.rawValue)

    init(model: MigratableDevice) {
        self.model = model
        machine = MigrationStateMachine(capabilities: model.migrationCapabilities.union(.stopCopy))
    }

    var current: MigrationState { state.withLock { $0.current } }

    // MARK: MIG_DEVICE_STATE SET

    /// Walks to `target` one direct arc at a time. A failed step leaves the device in ERROR.
    func setState(_ rawTarget: UInt32, device: EmulatedDevice) throws(MigrationError) {
        let from = current
        guard let target = MigrationState(rawValue: rawTarget), let steps = machine.path(from: from, to: target) else {
            throw .invalidTransition(from: from, to: rawTarget)
        }
        var at = from
        for step in steps {
            do throws(MigrationError) {
                try take(from: at, to: step, device: device)
            } catch {
                enterError(from: at)
                throw error
            }
            at = step
            state.withLock {
                $0.current = step
                published.store(step.rawValue, ordering: .releasing)
            }
        }
    }

    private func take(from: MigrationState, to: MigrationState, device: EmulatedDevice) throws(MigrationError) {
        if from.isRunning && !to.isRunning { quiesce(true, device) }

        switch (from, to) {
        case (.running, .preCopy), (.runningP2P, .preCopyP2P):
            setOutgoing(initialRecords(device))
        case (.stop, .stopCopy):
            setOutgoing(initialRecords(device) + (try finalRecords(device)))
        case (.preCopy, .stopCopy), (.preCopyP2P, .stopCopy):
            let rest = try finalRecords(device)
            state.withLock { $0.outgoing += rest }
        case (.preCopy, .running), (.preCopyP2P, .runningP2P), (.stopCopy, .stop):
            setOutgoing([])
        case (.stop, .resuming):
            let expected = MigrationRecord.streamHeader(device.function.identity, configSize: device.function.configSize)
            let model = model
            state.withLock {
                $0.incoming = MigrationStreamParser(expectedStreamHeader: expected) { header throws(MigrationError) in
                    try model.checkMigrationHeader(header)
                }
            }
        case (.resuming, .stop):
            try load(device)
        default:
            break // RUNNING <-> RUNNING_P2P, PRE_COPY <-> PRE_COPY_P2P, RUNNING_P2P <-> STOP: no data moves
        }

        if !from.isRunning && to.isRunning { quiesce(false, device) }
    }

    private func quiesce(_ stopped: Bool, _ device: EmulatedDevice) {
        if stopped {
            device.function.interrupts.setSuspended(true)
            model.migrationQuiesce(true)
        } else {
            model.migrationQuiesce(false)
            device.function.interrupts.setSuspended(false)
        }
    }

    private func setOutgoing(_ bytes: [UInt8]) {
        state.withLock {
            $0.outgoing = bytes
            $0.readOffset = 0
        }
    }

    /// The records a destination can check while the source still runs.
    private func initialRecords(_ device: EmulatedDevice) -> [UInt8] {
        var writer = ByteWriter(capacity: 256)
        MigrationRecord.encode(.streamHeader, MigrationRecord.streamHeader(device.function.identity, configSize: device.function.configSize),
                               into: &writer)
        MigrationRecord.encode(.deviceHeader, model.migrationHeader(), into: &writer)
        return writer.bytes
    }

    /// The records of the stopped device.
    private func finalRecords(_ device: EmulatedDevice) throws(MigrationError) -> [UInt8] {
        let modelState = try model.saveMigrationState()
        var writer = ByteWriter(capacity: 8192)
        MigrationRecord.encode(.pciFunction, device.function.migrationRecord(), into: &writer)
        MigrationRecord.encode(.deviceState, modelState, into: &writer)
        MigrationRecord.encode(.end, [], into: &writer)
        return writer.bytes
    }

    /// RESUMING → STOP: the whole stream arrived and checks out, then it is applied: the model's
    /// state (atomic), config space replayed through the normal write path, MSI-X and pending bits.
    private func load(_ device: EmulatedDevice) throws(MigrationError) {
        let parser = state.withLock { $0.incoming }
        guard let parser else { throw .invalidStream("no stream was written") }
        if let why = parser.incompleteness { throw .invalidStream(why) }
        guard let pciRecord = parser.pciFunction, let deviceRecord = parser.deviceState else {
            throw .invalidStream("records are missing")
        }
        let saved = try device.function.decodeMigrationRecord(pciRecord)
        try model.loadMigrationState(deviceRecord)
        device.replayConfig(saved.config)
        device.function.restoreInterrupts(saved)
        state.withLock { $0.incoming = nil }
    }

    private func enterError(from: MigrationState) {
        state.withLock {
            $0.current = .error
            published.store(MigrationState.error.rawValue, ordering: .releasing)
            $0.outgoing = []
            $0.readOffset = 0
            $0.incoming = nil
        }
        // A device that failed mid-way stays quiet until reset.
        if from.isRunning { model.migrationQuiesce(true) }
    }

    // MARK: MIG_DATA_READ / MIG_DATA_WRITE

    /// Up to `maxBytes` of the stream; fewer (possibly none) means no more data for now.
    func read(maxBytes: Int) throws(MigrationError) -> [UInt8] {
        try state.withLock { (s: inout State) throws(MigrationError) -> [UInt8] in
            guard s.current.isSaving else { throw .wrongState(s.current, "MIG_DATA_READ") }
            let count = min(maxBytes, s.outgoing.count - s.readOffset)
            defer { s.readOffset += count }
            return Array(s.outgoing[s.readOffset..<(s.readOffset + count)])
        }
    }

    /// Bytes of the stream being loaded; refused (and the stream with it) if they cannot belong.
    func write(_ bytes: UnsafeRawBufferPointer) throws(MigrationError) {
        try state.withLock { (s: inout State) throws(MigrationError) in
            guard s.current == .resuming, var parser = s.incoming else { throw .wrongState(s.current, "MIG_DATA_WRITE") }
            defer { s.incoming = parser } // a refusal is remembered too
            try parser.append(bytes)
        }
    }

    /// Bytes of the outgoing stream not read yet (PRE_COPY's "initial bytes").
    var unreadBytes: Int { state.withLock { $0.outgoing.count - $0.readOffset } }

    // MARK: Reset and gating

    /// DEVICE_RESET or a lost connection: back to RUNNING, streams dropped. The model's own reset,
    /// which follows, ends its pause (see `MigratableDevice`), and the function's releases interrupts.
    func reset() {
        state.withLock {
            $0 = State()
            published.store(MigrationState.running.rawValue, ordering: .releasing)
        }
    }

    /// Whether a region access may proceed in the current state. Config space is readable in
    /// every state and writable except while saving (QEMU restores it during RESUMING); BARs are
    /// off limits while the state is being saved or loaded, and in ERROR.
    func checkAccess(config: Bool, write: Bool) throws(MigrationError) {
        let current = MigrationState(rawValue: published.load(ordering: .acquiring)) ?? .error
        switch current {
        case .running, .runningP2P, .preCopy, .preCopyP2P, .stop:
            return
        case .stopCopy:
            if config && !write { return }
            throw .stopped(current)
        case .resuming:
            if config { return }
            throw .stopped(current)
        case .error:
            if config && !write { return }
            throw .failed
        }
    }
}
