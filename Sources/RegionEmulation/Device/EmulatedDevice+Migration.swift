import VfioUserProto

/// Migration v2 as the session sees it: DEVICE_FEATURE MIGRATION and MIG_DEVICE_STATE, and
/// MIG_DATA_READ / MIG_DATA_WRITE. Devices whose model is not `MigratableDevice` answer ENOTTY.
extension EmulatedDevice {
    /// DEVICE_FEATURE MIGRATION GET; nil if the device cannot migrate.
    public var migrationCapabilities: MigrationCapabilities? { migration?.machine.capabilities }

    /// DEVICE_FEATURE MIG_DEVICE_STATE GET.
    public var migrationState: MigrationState { migration?.current ?? .running }

    /// DEVICE_FEATURE MIG_DEVICE_STATE SET: returns once the device is in `state` (or ERROR).
    public func setMigrationState(_ state: UInt32) throws(MigrationError) {
        guard let migration else { throw .unsupported }
        try migration.setState(state, device: self)
    }

    /// MIG_DATA_READ: at most `maxBytes` of the stream being saved.
    public func readMigrationData(maxBytes: Int) throws(MigrationError) -> [UInt8] {
        guard let migration else { throw .unsupported }
        return try migration.read(maxBytes: maxBytes)
    }

    /// MIG_DATA_WRITE: more of the stream being loaded.
    public func writeMigrationData(_ bytes: UnsafeRawBufferPointer) throws(MigrationError) {
        guard let migration else { throw .unsupported }
        try migration.write(bytes)
    }

    /// Config space of a loaded state, written back through the function's write path so that its
    /// side effects (command register, MSI and MSI-X enables and masks) happen as on a guest write.
    /// The model is not told: its own state comes from its record, and a model window in config
    /// space (virtio's PCI_CFG) must not replay accesses. IDs and status are not written.
    func replayConfig(_ config: [UInt8]) {
        config.withUnsafeBytes { raw in
            for offset in stride(from: PCIConfig.command, to: config.count, by: 4) {
                let length = offset == PCIConfig.command ? 2 : min(4, config.count - offset)
                _ = function.writeConfig(offset: offset, data: UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + length)]))
            }
        }
    }
}
