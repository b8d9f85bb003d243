import HearthMQTT
import Testing

/// A PUBLISH may carry a topic of 65,535 bytes of `/`: walking the broker's topic trees that deep
/// overflowed the stack (the whole process died; this test crashed before the limit). Names and
/// filters past ``Topic/maximumLevels`` levels are now malformed at the codec.
@Test func topicsDeeperThanTheLimitAreRefusedAtTheCodec() {
    let limit = Topic.maximumLevels
    let deepest = (0..<limit).map { _ in "a" }.joined(separator: "/")
    let deeper = deepest + "/a"
    #expect(Topic.isValidName(deepest) && Topic.isValidFilter(deepest))
    #expect(!Topic.isValidName(deeper) && !Topic.isValidFilter(deeper))
    #expect(!Topic.isValidName(String(repeating: "/", count: 65_535)))
    #expect(!Topic.isValidFilter("$share/g/" + String(repeating: "+/", count: 200) + "#"))
    #expect(Topic.isValidFilter("devices/+/commands/#"))
}
