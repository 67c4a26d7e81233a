import SystemPackage
import VfioUserProto

/// Why a migration request failed; each case carries the errno of its reply.
public enum MigrationError: ErrnoConvertible, Equatable, CustomStringConvertible {
    /// The device model cannot migrate: ENOTTY, the kernel's answer for a feature a device lacks.
    case unsupported
    /// A state number that is not a state, ERROR, a state the device lacks, or no way there (from
    /// ERROR): EINVAL.
    case invalidTransition(from: MigrationState, to: UInt32)
    /// MIG_DATA_READ outside a saving state, MIG_DATA_WRITE outside RESUMING: EINVAL.
    case wrongState(MigrationState, String)
    /// The stream a destination got is not one it can load (magic, version, device, shape,
    /// truncation, trailing bytes): EINVAL.
    case invalidStream(String)
    /// A region access while the device is stopped for migration (STOP_COPY, RESUMING): EBUSY.
    case stopped(MigrationState)
    /// A region access while the device is in ERROR: EIO, until a reset.
    case failed

    /// The errno the reply carries.
    public var errno: Errno {
        switch self {
        case .unsupported: .inappropriateIOCTLForDevice
        case .invalidTransition, .wrongState, .invalidStream: .invalidArgument
        case .stopped: .resourceBusy
        case .failed: .ioError
        }
    }

    public var description: String {
        switch self {
        case .unsupported: "this device cannot migrate"
        case let .invalidTransition(from, to):
            "no transition from \(from) to " + (MigrationState(rawValue: to).map { "\($0)" } ?? "state \(to)")
        case let .wrongState(state, what): "\(what) is not allowed in \(state)"
        case let .invalidStream(why): "migration stream refused: \(why)"
        case let .stopped(state): "the device is stopped for migration (\(state))"
        case .failed: "the device is in the ERROR migration state; reset it"
        }
    }
}
