import CLinux
import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The display's memory (BAR0): a memfd the server maps and hands to the client, which maps it
/// into the guest. Its size is sealed, so a client holding the fd cannot shrink it under the
/// server's mapping (a read there would be SIGBUS).
///
/// The guest writes it while the server reads it (screenshots, trapped accesses); a read racing a
/// write sees either value of a byte, as a scan-out would.
final class Framebuffer: @unchecked Sendable { // `base` points at a shared mapping that lives as long as the object.
    let fd: OwnedFileDescriptor
    let size: Int
    private let base: UnsafeMutableRawPointer

    /// Throws the errno of memfd_create, ftruncate, the seal or mmap (EMFILE, ENOMEM).
    init(size: Int, name: String) throws(Errno) {
        let raw = clinux_memfd_create(name, 3) // MFD_CLOEXEC | MFD_ALLOW_SEALING
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        fd = OwnedFileDescriptor(taking: FileDescriptor(rawValue: raw))
        guard ftruncate(raw, off_t(size)) == 0, clinux_seal_size(raw) == 0 else { throw Errno(rawValue: errno) }
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, raw, 0), mapped != MAP_FAILED else {
            throw Errno(rawValue: errno)
        }
        self.size = size
        base = mapped
    }

    deinit { munmap(base, size) }

    /// `count` bytes (1, 2, 4 or 8) at `offset`, little-endian; the caller checked the bounds.
    func load(_ offset: Int, _ count: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<count { value |= UInt64(base.load(fromByteOffset: offset + i, as: UInt8.self)) << (8 * i) }
        return value
    }

    func store(_ offset: Int, _ count: Int, _ value: UInt64) {
        for i in 0..<count { base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * i)), toByteOffset: offset + i, as: UInt8.self) }
    }

    /// The whole memory (migration).
    var contents: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: size)) }

    /// Replaces the whole memory with `bytes` (exactly `size` of them).
    func replaceContents(_ bytes: [UInt8]) {
        precondition(bytes.count == size)
        bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: size) }
    }

    /// The pixels of `mode` (XRGB8888, little-endian unless `bigEndian`) as red, green, blue bytes.
    /// The mode was checked to lie inside the memory.
    func picture(_ mode: DisplayMode, bigEndian: Bool) -> Picture {
        var rgb = [UInt8](repeating: 0, count: mode.width * mode.height * 3)
        rgb.withUnsafeMutableBytes { out in
            var at = 0
            for y in 0..<mode.height {
                let row = base + mode.offset + y * mode.stride
                for x in 0..<mode.width {
                    let pixel = row.loadUnaligned(fromByteOffset: x * 4, as: UInt32.self)
                    let xrgb = bigEndian ? UInt32(bigEndian: pixel) : UInt32(littleEndian: pixel)
                    out[at] = UInt8(truncatingIfNeeded: xrgb >> 16)
                    out[at + 1] = UInt8(truncatingIfNeeded: xrgb >> 8)
                    out[at + 2] = UInt8(truncatingIfNeeded: xrgb)
                    at += 3
                }
            }
        }
        return Picture(width: mode.width, height: mode.height, rgb: rgb)
    }
}
