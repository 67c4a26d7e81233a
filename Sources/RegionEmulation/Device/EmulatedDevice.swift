import Support
import SystemPackage
import VfioUserProto

/// A device model with everything vfio-user expects around it: the nine PCI regions, five IRQ
/// indexes, config-space semantics, access splitting, the MSI-X table and PBA, reset and DMA.
///
/// The session calls one method per command and turns thrown errors into errno replies; nothing
/// here knows about sockets or message ids.
public final class EmulatedDevice: Sendable {
    /// The model behind the device.
    public let model: DeviceModel
    /// The client's DMA mappings, shared with the model.
    public let dma: DMASpace
    /// Present when the model can migrate.
    let migration: MigrationEngine?
    /// The model's function, held here: every access reaches it, and asking the model (a protocol
    /// witness returning a retained reference) would cost a retain and release each time.
    public let function: PCIFunction

    /// Wraps a model and gives it its DMA space; `maxDMAMappings` is what VERSION advertises.
    public init(model: DeviceModel, maxDMAMappings: Int = DMASpace.defaultMaxMappings) {
        self.model = model
        function = model.function
        dma = DMASpace(maxMappings: maxDMAMappings)
        migration = (model as? MigratableDevice).map(MigrationEngine.init)
        model.attach(dma: dma)
    }

    // MARK: DEVICE_GET_INFO, GET_REGION_INFO, GET_IRQ_INFO

    /// PCI with reset support, the nine standard regions, the five IRQ indexes.
    public var info: DeviceInfo {
        DeviceInfo(flags: [.pci, .reset], numRegions: RegionIndex.pciRegionCount, numIRQs: IRQIndex.count)
    }

    /// GET_REGION_INFO: the region's size, flags and, for a mappable BAR, its fd and areas.
    public func region(_ index: RegionIndex) throws(RegionError) -> RegionDescriptor {
        guard index.rawValue < RegionIndex.pciRegionCount else { throw .noSuchRegion(index.rawValue) }
        if index == .config {
            return RegionDescriptor(index: index, size: UInt64(function.configSize), flags: [.read, .write])
        }
        guard let bar = index.barNumber, let definition = function.bars[bar] else {
            return RegionDescriptor(index: index, size: 0, flags: []) // absent BAR, ROM, VGA
        }
        let mmap = model.mmapBacking(bar: bar)
        return RegionDescriptor(index: index, size: definition.size,
                                flags: mmap == nil ? [.read, .write] : [.read, .write, .mmap], mmap: mmap)
    }

    /// GET_IRQ_INFO: the index's vector count and flags.
    public func irqInfo(_ index: IRQIndex) throws(RegionError) -> IRQInfo {
        guard let info = function.interrupts.info(index) else { throw .noSuchIRQ(index.rawValue) }
        return IRQInfo(flags: info.flags, index: index, count: UInt32(info.count))
    }

    // MARK: DEVICE_SET_IRQS

    /// SET_IRQS: eventfds, masks and triggers for an index, then config space's enable bits.
    public func setIRQs(_ request: SetIRQs, fds: [OwnedFileDescriptor]) throws(InterruptError) {
        try function.interrupts.apply(request, fds: fds)
        if request.index == .msi || request.index == .msix { function.syncEnableBits() }
    }

    // MARK: REGION_READ / REGION_WRITE

    /// REGION_READ: config space or a BAR, split into accesses the model's registers take.
    public func read(_ index: RegionIndex, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(RegionError) {
        let (bar, definition) = try checkedAccess(index, offset: offset, count: buffer.count, write: false)
        guard let bar, let definition else {
            function.readConfig(offset: Int(offset), into: buffer)
            model.patchConfigRead(offset: Int(offset), into: buffer)
            return
        }
        forEachPiece(offset: offset, count: buffer.count, maxSize: definition.maxAccessSize) { at, position, size in
            let value: UInt64
            if let part = function.msixPart(bar: bar, offset: at) {
                value = function.readMSIX(part, size: size)
            } else {
                value = model.readBAR(bar, offset: at, size: size)
            }
            for i in 0..<size { buffer[position + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
    }

    /// REGION_WRITE: config space or a BAR, split the same way.
    public func write(_ index: RegionIndex, offset: UInt64, data: UnsafeRawBufferPointer) throws(RegionError) {
        let (bar, definition) = try checkedAccess(index, offset: offset, count: data.count, write: true)
        guard let bar, let definition else {
            let effect = function.writeConfig(offset: Int(offset), data: data)
            model.configWritten(offset: Int(offset), size: data.count)
            if effect == .functionLevelReset { reset(.functionLevelReset) }
            return
        }
        forEachPiece(offset: offset, count: data.count, maxSize: definition.maxAccessSize) { at, position, size in
            var value: UInt64 = 0
            for i in 0..<size { value |= UInt64(data[position + i]) << (8 * i) }
            if let part = function.msixPart(bar: bar, offset: at) {
                function.writeMSIX(part, size: size, value: value)
            } else {
                model.writeBAR(bar, offset: at, size: size, value: value)
            }
        }
    }

    /// Validates an access and says whether it targets a BAR (and which) or config space.
    /// The hot path of every access: the sizes `region(_:)` reports, without asking the model
    /// about mmap.
    private func checkedAccess(_ index: RegionIndex, offset: UInt64, count: Int, write: Bool) throws(RegionError) -> (Int?, BARDefinition?) {
        guard index.rawValue < RegionIndex.pciRegionCount else { throw .noSuchRegion(index.rawValue) }
        // Optional chaining borrows the engine; `if let` retained and released it on every access.
        do throws(MigrationError) { try migration?.checkAccess(config: index == .config, write: write) } catch { throw .migration(error) }
        let bar = index.barNumber
        let definition = bar.flatMap { function.bars[$0] }
        let size = index == .config ? UInt64(function.configSize) : definition?.size ?? 0
        guard count > 0, offset < size, UInt64(count) <= size - offset else {
            throw .outOfBounds(region: index, offset: offset, count: count, size: size)
        }
        return index == .config ? (nil, nil) : (bar, definition)
    }

    /// Splits `[offset, offset + count)` into naturally aligned pieces of at most `maxSize` bytes:
    /// how a bus breaks a wide access up for registers that are narrower.
    private func forEachPiece(offset: UInt64, count: Int, maxSize: Int, _ body: (UInt64, Int, Int) -> Void) {
        var position = 0
        while position < count {
            let at = offset + UInt64(position)
            var size = maxSize
            while size > 1 && (at % UInt64(size) != 0 || size > count - position) { size /= 2 }
            body(at, position, size)
            position += size
        }
    }

    // MARK: DEVICE_RESET and disconnection

    /// DEVICE_RESET, a lost client or FLR: the model, config space and interrupts back to power-on.
    public func reset(_ reason: ResetReason) {
        migration?.reset() // VFIO_DEVICE_RESET returns the migration state to RUNNING
        function.reset(lostConnection: reason == .lostConnection)
        model.reset(reason)
    }

    /// The device is going away: its threads stop.
    public func shutdown() { model.shutdown() }

    /// Asks the client to let go of the device (the REQ interrupt, vfio-pci's "request" notifier):
    /// the mdev core does this before it removes an attached device. False when the client did
    /// not register an eventfd for REQ, so nobody heard the request.
    @discardableResult
    public func requestRelease() -> Bool { function.interrupts.trigger(.req, vector: 0) }

    /// The client is gone: reset as on a lost connection (eventfds closed, state back to power-on),
    /// then drop every DMA mapping. `waitForRelease` lets the caller keep serving while pins drain.
    public func connectionLost() {
        dma.setMessageChannel(nil)
        reset(.lostConnection)
        dma.removeAll()
    }
}
