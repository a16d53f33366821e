//! Column text (PostgreSQL's output format, DateStyle ISO, TimeZone UTC) to natural JSON,
//! by type. Never fails: a value we cannot read as its type arrives as its text.

use std::borrow::Cow;
use std::str::FromStr;

use serde_json::{Number, Value};

/// How a type's text form becomes JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Bool,
    /// int2/int4/int8/oid: a JSON number, exact (serde_json keeps the digits).
    Int,
    /// float4/float8: a number, or the text for NaN and the infinities (JSON has none).
    Float,
    /// numeric: a number with every digit kept, or the text for NaN and the infinities.
    Numeric,
    /// json/jsonb: the document itself, nested.
    Json,
    /// timestamp without time zone: `2024-01-02T03:04:05.123456`.
    Timestamp,
    /// timestamp with time zone: `2024-01-02T03:04:05.123456+00:00`.
    TimestampTz,
    /// Everything else (text, uuid, enums, bytea as `\x..`, dates, intervals, types we do
    /// not know): the text form as a JSON string.
    Text,
    /// An array of `element`, as (nested) JSON arrays.
    Array {
        element: Box<ValueKind>,
        delimiter: u8,
    },
}

impl ValueKind {
    pub fn array_of(element: ValueKind) -> Self {
        ValueKind::Array {
            element: Box::new(element),
            delimiter: b',',
        }
    }
}

/// Converts one column's text to JSON.
pub fn text_to_json(kind: &ValueKind, text: &[u8]) -> Value {
    match kind {
        ValueKind::Text => Value::String(string(text)),
        ValueKind::Bool => match text {
            b"t" | b"true" => Value::Bool(true),
            b"f" | b"false" => Value::Bool(false),
            _ => Value::String(string(text)),
        },
        ValueKind::Int | ValueKind::Float | ValueKind::Numeric => number_or_text(text),
        ValueKind::Json => match super::json::parse(text) {
            Some(v) => v,
            None => Value::String(string(text)),
        },
        ValueKind::Timestamp => Value::String(iso_timestamp(text, false)),
        ValueKind::TimestampTz => Value::String(iso_timestamp(text, true)),
        ValueKind::Array { element, delimiter } => match parse_array(text, element, *delimiter) {
            Some(v) => v,
            None => Value::String(string(text)),
        },
    }
}

/// A value sent in binary (we never ask for it): its bytes in bytea's hex text form.
pub fn binary_to_json(bytes: &[u8]) -> Value {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    Value::String(s)
}

fn string(text: &[u8]) -> String {
    match std::str::from_utf8(text) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(text).into_owned(),
    }
}

/// True if `s` is a JSON number (the grammar PostgreSQL's integer, float and numeric
/// output follows, except NaN and the infinities).
fn is_json_number(s: &[u8]) -> bool {
    let mut i = 0;
    if s.first() == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && s[int_start] == b'0') {
        return false;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == s.len()
}

fn number_or_text(text: &[u8]) -> Value {
    if is_json_number(text) {
        // Valid ASCII by the check above.
        let s = std::str::from_utf8(text).unwrap_or_default();
        let negative = text[0] == b'-';
        let digits = &text[negative as usize..];
        let n = if digits.iter().all(u8::is_ascii_digit) {
            super::json::integer(s, negative, digits)
        } else {
            Number::from_str(s).ok()
        };
        if let Some(n) = n {
            return Value::Number(n);
        }
    }
    Value::String(string(text))
}

/// `2024-01-02 03:04:05.5+00` -> `2024-01-02T03:04:05.5+00:00`. Anything not in that shape
/// (infinity, BC dates, another DateStyle) stays as it was. Built in one allocation sized
/// for the longest result (a zone that gains `:00`).
fn iso_timestamp(text: &[u8], with_zone: bool) -> String {
    let Ok(t) = std::str::from_utf8(text) else {
        return string(text);
    };
    let b = t.as_bytes();
    let shaped = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && !t.ends_with(" BC");
    if !shaped {
        return t.to_owned();
    }
    let mut s = String::with_capacity(t.len() + 3);
    s.push_str(&t[..10]);
    s.push('T');
    s.push_str(&t[11..]);
    if with_zone {
        // The offset is the last '+' or '-' after the time; ISO wants "+HH:MM".
        if let Some(pos) = t[19..].rfind(['+', '-']).map(|p| p + 19) {
            if t.len() - pos == 3 {
                s.push_str(":00");
            }
        }
    }
    s
}

/// Parses an array literal (`{1,2,NULL}`, `{{"a b","c\"d"},{e,f}}`, `[0:1]={1,2}`).
fn parse_array(text: &[u8], element: &ValueKind, delimiter: u8) -> Option<Value> {
    let mut pos = 0;
    if text.first() == Some(&b'[') {
        // Explicit lower bounds: `[0:1]={...}`; JSON arrays start at 0 regardless.
        let eq = text.iter().position(|&c| c == b'=')?;
        pos = eq + 1;
    }
    let mut p = ArrayParser {
        s: text,
        pos,
        element,
        delimiter,
        depth: 0,
    };
    let v = p.level()?;
    (p.pos == text.len()).then_some(v)
}

struct ArrayParser<'a> {
    s: &'a [u8],
    pos: usize,
    element: &'a ValueKind,
    delimiter: u8,
    depth: usize,
}

impl<'a> ArrayParser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn level(&mut self) -> Option<Value> {
        // PostgreSQL allows at most 6 dimensions; refuse deeper input instead of recursing.
        self.depth += 1;
        if self.depth > 6 || self.peek()? != b'{' {
            return None;
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek()? == b'}' {
            self.pos += 1;
            self.depth -= 1;
            return Some(Value::Array(items));
        }
        loop {
            let item = match self.peek()? {
                b'{' => self.level()?,
                b'"' => {
                    let text = self.quoted()?;
                    text_to_json(self.element, &text)
                }
                _ => {
                    let start = self.pos;
                    while let Some(c) = self.peek() {
                        if c == self.delimiter || c == b'}' {
                            break;
                        }
                        self.pos += 1;
                    }
                    let raw = &self.s[start..self.pos];
                    if raw.is_empty() {
                        return None;
                    }
                    if raw.eq_ignore_ascii_case(b"NULL") {
                        Value::Null
                    } else {
                        text_to_json(self.element, raw)
                    }
                }
            };
            items.push(item);
            match self.peek()? {
                c if c == self.delimiter => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    /// A double-quoted element without its quotes: borrowed from the input unless it has
    /// backslash escapes to undo.
    fn quoted(&mut self) -> Option<Cow<'a, [u8]>> {
        self.pos += 1;
        let start = self.pos;
        let rest = &self.s[start..];
        let end = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
        if rest[end] == b'"' {
            self.pos += end + 1;
            return Some(Cow::Borrowed(&rest[..end]));
        }
        let mut out = rest[..end].to_vec();
        self.pos += end;
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    self.pos += 1;
                    out.push(self.peek()?);
                    self.pos += 1;
                }
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(kind: &ValueKind, s: &str) -> Value {
        text_to_json(kind, s.as_bytes())
    }

    #[test]
    fn booleans_become_json_booleans() {
        assert_eq!(conv(&ValueKind::Bool, "t"), json!(true));
        assert_eq!(conv(&ValueKind::Bool, "f"), json!(false));
    }

    #[test]
    fn int8_and_numeric_keep_every_digit() {
        let v = conv(&ValueKind::Int, "9223372036854775807");
        assert_eq!(v.to_string(), "9223372036854775807");
        let v = conv(
            &ValueKind::Numeric,
            "-123456789012345678901234567890.000000000001",
        );
        assert!(v.is_number());
        assert_eq!(
            v.to_string(),
            "-123456789012345678901234567890.000000000001"
        );
        assert_eq!(conv(&ValueKind::Numeric, "NaN"), json!("NaN"));
        assert_eq!(conv(&ValueKind::Numeric, "Infinity"), json!("Infinity"));
    }

    #[test]
    fn floats_are_numbers_except_nan_and_infinities() {
        assert_eq!(conv(&ValueKind::Float, "1.5").to_string(), "1.5");
        assert_eq!(conv(&ValueKind::Float, "1e+30").to_string(), "1e+30");
        assert_eq!(conv(&ValueKind::Float, "-Infinity"), json!("-Infinity"));
        assert_eq!(conv(&ValueKind::Float, "NaN"), json!("NaN"));
    }

    #[test]
    fn integers_match_serde_json_digit_for_digit() {
        // Integers up to 18 digits skip the second parse; every width must give the
        // number serde_json gives for the same text.
        for s in [
            "0",
            "-0",
            "7",
            "-7",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "123456789012345678901234567890",
        ] {
            let ours = conv(&ValueKind::Int, s);
            let theirs = Value::Number(Number::from_str(s).unwrap());
            assert_eq!(ours, theirs, "{s}");
            assert_eq!(ours.to_string(), s, "{s}");
        }
    }

    #[test]
    fn malformed_numbers_stay_text() {
        for s in ["", "-", "01", "1.", ".5", "1e", "1e+", "1x", "--1"] {
            assert_eq!(conv(&ValueKind::Int, s), json!(s), "{s:?}");
        }
    }

    #[test]
    fn json_is_nested_and_bad_json_is_text() {
        assert_eq!(
            conv(&ValueKind::Json, r#"{"a": [1, {"b": null}]}"#),
            json!({"a": [1, {"b": null}]})
        );
        assert_eq!(conv(&ValueKind::Json, "{nope"), json!("{nope"));
        // jsonb's own output form, numbers exact.
        let v = conv(
            &ValueKind::Json,
            r#"{"n": 12345678901234567890123, "f": 1.10, "s": "x\"y", "e": []}"#,
        );
        assert_eq!(
            v.to_string(),
            r#"{"n":12345678901234567890123,"f":1.10,"s":"x\"y","e":[]}"#
        );
    }

    #[test]
    fn timestamps_become_iso_8601() {
        assert_eq!(
            conv(&ValueKind::Timestamp, "2024-01-02 03:04:05.123456"),
            json!("2024-01-02T03:04:05.123456")
        );
        assert_eq!(
            conv(&ValueKind::TimestampTz, "2024-01-02 03:04:05+00"),
            json!("2024-01-02T03:04:05+00:00")
        );
        assert_eq!(
            conv(&ValueKind::TimestampTz, "2024-01-02 03:04:05.5-03:30"),
            json!("2024-01-02T03:04:05.5-03:30")
        );
        assert_eq!(conv(&ValueKind::TimestampTz, "infinity"), json!("infinity"));
        assert_eq!(
            conv(&ValueKind::Timestamp, "0044-03-15 00:00:00 BC"),
            json!("0044-03-15 00:00:00 BC")
        );
    }

    #[test]
    fn arrays_parse_with_quoting_nulls_and_nesting() {
        let ints = ValueKind::array_of(ValueKind::Int);
        assert_eq!(conv(&ints, "{1,2,NULL}"), json!([1, 2, null]));
        assert_eq!(conv(&ints, "{}"), json!([]));
        assert_eq!(conv(&ints, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(conv(&ints, "[0:1]={7,8}"), json!([7, 8]));
        let texts = ValueKind::array_of(ValueKind::Text);
        assert_eq!(
            conv(
                &texts,
                r#"{plain,"with space","quote\"d","back\\slash","NULL",NULL,"a,b"}"#
            ),
            json!([
                "plain",
                "with space",
                "quote\"d",
                "back\\slash",
                "NULL",
                null,
                "a,b"
            ])
        );
        let jsons = ValueKind::array_of(ValueKind::Json);
        assert_eq!(
            conv(&jsons, r#"{"{\"a\": 1}","[2]"}"#),
            json!([{"a": 1}, [2]])
        );
        let boxes = ValueKind::Array {
            element: Box::new(ValueKind::Text),
            delimiter: b';',
        };
        assert_eq!(
            conv(&boxes, "{(1,1),(0,0);(2,2),(1,1)}"),
            json!(["(1,1),(0,0)", "(2,2),(1,1)"])
        );
    }

    #[test]
    fn malformed_arrays_arrive_as_text() {
        let ints = ValueKind::array_of(ValueKind::Int);
        for s in [
            "{1,2",
            "1,2}",
            "{1,,2}",
            "{\"a}",
            "{{{{{{{1}}}}}}}",
            "{1}x",
            "[0:1]",
        ] {
            assert_eq!(conv(&ints, s), json!(s), "{s:?}");
        }
    }

    #[test]
    fn binary_values_use_bytea_hex_form() {
        assert_eq!(binary_to_json(&[0, 0xab, 0xff]), json!("\\x00abff"));
    }
}
