import ArgumentParser

// Signals are blocked before any thread starts, so that every thread inherits the mask and the
// main thread alone receives SIGTERM/SIGINT (with sigwait) and shuts down cleanly.
ProcessSignals.blockTermination()
VfioUserServerCommand.main()
