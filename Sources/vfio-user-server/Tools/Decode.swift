import ArgumentParser
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// `decode`: a captured byte stream, back into messages.
struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode a captured vfio-user byte stream into messages, one line each (the --trace format).",
        discussion: """
        Reads FILE (or standard input) and recognises its form:
          raw bytes      the stream itself, e.g. a file a test wrote
          xxd output     00000000: 0100 0000 1000 ...  ................
          plain hex      01 00 00 00 10 00 ..., or one long run of hex digits
          socat -x dump  from socat -x -v UNIX-LISTEN:p.sock UNIX-CONNECT:s.sock:
                         '> date length=N' blocks (left to right) and '< ...'
                         blocks; each direction is its own stream

        Messages are cut at their header's size. Without direction markers, \
        commands go to the server except DMA_READ and DMA_WRITE, and replies the \
        other way. fds never appear in a dump; the proxy subcommand shows them.

        EXAMPLES
          socat -x -v UNIX-LISTEN:/tmp/p.sock \\
              UNIX-CONNECT:/tmp/vfio-user-mtty-2.sock 2> dump.txt
          vfio-user-server decode dump.txt
          printf '...' | xxd | vfio-user-server decode
        """)

    @Argument(help: ArgumentHelp("The capture; standard input if omitted.", valueName: "file"))
    var file: String?

    @Option(name: .customLong("dma-layout"), help: ArgumentHelp("DMA_READ/WRITE layout: spec (QEMU 11) or qemu (older sources).", valueName: "spec|qemu"))
    var dmaLayout: String = "spec"

    @Flag(name: .customLong("server-on-left"), help: "In a socat dump, the left address is the server (so '>' is a reply).")
    var serverOnLeft = false

    func validate() throws {
        guard dmaLayout == "spec" || dmaLayout == "qemu" else { throw ValidationError("--dma-layout is spec or qemu") }
    }

    func run() throws {
        let input: FileHandleBytes
        if let file {
            guard let bytes = FileHandleBytes(path: file) else {
                ServerLog.error("cannot read \(file)")
                throw ExitCode(1)
            }
            input = bytes
        } else {
            input = FileHandleBytes(descriptor: 0)
        }
        let chunks: [Hexdump.Chunk]
        do throws(Hexdump.ParseError) {
            (_, chunks) = try Hexdump.parse(input.bytes, leftIsClient: !serverOnLeft)
        } catch {
            ServerLog.error("\(file ?? "standard input"): \(error)")
            throw ExitCode(1)
        }
        var decoder = StreamDecoder(dmaLayout: dmaLayout == "spec" ? .spec : .qemu)
        for chunk in chunks { decoder.feed(chunk).forEach { print($0) } }
        decoder.finish().forEach { print($0) }
    }
}

/// A whole file or stream, read into memory.
struct FileHandleBytes {
    var bytes: [UInt8] = []

    init?(path: String) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        self.init(descriptor: fd)
    }

    init(descriptor: CInt) {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[..<count]
        }
    }
}
