import ArgumentParser

struct VfioUserServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-user-server",
        abstract: "A vfio-user server that emulates mediated PCI devices (mtty serial cards, virtio-net NICs).",
        discussion: """
        With no subcommand it serves devices (see `serve`): run it with no arguments to get an mtty-2 \
        at a default socket path and the QEMU command line that attaches it. A running server takes \
        management requests on its control socket: `types`, `list`, `start` and `stop` send them, \
        in the manner of mdevctl.
        """,
        subcommands: [Serve.self, Types.self, List.self, Start.self, Stop.self, Restart.self, ScreenshotCommand.self, Client.self, Migrate.self, Decode.self, Proxy.self, Describe.self, Worker.self],
        defaultSubcommand: Serve.self
    )
}
