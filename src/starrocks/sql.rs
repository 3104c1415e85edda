//! A small SQL lexer shared by the DDL parser and the expression parser.
//!
//! It knows StarRocks' lexical rules for what rockfeed needs: backquoted
//! identifiers, single- and double-quoted strings with backslash escapes,
//! numbers, `--`/`#` line comments and `/* */` block comments. Every token
//! carries its line so that errors can name it.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A bare word: keyword or identifier; case preserved.
    Word(String),
    /// A `backquoted` identifier.
    Quoted(String),
    /// A string literal.
    Str(String),
    /// A numeric literal, as written.
    Num(String),
    /// Punctuation and operators.
    Sym(&'static str),
}

impl Tok {
    /// True when this is the bare keyword `kw` (case-insensitive).
    pub fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => f.write_str(w),
            Tok::Quoted(w) => write!(f, "`{w}`"),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Num(n) => f.write_str(n),
            Tok::Sym(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct LexError {
    pub line: usize,
    pub msg: String,
}

const SYMS: [&str; 20] =
    ["<=>", "!=", "<>", "<=", ">=", "(", ")", ",", ".", ";", "=", "<", ">", "+", "-", "*", "/", "%", "[", "]"];

/// Splits `src` into tokens. `first_line` numbers the first line.
pub fn lex(src: &str, first_line: usize) -> Result<Vec<Token>, LexError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0usize, first_line);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' || (c == b'-' && b.get(i + 1) == Some(&b'-')) {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(LexError { line, msg: "unterminated /* comment".into() });
            }
            i += 2;
        } else if c == b'`' {
            let start = i + 1;
            let end =
                src[start..].find('`').ok_or_else(|| LexError { line, msg: "unterminated `identifier`".into() })?;
            out.push(Token { tok: Tok::Quoted(src[start..start + end].to_string()), line });
            i = start + end + 1;
        } else if c == b'\'' || c == b'"' {
            let tok_line = line;
            let (s, next) = string_literal(src, i, &mut line)?;
            out.push(Token { tok: Tok::Str(s), line: tok_line });
            i = next;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                if (b[i] == b'e' || b[i] == b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
                    i += 1;
                }
                i += 1;
            }
            out.push(Token { tok: Tok::Num(src[start..i].to_string()), line });
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                i += 1;
            }
            out.push(Token { tok: Tok::Word(src[start..i].to_string()), line });
        } else {
            let sym = SYMS.iter().find(|s| src[i..].starts_with(**s));
            match sym {
                Some(s) => {
                    out.push(Token { tok: Tok::Sym(s), line });
                    i += s.len();
                }
                None => {
                    return Err(LexError { line, msg: format!("unexpected character '{}'", c as char) });
                }
            }
        }
    }
    Ok(out)
}

/// The string literal quoted at `src[start]` (`'…'` or `"…"`, a doubled
/// quote and backslash escapes inside), and where the text after it
/// begins; `line` counts the newlines in it.
fn string_literal(src: &str, start: usize, line: &mut usize) -> Result<(String, usize), LexError> {
    let b = src.as_bytes();
    let (quote, tok_line) = (b[start], *line);
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        let Some(&ch) = b.get(i) else {
            return Err(LexError { line: tok_line, msg: "unterminated string literal".into() });
        };
        if ch == quote {
            if b.get(i + 1) == Some(&quote) {
                s.push(quote as char);
                i += 2;
                continue;
            }
            return Ok((s, i + 1));
        }
        if ch == b'\\' && i + 1 < b.len() {
            let esc = b[i + 1];
            s.push(match esc {
                b'n' => '\n',
                b't' => '\t',
                b'r' => '\r',
                b'0' => '\0',
                _ => esc as char,
            });
            i += 2;
            continue;
        }
        if ch == b'\n' {
            *line += 1;
        }
        // Copy one UTF-8 scalar.
        let len = utf8_len(ch);
        s.push_str(&src[i..i + len]);
        i += len;
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// A cursor over tokens with the helpers both parsers use.
pub struct Cursor<'a> {
    toks: &'a [Token],
    pos: usize,
    last_line: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(toks: &'a [Token]) -> Self {
        let last_line = toks.last().map(|t| t.line).unwrap_or(1);
        Cursor { toks, pos: 0, last_line }
    }

    pub fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    pub fn peek_at(&self, n: usize) -> Option<&'a Tok> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }

    pub fn line(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.line).unwrap_or(self.last_line)
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    pub fn advance(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.pos).map(|t| &t.tok);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// Consumes the keyword if it is next.
    pub fn eat_kw(&mut self, kw: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_kw(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the symbol if it is next.
    pub fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub fn expect_kw(&mut self, kw: &str) -> Result<(), String> {
        if self.eat_kw(kw) { Ok(()) } else { Err(format!("expected {kw}, found {}", self.describe())) }
    }

    pub fn expect_sym(&mut self, sym: &str) -> Result<(), String> {
        if self.eat_sym(sym) { Ok(()) } else { Err(format!("expected '{sym}', found {}", self.describe())) }
    }

    /// An identifier: a bare word or a backquoted name.
    pub fn ident(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => {
                self.pos += 1;
                Ok(w.clone())
            }
            _ => Err(format!("expected a name, found {}", self.describe())),
        }
    }

    pub fn describe(&self) -> String {
        match self.peek() {
            Some(t) => format!("'{t}'"),
            None => "end of input".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_quotes_comments_and_lines() {
        let toks = lex("CREATE `t`( -- c\n a int COMMENT \"x\\\"y\", b<=1.5e-3 /* z\n */ ;", 1).unwrap();
        let kinds: Vec<_> = toks.iter().map(|t| (t.tok.clone(), t.line)).collect();
        assert_eq!(kinds[1], (Tok::Quoted("t".into()), 1));
        assert_eq!(kinds[3], (Tok::Word("a".into()), 2));
        assert_eq!(kinds[6], (Tok::Str("x\"y".into()), 2));
        assert_eq!(kinds[9], (Tok::Sym("<="), 2));
        assert_eq!(kinds[10], (Tok::Num("1.5e-3".into()), 2));
        assert_eq!(kinds[11], (Tok::Sym(";"), 3));
    }

    #[test]
    fn unterminated_string_names_its_line() {
        let err = lex("a\n'abc", 1).unwrap_err();
        assert_eq!(err.line, 2);
    }
}
