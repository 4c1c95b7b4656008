//! The top-level keys of a TOML document, for a reader that needs a few scalar keys and nothing else: the shim
//! reads five keys of predictived's configuration ([`crate::settings`]) and two of containerd's runtime options,
//! and links no TOML library for it.
//!
//! The whole document is checked lexically (strings closed, escapes valid, arrays and inline tables balanced, one
//! `key = value` or `[table]` per line), so text that is not TOML is an error, as it is for the broker's full
//! parser. Only top-level keys (before the first `[table]`) are returned; values that are not scalars (arrays,
//! inline tables, dates) are returned as [`Value::Other`]. Limits: no type checks beyond the lexical ones for
//! values nobody asks for, and duplicate keys are found at the top level only.

use std::collections::BTreeSet;

/// A value as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A basic or literal string, escapes resolved.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// `true` or `false`.
    Boolean(bool),
    /// An array, an inline table or a date/time.
    Other,
}

/// One top-level `key = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key (dotted keys joined with `.`).
    pub key: String,
    /// Its line, from 1.
    pub line: usize,
    /// The value's text as written.
    pub raw: String,
    /// The value.
    pub value: Value,
}

/// Why a document is not TOML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TomlError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

struct Lexer<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
}

fn is_bare(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

impl<'a> Lexer<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, TomlError> {
        Err(TomlError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn starts(&self, p: &str) -> bool {
        self.s[self.pos..].starts_with(p.as_bytes())
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Spaces and tabs.
    fn blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn comment(&mut self) -> Result<(), TomlError> {
        if self.peek() == Some(b'#') {
            while let Some(c) = self.peek() {
                if c == b'\n' {
                    break;
                }
                if c != b'\t' && c < 0x20 || c == 0x7f {
                    return self.err("a control character in a comment");
                }
                self.pos += 1;
            }
        }
        Ok(())
    }

    /// Blanks, comments and newlines (inside arrays).
    fn space(&mut self) -> Result<(), TomlError> {
        loop {
            self.blank();
            self.comment()?;
            match self.peek() {
                Some(b'\n') => {
                    self.bump();
                }
                Some(b'\r') if self.s.get(self.pos + 1) == Some(&b'\n') => {
                    self.pos += 1;
                }
                _ => return Ok(()),
            }
        }
    }

    /// The rest of a line after a key/value pair or a header: blanks, a comment, the newline.
    fn end_of_line(&mut self, after: &str) -> Result<(), TomlError> {
        self.blank();
        self.comment()?;
        if self.starts("\r\n") {
            self.pos += 1;
        }
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => {
                self.bump();
                Ok(())
            }
            Some(_) => self.err(format!("expected the end of the line after {after}")),
        }
    }

    fn key_part(&mut self) -> Result<String, TomlError> {
        match self.peek() {
            Some(b'"') => self.basic_string(),
            Some(b'\'') => self.literal_string(),
            Some(c) if is_bare(c) => {
                let start = self.pos;
                while self.peek().is_some_and(is_bare) {
                    self.pos += 1;
                }
                Ok(self.text[start..self.pos].to_owned())
            }
            _ => self.err("expected a key"),
        }
    }

    fn key(&mut self) -> Result<String, TomlError> {
        let mut k = self.key_part()?;
        loop {
            self.blank();
            if self.peek() != Some(b'.') {
                return Ok(k);
            }
            self.pos += 1;
            self.blank();
            k.push('.');
            k.push_str(&self.key_part()?);
        }
    }

    /// `n` hex digits of a `\u` or `\U` escape.
    fn unicode(&mut self, n: usize) -> Result<char, TomlError> {
        let digits = self.text.get(self.pos..self.pos + n).unwrap_or("");
        let ch = u32::from_str_radix(digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32);
        match ch {
            Some(ch) => {
                self.pos += n;
                Ok(ch)
            }
            None => self.err(format!("invalid unicode escape {digits:?}")),
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), TomlError> {
        let ch = match self.bump() {
            Some(b'b') => '\u{8}',
            Some(b't') => '\t',
            Some(b'n') => '\n',
            Some(b'f') => '\u{c}',
            Some(b'r') => '\r',
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'u') => self.unicode(4)?,
            Some(b'U') => self.unicode(8)?,
            _ => return self.err("invalid escape in a string"),
        };
        out.push(ch);
        Ok(())
    }

    fn basic_string(&mut self) -> Result<String, TomlError> {
        let multi = self.starts("\"\"\"");
        self.pos += if multi { 3 } else { 1 };
        if multi && self.peek() == Some(b'\n') {
            self.bump();
        }
        let mut out = String::new();
        loop {
            if multi && self.starts("\"\"\"") {
                self.pos += 3;
                // Up to two quotes right before the closing ones belong to the string.
                while self.peek() == Some(b'"') {
                    out.push('"');
                    self.pos += 1;
                }
                return Ok(out);
            }
            let start = self.pos;
            match self.bump() {
                None => return self.err("a string is not closed"),
                Some(b'"') if !multi => return Ok(out),
                Some(b'\n') if !multi => return self.err("a string is not closed on its line"),
                Some(b'\\') => {
                    if multi && matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                        // A line-ending backslash: the newline and the blanks after it go.
                        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                            self.bump();
                        }
                    } else {
                        self.escape(&mut out)?;
                    }
                }
                Some(_) => {
                    while self.pos < self.s.len() && !self.text.is_char_boundary(self.pos) {
                        self.pos += 1;
                    }
                    out.push_str(&self.text[start..self.pos]);
                }
            }
        }
    }

    fn literal_string(&mut self) -> Result<String, TomlError> {
        let multi = self.starts("'''");
        self.pos += if multi { 3 } else { 1 };
        if multi && self.peek() == Some(b'\n') {
            self.bump();
        }
        let start = self.pos;
        loop {
            if multi && self.starts("'''") {
                let mut end = self.pos;
                self.pos += 3;
                while self.peek() == Some(b'\'') {
                    self.pos += 1;
                    end += 1;
                }
                return Ok(self.text[start..end].to_owned());
            }
            match self.bump() {
                None => return self.err("a string is not closed"),
                Some(b'\'') if !multi => return Ok(self.text[start..self.pos - 1].to_owned()),
                Some(b'\n') if !multi => return self.err("a string is not closed on its line"),
                Some(_) => {}
            }
        }
    }

    fn value(&mut self) -> Result<Value, TomlError> {
        match self.peek() {
            Some(b'"') => self.basic_string().map(Value::String),
            Some(b'\'') => self.literal_string().map(Value::String),
            Some(b'[') => {
                self.pos += 1;
                loop {
                    self.space()?;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Other);
                    }
                    self.value()?;
                    self.space()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        _ => return self.err("an array is not closed (expected `,` or `]`)"),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                self.blank();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Value::Other);
                }
                loop {
                    self.blank();
                    self.key()?;
                    if self.peek() != Some(b'=') {
                        return self.err("expected `=` in an inline table");
                    }
                    self.pos += 1;
                    self.blank();
                    self.value()?;
                    self.blank();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Value::Other);
                        }
                        _ => {
                            return self.err("an inline table is not closed (expected `,` or `}`)");
                        }
                    }
                }
            }
            _ => {
                let token = self.token();
                if token.is_empty() {
                    return self.err("expected a value");
                }
                if let Some(v) = scalar(token) {
                    return Ok(v);
                }
                if is_date(token) {
                    // `1979-05-27 07:32:00`: the time may follow the date after one space.
                    if self.peek() == Some(b' ')
                        && self.s.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
                    {
                        self.pos += 1;
                        self.token();
                    }
                    return Ok(Value::Other);
                }
                self.err(format!("{token:?} is not a value"))
            }
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b',' | b']' | b'}' | b'#'))
        {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }
}

fn is_date(t: &str) -> bool {
    t.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && (t.contains('-') || t.contains(':'))
        && t.bytes()
            .all(|c| c.is_ascii_digit() || b"-:.TtZz+".contains(&c))
}

/// A bare scalar: boolean, integer (decimal, `0x`, `0o`, `0b`, with `_`) or float.
fn scalar(t: &str) -> Option<Value> {
    match t {
        "true" => return Some(Value::Boolean(true)),
        "false" => return Some(Value::Boolean(false)),
        "inf" | "+inf" => return Some(Value::Float(f64::INFINITY)),
        "-inf" => return Some(Value::Float(f64::NEG_INFINITY)),
        "nan" | "+nan" | "-nan" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    if t.contains("__") || t.starts_with('_') || t.ends_with('_') {
        return None;
    }
    let digits: String = t.chars().filter(|&c| c != '_').collect();
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = digits.strip_prefix(prefix) {
            return i64::from_str_radix(rest, radix).ok().map(Value::Integer);
        }
    }
    let unsigned = digits.trim_start_matches(['+', '-']);
    if unsigned.len() > 1 && unsigned.starts_with('0') && !unsigned.starts_with("0.") {
        let exp = unsigned.starts_with("0e") || unsigned.starts_with("0E");
        if !exp {
            return None;
        }
    }
    if unsigned.bytes().all(|c| c.is_ascii_digit()) && !unsigned.is_empty() {
        return digits.parse().ok().map(Value::Integer);
    }
    if unsigned.bytes().next().is_some_and(|c| c.is_ascii_digit())
        && unsigned.bytes().last().is_some_and(|c| c.is_ascii_digit())
    {
        return digits.parse().ok().map(Value::Float);
    }
    None
}

/// The top-level `key = value` pairs of `text`, in order; an error when `text` is not TOML.
pub fn top_level(text: &str) -> Result<Vec<Entry>, TomlError> {
    let mut lx = Lexer {
        s: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut in_table = false;
    loop {
        lx.space()?;
        match lx.peek() {
            None => return Ok(out),
            Some(b'[') => {
                let array = lx.starts("[[");
                lx.pos += if array { 2 } else { 1 };
                lx.blank();
                lx.key()?;
                let close = if array { "]]" } else { "]" };
                if !lx.starts(close) {
                    return lx.err(format!("a table header is not closed with `{close}`"));
                }
                lx.pos += close.len();
                lx.end_of_line("a table header")?;
                in_table = true;
            }
            Some(_) => {
                let line = lx.line;
                let key = lx.key()?;
                if lx.peek() != Some(b'=') {
                    return lx.err(format!("expected `=` after key `{key}`"));
                }
                lx.pos += 1;
                lx.blank();
                let start = lx.pos;
                let value = lx.value()?;
                let raw = text[start..lx.pos].to_owned();
                lx.end_of_line(&format!("the value of key `{key}`"))?;
                if !in_table {
                    if !seen.insert(key.clone()) {
                        return Err(TomlError {
                            line,
                            message: format!("duplicate key `{key}`"),
                        });
                    }
                    out.push(Entry {
                        key,
                        line,
                        raw,
                        value,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(text: &str, key: &str) -> Option<Value> {
        top_level(text)
            .expect(text)
            .into_iter()
            .find(|e| e.key == key)
            .map(|e| e.value)
    }

    #[test]
    fn scalars_are_read() {
        let t =
            "a = \"x\\ty\\u00e9\" # c\nb = 'lit\\'\nc = 1_000\ne = true\nf = 2.5e3\n\"q k\" = 0\n";
        assert_eq!(get(t, "a"), Some(Value::String("x\ty\u{e9}".to_owned())));
        assert_eq!(get(t, "b"), Some(Value::String("lit\\".to_owned())));
        assert_eq!(get(t, "c"), Some(Value::Integer(1000)));
        assert_eq!(get(t, "e"), Some(Value::Boolean(true)));
        assert_eq!(get(t, "f"), Some(Value::Float(2500.0)));
        assert_eq!(get(t, "q k"), Some(Value::Integer(0)));
        assert_eq!(get("d = 0x10", "d"), Some(Value::Integer(16)));
        assert!(top_level("d = -0x10").is_err(), "no sign on hex");
    }

    #[test]
    fn other_values_and_tables_are_skipped() {
        let t = "a = [1, [2, \"]\"],\n  3, # c\n]\nb = { x = 1, y = \"}\" }\nc = 1979-05-27 07:32:00Z\nd = \"\"\"\nmulti\n\"\"\"\n[t]\nz = 1\n[[arr]]\nw = '''x\n'''\n";
        let e = top_level(t).expect("valid");
        let keys: Vec<_> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, [("a", 1), ("b", 4), ("c", 5), ("d", 6)]);
        assert_eq!(e[0].value, Value::Other);
        assert_eq!(e[3].value, Value::String("multi\n".to_owned()));
        assert_eq!(e[1].raw, "{ x = 1, y = \"}\" }");
    }

    #[test]
    fn not_toml_is_an_error_with_its_line() {
        for (t, line, needle) in [
            ("not = [toml", 1, "\"toml\" is not a value"),
            ("a = [1, 2", 1, "array is not closed"),
            ("a = \"open", 1, "not closed"),
            ("a = 1\nb", 2, "`=`"),
            ("a = 1 2", 1, "end of the line"),
            ("a = 1\na = 2", 2, "duplicate key `a`"),
            ("[t\na = 1", 1, "header"),
            ("a = yes", 1, "\"yes\" is not a value"),
            ("a = \"\\q\"", 1, "escape"),
            ("a = 01", 1, "not a value"),
        ] {
            let e = top_level(t).expect_err(t);
            assert_eq!(e.line, line, "{t}: {e}");
            assert!(e.message.contains(needle), "{t}: {e}");
        }
    }
}
