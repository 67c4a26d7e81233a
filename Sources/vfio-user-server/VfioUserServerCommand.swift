import ArgumentParser

struct VfioUserServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-user-server",
        abstract: "A vfio-user server that emulates mediated PCI devices (mtty serial cards, virtio-net NICs).",
        discussion: """
        With no subcommand it serves a device (see `serve`): run it with no arguments to get an mtty-2 \
        at a default socket path and the QEMU command line that attaches it.
        """,
        subcommands: [Serve.self],
        defaultSubcommand: Serve.self
    )
}
