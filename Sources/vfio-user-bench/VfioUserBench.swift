import ArgumentParser

struct VfioUserBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-user-bench",
        abstract: "Benchmarks of the vfio-user server, each figure beside a reference measured in the same run.",
        discussion: """
        Round trips are measured with both ends pinned to one CPU (--cpu, default 1): a cross-CPU \
        wake-up costs tens of microseconds on small machines and would hide the server's own cost. \
        The reference is ../shared/tools/vfu-bench.c (an independent C client, compiled on the fly \
        with gcc): its `echo` peer answers without doing any work and marks the socket's own limit.
        """,
        subcommands: [MessagesBenchmark.self, InterruptBenchmark.self, StartupBenchmark.self, DMABenchmark.self, VirtioBenchmark.self, ChartCommand.self]
    )
}

struct CommonOptions: ParsableArguments {
    @Option(help: "CPU both ends are pinned to.")
    var cpu: Int = 1

    @Option(name: .customLong("vfu-bench"), help: "vfu-bench.c (compiled with gcc -O2) or an already built binary.")
    var vfuBench: String = "../shared/tools/vfu-bench.c"

    @Option(help: "The server executable to measure.")
    var server: String = ".build/release/vfio-user-server"

    @Option(help: "Append the figures to this results file (for the chart and BENCHMARKS.md).")
    var results: String?
}
