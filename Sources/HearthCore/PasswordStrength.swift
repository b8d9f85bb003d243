/// Words with their frequency rank (1 = most common), searched in a sorted array: compact
/// (one string and one 32-bit rank per word) and fast enough for every substring of a password.
public struct RankedWords: Sendable {
    private let words: [String]
    private let ranks: [Int32]
    /// The longest word, which bounds the substrings worth looking up.
    public let longest: Int

    /// `lines` in rank order, most common first; blank lines and `#` comments are skipped.
    public init(rankedLines: some Sequence<Substring>) {
        var pairs: [(String, Int32)] = []
        var rank: Int32 = 0
        for line in rankedLines where !line.isEmpty && !line.hasPrefix("#") {
            rank += 1
            pairs.append((line.lowercased(), rank))
        }
        pairs.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        var words: [String] = []
        var ranks: [Int32] = []
        for (word, rank) in pairs where words.last != word {
            words.append(word)
            ranks.append(rank)
        }
        self.words = words
        self.ranks = ranks
        longest = words.map(\.count).max() ?? 0
    }

    public var count: Int { words.count }

    /// The rank of `word` (lower-case), or nil.
    public func rank(_ word: String) -> Int? {
        var low = 0
        var high = words.count
        while low < high {
            let mid = (low + high) / 2
            if words[mid] < word { low = mid + 1 } else { high = mid }
        }
        return low < words.count && words[low] == word ? Int(ranks[low]) : nil
    }
}

/// Estimates how many guesses an attacker who knows the usual tricks needs for a password, after
/// zxcvbn (Wheeler, USENIX Security 2016) in a smaller form: the password is split, at least cost,
/// into dictionary words (guesses = the word's rank), runs such as `abcdef` or `98765`, keyboard
/// walks such as `qwertyuiop` or `asdfgh`, repeats of the part just before, and single characters
/// guessed by brute force; the estimate is the product of the parts' guesses times the number of
/// orders the parts could come in. NIST SP 800-63B asks for refusing dictionary words,
/// repetitive and sequential values: they all come out as few guesses here.
public enum PasswordStrength {
    /// Rows of a US keyboard, unshifted and shifted: a walk is a run along one of them.
    static let keyboardRows = [
        "1234567890-=", "qwertyuiop[]\\", "asdfghjkl;'", "zxcvbnm,./", "!@#$%^&*()_+", "qwertyuiop{}|", "asdfghjkl:\"",
        "zxcvbnm<>?",
    ]
    static let keyboardColumns: [String] = {
        // Columns slanting down-right (q-a-z, w-s-x…), for walks such as `1qaz2wsx`.
        let rows = ["1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm"]
        return (0..<10).map { c in
            String(rows.enumerated().compactMap { r, row in c < row.count ? Array(row)[c] : nil })
        }
    }()

    /// Estimated guesses, capped at 10^30 (enough for any policy).
    public static func guesses(_ password: String, dictionary: RankedWords?) -> Double {
        let chars = Array(password.lowercased())
        let n = chars.count
        guard n > 0 else { return 1 }
        let cap = 1e30
        // best[i]: least guesses for chars[0..<i], with the number of parts it took.
        var best = [(guesses: Double, parts: Int)](repeating: (cap, 0), count: n + 1)
        best[0] = (1, 0)
        for end in 1...n {
            for start in stride(from: end - 1, through: max(0, end - 64), by: -1) where best[start].guesses < cap {
                guard let part = partGuesses(chars, start, end, dictionary: dictionary) else { continue }
                let parts = best[start].parts + 1
                let total = min(cap, best[start].guesses * part * Double(parts))
                if total < best[end].guesses { best[end] = (total, parts) }
            }
        }
        return best[n].guesses
    }

    /// Guesses for chars[start..<end] as one part, or nil if it is no single pattern.
    static func partGuesses(_ chars: [Character], _ start: Int, _ end: Int, dictionary: RankedWords?) -> Double? {
        let length = end - start
        if length == 1 { return bruteForce(chars[start]) }
        let token = String(chars[start..<end])
        var options: [Double] = []
        if length >= 3, let dictionary, length <= dictionary.longest, let rank = dictionary.rank(token) {
            options.append(Double(max(rank, 2)))
        }
        if length >= 3, isSequence(chars[start..<end]) {
            options.append(
                Double(length) * (chars[start] == "a" || chars[start] == "1" || chars[start] == "0" ? 4 : 26))
        }
        if length >= 4, isKeyboardWalk(token) { options.append(Double(length) * 20) }
        // The same as the part just before it (`iloveyouiloveyou`, `abcabc`): nearly free.
        if start >= length, Array(chars[(start - length)..<start]) == Array(chars[start..<end]) {
            options.append(Double(length))
        }
        if length >= 3, Set(chars[start..<end]).count == 1 { options.append(Double(length) * 10) }
        return options.min()
    }

    static func bruteForce(_ c: Character) -> Double {
        if c.isASCII, c.isNumber { return 10 }
        if c.isASCII, c.isLetter { return 26 }
        if c == " " { return 5 }
        return 33
    }

    /// A run of code points with a constant step of ±1 (or ±2), digits wrapping 9→0.
    static func isSequence(_ chars: ArraySlice<Character>) -> Bool {
        let values = chars.map { $0.unicodeScalars.first.map { Int($0.value) } ?? 0 }
        let digits = chars.allSatisfy { $0.isASCII && $0.isNumber }
        for step in [1, -1, 2, -2] {
            var ok = true
            for i in 1..<values.count {
                var d = values[i] - values[i - 1]
                if digits {
                    d = ((d % 10) + 10) % 10
                    if d > 5 { d -= 10 }
                }
                if d != step {
                    ok = false
                    break
                }
            }
            if ok { return true }
        }
        return false
    }

    /// Every row and column, forwards and backwards, made once.
    static let walks: [String] = (keyboardRows + keyboardColumns).flatMap { [$0, String($0.reversed())] }

    /// Along a keyboard row or column, forwards or backwards.
    static func isKeyboardWalk(_ token: String) -> Bool {
        walks.contains { $0.contains(token) }
    }
}
