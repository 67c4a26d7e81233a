import SystemPackage
import VfioUserProto

/// A region access or query the device refuses.
public enum RegionError: ErrnoConvertible, Equatable, CustomStringConvertible {
    case noSuchRegion(UInt32)
    case noSuchIRQ(UInt32)
    case outOfBounds(region: RegionIndex, offset: UInt64, count: Int, size: UInt64)
    case notWritable(RegionIndex)
    /// The device is stopped for migration, or in its ERROR state.
    case migration(MigrationError)

    /// EINVAL, as the kernel's vfio-pci and libvfio-user answer each of these; a migration state
    /// that forbids the access has its own.
    public var errno: Errno {
        if case let .migration(error) = self { return error.errno }
        return .invalidArgument
    }

    public var description: String {
        switch self {
        case let .noSuchRegion(index): "region \(index) does not exist"
        case let .noSuchIRQ(index): "IRQ index \(index) does not exist"
        case let .outOfBounds(region, offset, count, size):
            "\(region) access of \(count) bytes at 0x\(String(offset, radix: 16)) is outside its \(size) bytes"
        case let .notWritable(region): "\(region) is read-only"
        case let .migration(error): error.description
        }
    }
}
