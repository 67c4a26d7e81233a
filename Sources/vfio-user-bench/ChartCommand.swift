import ArgumentParser
import VfioUserProto

/// Draws the results file as an SVG: round-trip latency percentiles, and virtio-net packet rates.
struct ChartCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chart",
        abstract: "Draw a results file as an SVG chart (round-trip percentiles, virtio-net packets per second).")

    @Argument(help: "The results file the benchmarks wrote (--results).")
    var results: String

    @Option(help: "The SVG to write.")
    var output: String = "benchmarks.svg"

    func run() throws {
        let figures = ResultRecorder.load(results)
        guard !figures.isEmpty else { throw BenchError("no figures in \(results)") }
        var svg = SVG(width: 900, height: 360)
        svg.text(450, 22, "vfio-user-swift, measured on this machine (both ends of each round trip on one CPU)", size: 14, anchor: "middle")

        // Left: round-trip latency percentiles, echo peer beside the server.
        let points = ["p50", "p90", "p99", "p99.9"]
        var groups: [(label: String, bars: [(String, Double, String)])] = []
        for kind in [("read", "REGION_READ"), ("write", "REGION_WRITE")] {
            for point in points {
                let echo = figure(figures, "rtt_\(kind.0)_echo_\(point)") ?? 0
                let server = figure(figures, "rtt_\(kind.0)_server_\(point)") ?? 0
                groups.append(("\(kind.1 == "REGION_READ" ? "read" : "write") \(point)", [("echo", echo, "#9e9e9e"), ("server", server, "#1f77b4")]))
            }
        }
        svg.barChart(x: 50, y: 50, width: 400, height: 250, title: "Round-trip latency (µs)", groups: groups)

        // Right: virtio-net packets per second, with the 3 M/s bar.
        var rates: [(label: String, bars: [(String, Double, String)])] = []
        for size in [64, 1500] {
            rates.append(("\(size) B", [("TX", (figure(figures, "virtio_tx_\(size)_pps") ?? 0) / 1e6, "#2ca02c"),
                                        ("RX", (figure(figures, "virtio_rx_\(size)_pps") ?? 0) / 1e6, "#ff7f0e")]))
        }
        svg.barChart(x: 520, y: 50, width: 340, height: 250, title: "virtio-net packets per second (M)", groups: rates,
                     line: (3, "3 M/s"))
        try writeText(svg.document, to: output)
        print("wrote \(output)")
    }
}

/// Just enough SVG for grouped bar charts.
struct SVG {
    let width: Int
    let height: Int
    private var body: [String] = []

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }

    var document: String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" font-family=\"sans-serif\">\n"
            + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n" + body.joined(separator: "\n") + "\n</svg>\n"
    }

    mutating func text(_ x: Double, _ y: Double, _ text: String, size: Int = 11, anchor: String = "start", rotate: Bool = false) {
        let transform = rotate ? " transform=\"rotate(-40 \(x) \(y))\"" : ""
        let escaped = text.replacing("&", with: "&amp;").replacing("<", with: "&lt;")
        body.append("<text x=\"\(x)\" y=\"\(y)\" font-size=\"\(size)\" text-anchor=\"\(anchor)\"\(transform)>\(escaped)</text>")
    }

    mutating func rect(_ x: Double, _ y: Double, _ w: Double, _ h: Double, fill: String) {
        body.append("<rect x=\"\(x)\" y=\"\(y)\" width=\"\(w)\" height=\"\(max(h, 0))\" fill=\"\(fill)\"/>")
    }

    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, dashed: Bool = false) {
        body.append("<line x1=\"\(x1)\" y1=\"\(y1)\" x2=\"\(x2)\" y2=\"\(y2)\" stroke=\"\(stroke)\"\(dashed ? " stroke-dasharray=\"5,4\"" : "")/>")
    }

    mutating func barChart(x: Double, y: Double, width: Double, height: Double, title: String,
                           groups: [(label: String, bars: [(String, Double, String)])],
                           line marker: (Double, String)? = nil) {
        let largest = max(groups.flatMap { $0.bars.map(\.1) }.max() ?? 1, marker?.0 ?? 0) * 1.1
        text(x + width / 2, y - 8, title, size: 12, anchor: "middle")
        line(x, y + height, x + width, y + height, stroke: "black")
        line(x, y, x, y + height, stroke: "black")
        for tick in 0...4 {
            let value = largest * Double(tick) / 4
            let ty = y + height - height * Double(tick) / 4
            text(x - 4, ty + 4, String(format1: value), size: 9, anchor: "end")
        }
        let groupWidth = width / Double(max(groups.count, 1))
        for (g, group) in groups.enumerated() {
            let barWidth = groupWidth * 0.8 / Double(max(group.bars.count, 1))
            for (b, bar) in group.bars.enumerated() {
                let h = height * bar.1 / largest
                let bx = x + Double(g) * groupWidth + groupWidth * 0.1 + Double(b) * barWidth
                rect(bx, y + height - h, barWidth - 1, h, fill: bar.2)
                text(bx + barWidth / 2, y + height - h - 3, String(format1: bar.1), size: 8, anchor: "middle")
            }
            text(x + (Double(g) + 0.5) * groupWidth, y + height + 14, group.label, size: 9, anchor: "end", rotate: groups.count > 4)
        }
        // The legend: each bar's name and colour, from the first group.
        for (b, bar) in (groups.first?.bars ?? []).enumerated() {
            rect(x + width - 80, y + 4 + Double(b) * 14, 10, 10, fill: bar.2)
            text(x + width - 66, y + 13 + Double(b) * 14, bar.0, size: 10)
        }
        if let (value, label) = marker {
            let my = y + height - height * value / largest
            line(x, my, x + width, my, stroke: "#d62728", dashed: true)
            text(x + 4, my - 4, label, size: 10)
        }
    }
}
