import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// Runs the `client` command's commands on one connection and prints what each found.
final class ClientSession {
    let client: VfioUserClient
    let socket: String
    let json: Bool
    /// Armed interrupts: index and vector → eventfd.
    var armed: [(index: IRQIndex, vector: Int, eventfd: OwnedFileDescriptor)] = []
    /// Files mapped with dma-map, kept open while mapped.
    var mappedFiles: [UInt64: OwnedFileDescriptor] = [:]

    struct UsageError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    init(client: VfioUserClient, socket: String, json: Bool) {
        self.client = client
        self.socket = socket
        self.json = json
    }

    /// Runs one command; false (after saying why) if it failed.
    func execute(_ words: [String]) -> Bool {
        defer { fflush(nil) } // each command's output before the next one's errors
        do {
            try run(words)
            return true
        } catch {
            let text = "\(words.joined(separator: " ")): \(error)"
            if json { emit(["command": .string(words.first ?? ""), "error": .string("\(error)")]) } else { ServerLog.error(text) }
            return false
        }
    }

    private func run(_ words: [String]) throws {
        let arguments = Array(words.dropFirst())
        switch words.first ?? "" {
        case "info": try info()
        case "read": try readRegister(arguments)
        case "write": try writeRegister(arguments)
        case "dump": try dump(arguments)
        case "config": try config(arguments)
        case "irq": try arm(arguments)
        case "unmask": try unmask(arguments)
        case "wait": try waitForInterrupts(arguments)
        case "reset":
            try client.reset()
            say("reset", text: "device reset")
        case "dma-map": try dmaMap(arguments)
        case "dma-unmap": try dmaUnmap(arguments)
        case "migration": try migration(arguments)
        case "sleep":
            guard arguments.count == 1, let milliseconds = Self.number(arguments[0]) else { throw UsageError("sleep MS") }
            usleep(UInt32(min(milliseconds, 600_000)) * 1000)
        default:
            throw UsageError("unknown command '\(words.first ?? "")' (see vfio-user-server client --help)")
        }
    }

    // MARK: Output

    func emit(_ value: JSONValue) { print(value.text) }

    /// Prints `text` for people or `fields` (plus the command name) as JSON.
    func say(_ command: String, text: String, _ fields: [(key: String, value: JSONValue)] = []) {
        if json { emit(.object([("command", .string(command))] + fields)) } else { print(text) }
    }

    // MARK: Registers

    /// `OFFSET[.W]` or `OFFSET[.W]=VALUE`.
    struct Access {
        var offset: UInt64
        var width: Int
        var value: UInt64?
    }

    static func access(_ word: String, names: [String: (Int, Int)] = [:]) throws -> Access {
        let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
        var location = parts[0]
        var width = 4
        var explicitWidth = false
        if let dot = location.lastIndex(of: "."), ["b", "w", "l", "q"].contains(location[location.index(after: dot)...].lowercased()) {
            width = ["b": 1, "w": 2, "l": 4, "q": 8][location[location.index(after: dot)...].lowercased()]!
            location = String(location[..<dot])
            explicitWidth = true
        }
        let offset: UInt64
        if let named = names[location.uppercased()] {
            offset = UInt64(named.0)
            if !explicitWidth { width = named.1 }
        } else if let number = number(location) {
            offset = number
        } else {
            throw UsageError("'\(location)' is neither an offset nor a register name")
        }
        var value: UInt64?
        if parts.count == 2 {
            guard let parsed = number(parts[1]) else { throw UsageError("'\(parts[1])' is not a number") }
            guard width == 8 || parsed < 1 << (8 * UInt64(width)) else { throw UsageError("\(parts[1]) does not fit in \(width) bytes") }
            value = parsed
        }
        return Access(offset: offset, width: width, value: value)
    }

    static func number(_ text: String) -> UInt64? {
        let lower = text.lowercased().replacing("_", with: "")
        if lower.hasPrefix("0x") { return UInt64(lower.dropFirst(2), radix: 16) }
        return UInt64(lower)
    }

    static func region(_ text: String) throws -> RegionIndex {
        if let named = RegionIndex(name: text.lowercased()) { return named }
        if let number = UInt32(text) { return RegionIndex(rawValue: number) }
        throw UsageError("'\(text)' is not a region (config, bar0..bar5, rom, vga or a number)")
    }

    func read(_ region: RegionIndex, _ access: Access) throws -> UInt64 {
        let bytes = try client.read(region, offset: access.offset, count: access.width)
        return bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    func write(_ region: RegionIndex, _ access: Access, value: UInt64, posted: Bool = false) throws {
        let bytes = (0..<access.width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        try client.write(region, offset: access.offset, data: bytes, posted: posted)
    }

    func reportRead(_ command: String, _ region: RegionIndex, _ access: Access, _ value: UInt64, label: String? = nil) {
        let digits = access.width * 2
        say(command, text: "\(label ?? "\(region)+\(hexText(access.offset))") = \(hexText(value, digits: digits))",
            [("region", .string("\(region)")), ("offset", .int(Int64(access.offset))), ("width", .int(Int64(access.width))),
             ("value", .uint(value))])
    }

    private func readRegister(_ arguments: [String]) throws {
        guard arguments.count == 2 else { throw UsageError("read REGION OFFSET[.W]") }
        let region = try Self.region(arguments[0])
        let access = try Self.access(arguments[1])
        guard access.value == nil else { throw UsageError("read takes no value; use write") }
        reportRead("read", region, access, try read(region, access))
    }

    private func writeRegister(_ arguments: [String]) throws {
        guard arguments.count == 2 || (arguments.count == 3 && arguments[2] == "posted") else {
            throw UsageError("write REGION OFFSET[.W]=VALUE [posted]")
        }
        let region = try Self.region(arguments[0])
        let access = try Self.access(arguments[1])
        guard let value = access.value else { throw UsageError("write needs =VALUE") }
        try write(region, access, value: value, posted: arguments.count == 3)
        say("write", text: "\(region)+\(hexText(access.offset)) := \(hexText(value, digits: access.width * 2))",
            [("region", .string("\(region)")), ("offset", .int(Int64(access.offset))), ("width", .int(Int64(access.width))), ("value", .uint(value))])
    }

    private func dump(_ arguments: [String]) throws {
        guard (1...3).contains(arguments.count) else { throw UsageError("dump REGION [OFFSET [LENGTH]]") }
        let region = try Self.region(arguments[0])
        let offset = try arguments.count > 1 ? Self.number(arguments[1]).unwrap("offset") : 0
        let size = try client.regionInfo(region).info.size
        let length = try arguments.count > 2 ? Self.number(arguments[2]).unwrap("length") : min(size &- offset, 4096)
        guard length <= 1 << 20 else { throw UsageError("dump at most 1 MiB") }
        let bytes = try client.read(region, offset: offset, count: Int(length))
        printBytes("dump", region, offset: offset, bytes)
    }

    func printBytes(_ command: String, _ region: RegionIndex, offset: UInt64, _ bytes: [UInt8]) {
        if json {
            emit(["command": .string(command), "region": .string("\(region)"), "offset": .int(Int64(offset)),
                  "hex": .string(bytes.map { hexText($0, digits: 2, prefix: false) }.joined())])
            return
        }
        for start in stride(from: 0, to: bytes.count, by: 16) {
            let line = bytes[start..<min(start + 16, bytes.count)]
            let text = line.map { (0x20..<0x7F).contains($0) ? Character(UnicodeScalar($0)) : "." }
            print(hexText(offset + UInt64(start), digits: 8, prefix: false) + ": "
                  + line.map { hexText($0, digits: 2, prefix: false) }.joined(separator: " ")
                  + String(repeating: "   ", count: 16 - line.count) + "  " + String(text))
        }
    }

    // MARK: Config space

    /// setpci's register names: offset and width.
    static let configNames: [String: (Int, Int)] = {
        var names: [String: (Int, Int)] = [
            "VENDOR_ID": (0x00, 2), "DEVICE_ID": (0x02, 2), "COMMAND": (0x04, 2), "STATUS": (0x06, 2), "REVISION": (0x08, 1),
            "CLASS_PROG": (0x09, 1), "CLASS_DEVICE": (0x0A, 2), "CACHE_LINE_SIZE": (0x0C, 1), "LATENCY_TIMER": (0x0D, 1),
            "HEADER_TYPE": (0x0E, 1), "BIST": (0x0F, 1), "CARDBUS_CIS": (0x28, 4), "SUBSYSTEM_VENDOR_ID": (0x2C, 2),
            "SUBSYSTEM_ID": (0x2E, 2), "ROM_ADDRESS": (0x30, 4), "CAPABILITIES": (0x34, 1), "INTERRUPT_LINE": (0x3C, 1),
            "INTERRUPT_PIN": (0x3D, 1), "MIN_GNT": (0x3E, 1), "MAX_LAT": (0x3F, 1),
        ]
        for bar in 0..<6 { names["BASE_ADDRESS_\(bar)"] = (0x10 + 4 * bar, 4) }
        return names
    }()

    private func config(_ arguments: [String]) throws {
        if arguments.isEmpty {
            let size = try client.regionInfo(.config).info.size
            printBytes("config", .config, offset: 0, try client.read(.config, offset: 0, count: Int(min(size, 4096))))
            return
        }
        guard arguments.count == 1 else { throw UsageError("config [REG[.W][=VALUE]]") }
        let access = try Self.access(arguments[0], names: Self.configNames)
        let name = Self.configNames.first { $0.value.0 == Int(access.offset) && $0.value.1 == access.width }?.key
        if let value = access.value {
            try write(.config, access, value: value)
            say("config", text: "\(name ?? hexText(access.offset)) := \(hexText(value, digits: access.width * 2))",
                [("offset", .int(Int64(access.offset))), ("width", .int(Int64(access.width))), ("value", .uint(value))])
        } else {
            reportRead("config", .config, access, try read(.config, access), label: name ?? hexText(access.offset))
        }
    }

    // MARK: Interrupts

    private func arm(_ arguments: [String]) throws {
        guard (1...2).contains(arguments.count), let index = IRQIndex(name: arguments[0].lowercased()) else {
            throw UsageError("irq intx|msi|msix|err|req [VECTORS|off]")
        }
        if arguments.count == 2 && arguments[1] == "off" {
            try client.setIRQs(index, [.dataNone, .actionTrigger], start: 0, count: 0)
            armed.removeAll { $0.index == index }
            say("irq", text: "\(index): disarmed", [("index", .string("\(index)")), ("armed", false)])
            return
        }
        let vectors = try arguments.count == 2 ? Self.vectors(arguments[1]) : 0..<1
        let eventfds = try vectors.map { _ in try OwnedFileDescriptor.eventfd(nonBlocking: true) }
        try client.setIRQs(index, [.dataEventfd, .actionTrigger], start: UInt32(vectors.lowerBound), count: UInt32(vectors.count),
                           fds: eventfds.map(\.descriptor))
        armed.removeAll { $0.index == index && vectors.contains($0.vector) }
        armed += zip(vectors, eventfds).map { (index, $0, $1) }
        say("irq", text: "\(index) vectors \(vectors.lowerBound)-\(vectors.upperBound - 1) armed",
            [("index", .string("\(index)")), ("start", .int(Int64(vectors.lowerBound))), ("count", .int(Int64(vectors.count)))])
    }

    static func vectors(_ text: String) throws -> Range<Int> {
        let ends = text.split(separator: "-").map { Int($0) }
        guard (1...2).contains(ends.count), let first = ends[0], let last = ends.last ?? nil, first <= last, last < 2048 else {
            throw UsageError("'\(text)' is not a vector or a range like 0-3")
        }
        return first..<(last + 1)
    }

    private func unmask(_ arguments: [String]) throws {
        guard (1...2).contains(arguments.count), let index = IRQIndex(name: arguments[0].lowercased()) else {
            throw UsageError("unmask INDEX [VECTOR]")
        }
        let vector = try arguments.count == 2 ? UInt32(Self.number(arguments[1]).unwrap("vector")) : 0
        try client.setIRQs(index, [.dataNone, .actionUnmask], start: vector, count: 1)
        say("unmask", text: "\(index) vector \(vector) unmasked", [("index", .string("\(index)")), ("vector", .int(Int64(vector)))])
    }

    private func waitForInterrupts(_ arguments: [String]) throws {
        let milliseconds = try arguments.isEmpty ? 1000 : Int(Self.number(arguments[0]).unwrap("MS"))
        guard !armed.isEmpty else { throw UsageError("no interrupt is armed (irq INDEX first)") }
        var polls = armed.map { pollfd(fd: $0.eventfd.rawValue, events: Int16(POLLIN), revents: 0) }
        _ = poll(&polls, nfds_t(polls.count), Int32(min(milliseconds, 600_000)))
        var fired: [(key: String, value: JSONValue)] = []
        for entry in armed {
            if let count = try? entry.eventfd.readEventfd() {
                fired.append(("\(entry.index)[\(entry.vector)]", .uint(count)))
            }
        }
        let text = fired.isEmpty ? "no interrupt within \(milliseconds) ms"
                                 : "fired: " + fired.map { "\($0.key) ×\($0.value.text)" }.joined(separator: ", ")
        say("wait", text: text, [("fired", .object(fired))])
    }

    // MARK: DMA and migration

    private func dmaMap(_ arguments: [String]) throws {
        var words = arguments
        let readOnly = words.last == "ro"
        if readOnly { words.removeLast() }
        guard (2...4).contains(words.count) else { throw UsageError("dma-map FILE IOVA [SIZE [OFFSET]] [ro]") }
        let fd = open(words[0], readOnly ? O_RDONLY : O_RDWR)
        guard fd >= 0 else { throw UsageError("cannot open \(words[0]): \(Errno(rawValue: errno).name)") }
        let file = OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd))
        var status = stat()
        fstat(fd, &status)
        let iova = try Self.number(words[1]).unwrap("IOVA")
        let offset = try words.count > 3 ? Self.number(words[3]).unwrap("offset") : 0
        let size = try words.count > 2 ? Self.number(words[2]).unwrap("size") : UInt64(status.st_size) &- offset
        try client.dmaMap(DMAMapRequest(flags: readOnly ? [.read] : [.read, .write], offset: offset, address: iova, size: size),
                          fd: file.descriptor)
        mappedFiles[iova] = file
        say("dma-map", text: "\(words[0]) mapped at \(hexText(iova)) (\(size) bytes)",
            [("iova", .uint(iova)), ("size", .uint(size)), ("offset", .uint(offset))])
    }

    private func dmaUnmap(_ arguments: [String]) throws {
        if arguments == ["all"] {
            _ = try client.dmaUnmap(DMAUnmapRequest(flags: .all, address: 0, size: 0))
            mappedFiles.removeAll()
            say("dma-unmap", text: "every mapping removed", [("all", true)])
            return
        }
        guard arguments.count == 2 else { throw UsageError("dma-unmap IOVA SIZE | all") }
        let iova = try Self.number(arguments[0]).unwrap("IOVA"), size = try Self.number(arguments[1]).unwrap("size")
        _ = try client.dmaUnmap(DMAUnmapRequest(address: iova, size: size))
        mappedFiles[iova] = nil
        say("dma-unmap", text: "\(hexText(iova)) unmapped", [("iova", .uint(iova)), ("size", .uint(size))])
    }

    static let stateNames: [String: MigrationState] = [
        "running": .running, "stop": .stop, "stop-copy": .stopCopy, "resuming": .resuming,
        "running-p2p": .runningP2P, "pre-copy": .preCopy, "pre-copy-p2p": .preCopyP2P,
    ]

    private func migration(_ arguments: [String]) throws {
        if let name = arguments.first {
            guard arguments.count == 1, let state = Self.stateNames[name.lowercased()] else {
                throw UsageError("migration [running|stop|stop-copy|resuming|running-p2p|pre-copy|pre-copy-p2p]")
            }
            try client.setMigrationState(state)
        }
        let state = try client.migrationState()
        let capabilities = try client.migrationCapabilities()
        var offered: [String] = ["STOP_COPY"]
        if capabilities.contains(.p2p) { offered.append("P2P") }
        if capabilities.contains(.preCopy) { offered.append("PRE_COPY") }
        say("migration", text: "migration state \(state) (the device offers \(offered.joined(separator: ", ")))",
            [("state", .string("\(state)")), ("capabilities", .uint(capabilities.rawValue))])
    }
}

extension Optional {
    /// The value, or a usage error naming what was expected.
    func unwrap(_ what: String) throws -> Wrapped {
        guard let self else { throw ClientSession.UsageError("bad \(what)") }
        return self
    }
}
