import CPNG
import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Screenshots of display instances: the device model's picture, as a PNG (libpng).
public enum Screenshot {
    /// The picture on the screen of `device`, which serves `instance`. ENOTSUP for a device without a display, ENODATA (with
    /// the reason) when its display shows nothing.
    public static func take(_ device: EmulatedDevice, of instance: MediatedDeviceInstance) throws(ManagementError) -> Picture {
        guard let display = device.model as? DisplayDevice else {
            throw ManagementError(.notSupported, "instance \(instance.uuid) is a \(instance.type.id), which has no display")
        }
        do throws(DisplayError) { return try display.capturePicture() } catch {
            throw ManagementError(error.errno, "instance \(instance.uuid): \(error)")
        }
    }

    /// `picture` as a PNG file's bytes.
    public static func png(_ picture: Picture) throws(ManagementError) -> [UInt8] {
        var output: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = picture.rgb.withUnsafeBufferPointer {
            cpng_encode_rgb($0.baseAddress, UInt32(picture.width), UInt32(picture.height), &output, &size, &message)
        }
        guard status == 0, let output else {
            throw ManagementError(.noMemory, "PNG encoding failed: " + textUpToNUL(message))
        }
        defer { free(output) }
        return Array(UnsafeBufferPointer(start: output, count: size))
    }
}
