import ArgumentParser

// Signals keep their default actions here: Ctrl-C ends a tool (client, decode, migrate) at once.
// Only the long-running commands (serve, proxy) block them, in `ProcessSignals.blockTermination`
// before their first thread, and collect them with sigwait to shut down cleanly.
VfioUserServerCommand.main()
