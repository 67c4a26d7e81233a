import MttyDevice
import RegionEmulation
import Support
import SystemPackage
import TestSupport
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// What the fuzzers run on each input, and what the corpus tests replay: kept apart from the
/// libFuzzer entry points so that a plain build and `swift test` run the very same code.
public enum FuzzHarness {
    /// The decoder: the bytes read as a dump in any of the forms `decode` knows, and as a raw
    /// stream cut into messages whose payloads are decoded by command.
    public static func decode(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        if let (_, chunks) = try? Hexdump.parse(bytes) {
            var decoder = StreamDecoder()
            for chunk in chunks { _ = decoder.feed(chunk) }
            _ = decoder.finish()
        }
        for layout in [DMATransferLayout.spec, .qemu] {
            var decoder = StreamDecoder(dmaLayout: layout)
            _ = decoder.feed(Hexdump.Chunk(direction: .toServer, bytes: bytes))
            _ = decoder.finish()
        }
    }

    /// A whole session of an mtty fed `data` as a client's byte stream: the server reads it all,
    /// answers what it answers (drained and dropped), and sees the client go at the end. Then the
    /// device must be as a fresh client finds it: no mapping, no interrupt wired.
    public final class Session: @unchecked Sendable { // Used by one thread at a time, as libFuzzer does.
        public let device = EmulatedDevice(model: MttyDevice(ports: 2))
        private let configuration: ServerConfiguration

        public init() {
            ServerLog.muted.store(true, ordering: .relaxed)
            var configuration = ServerConfiguration()
            configuration.maxDataTransferSize = 64 * 1024 // large reads cost time, not coverage
            configuration.dmaReplyTimeoutMilliseconds = 10
            self.configuration = configuration
        }

        /// One client connected on a socket pair, served as the server serves `--fd` connections.
        public func run(_ data: UnsafeRawBufferPointer) {
            let (client, server) = try! UnixSocket.pair()
            let input = Array(data)
            let feeder = Thread { Self.feed(client, input) }
            let endpoint = DeviceEndpoint(connectedSocket: server, device: device, configuration: configuration, name: "fuzz")
            try! endpoint.start() // the fuzzer never runs out of threads
            _ = endpoint.waitUntilDetached()
            feeder.join()
            withExtendedLifetime(client) {}
            precondition(device.dma.mappingCount == 0, "a mapping outlived its session")
            precondition(device.function.interrupts.assignedEventfdCount == 0, "an eventfd outlived its session")
        }

        /// Writes `input` and reads whatever comes back, until the server closes. Whatever happens,
        /// the server sees the end of the stream when this returns.
        private static func feed(_ socket: OwnedFileDescriptor, _ input: [UInt8]) {
            defer { UnixSocket.shutdown(socket) }
            let fd = socket.rawValue
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            if input.isEmpty { Glibc.shutdown(fd, CInt(SHUT_WR)) }
            var written = 0
            var sink = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                var poller = pollfd(fd: fd, events: Int16(POLLIN) | (written < input.count ? Int16(POLLOUT) : 0), revents: 0)
                guard poll(&poller, 1, 5000) > 0 else { return } // the server stopped answering: let the session end
                if poller.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                    let count = recv(fd, &sink, sink.count, 0)
                    if count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR) { return }
                }
                if written < input.count && poller.revents & Int16(POLLOUT) != 0 {
                    let count = input[written...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
                    if count > 0 { written += count }
                    if written == input.count { Glibc.shutdown(fd, CInt(SHUT_WR)) }
                }
            }
        }
    }

    /// Seed inputs made of the typical conversation: the whole of it, and each message alone
    /// after VERSION (fds cannot travel in a fuzz input: fd-carrying messages go without).
    public static var sessionSeeds: [(name: String, bytes: [UInt8])] {
        let messages = Conversation.messages
        var seeds = [("conversation", messages.flatMap(\.bytes))]
        for (index, message) in messages.enumerated().dropFirst() {
            let name = message.name.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }
            seeds.append(("\(index)-" + String(name), messages[0].bytes + message.bytes))
        }
        return seeds
    }

    /// Decoder seeds: the session seeds as raw streams, and the conversation as xxd and socat dumps.
    public static var decoderSeeds: [(name: String, bytes: [UInt8])] {
        let conversation = Conversation.messages.flatMap(\.bytes)
        var xxd = ""
        for start in stride(from: 0, to: conversation.count, by: 16) {
            let row = conversation[start..<min(start + 16, conversation.count)]
            let hex = stride(from: 0, to: row.count, by: 2).map { pair in
                row.dropFirst(pair).prefix(2).map { hexText($0, digits: 2, prefix: false) }.joined()
            }.joined(separator: " ")
            xxd += hexText(start, digits: 8, prefix: false) + ": " + hex + "\n"
        }
        let socat = "> 2026/11/21 10:00:00.000000  length=\(conversation.count) from=0 to=\(conversation.count - 1)\n"
            + conversation.map { hexText($0, digits: 2, prefix: false) }.joined(separator: " ") + "\n--\n"
        return sessionSeeds + [("conversation-xxd", Array(xxd.utf8)), ("conversation-socat", Array(socat.utf8))]
    }
}
