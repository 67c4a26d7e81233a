import CLinux
import Support
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Client memory backed by a memfd: what QEMU's memory-backend-memfd gives the server.
public final class Memfd {
    public let fd: OwnedFileDescriptor
    public let size: Int
    public let base: UnsafeMutableRawPointer

    /// `name` shows in /proc/<pid>/fd links ("/memfd:NAME (deleted)"): a test can spot its copies.
    public init(size: Int, name: String = "vfio-user-test") throws {
        let raw = clinux_memfd_create(name, 1) // MFD_CLOEXEC
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        fd = OwnedFileDescriptor(taking: FileDescriptor(rawValue: raw))
        guard ftruncate(raw, off_t(size)) == 0 else { throw Errno(rawValue: errno) }
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, raw, 0), base != MAP_FAILED else {
            throw Errno(rawValue: errno)
        }
        self.size = size
        self.base = base
    }

    deinit { munmap(base, size) }

    public func write(_ offset: Int, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    public func read(_ offset: Int, _ count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: base + offset, count: count))
    }

    /// Serves DMA_READ/DMA_WRITE for this memory, mapped at `iova`.
    public func handler(at iova: UInt64) -> DMARequestHandler {
        let base = self.base
        let size = UInt64(self.size)
        return DMARequestHandler(
            read: { address, buffer in
                guard address >= iova, address - iova + UInt64(buffer.count) <= size else { return .badAddress }
                buffer.copyMemory(from: UnsafeRawBufferPointer(start: base + Int(address - iova), count: buffer.count))
                return nil
            },
            write: { address, data in
                guard address >= iova, address - iova + UInt64(data.count) <= size else { return .badAddress }
                (base + Int(address - iova)).copyMemory(from: data.baseAddress!, byteCount: data.count)
                return nil
            })
    }
}
