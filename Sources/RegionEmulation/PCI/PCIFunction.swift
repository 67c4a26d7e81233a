import Support
import VfioUserProto

/// Everything a device model declares about its PCI function.
public struct PCIFunctionDescription: Sendable {
    /// Vendor, device, subsystem, revision and class.
    public var identity: PCIIdentity
    /// Six slots; a 64-bit BAR's upper slot must be nil.
    public var bars: [BARDefinition?]
    /// 256 (conventional) or 4096 (PCI Express, needed for extended capabilities).
    public var configSize: Int
    /// Standard capabilities, chained from the capability pointer in this order.
    public var capabilities: [PCICapability]
    /// PCI Express extended capabilities from 0x100 (needs `configSize` 4096).
    public var extendedCapabilities: [PCIExtendedCapability]
    /// Whether the function has an INTx pin (INTA#).
    public var hasINTx: Bool

    /// A description with up to six BARs (missing slots are empty).
    public init(identity: PCIIdentity, bars: [BARDefinition?], configSize: Int = ConfigSpace.conventionalSize,
                capabilities: [PCICapability] = [], extendedCapabilities: [PCIExtendedCapability] = [],
                hasINTx: Bool = true) {
        precondition(bars.count <= 6)
        self.identity = identity
        self.bars = bars + Array(repeating: nil, count: 6 - bars.count)
        self.configSize = configSize
        self.capabilities = capabilities
        self.extendedCapabilities = extendedCapabilities
        self.hasINTx = hasINTx
    }
}

/// What a config write asks the device to do besides storing bytes.
public enum ConfigWriteEffect: Sendable, Equatable {
    /// The bytes were stored; nothing else to do.
    case none
    /// PCIe Device Control "Initiate Function Level Reset" was written.
    case functionLevelReset
}

/// A PCI function: config space, capabilities, the MSI-X table and PBA, and the interrupt engine,
/// with the rules that tie them together (enable bits, masks, INTx disable, FLR).
public final class PCIFunction: Sendable {
    /// The identity fields, as declared.
    public let identity: PCIIdentity
    /// The six BAR slots, nil where empty (and above a 64-bit BAR).
    public let bars: [BARDefinition?]
    /// Where each capability was placed in config space.
    public let layout: CapabilityLayout
    /// The function's interrupts: a model calls `trigger` on it.
    public let interrupts: InterruptEngine
    /// 256 or 4096 bytes.
    public let configSize: Int

    private struct State {
        var config: ConfigSpace
        /// MSI-X table entries: address (8), data (4), vector control (4); the mask bit lives in the
        /// interrupt engine, so reads of vector control come from there.
        var msixTable: [UInt8]
    }

    private let state: Locked<State>

    /// Lays out config space from the description; throws when the capabilities do not fit.
    public init(_ description: PCIFunctionDescription) throws(CapabilityBuilder.Failure) {
        identity = description.identity
        bars = description.bars
        configSize = description.configSize
        var config = ConfigSpace(size: description.configSize)
        config.buildHeader(identity: description.identity, bars: description.bars, interruptPin: description.hasINTx ? 1 : 0)
        layout = try CapabilityBuilder.build(description.capabilities, extended: description.extendedCapabilities, into: &config)
        config.sealPowerOnState()
        let msi = layout.msi
        interrupts = InterruptEngine(intx: description.hasINTx, msiVectors: msi?.vectors ?? 0,
                                     msiMaskable: msi?.perVectorMasking ?? false, msixVectors: layout.msix?.vectors ?? 0)
        state = Locked(State(config: config, msixTable: Array(repeating: 0, count: layout.msix?.tableSize ?? 0)))
        resetMSIXTable()
    }

    // MARK: Config space

    /// Reads config space as the client sees it (interrupt status and MSI pending bits are live).
    public func readConfig(offset: Int, into buffer: UnsafeMutableRawBufferPointer) {
        state.withLock { $0.config.read(offset: offset, into: buffer) }
        // Fields whose truth lives in the interrupt engine.
        patch(buffer, offset: offset, field: PCIConfig.status, size: 2) { value in
            interrupts.intxLevel ? value | UInt64(PCIConfig.statusInterrupt) : value & ~UInt64(PCIConfig.statusInterrupt)
        }
        if let msi = layout.msi, msi.perVectorMasking {
            let pendingOffset = msi.offset + (msi.is64Bit ? 20 : 16)
            patch(buffer, offset: offset, field: pendingOffset, size: 4) { _ in
                UInt64(interrupts.pendingBits(.msi).first ?? 0)
            }
        }
    }

    /// Overwrites the bytes of `field` that fall in a read buffer starting at `offset`.
    private func patch(_ buffer: UnsafeMutableRawBufferPointer, offset: Int, field: Int, size: Int,
                       _ compute: (UInt64) -> UInt64) {
        guard offset < field + size, field < offset + buffer.count else { return }
        var current: UInt64 = 0
        state.withLock { s in for i in 0..<size { current |= UInt64(s.config.byte(field + i)) << (8 * i) } }
        let value = compute(current)
        for i in 0..<size where field + i >= offset && field + i < offset + buffer.count {
            buffer[field + i - offset] = UInt8(truncatingIfNeeded: value >> (8 * i))
        }
    }

    /// Writes config space under the registers' write masks and applies what the write means:
    /// INTx disable, MSI and MSI-X enables and masks, power state, Function Level Reset.
    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) -> ConfigWriteEffect {
        var effect = ConfigWriteEffect.none
        // Interrupt fields are applied after the config lock is released; a plain struct keeps a
        // config write free of allocations.
        var intxDisabled: Bool?, msiEnabled: Bool?, msiMask: UInt32?, msixControl: UInt16?
        state.withLock { s in
            let pmOffset = layout.powerManagementOffset
            let oldPowerState: UInt16? = pmOffset.map { s.config.value(at: $0 + 4, as: UInt16.self) & 3 }
            s.config.write(offset: offset, data: data)
            func touched(_ field: Int, _ size: Int) -> Bool { offset < field + size && field < offset + data.count }

            if touched(PCIConfig.command, 2) {
                intxDisabled = s.config.value(at: PCIConfig.command, as: UInt16.self) & PCIConfig.commandINTxDisable != 0
            }
            if let msi = layout.msi {
                let controlOffset = msi.offset + 2
                if touched(controlOffset, 2) {
                    var control: UInt16 = s.config.value(at: controlOffset)
                    let capable = (control >> 1) & 7
                    if (control >> 4) & 7 > capable { // Multiple Message Enable cannot exceed Capable.
                        control = control & ~0x70 | capable << 4
                        s.config.set(control, at: controlOffset)
                    }
                    msiEnabled = control & 1 != 0
                }
                if msi.perVectorMasking {
                    let maskOffset = msi.offset + (msi.is64Bit ? 16 : 12)
                    if touched(maskOffset, 4) {
                        msiMask = s.config.value(at: maskOffset)
                    }
                }
            }
            if let msixOffset = layout.msixOffset, touched(msixOffset + 2, 2) {
                msixControl = s.config.value(at: msixOffset + 2)
            }
            if let pmOffset, let oldPowerState, touched(pmOffset + 4, 2) {
                // D1 and D2 are not supported: such a write is completed but its state discarded.
                let control: UInt16 = s.config.value(at: pmOffset + 4)
                if control & 3 == 1 || control & 3 == 2 { s.config.set(control & ~3 | oldPowerState, at: pmOffset + 4) }
            }
            if let express = layout.expressOffset, touched(express + 8, 2) {
                let control: UInt16 = s.config.value(at: express + 8)
                if control & 0x8000 != 0 {
                    s.config.set(control & 0x7FFF, at: express + 8) // Initiate FLR always reads 0.
                    effect = .functionLevelReset
                }
            }
        }
        if let intxDisabled { interrupts.setINTxDisabled(intxDisabled) }
        if let msiEnabled { interrupts.setEnabled(.msi, msiEnabled) }
        if let msiMask, let vectors = layout.msi?.vectors {
            for n in 0..<vectors { interrupts.setMasked(.msi, vector: n, msiMask & (1 << n) != 0) }
        }
        if let msixControl {
            interrupts.setFunctionMasked(.msix, msixControl & 0x4000 != 0)
            interrupts.setEnabled(.msix, msixControl & 0x8000 != 0)
        }
        return effect
    }

    /// The command register as the client last wrote it.
    public var command: UInt16 { state.withLock { $0.config.value(at: PCIConfig.command) } }

    /// Bus Master Enable: whether the device may do DMA (a device may choose to honour it).
    public var isBusMaster: Bool { command & PCIConfig.commandBusMaster != 0 }

    /// Sets the MSI/MSI-X enable bits in config space from the interrupt engine, after SET_IRQS
    /// enabled or disabled an index, so that config space and SET_IRQS always agree.
    public func syncEnableBits() {
        let msiEnabled = interrupts.isEnabled(.msi)
        let msixEnabled = interrupts.isEnabled(.msix)
        state.withLock { s in
            if let msi = layout.msi {
                let control: UInt16 = s.config.value(at: msi.offset + 2)
                s.config.set(msiEnabled ? control | 1 : control & ~1, at: msi.offset + 2)
            }
            if let msixOffset = layout.msixOffset {
                let control: UInt16 = s.config.value(at: msixOffset + 2)
                s.config.set(msixEnabled ? control | 0x8000 : control & ~0x8000, at: msixOffset + 2)
            }
        }
    }

    // MARK: MSI-X table and PBA (in a BAR)

    /// Which part of the MSI-X structures an access to `bar` at `offset` falls in, if any.
    func msixPart(bar: Int, offset: UInt64) -> MSIXPart? {
        guard let msix = layout.msix else { return nil }
        if bar == msix.tableBAR, offset >= UInt64(msix.tableOffset), offset < UInt64(msix.tableOffset) + UInt64(msix.tableSize) {
            return .table(Int(offset - UInt64(msix.tableOffset)))
        }
        if bar == msix.pbaBAR, offset >= UInt64(msix.pbaOffset), offset < UInt64(msix.pbaOffset) + UInt64(msix.pbaSize) {
            return .pba(Int(offset - UInt64(msix.pbaOffset)))
        }
        return nil
    }

    enum MSIXPart: Equatable {
        case table(Int)
        case pba(Int)
    }

    func readMSIX(_ part: MSIXPart, size: Int) -> UInt64 {
        switch part {
        case let .table(offset):
            var value: UInt64 = 0
            state.withLock { s in
                for i in 0..<size where offset + i < s.msixTable.count { value |= UInt64(s.msixTable[offset + i]) << (8 * i) }
            }
            // Vector control bit 0 (mask) comes from the engine.
            for i in 0..<size where (offset + i) % MSIXLayout.entrySize == 12 {
                let vector = (offset + i) / MSIXLayout.entrySize
                let masked: UInt64 = interrupts.isMasked(.msix, vector: vector) ? 1 : 0
                value = value & ~(UInt64(1) << (8 * i)) | masked << (8 * i)
            }
            return value
        case let .pba(offset):
            let words = interrupts.pendingBits(.msix)
            var value: UInt64 = 0
            for i in 0..<size {
                let byte = offset + i
                guard byte / 8 < words.count else { continue }
                value |= (words[byte / 8] >> (8 * UInt64(byte % 8)) & 0xFF) << (8 * i)
            }
            return value
        }
    }

    func writeMSIX(_ part: MSIXPart, size: Int, value: UInt64) {
        guard case let .table(offset) = part else { return } // The PBA is read-only.
        var maskChanges: [(Int, Bool)] = []
        state.withLock { s in
            for i in 0..<size where offset + i < s.msixTable.count {
                let byte = UInt8(truncatingIfNeeded: value >> (8 * i))
                let within = (offset + i) % MSIXLayout.entrySize
                if within >= 12 {
                    if within == 12 { maskChanges.append(((offset + i) / MSIXLayout.entrySize, byte & 1 != 0)) }
                    continue // Vector control: only the mask bit is defined.
                }
                s.msixTable[offset + i] = byte
            }
        }
        for (vector, masked) in maskChanges { interrupts.setMasked(.msix, vector: vector, masked) }
    }

    /// The message address and data a client programmed into MSI-X table entry `vector`.
    public func msixEntry(_ vector: Int) -> (address: UInt64, data: UInt32)? {
        guard let msix = layout.msix, vector < msix.vectors else { return nil }
        return state.withLock { s in
            let base = vector * MSIXLayout.entrySize
            var address: UInt64 = 0
            for i in 0..<8 { address |= UInt64(s.msixTable[base + i]) << (8 * i) }
            var data: UInt32 = 0
            for i in 0..<4 { data |= UInt32(s.msixTable[base + 8 + i]) << (8 * i) }
            return (address, data)
        }
    }

    /// The MSI-X table's address and data bytes (vector control comes from the interrupt engine).
    var msixTableBytes: [UInt8] { state.withLock { $0.msixTable } }

    func setMSIXTableBytes(_ bytes: [UInt8]) {
        state.withLock { s in
            guard bytes.count == s.msixTable.count else { return }
            s.msixTable = bytes
        }
    }

    private func resetMSIXTable() {
        guard let msix = layout.msix else { return }
        state.withLock { s in s.msixTable = Array(repeating: 0, count: msix.tableSize) }
        // Power-on: every vector masked (PCI spec). Assigning an eventfd unmasks it, see InterruptEngine.
        interrupts.maskUnassigned(.msix)
    }

    // MARK: Raising interrupts (device side)

    /// The interrupt mode the driver selected: MSI-X if enabled, else MSI, else INTx.
    public var interruptMode: IRQIndex {
        if interrupts.isEnabled(.msix) { return .msix }
        if interrupts.isEnabled(.msi) { return .msi }
        return .intx
    }

    /// Raises a message-signalled `vector` in whatever mode is enabled; with INTx this pulses the
    /// line (devices with level semantics use `setINTx`).
    public func signal(vector: Int) {
        switch interruptMode {
        case .msix: interrupts.trigger(.msix, vector: vector)
        case .msi: interrupts.trigger(.msi, vector: min(vector, max(0, enabledMSIVectors - 1)))
        default: interrupts.trigger(.intx, vector: 0)
        }
    }

    /// Vectors the driver enabled with MSI's Multiple Message Enable.
    public var enabledMSIVectors: Int {
        guard let msi = layout.msi else { return 0 }
        let control: UInt16 = state.withLock { $0.config.value(at: msi.offset + 2) }
        return 1 << Int((control >> 4) & 7)
    }

    /// Drives INTA# as a level: asserted until the model deasserts it (a 16550's pending interrupt).
    public func setINTx(asserted: Bool) { interrupts.setINTx(asserted: asserted) }

    // MARK: Reset

    /// Config space, MSI-X table and interrupt state back to power-on. `lostConnection` also closes
    /// the client's eventfds.
    public func reset(lostConnection: Bool) {
        state.withLock { $0.config.reset() }
        interrupts.reset(closeEventfds: lostConnection)
        resetMSIXTable()
        syncEnableBits()
    }
}
