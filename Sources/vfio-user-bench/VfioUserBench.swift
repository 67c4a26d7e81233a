import ArgumentParser

struct VfioUserBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-user-bench",
        abstract: "Benchmarks of the vfio-user server, each figure beside a reference measured in the same run.",
        discussion: """
        Round trips are measured with both ends pinned to one CPU (--cpu, default 1): a cross-CPU \
        wake-up costs tens of microseconds on small machines and would hide the server's own cost. \
        The reference is vfio-user-echo (Sources/vfio-user-echo, built with the package): a peer that \
        answers every message without doing any work, batching reads and writes as the server does, \
        and so marks the socket's own limit.
        """,
        subcommands: [MessagesBenchmark.self, InterruptBenchmark.self, StartupBenchmark.self, DMABenchmark.self, VirtioBenchmark.self, ChartCommand.self]
    )
}

struct CommonOptions: ParsableArguments {
    @Option(help: "CPU both ends are pinned to.")
    var cpu: Int = 1

    @Option(help: "The reference peer (default: vfio-user-echo beside this program).")
    var echo: String = siblingExecutable("vfio-user-echo")

    @Option(help: "The server executable to measure (default: vfio-user-server beside this program).")
    var server: String = siblingExecutable("vfio-user-server")

    @Option(help: "Append the figures to this results file (for the chart and BENCHMARKS.md).")
    var results: String?
}
