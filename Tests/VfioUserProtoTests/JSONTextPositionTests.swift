import Testing
import VfioUserProto

@Suite("Positions in JSON text")
struct JSONTextPositionTests {
    static let text = """
    {
      "name": "a \\" quoted } brace",
      "list": [
        1,
        {"x": [2, 3]},
        "third"
      ],
      "name": "again"
    }
    """

    @Test func membersAndElementsResolveToTheLineTheirValueStartsOn() {
        #expect(JSONTextPosition.line(of: [], in: Self.text) == 1)
        #expect(JSONTextPosition.line(of: [.member("list")], in: Self.text) == 3)
        #expect(JSONTextPosition.line(of: [.member("list"), .element(0)], in: Self.text) == 4)
        #expect(JSONTextPosition.line(of: [.member("list"), .element(1), .member("x"), .element(1)], in: Self.text) == 5)
        #expect(JSONTextPosition.line(of: [.member("list"), .element(2)], in: Self.text) == 6)
    }

    @Test func aRepeatedMemberResolvesToItsLastOccurrenceAsJSONCKeepsIt() throws {
        #expect(JSONTextPosition.line(of: [.member("name")], in: Self.text) == 8)
        #expect(try JSONValue(parsing: Self.text)["name"] == "again")
    }

    @Test func aMissingPathIsNil() {
        #expect(JSONTextPosition.line(of: [.member("nope")], in: Self.text) == nil)
        #expect(JSONTextPosition.line(of: [.member("list"), .element(3)], in: Self.text) == nil)
        #expect(JSONTextPosition.line(of: [.element(0)], in: Self.text) == nil)
    }

    @Test func aSyntaxErrorOffsetBecomesALine() {
        let broken = "{\n  \"a\": 1,\n  \"b\" 2\n}"
        do {
            _ = try JSONValue(parsing: broken)
            Issue.record("parsed")
        } catch {
            #expect(error.offset.map { JSONTextPosition.line(atOffset: $0, in: broken) } == 3)
        }
    }
}
