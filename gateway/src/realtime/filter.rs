//! `postgres_changes` filters: `column=op.value`, several ANDed with commas. Pure: parsing,
//! binding to the column types the catalog reports, and matching a record. No I/O.
//!
//! The grammar follows what `@supabase/realtime-js` sends (its `RealtimePostgresFilterBuilder`):
//! ops `eq neq lt lte gt gte in is isdistinct`, an optional `not.` prefix, and PostgREST-style
//! double quotes around values holding `,` `(` `)` `"` `\` or edge whitespace.
//! Values compare with the column type's semantics (numbers numerically, uuids as uuids,
//! timestamps as instants) so `id=eq.1.0` on an `int` column and `id=eq.1` agree, and a
//! `lt` on a `timestamptz` compares instants, not strings. Text orders by code point (the C
//! collation), which is the one place we cannot follow a database collation.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::Value;

use crate::change::Row;

/// Most values an `in` list may hold.
pub const MAX_IN_VALUES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    Is,
    IsDistinct,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            "is" => Op::Is,
            "isdistinct" => Op::IsDistinct,
            _ => return None,
        })
    }

    fn is_ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Lte | Op::Gt | Op::Gte)
    }
}

/// A condition as written, before we know the column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCondition {
    pub column: String,
    pub op: Op,
    pub negate: bool,
    /// One value, or the items of an `in` list; `is` holds its keyword.
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter condition `{0}` is not of the form column=operator.value")]
    Syntax(String),
    #[error("filter operator `{0}` is not supported (use eq, neq, lt, lte, gt, gte, in, is, isdistinct)")]
    UnknownOperator(String),
    #[error("filter `in` list must be written in.(a,b,c)")]
    InSyntax,
    #[error("filter `in` list has {0} values; at most {MAX_IN_VALUES} are allowed")]
    TooManyValues(usize),
    #[error("filter has an unterminated quoted value")]
    Unterminated,
    #[error("filter `is` accepts null, true, false or unknown, not `{0}`")]
    IsValue(String),
    #[error("filter column `{0}` does not exist")]
    UnknownColumn(String),
    #[error("filter value `{value}` is not a valid {type_name} for column `{column}`")]
    BadValue {
        column: String,
        type_name: String,
        value: String,
    },
    #[error("filter operator on column `{column}` of type {type_name} cannot order values; only eq, neq, in, is apply")]
    NotOrderable { column: String, type_name: String },
}

/// How a column's values compare, from its `pg_type` name and `typtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareKind {
    Integer,
    Float,
    Numeric,
    Boolean,
    Uuid,
    Text,
    Timestamp,
    TimestampTz,
    Date,
    /// Enum labels: equality by label (their order is the enum's, which we do not know).
    Enum,
    /// Anything else (json, arrays, ...): equality of the text form only.
    Other,
}

impl CompareKind {
    pub fn from_pg(type_name: &str, typtype: &str) -> CompareKind {
        if typtype == "e" {
            return CompareKind::Enum;
        }
        match type_name {
            "int2" | "int4" | "int8" | "oid" => CompareKind::Integer,
            "float4" | "float8" => CompareKind::Float,
            "numeric" | "money" => CompareKind::Numeric,
            "bool" => CompareKind::Boolean,
            "uuid" => CompareKind::Uuid,
            "text" | "varchar" | "bpchar" | "name" | "citext" | "char" => CompareKind::Text,
            "timestamp" => CompareKind::Timestamp,
            "timestamptz" => CompareKind::TimestampTz,
            "date" => CompareKind::Date,
            _ => CompareKind::Other,
        }
    }

    fn orderable(self) -> bool {
        !matches!(
            self,
            CompareKind::Enum | CompareKind::Other | CompareKind::Boolean
        )
    }
}

/// A value parsed with its column's semantics.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    Integer(i128),
    Float(f64),
    Numeric(Decimal),
    Boolean(bool),
    Uuid(uuid::Uuid),
    Text(String),
    Timestamp(chrono::NaiveDateTime),
    TimestampTz(chrono::DateTime<chrono::Utc>),
    Date(chrono::NaiveDate),
}

impl Typed {
    /// Parses `text` as a value of `kind`; `None` when it is not one.
    pub fn parse(kind: CompareKind, text: &str) -> Option<Typed> {
        let t = text.trim();
        Some(match kind {
            CompareKind::Integer => Typed::Integer(t.parse().ok()?),
            CompareKind::Float => Typed::Float(parse_float(t)?),
            CompareKind::Numeric => Typed::Numeric(Decimal::parse(t)?),
            CompareKind::Boolean => Typed::Boolean(parse_bool(t)?),
            CompareKind::Uuid => Typed::Uuid(uuid::Uuid::parse_str(t).ok()?),
            CompareKind::Text | CompareKind::Enum | CompareKind::Other => {
                Typed::Text(text.to_string())
            }
            CompareKind::Timestamp => Typed::Timestamp(parse_naive_timestamp(t)?),
            CompareKind::TimestampTz => Typed::TimestampTz(parse_timestamptz(t)?),
            CompareKind::Date => {
                Typed::Date(chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?)
            }
        })
    }

    fn compare(&self, other: &Typed) -> Option<Ordering> {
        match (self, other) {
            (Typed::Integer(a), Typed::Integer(b)) => Some(a.cmp(b)),
            (Typed::Float(a), Typed::Float(b)) => a.partial_cmp(b),
            (Typed::Numeric(a), Typed::Numeric(b)) => Some(a.cmp(b)),
            (Typed::Boolean(a), Typed::Boolean(b)) => Some(a.cmp(b)),
            (Typed::Uuid(a), Typed::Uuid(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Typed::Text(a), Typed::Text(b)) => Some(a.cmp(b)),
            (Typed::Timestamp(a), Typed::Timestamp(b)) => Some(a.cmp(b)),
            (Typed::TimestampTz(a), Typed::TimestampTz(b)) => Some(a.cmp(b)),
            (Typed::Date(a), Typed::Date(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// A canonical string for exact-equality indexing, for the kinds where equal values
    /// always have equal canonical text. `None` for kinds we do not index.
    pub fn index_key(&self) -> Option<String> {
        match self {
            Typed::Integer(i) => Some(i.to_string()),
            Typed::Boolean(b) => Some(b.to_string()),
            Typed::Uuid(u) => Some(u.hyphenated().to_string()),
            Typed::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

fn parse_float(t: &str) -> Option<f64> {
    match t.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    match t.to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn parse_naive_timestamp(t: &str) -> Option<chrono::NaiveDateTime> {
    let t = t.replacen(' ', "T", 1);
    chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
}

/// Accepts what PostgreSQL prints (`2026-01-01 10:00:00.5+00`, `+05:30`) and ISO-8601
/// (`2026-01-01T10:00:00Z`). A value without an offset is read as UTC.
fn parse_timestamptz(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = t.replacen(' ', "T", 1);
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(&s) {
        return Some(d.with_timezone(&chrono::Utc));
    }
    // PostgreSQL's short offsets: `+00`, `-05`, `+05:30`.
    let split = s
        .char_indices()
        .skip(10)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map(|(i, _)| i);
    if let Some(i) = split {
        let (dt, off) = s.split_at(i);
        let off = if off.len() == 3 {
            format!("{off}:00")
        } else {
            off.to_string()
        };
        if let Ok(d) = chrono::DateTime::parse_from_rfc3339(&format!("{dt}{off}")) {
            return Some(d.with_timezone(&chrono::Utc));
        }
    }
    parse_naive_timestamp(&s).map(|n| n.and_utc())
}

/// An exact decimal for `numeric` comparisons: f64 would call 0.1 + 0.2 and 0.3 different,
/// and lose digits of large values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// Integer digits without leading zeros.
    int: String,
    /// Fraction digits without trailing zeros.
    frac: String,
}

impl Decimal {
    /// Parses `-12.50`, `+3`, `.5`, and exponent forms (`1e40`, `2.5E-3`) that JSON
    /// numbers may take.
    pub fn parse(t: &str) -> Option<Decimal> {
        let (negative, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (mantissa, exp) = match body.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i32>().ok()?),
            None => (body, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Shift the decimal point by the exponent over the digit string.
        let digits = format!("{int}{frac}");
        let point = int.len() as i64 + i64::from(exp);
        if point.unsigned_abs() > 100_000 {
            return None;
        }
        let (int, frac) = if point <= 0 {
            (
                String::new(),
                format!("{}{digits}", "0".repeat((-point) as usize)),
            )
        } else if point as usize >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            let (i, f) = digits.split_at(point as usize);
            (i.to_string(), f.to_string())
        };
        let int = int.trim_start_matches('0').to_string();
        let frac = frac.trim_end_matches('0').to_string();
        let zero = int.is_empty() && frac.is_empty();
        Some(Decimal {
            negative: negative && !zero,
            int,
            frac,
        })
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            .then_with(|| self.frac.cmp(&other.frac))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Splits `s` on `sep` where it is outside double quotes and parentheses.
fn split_top_level(s: &str, sep: char) -> Result<Vec<&str>, FilterError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '(' => depth += 1,
            ')' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if in_quotes {
        return Err(FilterError::Unterminated);
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// Removes PostgREST-style quotes: `"a,b"` -> `a,b`, with `\"` and `\\` unescaped.
fn unquote(v: &str) -> Result<String, FilterError> {
    let Some(inner) = v.strip_prefix('"') else {
        return Ok(v.to_string());
    };
    let Some(inner) = inner.strip_suffix('"') else {
        return Err(FilterError::Unterminated);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().ok_or(FilterError::Unterminated)?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Parses a filter string; an empty string is no filter.
pub fn parse(filter: &str) -> Result<Vec<RawCondition>, FilterError> {
    if filter.trim().is_empty() {
        return Ok(Vec::new());
    }
    split_top_level(filter, ',')?
        .into_iter()
        .map(parse_condition)
        .collect()
}

fn parse_condition(cond: &str) -> Result<RawCondition, FilterError> {
    let syntax = || FilterError::Syntax(cond.to_string());
    let (column, rest) = cond.split_once('=').ok_or_else(syntax)?;
    let column = column.trim();
    if column.is_empty() {
        return Err(syntax());
    }
    let (negate, rest) = match rest.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (op, value) = rest.split_once('.').ok_or_else(syntax)?;
    let op = Op::parse(op).ok_or_else(|| FilterError::UnknownOperator(op.to_string()))?;
    let values = match op {
        Op::In => {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or(FilterError::InSyntax)?;
            if inner.trim().is_empty() {
                return Err(FilterError::InSyntax);
            }
            let items = split_top_level(inner, ',')?;
            if items.len() > MAX_IN_VALUES {
                return Err(FilterError::TooManyValues(items.len()));
            }
            items
                .into_iter()
                .map(unquote)
                .collect::<Result<Vec<_>, _>>()?
        }
        Op::Is => {
            let v = value.to_ascii_lowercase();
            if !matches!(v.as_str(), "null" | "true" | "false" | "unknown") {
                return Err(FilterError::IsValue(value.to_string()));
            }
            vec![v]
        }
        _ => vec![unquote(value)?],
    };
    Ok(RawCondition {
        column: column.to_string(),
        op,
        negate,
        values,
    })
}

/// The type of a column, as the catalog names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub type_name: String,
    pub kind: CompareKind,
}

/// A condition bound to its column's type: ready to match records.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub op: Op,
    pub negate: bool,
    pub kind: CompareKind,
    /// Parsed values (empty for `is`).
    pub values: Vec<Typed>,
    /// For `is`: null, true, false or unknown.
    pub is_keyword: Option<String>,
}

impl Condition {
    /// For the registry's index: this condition matches only records whose column has this
    /// exact canonical value.
    pub fn eq_index_key(&self) -> Option<String> {
        if self.op == Op::Eq && !self.negate {
            self.values.first()?.index_key()
        } else {
            None
        }
    }

    /// For the registry's index: the canonical values this condition admits, when it admits
    /// only a finite set (`eq`, `in`); a record matches only if its column has one of them.
    pub fn index_keys(&self) -> Option<Vec<String>> {
        match (self.op, self.negate) {
            (Op::Eq, false) => self.eq_index_key().map(|k| vec![k]),
            (Op::In, false) if !self.values.is_empty() => {
                let mut keys: Vec<String> = self
                    .values
                    .iter()
                    .map(Typed::index_key)
                    .collect::<Option<_>>()?;
                keys.sort();
                keys.dedup();
                Some(keys)
            }
            _ => None,
        }
    }
}

/// Checks each condition against the table's columns and parses its values.
pub fn bind(
    raw: &[RawCondition],
    columns: &HashMap<String, ColumnType>,
) -> Result<Vec<Condition>, FilterError> {
    raw.iter()
        .map(|r| {
            let col = columns
                .get(&r.column)
                .ok_or_else(|| FilterError::UnknownColumn(r.column.clone()))?;
            if r.op.is_ordering() && !col.kind.orderable() {
                return Err(FilterError::NotOrderable {
                    column: r.column.clone(),
                    type_name: col.type_name.clone(),
                });
            }
            if r.op == Op::Is {
                let kw = r.values[0].clone();
                if kw != "null" && col.kind != CompareKind::Boolean {
                    return Err(FilterError::BadValue {
                        column: r.column.clone(),
                        type_name: col.type_name.clone(),
                        value: kw,
                    });
                }
                return Ok(Condition {
                    column: r.column.clone(),
                    op: r.op,
                    negate: r.negate,
                    kind: col.kind,
                    values: Vec::new(),
                    is_keyword: Some(kw),
                });
            }
            let values = r
                .values
                .iter()
                .map(|v| {
                    Typed::parse(col.kind, v).ok_or_else(|| FilterError::BadValue {
                        column: r.column.clone(),
                        type_name: col.type_name.clone(),
                        value: v.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Condition {
                column: r.column.clone(),
                op: r.op,
                negate: r.negate,
                kind: col.kind,
                values,
                is_keyword: None,
            })
        })
        .collect()
}

/// The text a JSON record value stands for (what a filter value is compared against).
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Parses a record's value for `kind`; `None` for SQL NULL (or a value we cannot read,
/// which then matches nothing rather than everything).
pub fn record_value(kind: CompareKind, v: Option<&Value>) -> Option<Typed> {
    let text = value_text(v?)?;
    Typed::parse(kind, &text)
}

/// SQL's three-valued result of one condition.
fn eval(cond: &Condition, record: &Row) -> Option<bool> {
    let raw = record.get(&cond.column);
    if cond.op == Op::Is {
        let is_null = matches!(raw, None | Some(Value::Null));
        let kw = cond.is_keyword.as_deref().unwrap_or("null");
        let result = match kw {
            "null" | "unknown" => is_null,
            "true" | "false" => {
                let want = kw == "true";
                !is_null && record_value(cond.kind, raw) == Some(Typed::Boolean(want))
            }
            _ => false,
        };
        return Some(result != cond.negate);
    }
    let value = record_value(cond.kind, raw);
    let result = match cond.op {
        Op::IsDistinct => {
            let target = cond.values.first();
            match (&value, target) {
                (None, _) => Some(true),
                (Some(v), Some(t)) => Some(v.compare(t) != Some(Ordering::Equal)),
                (Some(_), None) => Some(true),
            }
        }
        _ => {
            let v = value?;
            let target = cond.values.first()?;
            let ord = || v.compare(target);
            Some(match cond.op {
                Op::Eq => ord()? == Ordering::Equal,
                Op::Neq => ord()? != Ordering::Equal,
                Op::Lt => ord()? == Ordering::Less,
                Op::Lte => ord()? != Ordering::Greater,
                Op::Gt => ord()? == Ordering::Greater,
                Op::Gte => ord()? != Ordering::Less,
                Op::In => cond
                    .values
                    .iter()
                    .any(|t| v.compare(t) == Some(Ordering::Equal)),
                Op::Is | Op::IsDistinct => unreachable!("handled above"),
            })
        }
    };
    result.map(|b| b != cond.negate)
}

/// Does `record` satisfy every condition (a row matches only when each is true, not null)?
pub fn matches(conds: &[Condition], record: &Row) -> bool {
    conds.iter().all(|c| eval(c, record) == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cols() -> HashMap<String, ColumnType> {
        [
            ("id", "int8", ""),
            ("price", "numeric", ""),
            ("ratio", "float8", ""),
            ("name", "text", ""),
            ("conv", "uuid", ""),
            ("at", "timestamptz", ""),
            ("day", "date", ""),
            ("done", "bool", ""),
            ("kind", "message_kind", "e"),
            ("doc", "jsonb", ""),
        ]
        .into_iter()
        .map(|(n, t, tt)| {
            (
                n.to_string(),
                ColumnType {
                    type_name: t.to_string(),
                    kind: CompareKind::from_pg(t, tt),
                },
            )
        })
        .collect()
    }

    fn m(filter: &str, rec: Value) -> bool {
        let conds = bind(&parse(filter).unwrap(), &cols()).unwrap();
        matches(&conds, &Row::from(rec.as_object().unwrap().clone()))
    }

    #[test]
    fn numbers_compare_numerically_not_as_text() {
        assert!(m("id=eq.10", json!({"id": 10})));
        assert!(m("id=eq.10", json!({"id": "10"})));
        assert!(!m("id=eq.10", json!({"id": 100})));
        assert!(m("id=gt.9", json!({"id": 10})), "10 > 9 though '10' < '9'");
        assert!(m("id=lte.10", json!({"id": 10})));
        assert!(!m("id=lt.10", json!({"id": 10})));
        assert!(m("id=gte.-3", json!({"id": -2})));
        assert!(m("price=eq.1.50", json!({"price": 1.5})));
        assert!(m("price=lt.10", json!({"price": 9.99})));
        assert!(m("price=gt.-0.5", json!({"price": 0})));
        assert!(m("ratio=gt.0.25", json!({"ratio": 0.5})));
    }

    #[test]
    fn numeric_is_exact_for_large_and_fractional_values() {
        let big = "123456789012345678901234567890.000000000000000001";
        assert!(m(
            &format!("price=gt.{}", &big[..big.len() - 1]),
            json!({ "price": 1e40 })
        ));
        let d = |s| Decimal::parse(s).unwrap();
        assert!(d("0.3") == d("0.30"));
        assert!(d("-0") == d("0"));
        assert!(d("-2.5") < d("-2.4"));
        assert!(d("10") > d("9.999"));
        assert!(Decimal::parse("1.2.3").is_none());
        assert!(d("1e3") == d("1000"));
        assert!(d("2.5E-3") == d("0.0025"));
    }

    #[test]
    fn text_uuid_and_enum_compare_by_value() {
        assert!(m("name=eq.alice", json!({"name": "alice"})));
        assert!(!m("name=eq.alice", json!({"name": "Alice"})));
        assert!(m("name=neq.alice", json!({"name": "bob"})));
        assert!(m("name=lt.b", json!({"name": "a"})));
        let u = "5f0c7a5e-1a8e-4b2e-9d5e-0b9f1c2d3e4f";
        assert!(m(
            &format!("conv=eq.{}", u.to_uppercase()),
            json!({ "conv": u })
        ));
        assert!(!m(
            &format!("conv=eq.{u}"),
            json!({"conv": "00000000-0000-0000-0000-000000000000"})
        ));
        assert!(m("kind=eq.text", json!({"kind": "text"})));
        assert!(m("kind=in.(image,video)", json!({"kind": "video"})));
    }

    #[test]
    fn timestamps_compare_as_instants_across_formats() {
        let rec = json!({"at": "2026-01-01 10:00:00.5+00"});
        assert!(m("at=gt.2026-01-01T09:59:59Z", rec.clone()));
        assert!(m("at=eq.2026-01-01T11:00:00.5+01:00", rec.clone()));
        assert!(m("at=lt.2026-01-01 10:00:01+00", rec.clone()));
        assert!(!m("at=lt.2026-01-01T10:00:00Z", rec));
        assert!(m("day=gte.2026-02-01", json!({"day": "2026-02-03"})));
    }

    #[test]
    fn booleans_and_is() {
        assert!(m("done=eq.true", json!({"done": true})));
        assert!(m("done=is.false", json!({"done": false})));
        assert!(!m("done=is.true", json!({"done": null})));
        assert!(m("name=is.null", json!({"name": null})));
        assert!(m("name=is.null", json!({})), "a missing column is null");
        assert!(m("name=not.is.null", json!({"name": "x"})));
    }

    #[test]
    fn null_never_matches_a_comparison_even_negated() {
        assert!(!m("id=eq.1", json!({"id": null})));
        assert!(!m("id=neq.1", json!({"id": null})));
        assert!(!m("id=not.eq.1", json!({"id": null})));
        assert!(!m("id=in.(1,2)", json!({})));
        assert!(m("id=isdistinct.1", json!({"id": null})));
        assert!(!m("id=isdistinct.1", json!({"id": 1})));
    }

    #[test]
    fn in_lists_quotes_and_negation() {
        assert!(m("id=in.(1,2,3)", json!({"id": 2})));
        assert!(!m("id=in.(1,2,3)", json!({"id": 4})));
        assert!(m("id=not.in.(1,2,3)", json!({"id": 4})));
        assert!(m(r#"name=in.("a,b",c)"#, json!({"name": "a,b"})));
        assert!(!m(r#"name=in.("a,b",c)"#, json!({"name": "a"})));
        assert!(m(r#"name=eq."say \"hi\"""#, json!({"name": "say \"hi\""})));
        assert!(
            m("name=eq.", json!({"name": ""})),
            "eq. with nothing is the empty string"
        );
    }

    #[test]
    fn several_filters_are_anded() {
        let f = "id=gt.0,id=lt.100,name=neq.x";
        assert!(m(f, json!({"id": 50, "name": "y"})));
        assert!(!m(f, json!({"id": 150, "name": "y"})));
        assert!(!m(f, json!({"id": 50, "name": "x"})));
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(parse("").unwrap().is_empty());
        assert!(matches(&[], &Row::default()));
    }

    #[test]
    fn malformed_filters_are_refused_with_a_reason() {
        assert_eq!(parse("id"), Err(FilterError::Syntax("id".into())));
        assert_eq!(parse("id=1"), Err(FilterError::Syntax("id=1".into())));
        assert_eq!(parse("=eq.1"), Err(FilterError::Syntax("=eq.1".into())));
        assert_eq!(
            parse("id=like.%x%"),
            Err(FilterError::UnknownOperator("like".into()))
        );
        assert_eq!(parse("id=in.1,2"), Err(FilterError::InSyntax));
        assert_eq!(parse("id=in.()"), Err(FilterError::InSyntax));
        assert_eq!(parse(r#"name=eq."open"#), Err(FilterError::Unterminated));
        assert_eq!(
            parse("x=is.maybe"),
            Err(FilterError::IsValue("maybe".into()))
        );
        let many = (0..101)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            parse(&format!("id=in.({many})")),
            Err(FilterError::TooManyValues(101))
        );
        let hundred = (0..100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse(&format!("id=in.({hundred})")).is_ok());
    }

    #[test]
    fn binding_checks_columns_and_values_against_their_types() {
        let b = |f: &str| bind(&parse(f).unwrap(), &cols());
        assert_eq!(
            b("nope=eq.1"),
            Err(FilterError::UnknownColumn("nope".into()))
        );
        assert!(matches!(b("id=eq.abc"), Err(FilterError::BadValue { .. })));
        assert!(matches!(
            b("conv=eq.not-a-uuid"),
            Err(FilterError::BadValue { .. })
        ));
        assert!(matches!(
            b("at=gt.yesterday"),
            Err(FilterError::BadValue { .. })
        ));
        assert!(matches!(
            b("id=in.(1,x)"),
            Err(FilterError::BadValue { .. })
        ));
        assert!(matches!(
            b("kind=lt.text"),
            Err(FilterError::NotOrderable { .. })
        ));
        assert!(matches!(
            b("doc=gt.1"),
            Err(FilterError::NotOrderable { .. })
        ));
        assert!(matches!(b("id=is.true"), Err(FilterError::BadValue { .. })));
        assert!(b("id=is.null").is_ok());
    }

    #[test]
    fn eq_conditions_expose_a_canonical_index_key() {
        let c = bind(&parse("id=eq.007,name=neq.a").unwrap(), &cols()).unwrap();
        assert_eq!(c[0].eq_index_key().as_deref(), Some("7"));
        assert_eq!(c[1].eq_index_key(), None);
        let rec = record_value(CompareKind::Integer, Some(&json!(7))).unwrap();
        assert_eq!(rec.index_key().as_deref(), Some("7"));
        let u = bind(
            &parse("conv=eq.5F0C7A5E-1A8E-4B2E-9D5E-0B9F1C2D3E4F").unwrap(),
            &cols(),
        )
        .unwrap();
        assert_eq!(
            u[0].eq_index_key().as_deref(),
            Some("5f0c7a5e-1a8e-4b2e-9d5e-0b9f1c2d3e4f")
        );
    }
}
