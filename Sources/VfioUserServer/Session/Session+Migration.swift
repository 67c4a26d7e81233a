import RegionEmulation
import SystemPackage
import VfioUserProto

extension Session {
    /// DEVICE_FEATURE (16), with the kernel's `vfio_check_feature` rules: exactly one of GET and SET
    /// (PROBE may accompany either, or stand alone); an operation the feature lacks is EINVAL; a
    /// feature the device lacks is ENOTTY; argsz must cover the reply. PROBE only checks. SET and
    /// PROBE replies repeat the request; GET replies append the data and grow argsz.
    func handleDeviceFeature(_ payload: UnsafeRawBufferPointer) throws {
        try requirePayload(payload, atLeast: DeviceFeature.fixedSize, .deviceFeature)
        var reader = ByteReader(payload)
        let request = try DeviceFeature(decoding: &reader)
        let flags = request.flags
        guard flags.unknownBits == 0 else { throw SessionError.malformed("DEVICE_FEATURE flags 0x\(String(flags.rawValue, radix: 16))") }
        guard !(flags.isGet && flags.isSet), flags.isGet || flags.isSet || flags.isProbe else {
            throw SessionError.malformed("DEVICE_FEATURE needs one of GET and SET, or PROBE")
        }
        let data = request.data

        func check(get: Bool = false, set: Bool = false, minimumArgsz: Int = DeviceFeature.fixedSize) throws {
            guard (!flags.isGet || get) && (!flags.isSet || set) else {
                throw SessionError.malformed("\(flags.feature) does not support \(flags.isGet ? "GET" : "SET")")
            }
            try requireArgsz(request.argsz, atLeast: minimumArgsz, .deviceFeature)
        }
        func echo() { request.encode(into: &reply) }
        func answer(_ appended: [UInt8]) {
            DeviceFeature(argsz: UInt32(DeviceFeature.fixedSize + data.count + appended.count), flags: flags,
                          data: data + appended).encode(into: &reply)
        }

        switch flags.feature {
        case .migration:
            guard let capabilities = device.migrationCapabilities else { throw MigrationError.unsupported }
            try check(get: true, minimumArgsz: DeviceFeature.fixedSize + 8)
            if flags.isProbe { return echo() }
            var writer = ByteWriter(capacity: 8)
            writer.write(capabilities.rawValue)
            DeviceFeature(argsz: UInt32(DeviceFeature.fixedSize + 8), flags: flags, data: writer.bytes).encode(into: &reply)

        case .migDeviceState:
            guard device.migrationCapabilities != nil else { throw MigrationError.unsupported }
            try check(get: true, set: true, minimumArgsz: DeviceFeature.fixedSize + MigrationDeviceState.size)
            if flags.isProbe { return echo() }
            if flags.isSet {
                let requested = try ByteReader.decode(data) { (r: inout ByteReader) throws(ProtocolError) in try MigrationDeviceState(decoding: &r) }
                try device.setMigrationState(requested.rawState)
                return echo()
            }
            var writer = ByteWriter(capacity: MigrationDeviceState.size)
            MigrationDeviceState(state: device.migrationState).encode(into: &writer)
            DeviceFeature(argsz: UInt32(DeviceFeature.fixedSize + MigrationDeviceState.size), flags: flags, data: writer.bytes)
                .encode(into: &reply)

        case .dmaLoggingStart:
            try check(set: true, minimumArgsz: DeviceFeature.fixedSize + 16)
            if flags.isProbe { return echo() }
            let start = try ByteReader.decode(data) { (r: inout ByteReader) throws(ProtocolError) in try DMALoggingStart(decoding: &r) }
            try device.dma.startLogging(pageSize: start.pageSize, ranges: start.ranges)
            echo()

        case .dmaLoggingStop:
            try check(set: true)
            if flags.isProbe { return echo() }
            device.dma.stopLogging()
            echo()

        case .dmaLoggingReport:
            try check(get: true, minimumArgsz: DeviceFeature.fixedSize + DMALoggingReport.size)
            if flags.isProbe { return echo() }
            let report = try ByteReader.decode(data) { (r: inout ByteReader) throws(ProtocolError) in try DMALoggingReport(decoding: &r) }
            guard let bitmapSize = report.bitmapSize, report.length > 0 else {
                throw SessionError.malformed("DMA_LOGGING_REPORT page size \(report.pageSize) or length \(report.length)")
            }
            let needed = UInt64(DeviceFeature.fixedSize + DMALoggingReport.size) + bitmapSize
            guard bitmapSize <= UInt64(clientCapabilities.effectiveMaxDataTransferSize) else {
                throw SessionError.malformed("a \(bitmapSize)-byte bitmap exceeds max_data_xfer_size")
            }
            guard UInt64(request.argsz) >= needed else { throw SessionError.malformed("argsz \(request.argsz) cannot hold the \(needed)-byte reply") }
            let words = try device.dma.loggingReport(iova: report.iova, length: report.length, pageSize: report.pageSize)
            var writer = ByteWriter(capacity: words.count * 8)
            for word in words { writer.write(word) }
            answer(writer.bytes)

        default:
            throw SessionError.unsupported("DEVICE_FEATURE \(flags.feature)")
        }
    }

    /// MIG_DATA_READ (17): argsz and size; the reply carries at most `size` bytes (fewer: no more
    /// data for now). `size` may not exceed either side's max_data_xfer_size.
    func handleMigrationDataRead(_ payload: UnsafeRawBufferPointer) throws {
        guard payload.count == MigrationDataRead.size else {
            throw SessionError.malformed("MIG_DATA_READ payload is \(payload.count) bytes, not \(MigrationDataRead.size)")
        }
        var reader = ByteReader(payload)
        let request = try MigrationDataRead(decoding: &reader)
        let limit = min(configuration.maxDataTransferSize, clientCapabilities.effectiveMaxDataTransferSize)
        guard Int(request.size) <= limit else { throw SessionError.malformed("MIG_DATA_READ of \(request.size) bytes exceeds max_data_xfer_size \(limit)") }
        try requireArgsz(request.argsz, atLeast: MigrationData.fixedSize + Int(request.size), .migDataRead)
        let data = try device.readMigrationData(maxBytes: Int(request.size))
        MigrationData(data: data).encode(into: &reply)
    }

    /// MIG_DATA_WRITE (18): argsz, size, then exactly `size` bytes; the reply has no payload.
    func handleMigrationDataWrite(_ payload: UnsafeRawBufferPointer) throws {
        try requirePayload(payload, atLeast: MigrationData.fixedSize, .migDataWrite)
        var reader = ByteReader(payload)
        let argsz: UInt32 = try reader.read()
        let size: UInt32 = try reader.read()
        guard Int(size) <= configuration.maxDataTransferSize else {
            throw SessionError.malformed("MIG_DATA_WRITE of \(size) bytes exceeds max_data_xfer_size \(configuration.maxDataTransferSize)")
        }
        guard reader.remaining == Int(size) else {
            throw SessionError.malformed("MIG_DATA_WRITE says \(size) bytes but carries \(reader.remaining)")
        }
        try requireArgsz(argsz, atLeast: MigrationData.fixedSize + Int(size), .migDataWrite)
        try device.writeMigrationData(reader.rest())
    }
}
