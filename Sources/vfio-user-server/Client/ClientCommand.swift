import ArgumentParser
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// `vfio-user-server client SOCKET [COMMAND [; COMMAND ...]]`: a vfio-user client for people.
struct Client: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Poke a device by hand over its socket: info, read, write, config, irq, reset, dma-map.",
        discussion: """
        Attaches to the device on SOCKET as its client and runs the commands given, separated by \
        ';', or, with none, the commands read from standard input, one per line. Everything runs on \
        one connection: the device resets when the client leaves, so a write and the read that \
        checks it belong in the same invocation.

        COMMANDS
          info             the device, its regions and IRQs, and its config space
                           decoded like lspci -vvv
          read REGION OFFSET[.W]
                           a register; W is b, w, l or q (1, 2, 4, 8 bytes; l if
                           omitted)
          write REGION OFFSET[.W]=VALUE [posted]
                           write one (posted: no reply awaited)
          dump REGION [OFFSET [LENGTH]]
                           bytes of a region in hex
          config           config space in hex (lspci -xxx)
          config REG[.W]   read a config register: an offset or a setpci name
                           (VENDOR_ID, DEVICE_ID, COMMAND, STATUS, REVISION,
                           CLASS_PROG, CLASS_DEVICE, HEADER_TYPE,
                           BASE_ADDRESS_0..5, SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID,
                           ROM_ADDRESS, CAPABILITIES, INTERRUPT_LINE,
                           INTERRUPT_PIN)
          config REG[.W]=VALUE
                           write one
          irq INDEX [VECTORS]
                           arm eventfds on intx, msi, msix, err or req
                           (VECTORS: 0, 2-5; 0 if omitted); 'irq INDEX off'
                           disarms
          unmask INDEX [VECTOR]
                           unmask a vector (INTx is automasked when it fires)
          wait [MS]        wait up to MS (1000) for armed interrupts; prints
                           which fired
          reset            DEVICE_RESET
          dma-map FILE IOVA [SIZE [OFFSET]] [ro]
                           map a file (a memfd, /dev/shm, hugetlbfs) for the
                           device's DMA
          dma-unmap IOVA SIZE | all
                           unmap
          migration [STATE]
                           the migration state, or move to STATE (running, stop,
                           stop-copy, resuming, running-p2p, pre-copy,
                           pre-copy-p2p)
          sleep MS         pause

        REGION is config, bar0..bar5, rom, vga or a number. Numbers are decimal \
        or 0x-hex.

        EXAMPLES
          vfio-user-server client /tmp/vfio-user-mtty-2.sock info
          vfio-user-server client /tmp/m.sock 'write bar0 7.b=0x5a ; read bar0 7.b'
          vfio-user-server client /tmp/m.sock \\
              'irq intx ; write bar0 1.b=1 ; write bar0 0.b=0x41 ; wait'
          printf 'config COMMAND.w\\nconfig 0x3c.b=9\\nconfig 0x3c.b\\n' |
              vfio-user-server client /tmp/m.sock

        With --json each command prints one JSON object on a line of its own.
        """)

    @Argument(help: ArgumentHelp("The device's socket.", valueName: "socket"))
    var socket: String

    @Flag(name: .long, help: "Print one JSON object per command.")
    var json = false

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Commands, separated by ';'.", valueName: "command"))
    var words: [String] = []

    func run() throws {
        // Options after the socket are swallowed with the commands: take --json from there too.
        let json = json || words.contains("--json")
        let words = words.filter { $0 != "--json" }
        let session: ClientSession
        do throws(ClientError) {
            let client = try VfioUserClient(path: socket)
            try client.negotiate()
            session = ClientSession(client: client, socket: socket, json: json)
        } catch {
            ServerLog.error("cannot attach to \(socket): \(error)")
            throw ExitCode(1)
        }
        if !words.isEmpty {
            for command in Self.split(words) where !command.isEmpty {
                guard session.execute(command) else { throw ExitCode(1) }
            }
            return
        }
        var failed = false
        while let line = readLine() {
            let words = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            for command in Self.split(words.split(whereSeparator: \.isWhitespace).map(String.init)) where !command.isEmpty {
                if !session.execute(command) { failed = true }
            }
        }
        if failed { throw ExitCode(1) }
    }

    /// Words into commands at ';' (standing alone or ending a word).
    static func split(_ words: [String]) -> [[String]] {
        var commands: [[String]] = [[]]
        for word in words.flatMap({ $0.split(separator: " ").map(String.init) }) {
            if word == ";" {
                commands.append([])
            } else if word.hasSuffix(";") {
                commands[commands.count - 1].append(String(word.dropLast()))
                commands.append([])
            } else {
                commands[commands.count - 1].append(word)
            }
        }
        return commands
    }
}
