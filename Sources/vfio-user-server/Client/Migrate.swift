import ArgumentParser
import VfioUserProto
import VfioUserServer

/// The migration driver of the client API as a command: attaches to two devices as their client
/// and moves the first one's state into the second, the way a VMM does during live migration.
struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move a device's state from one vfio-user socket to another (migration v2).",
        discussion: """
        Attaches to both devices, then: the source goes to PRE_COPY (if it offers it) and STOP_COPY, \
        its stream goes to the destination in RESUMING, and the destination goes to RUNNING. The \
        source is left in STOP. Works with any vfio-user server that implements migration v2. The \
        devices' clients are this command: run it on instances no VMM is attached to.
        """)

    @Option(name: .long, help: ArgumentHelp("The source device's socket.", valueName: "path"))
    var from: String

    @Option(name: .long, help: ArgumentHelp("The destination device's socket.", valueName: "path"))
    var to: String

    @Option(name: .long, help: ArgumentHelp("Bytes per MIG_DATA_READ.", valueName: "bytes"))
    var chunk: Int = 64 * 1024

    @Flag(name: .customLong("no-precopy"), help: "Go straight to STOP_COPY.")
    var noPreCopy = false

    @Flag(name: .long, help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        guard (1...(1 << 20)).contains(chunk) else { throw ValidationError("--chunk must be 1 to 1048576") }
    }

    func run() throws {
        let report: MigrationDriver.Report
        do throws(ClientError) {
            let source = try VfioUserClient(path: from)
            try source.negotiate()
            let destination = try VfioUserClient(path: to)
            try destination.negotiate()
            report = try MigrationDriver(chunkSize: chunk, usePreCopy: !noPreCopy).migrate(from: source, to: destination)
        } catch {
            ServerLog.error("migration failed: \(error)")
            throw ExitCode(1)
        }
        if json {
            let value: JSONValue = ["pre_copy_bytes": .int(Int64(report.preCopyBytes)), "stop_copy_bytes": .int(Int64(report.stopCopyBytes)),
                                    "downtime_us": .int(Int64(report.downtimeNanoseconds / 1000))]
            print(value.text)
        } else {
            print("migrated \(report.totalBytes) bytes (\(report.preCopyBytes) before the source stopped, \(report.stopCopyBytes) after); "
                  + "downtime \(report.downtimeNanoseconds / 1000) µs")
        }
    }
}
