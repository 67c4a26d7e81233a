import TestSupport
import Testing

/// Every subcommand documents itself like a man page: an overview, a discussion, the options,
/// laid out to read in an 80-column terminal (where ArgumentParser wraps longer lines blindly).
@Suite("--help")
struct HelpTests {
    static let subcommands = ["", "serve", "types", "list", "start", "stop", "client", "migrate", "decode", "proxy", "describe"]

    @Test(arguments: subcommands)
    func helpReadsLikeAManPage(subcommand: String) throws {
        let result = try ServerProcess.run((subcommand.isEmpty ? [] : [subcommand]) + ["--help"],
                                           environment: ["COLUMNS=80"])
        #expect(result.status == 0)
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.first?.hasPrefix("OVERVIEW: ") == true)
        let usage = try #require(lines.firstIndex { $0.hasPrefix("USAGE: ") })
        let paragraphs = lines[..<usage].split(whereSeparator: \.isEmpty)
        #expect(paragraphs.count >= 2, "an overview and a discussion")
        for line in lines where !line.hasPrefix("USAGE: ") {
            #expect(line.count <= 80, "too wide: \(line)")
        }
    }
}
