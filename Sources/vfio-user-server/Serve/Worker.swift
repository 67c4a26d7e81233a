import ArgumentParser
import CLinux
import Support
import SystemPackage
import VfioUserProto
import VfioUserServer
import WorkerSandbox
#if canImport(Glibc)
import Glibc
#endif

/// One isolated instance, started by the manager (`serve --isolate process`), never by hand: it
/// enters its sandbox, makes the device model and serves the instance's socket (fd 3) until the
/// manager closes its channel (fd 4), over which it answers the manager's requests.
struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve one isolated instance for a manager (internal).",
        shouldDisplay: false)

    @Option(name: .long, help: "The instance, as the manager describes it (JSON).")
    var spec: String

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let spec: WorkerSpec
        do throws(ManagementError) { spec = try WorkerSpec(text: self.spec) } catch {
            ServerLog.error(error.message)
            throw ExitCode(2)
        }
        // Nothing but its own fds, whatever a careless parent left open.
        clinux_close_from(WorkerSpec.firstHandedOverFD + CInt(spec.handedOver))
        do throws(Sandbox.Failure) { try Sandbox.enter(user: spec.user.map { ($0.uid, $0.gid) }) } catch {
            ServerLog.error("worker for \(spec.uuid): cannot enter the sandbox: \(error)")
            throw ExitCode(3)
        }
        let manager: InstanceManager
        do throws(ManagementError) {
            manager = try InstanceManager(types: DeviceTypes.all, socketDirectory: spec.socketDirectory, configuration: spec.configuration)
            try manager.create(type: spec.type, uuid: spec.uuid, parameters: spec.parameters,
                               placement: .listener(OwnedFileDescriptor(taking: FileDescriptor(rawValue: WorkerSpec.listenerFD))))
        } catch {
            // The manager is waiting for a first answer: this one says why, with its errno.
            _ = try? MessageSender(socket: FileDescriptor(rawValue: WorkerSpec.channelFD)).send(Array((error.json.text + "\n").utf8))
            throw ExitCode(4)
        }
        ManagementService(manager: manager).serve(OwnedFileDescriptor(taking: FileDescriptor(rawValue: WorkerSpec.channelFD)))
        manager.shutdown()
    }
}
