import VfioUserProto

/// What a PCI function carries across a migration besides its model's own state: config space as
/// the guest sees it, the MSI-X table and vector masks, and interrupts still pending.
struct SavedPCIFunction {
    var config: [UInt8]
    var msixTable: [UInt8]
    var msixMasked: [UInt64]
    var msixPending: [UInt64]
    var msiPending: [UInt64]
    var intxPending: Bool
}

extension PCIFunction {
    /// The function's record of a migration stream, field by field.
    func migrationRecord() -> [UInt8] {
        var config = [UInt8](repeating: 0, count: configSize)
        config.withUnsafeMutableBytes { readConfig(offset: 0, into: $0) }
        let msixVectors = layout.msix?.vectors ?? 0
        var masked = [UInt64](repeating: 0, count: (msixVectors + 63) / 64)
        for vector in 0..<msixVectors where interrupts.isMasked(.msix, vector: vector) { masked[vector / 64] |= 1 << UInt64(vector % 64) }
        let table = msixTableBytes

        var writer = ByteWriter(capacity: configSize + table.count + 64)
        writer.write(UInt32(config.count))
        writer.write(config)
        writer.write(UInt32(msixVectors))
        writer.write(UInt32(table.count))
        writer.write(table)
        for words in [masked, interrupts.pendingBits(.msix), interrupts.pendingBits(.msi)] {
            writer.write(UInt32(words.count))
            for word in words { writer.write(word) }
        }
        writer.write(UInt8(interrupts.isPending(.intx, vector: 0) ? 1 : 0))
        return writer.bytes
    }

    /// Reads a record `migrationRecord` made, checking it fits this function.
    func decodeMigrationRecord(_ bytes: [UInt8]) throws(MigrationError) -> SavedPCIFunction {
        let msixVectors = layout.msix?.vectors ?? 0
        do throws(ProtocolError) {
            return try ByteReader.decode(bytes, whole: true) { (reader: inout ByteReader) throws(ProtocolError) in
                let configLength: UInt32 = try reader.read()
                guard configLength == configSize else { throw .invalid("config space of \(configLength) bytes, not \(configSize)") }
                let config = Array(try reader.bytes(count: Int(configLength)))
                let vectors: UInt32 = try reader.read()
                guard vectors == msixVectors else { throw .invalid("\(vectors) MSI-X vectors, not \(msixVectors)") }
                let tableLength: UInt32 = try reader.read()
                guard tableLength == (layout.msix?.tableSize ?? 0) else { throw .invalid("an MSI-X table of \(tableLength) bytes") }
                let table = Array(try reader.bytes(count: Int(tableLength)))
                var bitmaps: [[UInt64]] = []
                for _ in 0..<3 {
                    let count: UInt32 = try reader.read()
                    guard count <= 64 else { throw .invalid("a pending bitmap of \(count) words") }
                    bitmaps.append(try (0..<count).map { _ throws(ProtocolError) in try reader.read(UInt64.self) })
                }
                let intx: UInt8 = try reader.read()
                return SavedPCIFunction(config: config, msixTable: table, msixMasked: bitmaps[0], msixPending: bitmaps[1],
                                        msiPending: bitmaps[2], intxPending: intx != 0)
            }
        } catch {
            throw .invalidStream("PCI function record: \(error)")
        }
    }

    /// The MSI-X table, masks and pending bits of a saved function (config space is replayed by
    /// the caller through the normal write path, so every side effect happens as on a guest write).
    func restoreInterrupts(_ saved: SavedPCIFunction) {
        setMSIXTableBytes(saved.msixTable)
        let msixVectors = layout.msix?.vectors ?? 0
        for vector in 0..<msixVectors {
            let masked = vector / 64 < saved.msixMasked.count && saved.msixMasked[vector / 64] & (1 << UInt64(vector % 64)) != 0
            interrupts.setMasked(.msix, vector: vector, masked)
        }
        interrupts.restorePending(.msix, bits: saved.msixPending)
        interrupts.restorePending(.msi, bits: saved.msiPending)
        if saved.intxPending { interrupts.restorePending(.intx, bits: [1]) }
    }
}
