import Support
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Figures a benchmark run produced, merged into a JSON object file (`--results`): the chart and
/// BENCHMARKS.md are made from it, never typed by hand.
struct ResultRecorder {
    let path: String?
    private var figures: [(key: String, value: JSONValue)] = []

    init(path: String?) { self.path = path }

    mutating func record(_ key: String, _ value: Double) {
        figures.append((key, .double(value.isFinite ? value : 0)))
    }

    /// Merges the figures into the file (later values replace earlier ones with the same key).
    func save() throws {
        guard let path else { return }
        var members = Self.load(path)
        for figure in figures {
            members.removeAll { $0.key == figure.key }
            members.append(figure)
        }
        try writeText(JSONValue.object(members).text + "\n", to: path)
    }

    static func load(_ path: String) -> [(key: String, value: JSONValue)] {
        guard case let .object(members)? = try? JSONValue(parsing: readFile(path)) else { return [] }
        return members
    }
}

/// The number a results file holds under `key`, if any.
func figure(_ members: [(key: String, value: JSONValue)], _ key: String) -> Double? {
    switch members.first(where: { $0.key == key })?.value {
    case let .double(d)?: d
    case let .int(i)?: Double(i)
    case let .uint(u)?: Double(u)
    default: nil
    }
}

func writeText(_ text: String, to path: String) throws {
    guard let file = fopen(path, "w") else { throw BenchError("cannot write \(path): errno \(errno)") }
    defer { fclose(file) }
    let bytes = Array(text.utf8)
    guard fwrite(bytes, 1, bytes.count, file) == bytes.count else { throw BenchError("cannot write \(path)") }
}
