import HearthCore

extension JSONValue {
    /// A member of an object (nil for anything else), for checks on what an API or a command
    /// printed.
    public subscript(key: String) -> JSONValue? { if case .object(let o) = self { o[key] } else { nil } }
}
