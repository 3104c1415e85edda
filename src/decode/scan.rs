//! A single-pass JSON scanner for rockfeed's known payload shapes.
//!
//! Generic JSON parsers either build a DOM or, lazily, skip each nested value
//! once to find the next key and parse it again when asked; a wide sample's
//! 1,000-metric object is then read three times. This scanner walks the
//! payload once, calling back for each member, and parses numbers in place
//! (sonic-number's SWAR parser). It accepts exactly RFC 8259 JSON: the input
//! is validated as UTF-8 once, strings may carry every escape (surrogate
//! pairs included), nesting is bounded (`MAX_DEPTH`), and anything after the
//! top-level value other than whitespace is an error. Differential tests
//! against serde_json keep it honest.

use std::borrow::Cow;

/// Deepest nesting accepted (hostile payloads cannot blow the stack).
pub const MAX_DEPTH: u32 = 64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid JSON at byte {at}: {what}")]
pub struct ScanError {
    pub at: usize,
    pub what: &'static str,
}

/// A JSON number as written: integer when it has no fraction or exponent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

/// The kind of the next value, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

pub struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    /// A scanner over `input`, which must be UTF-8.
    pub fn new(input: &'a [u8]) -> Result<Self, ScanError> {
        let s = std::str::from_utf8(input).map_err(|e| ScanError { at: e.valid_up_to(), what: "invalid UTF-8" })?;
        Ok(Scanner { s, b: input, i: 0, depth: 0 })
    }

    pub fn pos(&self) -> usize {
        self.i
    }

    fn err<T>(&self, what: &'static str) -> Result<T, ScanError> {
        Err(ScanError { at: self.i, what })
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    /// The kind of the next value (skipping whitespace).
    pub fn kind(&mut self) -> Result<Kind, ScanError> {
        self.ws();
        Ok(match self.b.get(self.i) {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b'-' | b'0'..=b'9') => Kind::Number,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            Some(_) => return self.err("expected a value"),
            None => return self.err("unexpected end of input"),
        })
    }

    /// Requires that only whitespace is left.
    pub fn end(&mut self) -> Result<(), ScanError> {
        self.ws();
        if self.i == self.b.len() { Ok(()) } else { self.err("trailing characters after the JSON value") }
    }

    fn literal(&mut self, word: &'static str) -> Result<(), ScanError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("bad literal")
        }
    }

    pub fn bool(&mut self) -> Result<bool, ScanError> {
        self.ws();
        if self.b.get(self.i) == Some(&b't') {
            self.literal("true").map(|_| true)
        } else {
            self.literal("false").map(|_| false)
        }
    }

    pub fn null(&mut self) -> Result<(), ScanError> {
        self.ws();
        self.literal("null")
    }

    pub fn number(&mut self) -> Result<Num, ScanError> {
        self.ws();
        let neg = self.b.get(self.i) == Some(&b'-');
        if neg {
            self.i += 1;
        }
        // JSON forbids leading '+', '.', and leading zeros before digits.
        match self.b.get(self.i) {
            Some(b'0'..=b'9') => {}
            _ => return self.err("bad number"),
        }
        if self.b[self.i] == b'0' && self.b.get(self.i + 1).is_some_and(u8::is_ascii_digit) {
            return self.err("leading zero in number");
        }
        let mut idx = self.i;
        let n = match sonic_number::parse_number(self.b, &mut idx, neg) {
            Ok(n) => n,
            // Valid JSON numbers beyond f64's range (1e999) parse to ±inf
            // here, so the caller can reject the value rather than the payload.
            Err(_) => return self.number_slow(neg),
        };
        self.i = idx;
        Ok(match n {
            sonic_number::ParserNumber::Unsigned(u) => Num::U(u),
            sonic_number::ParserNumber::Signed(i) => Num::I(i),
            sonic_number::ParserNumber::Float(f) => Num::F(f),
        })
    }

    /// The JSON number grammar by hand, parsed with `f64::from_str`.
    fn number_slow(&mut self, neg: bool) -> Result<Num, ScanError> {
        let start = if neg { self.i - 1 } else { self.i };
        let digits = |s: &mut Self| {
            let from = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            s.i > from
        };
        digits(self);
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return self.err("bad number");
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return self.err("bad number");
            }
        }
        match self.s[start..self.i].parse::<f64>() {
            Ok(f) => Ok(Num::F(f)),
            Err(_) => self.err("bad number"),
        }
    }

    /// A string, borrowed when it has no escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        self.ws();
        if self.b.get(self.i) != Some(&b'"') {
            return self.err("expected a string");
        }
        self.i += 1;
        let start = self.i;
        loop {
            match self.b.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    let s = &self.s[start..self.i];
                    self.i += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(c) if *c < 0x20 => return self.err("control character in string"),
                Some(_) => self.i += 1,
            }
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let e = *self.b.get(self.i + 1).ok_or(ScanError { at: self.i, what: "unterminated escape" })?;
                    self.i += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.i) != Some(&b'\\') || self.b.get(self.i + 1) != Some(&b'u') {
                                    return self.err("lone high surrogate");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("bad low surrogate");
                                }
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(c.ok_or(ScanError { at: self.i, what: "bad \\u escape" })?);
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                Some(c) if *c < 0x20 => return self.err("control character in string"),
                Some(_) => {
                    // Copy one UTF-8 scalar (the input is valid UTF-8).
                    let start = self.i;
                    self.i += 1;
                    while self.i < self.b.len() && (self.b[self.i] & 0xC0) == 0x80 {
                        self.i += 1;
                    }
                    out.push_str(&self.s[start..self.i]);
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ScanError> {
        let h = self.s.get(self.i..self.i + 4).ok_or(ScanError { at: self.i, what: "short \\u escape" })?;
        let v = u32::from_str_radix(h, 16).map_err(|_| ScanError { at: self.i, what: "bad \\u escape" })?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return self.err("bad \\u escape");
        }
        self.i += 4;
        Ok(v)
    }

    fn enter(&mut self) -> Result<(), ScanError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { self.err("nesting too deep") } else { Ok(()) }
    }

    /// Walks an object, calling `member(scanner, key)` for each member; the
    /// callback must consume exactly the member's value.
    pub fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.ws();
        if self.b.get(self.i) != Some(&b'{') {
            return self.err("expected an object");
        }
        self.i += 1;
        self.enter()?;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return self.err("expected ':'");
            }
            self.i += 1;
            member(self, key)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    /// Walks an array, calling `item(scanner, index)` for each element.
    pub fn array(&mut self, mut item: impl FnMut(&mut Self, usize) -> Result<(), ScanError>) -> Result<(), ScanError> {
        self.ws();
        if self.b.get(self.i) != Some(&b'[') {
            return self.err("expected an array");
        }
        self.i += 1;
        self.enter()?;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        let mut n = 0;
        loop {
            item(self, n)?;
            n += 1;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }

    /// Consumes one value of any kind, validating it.
    pub fn skip(&mut self) -> Result<(), ScanError> {
        match self.kind()? {
            Kind::Object => self.object(|s, _| s.skip()),
            Kind::Array => self.array(|s, _| s.skip()),
            Kind::String => self.string().map(|_| ()),
            Kind::Number => self.number().map(|_| ()),
            Kind::Bool => self.bool().map(|_| ()),
            Kind::Null => self.null(),
        }
    }

    /// The raw text of the next value (consuming it), for error details.
    pub fn raw(&mut self) -> Result<&'a str, ScanError> {
        self.ws();
        let start = self.i;
        self.skip()?;
        Ok(&self.s[start..self.i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Converts via the scanner into serde_json's model, for differential tests.
    fn to_value(s: &mut Scanner<'_>) -> Result<serde_json::Value, ScanError> {
        use serde_json::Value as J;
        Ok(match s.kind()? {
            Kind::Object => {
                let mut m = serde_json::Map::new();
                s.object(|s, k| {
                    let v = to_value(s)?;
                    m.insert(k.into_owned(), v);
                    Ok(())
                })?;
                J::Object(m)
            }
            Kind::Array => {
                let mut v = Vec::new();
                s.array(|s, _| {
                    v.push(to_value(s)?);
                    Ok(())
                })?;
                J::Array(v)
            }
            Kind::String => J::String(s.string()?.into_owned()),
            Kind::Number => match s.number()? {
                Num::U(u) => J::from(u),
                Num::I(i) => J::from(i),
                Num::F(f) => serde_json::Number::from_f64(f).map(J::Number).unwrap_or(J::Null),
            },
            Kind::Bool => J::Bool(s.bool()?),
            Kind::Null => {
                s.null()?;
                J::Null
            }
        })
    }

    fn scan(input: &str) -> Result<serde_json::Value, ScanError> {
        let mut s = Scanner::new(input.as_bytes())?;
        let v = to_value(&mut s)?;
        s.end()?;
        Ok(v)
    }

    #[test]
    fn agrees_with_serde_json_on_valid_and_invalid_documents() {
        let cases = [
            r#"{"a":1,"b":[true,false,null],"c":{"d":-2.5e3,"e":"x\"y\\z\/\n\u00e9\ud83d\ude00"}}"#,
            r#"[0, -0, 1.0, 1e2, 1E-2, 12345678901234567890, -9223372036854775808, 0.1]"#,
            "  {\"k\" : \"v\"}  ",
            r#""plain""#,
            "[]",
            "{}",
            r#"{"a":01}"#,
            r#"{"a":+1}"#,
            r#"{"a":.5}"#,
            r#"{"a":1.}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":tru}"#,
            r#"{"a":1,}"#,
            r#"[1 2]"#,
            r#"{"a":1} x"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":NaN}"#,
            r#"{"a":Infinity}"#,
            r#"{"a""#,
            "",
        ];
        for c in cases {
            let ours = scan(c);
            let theirs: Result<serde_json::Value, _> = serde_json::from_str(c);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{c}"),
                (Err(_), Err(_)) => {}
                _ => panic!("disagree on {c:?}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
    }

    #[test]
    fn out_of_range_numbers_are_infinite_not_syntax_errors() {
        let mut s = Scanner::new(b"[1e999, -1e999, 1e-999]").unwrap();
        let mut v = Vec::new();
        s.array(|s, _| {
            v.push(s.number()?.as_f64());
            Ok(())
        })
        .unwrap();
        assert_eq!(v, vec![f64::INFINITY, f64::NEG_INFINITY, 0.0]);
        assert!(Scanner::new(b"1e").unwrap().number().is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(scan(&deep).unwrap_err().what, "nesting too deep");
        let ok = "[".repeat(60) + &"]".repeat(60);
        assert!(scan(&ok).is_ok());
    }

    #[test]
    fn rejects_invalid_utf8() {
        assert!(Scanner::new(b"{\"a\":\"\xff\"}").is_err());
    }
}
