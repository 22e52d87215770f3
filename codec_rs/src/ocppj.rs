//! OCPP-J envelope peek: one pass over a text message that validates it as strict RFC 8259
//! JSON and, when it is an OCPP-J frame, reports its type, ids and the payload's byte span.
//!
//! Any failure means "not OCPP-J" and stops the scan at once; it is never an error.

pub const NOT_OCPP: u8 = 0;
pub const CALL: u8 = 2;
pub const CALLRESULT: u8 = 3;
pub const CALLERROR: u8 = 4;
/// OCPP 2.1: an error about a CALLRESULT (shaped like CALLERROR; answers nothing).
pub const CALLRESULTERROR: u8 = 5;
/// OCPP 2.1: a message that expects no answer (shaped like CALL).
pub const SEND: u8 = 6;

/// Deepest allowed nesting of arrays and objects (the envelope array counts as level 1).
pub const MAX_DEPTH: usize = 64;

/// A decoded JSON string: a span of the text when it has no escapes, else the decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonStr {
    Span(usize, usize),
    Decoded(String),
}

impl JsonStr {
    /// The string's value; `text` must be the text it was read from.
    pub fn as_str<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            JsonStr::Span(start, end) => &text[*start..*end],
            JsonStr::Decoded(s) => s,
        }
    }
}

/// The envelope of an OCPP-J frame; `Default` is the NOT_OCPP value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub message_type: u8,
    pub unique_id: Option<JsonStr>,
    pub action: Option<JsonStr>,
    pub error_code: Option<JsonStr>,
    pub payload_start: usize,
    pub payload_end: usize,
}

/// Peeks the envelope of a complete text message.
pub fn peek(text: &str) -> Envelope {
    envelope(text.as_bytes()).unwrap_or_default()
}

fn envelope(s: &[u8]) -> Option<Envelope> {
    let mut p = Scanner { s, i: 0 };
    p.ws();
    p.expect(b'[')?;
    p.ws();
    let start = p.i;
    p.number()?;
    let message_type = match &s[start..p.i] {
        b"2" => CALL,
        b"3" => CALLRESULT,
        b"4" => CALLERROR,
        b"5" => CALLRESULTERROR,
        b"6" => SEND,
        _ => return None,
    };
    p.comma()?;
    let unique_id = Some(p.string_value()?);
    let mut action = None;
    let mut error_code = None;
    match message_type {
        CALL | SEND => {
            p.comma()?;
            action = Some(p.string_value()?);
        }
        CALLERROR | CALLRESULTERROR => {
            p.comma()?;
            error_code = Some(p.string_value()?);
            p.comma()?;
            if p.peek() != Some(b'"') {
                return None;
            }
            p.skip_string()?;
        }
        _ => {}
    }
    p.comma()?;
    let payload_start = p.i;
    p.value(1)?;
    let payload_end = p.i;
    p.ws();
    p.expect(b']')?;
    p.ws();
    if p.i != s.len() {
        return None;
    }
    Some(Envelope {
        message_type,
        unique_id,
        action,
        error_code,
        payload_start,
        payload_end,
    })
}

/// Bytes that end a plain run inside a JSON string: `"`, `\` and raw control characters.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The index of the first byte at or after `i` that ends a plain run in a string (or
/// `s.len()`). Checks eight bytes per step: strings are most of an OCPP-J message.
fn plain_run_end(s: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (resp. below 0x20); spurious bits can only
        // appear above a real match, so the lowest set bit is exact.
        let hits = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let hits = hits & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() && !STRING_STOP[s[i] as usize] {
        i += 1;
    }
    i
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// `ws , ws` between two envelope elements.
    fn comma(&mut self) -> Option<()> {
        self.ws();
        self.expect(b',')?;
        self.ws();
        Some(())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// One value starting at the current byte; `depth` is the nesting level it sits in.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'[' => self.array(depth + 1),
            b'{' => self.object(depth + 1),
            b'"' => self.skip_string(),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return None;
            }
            self.skip_string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string that must start at the current byte.
    fn string_value(&mut self) -> Option<JsonStr> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.i..self.i + 4)?;
        let mut v = 0u32;
        for &d in digits {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return None,
            };
            v = v << 4 | u32::from(n);
        }
        self.i += 4;
        Some(v)
    }

    /// The escape sequence at the current backslash, resolved to its character.
    fn escape(&mut self) -> Option<char> {
        let c = match *self.s.get(self.i + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{08}',
            b'f' => '\u{0C}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                self.i += 2;
                return self.unicode_escape();
            }
            _ => return None,
        };
        self.i += 2;
        Some(c)
    }

    /// The code point of `XXXX` (just after `\u`), joined with a following low-surrogate
    /// escape when it is a high surrogate. A lone surrogate gives `None`.
    fn unicode_escape(&mut self) -> Option<char> {
        let unit = self.hex4()?;
        let code = match unit {
            0xD800..=0xDBFF => {
                if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                    return None;
                }
                self.i += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return None;
                }
                0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => return None,
            _ => unit,
        };
        char::from_u32(code)
    }

    /// Validates the string at the current `"` without decoding it.
    fn skip_string(&mut self) -> Option<()> {
        self.i += 1;
        loop {
            self.i = plain_run_end(self.s, self.i);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// The string at the current `"`, validated (no raw controls, known escapes, no lone
    /// surrogates) and decoded when it has escapes.
    fn string(&mut self) -> Option<JsonStr> {
        self.i += 1;
        let start = self.i;
        // Decoded bytes so far; used only once an escape appears.
        let mut out: Option<Vec<u8>> = None;
        let mut run = start;
        loop {
            self.i = plain_run_end(self.s, self.i);
            match self.peek()? {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Some(match out {
                        None => JsonStr::Span(start, end),
                        Some(mut bytes) => {
                            bytes.extend_from_slice(&self.s[run..end]);
                            // Runs are whole UTF-8 sequences of valid text; escapes add chars.
                            JsonStr::Decoded(String::from_utf8(bytes).ok()?)
                        }
                    });
                }
                b'\\' => {
                    let esc_start = self.i;
                    let c = self.escape()?;
                    let bytes = out.get_or_insert_with(Vec::new);
                    bytes.extend_from_slice(&self.s[run..esc_start]);
                    let mut utf8 = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                    run = self.i;
                }
                _ => return None, // raw control character
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
