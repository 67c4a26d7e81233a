/// Migration v2 and dirty-page logging from the client's side: the DEVICE_FEATURE requests QEMU's
/// vfio migration code makes of a kernel device, as vfio-user messages.
import Support
extension VfioUserClient {
    /// DEVICE_FEATURE MIGRATION GET.
    public func migrationCapabilities() throws(ClientError) -> MigrationCapabilities {
        let reply = try deviceFeature(DeviceFeature(argsz: 16, flags: DeviceFeatureFlags(feature: .migration, get: true)))
        let flags = try decode(reply.data) { (r: inout ByteReader) throws(ProtocolError) in try r.read(UInt64.self) }
        return MigrationCapabilities(rawValue: flags)
    }

    /// DEVICE_FEATURE MIG_DEVICE_STATE GET.
    public func migrationState() throws(ClientError) -> MigrationState {
        let reply = try deviceFeature(DeviceFeature(argsz: 16, flags: DeviceFeatureFlags(feature: .migDeviceState, get: true)))
        let state = try decode(reply.data) { (r: inout ByteReader) throws(ProtocolError) in try MigrationDeviceState(decoding: &r) }
        guard let known = state.state else { throw .protocolViolation("migration state \(state.rawState)") }
        return known
    }

    /// DEVICE_FEATURE MIG_DEVICE_STATE SET: returns when the device is in `state`.
    public func setMigrationState(_ state: MigrationState) throws(ClientError) {
        try setMigrationState(raw: state.rawValue)
    }

    /// SET with any number, for conformance tests of invalid states.
    public func setMigrationState(raw: UInt32) throws(ClientError) {
        var writer = ByteWriter(capacity: 8)
        writer.write(raw)
        writer.write(UInt32.max)
        _ = try deviceFeature(DeviceFeature(flags: DeviceFeatureFlags(feature: .migDeviceState, set: true), data: writer.bytes))
    }

    /// DEVICE_FEATURE DMA_LOGGING_START.
    public func startDirtyLogging(pageSize: UInt64 = 4096, ranges: [DMARange]) throws(ClientError) {
        var writer = ByteWriter(capacity: 16 + 16 * ranges.count)
        DMALoggingStart(pageSize: pageSize, ranges: ranges).encode(into: &writer)
        _ = try deviceFeature(DeviceFeature(flags: DeviceFeatureFlags(feature: .dmaLoggingStart, set: true), data: writer.bytes))
    }

    /// DEVICE_FEATURE DMA_LOGGING_STOP.
    public func stopDirtyLogging() throws(ClientError) {
        _ = try deviceFeature(DeviceFeature(flags: DeviceFeatureFlags(feature: .dmaLoggingStop, set: true)))
    }

    /// DEVICE_FEATURE DMA_LOGGING_REPORT: the bitmap of pages written in the range since the last
    /// report (one bit per `pageSize` page).
    public func dirtyPages(iova: UInt64, length: UInt64, pageSize: UInt64 = 4096) throws(ClientError) -> [UInt64] {
        let report = DMALoggingReport(iova: iova, length: length, pageSize: pageSize)
        guard let bitmapSize = report.bitmapSize else { throw .protocolViolation("page size \(pageSize) is not a power of two") }
        var writer = ByteWriter(capacity: DMALoggingReport.size)
        report.encode(into: &writer)
        let reply = try deviceFeature(DeviceFeature(argsz: UInt32(DeviceFeature.fixedSize + DMALoggingReport.size) + UInt32(bitmapSize),
                                                    flags: DeviceFeatureFlags(feature: .dmaLoggingReport, get: true), data: writer.bytes))
        guard reply.data.count == DMALoggingReport.size + Int(bitmapSize) else {
            throw .protocolViolation("DMA_LOGGING_REPORT reply carries \(reply.data.count) bytes, expected \(DMALoggingReport.size + Int(bitmapSize))")
        }
        return try decode(Array(reply.data[DMALoggingReport.size...])) { (r: inout ByteReader) throws(ProtocolError) in
            var words: [UInt64] = []
            while !r.isAtEnd { words.append(try r.read()) }
            return words
        }
    }
}

/// Moves a device's state from one server to another, as a VMM does during live migration: the
/// source goes to PRE_COPY (if it can) and then STOP_COPY while the destination takes the stream in
/// RESUMING, then the destination runs. The source is left in STOP.
public struct MigrationDriver {
    public struct Report: Sendable, Equatable {
        /// Bytes read while the source still ran (PRE_COPY), and after it stopped.
        public var preCopyBytes = 0
        public var stopCopyBytes = 0
        /// From the source stopping to the destination running.
        public var downtimeNanoseconds: UInt64 = 0
        public var totalBytes: Int { preCopyBytes + stopCopyBytes }
    }

    /// MIG_DATA_READ size per message.
    public var chunkSize: Int
    /// Use PRE_COPY when the source offers it.
    public var usePreCopy: Bool

    public init(chunkSize: Int = 64 * 1024, usePreCopy: Bool = true) {
        self.chunkSize = chunkSize
        self.usePreCopy = usePreCopy
    }

    @discardableResult
    public func migrate(from source: VfioUserClient, to destination: VfioUserClient) throws(ClientError) -> Report {
        var report = Report()
        let capabilities = try source.migrationCapabilities()
        _ = try destination.migrationCapabilities() // both must migrate at all
        try destination.setMigrationState(.resuming) // RUNNING → STOP → RESUMING

        if usePreCopy && capabilities.contains(.preCopy) {
            try source.setMigrationState(.preCopy)
            report.preCopyBytes = try copy(from: source, to: destination)
        }
        let stopped = monotonicNanoseconds()
        try source.setMigrationState(.stopCopy)
        report.stopCopyBytes = try copy(from: source, to: destination)
        try destination.setMigrationState(.running) // RESUMING → STOP (load) → RUNNING
        report.downtimeNanoseconds = monotonicNanoseconds() - stopped
        try source.setMigrationState(.stop)
        return report
    }

    /// Reads until a short read (no more data for now), writing each piece on.
    private func copy(from source: VfioUserClient, to destination: VfioUserClient) throws(ClientError) -> Int {
        var total = 0
        while true {
            let data = try source.migrationDataRead(size: UInt32(chunkSize))
            if !data.isEmpty { try destination.migrationDataWrite(data) }
            total += data.count
            if data.count < chunkSize { return total }
        }
    }
}
