import SystemPackage
import VfioUserProto

/// A device with a screen. vfio-user has no display plane (VFIO_DEVICE_QUERY_GFX_PLANE is an ioctl
/// the protocol does not carry), so QEMU shows nothing of such a device; the server, which holds
/// its framebuffer, takes the screenshots.
public protocol DisplayDevice: DeviceModel {
    /// The picture on the screen now; throws why there is none (no mode set, a mode that does not
    /// fit the framebuffer).
    func capturePicture() throws(DisplayError) -> Picture
}

/// A screenful of pixels: `width` × `height`, three bytes each (red, green, blue), row by row.
public struct Picture: Sendable, Equatable {
    /// Pixels per row.
    public let width: Int
    /// Rows.
    public let height: Int
    /// `width` × `height` × 3 bytes.
    public let rgb: [UInt8]

    /// A picture from its pixels; traps unless `rgb` holds three bytes per pixel.
    public init(width: Int, height: Int, rgb: [UInt8]) {
        precondition(rgb.count == width * height * 3, "three bytes per pixel")
        self.width = width
        self.height = height
        self.rgb = rgb
    }

    /// The pixel at (x, y) as 0xRRGGBB.
    public func pixel(x: Int, y: Int) -> UInt32 {
        let at = (y * width + x) * 3
        return UInt32(rgb[at]) << 16 | UInt32(rgb[at + 1]) << 8 | UInt32(rgb[at + 2])
    }
}

/// Why a display shows no picture: ENODATA, with the reason.
public enum DisplayError: ErrnoConvertible, Equatable, CustomStringConvertible {
    case noPicture(String)

    /// ENODATA, as the kernel's query of an mdev's plane when nothing is shown.
    public var errno: Errno { .noData }

    public var description: String {
        switch self {
        case let .noPicture(why): "no picture: \(why)"
        }
    }
}
