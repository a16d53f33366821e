//! json/jsonb column text to a [`Value`], the same value `serde_json::from_slice` gives
//! (with the workspace's `arbitrary_precision` and `preserve_order`), without serde's
//! visitor machinery: with `arbitrary_precision` every number in a document went through
//! a one-key map and a second parse, which made a small jsonb column cost more than all
//! the other columns of its row together.
//!
//! Same answer as serde_json for every input (the fuzz target `json` compares the two),
//! with one deliberate exception: serde_json reads an object whose first key is its
//! private number or raw-value token (`{"$serde_json::private::Number": "1"}`) as that
//! number; here it stays the object the database holds.

use std::str::FromStr;

use serde_json::{Map, Number, Value};

/// serde_json's default nesting limit: it fails on the 128th open array or object.
const MAX_DEPTH: usize = 127;

/// The document, or `None` where serde_json would fail (bad syntax, invalid UTF-8, lone
/// surrogates, control characters in strings, nesting too deep, trailing text).
pub fn parse(text: &[u8]) -> Option<Value> {
    let mut p = Parser {
        s: text,
        pos: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.skip_ws();
    (p.pos == text.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Option<Value> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(v)
        } else {
            None
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.skip_ws();
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string().map(Value::String),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number().map(Value::Number),
            _ => None,
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn array(&mut self) -> Option<Value> {
        self.enter()?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek()? == b']' {
            self.pos += 1;
            self.depth -= 1;
            return Some(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self) -> Option<Value> {
        self.enter()?;
        self.pos += 1;
        let mut map = Map::new();
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            self.depth -= 1;
            return Some(Value::Object(map));
        }
        loop {
            self.skip_ws();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            let v = self.value()?;
            // A repeated key keeps its first position and takes the last value, as
            // serde_json's Map::insert does.
            map.insert(key, v);
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Some(Value::Object(map));
                }
                _ => return None,
            }
        }
    }

    /// A string at `pos` (on its opening quote).
    fn string(&mut self) -> Option<String> {
        self.pos += 1;
        let start = self.pos;
        let rest = &self.s[start..];
        let end = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[end] == b'"' {
            self.pos += end + 1;
            return std::str::from_utf8(&rest[..end]).ok().map(str::to_owned);
        }
        let mut out: Vec<u8> = Vec::with_capacity(end + 16);
        out.extend_from_slice(&rest[..end]);
        self.pos += end;
        loop {
            let c = self.peek()?;
            self.pos += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let ch = self.unicode_escape()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u16> {
        let digits = self.s.get(self.pos..self.pos + 4)?;
        let mut n = 0u16;
        for &d in digits {
            n = n * 16 + (d as char).to_digit(16)? as u16;
        }
        self.pos += 4;
        Some(n)
    }

    /// After `\u`: one code point, joining a surrogate pair; a lone surrogate fails.
    fn unicode_escape(&mut self) -> Option<char> {
        let n = self.hex4()?;
        match n {
            0xD800..=0xDBFF => {
                if self.s.get(self.pos..self.pos + 2)? != b"\\u" {
                    return None;
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return None;
                }
                let c = 0x10000 + (((n as u32) - 0xD800) << 10) + ((low as u32) - 0xDC00);
                char::from_u32(c)
            }
            0xDC00..=0xDFFF => None,
            n => char::from_u32(n as u32),
        }
    }

    /// A number, kept digit for digit as serde_json's `arbitrary_precision` keeps it
    /// (which writes an exponent as `e` with its sign).
    fn number(&mut self) -> Option<Number> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        if let Some(b'0'..=b'9') = self.peek() {
            // A leading zero followed by more digits.
            return None;
        }
        let int_end = self.pos;
        let mut fraction = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let digits = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == digits {
                return None;
            }
            fraction = true;
        }
        let mut exponent = None;
        if let Some(b'e' | b'E') = self.peek() {
            let e = self.pos;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let digits = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == digits {
                return None;
            }
            exponent = Some(e);
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).ok()?;
        if !fraction && exponent.is_none() {
            return integer(text, negative, &self.s[int_start..int_end]);
        }
        match exponent {
            // serde_json writes the exponent as `e`, with a `+` if it had no sign.
            Some(e) if self.s[e] != b'e' || !matches!(self.s[e + 1], b'+' | b'-') => {
                let e = e - start;
                let mut n = String::with_capacity(text.len() + 1);
                n.push_str(&text[..e]);
                n.push('e');
                if !matches!(text.as_bytes()[e + 1], b'+' | b'-') {
                    n.push('+');
                }
                n.push_str(&text[e + 1..]);
                Number::from_str(&n).ok()
            }
            _ => Number::from_str(text).ok(),
        }
    }
}

/// An integer's JSON number: from u64/i64 where it fits (no second parse), else its text.
pub(crate) fn integer(text: &str, negative: bool, digits: &[u8]) -> Option<Number> {
    if digits.len() <= 18 {
        let mut n: i64 = 0;
        for &d in digits {
            n = n * 10 + (d - b'0') as i64;
        }
        return Some(if !negative {
            Number::from(n)
        } else if n == 0 {
            // `-0` keeps its sign, as serde_json keeps it.
            Number::from_str(text).ok()?
        } else {
            Number::from(-n)
        });
    }
    Number::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same value as serde_json, including which inputs fail.
    fn same(text: &str) {
        let ours = parse(text.as_bytes());
        let theirs: Option<Value> = serde_json::from_slice(text.as_bytes()).ok();
        assert_eq!(ours, theirs, "{text:?}");
        if let (Some(a), Some(b)) = (&ours, &theirs) {
            // Numbers compare by their text under arbitrary_precision; check it anyway.
            assert_eq!(a.to_string(), b.to_string(), "{text:?}");
        }
    }

    #[test]
    fn documents_match_serde_json() {
        for t in [
            r#"{"n": 1, "kind": "chat"}"#,
            r#"{"a": [1, {"b": null}], "c": true, "d": false}"#,
            r#" [ ] "#,
            "{}",
            r#"{"dup": 1, "x": 2, "dup": 3}"#,
            r#""just a string""#,
            "12",
            "null",
            r#"{"big": 123456789012345678901234567890.000000000001}"#,
            r#"[9223372036854775807, 9223372036854775808, 18446744073709551615, 18446744073709551616]"#,
            r#"[-9223372036854775808, -9223372036854775809, -0, 0, -1, 999999999999999999]"#,
            r#"[1.5, -0.0, 1e5, 1E5, 1e+5, 1e-5, 1.25E-3, 2E+2]"#,
            r#"["esc \" \\ \/ \b \f \n \r \t", "\u00e9\u4e2d", "\ud83d\ude00", "\u0000"]"#,
            "\"caf\u{e9} \u{1F600}\"",
            "{\"a\"\t:\n1\r}",
        ] {
            same(t);
        }
    }

    #[test]
    fn bad_documents_fail_as_in_serde_json() {
        for t in [
            "",
            " ",
            "{",
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a": 1,}"#,
            "{1: 2}",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nulls",
            "[1] x",
            r#""\x""#,
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            r#""\u12""#,
            "\"tab\tinside\"",
            "\"unterminated",
            "NaN",
            "Infinity",
        ] {
            same(t);
        }
        // Invalid UTF-8 inside a string, escaped or not.
        for t in [&b"\"\xff\""[..], b"\"a\\n\xc3\""] {
            assert_eq!(parse(t), None);
            assert!(serde_json::from_slice::<Value>(t).is_err());
        }
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        for depth in [1, 126, 127, 128, 200] {
            same(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            same(&format!(
                "{}1{}",
                "{\"a\":[".repeat(depth / 2),
                "]}".repeat(depth / 2)
            ));
        }
    }

    #[test]
    fn serde_json_private_tokens_stay_ordinary_keys() {
        let v = parse(br#"{"$serde_json::private::Number": "12"}"#).unwrap();
        assert_eq!(v["$serde_json::private::Number"], Value::from("12"));
    }
}
