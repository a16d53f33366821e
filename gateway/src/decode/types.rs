//! Which [`ValueKind`] a column type has: built-in types by OID, everything else (enums,
//! domains, arrays of those, extension types) from its pg_type row.

use std::collections::HashMap;

use super::value::ValueKind;

/// What a column's type is called and how its values become JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub oid: u32,
    /// pg_type.typname (`int8`, `_int4`, an enum's or domain's own name).
    pub name: String,
    pub kind: ValueKind,
}

/// The pg_type columns resolution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogType {
    pub oid: u32,
    pub name: String,
    /// typtype: `b` base, `c` composite, `d` domain, `e` enum, `p` pseudo, `r` range, `m` multirange.
    pub typtype: u8,
    /// typcategory: `A` for arrays.
    pub category: u8,
    /// typbasetype (domains).
    pub base: u32,
    /// typelem (arrays).
    pub element: u32,
    pub delimiter: u8,
}

use ValueKind::*;

/// Built-in scalar types whose JSON form is not a plain string, plus the common ones, so
/// most tables need no catalog round trip. OIDs are fixed by PostgreSQL (pg_type.dat).
const SCALARS: &[(u32, &str, ValueKind)] = &[
    (16, "bool", Bool),
    (17, "bytea", Text),
    (18, "char", Text),
    (19, "name", Text),
    (20, "int8", Int),
    (21, "int2", Int),
    (23, "int4", Int),
    (25, "text", Text),
    (26, "oid", Int),
    (28, "xid", Int),
    (114, "json", Json),
    (142, "xml", Text),
    (600, "point", Text),
    (650, "cidr", Text),
    (700, "float4", Float),
    (701, "float8", Float),
    (790, "money", Text),
    (829, "macaddr", Text),
    (869, "inet", Text),
    (1042, "bpchar", Text),
    (1043, "varchar", Text),
    (1082, "date", Text),
    (1083, "time", Text),
    (1114, "timestamp", Timestamp),
    (1184, "timestamptz", TimestampTz),
    (1186, "interval", Text),
    (1266, "timetz", Text),
    (1560, "bit", Text),
    (1562, "varbit", Text),
    (1700, "numeric", Numeric),
    (2950, "uuid", Text),
    (3614, "tsvector", Text),
    (3802, "jsonb", Json),
    (4072, "jsonpath", Text),
    (5069, "xid8", Int),
];

/// Built-in array types: (array oid, name, element oid).
const ARRAYS: &[(u32, &str, u32)] = &[
    (1000, "_bool", 16),
    (1001, "_bytea", 17),
    (1002, "_char", 18),
    (1003, "_name", 19),
    (1016, "_int8", 20),
    (1005, "_int2", 21),
    (1007, "_int4", 23),
    (1009, "_text", 25),
    (1028, "_oid", 26),
    (199, "_json", 114),
    (143, "_xml", 142),
    (1017, "_point", 600),
    (651, "_cidr", 650),
    (1021, "_float4", 700),
    (1022, "_float8", 701),
    (791, "_money", 790),
    (1040, "_macaddr", 829),
    (1041, "_inet", 869),
    (1014, "_bpchar", 1042),
    (1015, "_varchar", 1043),
    (1182, "_date", 1082),
    (1183, "_time", 1083),
    (1115, "_timestamp", 1114),
    (1185, "_timestamptz", 1184),
    (1187, "_interval", 1186),
    (1270, "_timetz", 1266),
    (1561, "_bit", 1560),
    (1563, "_varbit", 1562),
    (1231, "_numeric", 1700),
    (2951, "_uuid", 2950),
    (3807, "_jsonb", 3802),
];

/// A built-in type we know without asking the catalog.
pub fn builtin(oid: u32) -> Option<TypeInfo> {
    if let Some((_, name, kind)) = SCALARS.iter().find(|(o, _, _)| *o == oid) {
        return Some(TypeInfo {
            oid,
            name: (*name).to_owned(),
            kind: kind.clone(),
        });
    }
    let (_, name, elem) = ARRAYS.iter().find(|(o, _, _)| *o == oid)?;
    let element = builtin(*elem)?.kind;
    Some(TypeInfo {
        oid,
        name: (*name).to_owned(),
        kind: ValueKind::array_of(element),
    })
}

/// Resolves `oid` from built-ins and catalog rows: domains take their base type's kind,
/// arrays their element's, enums and anything unrecognised are text. Unknown OIDs (a
/// catalog row we could not get) resolve to text named `unknown`.
pub fn resolve(oid: u32, catalog: &HashMap<u32, CatalogType>) -> TypeInfo {
    resolve_depth(oid, catalog, 0)
}

fn resolve_depth(oid: u32, catalog: &HashMap<u32, CatalogType>, depth: usize) -> TypeInfo {
    if let Some(t) = builtin(oid) {
        return t;
    }
    let Some(row) = catalog.get(&oid) else {
        return TypeInfo {
            oid,
            name: "unknown".into(),
            kind: ValueKind::Text,
        };
    };
    // Domains over domains and arrays of domains chain; a cycle cannot exist in a real
    // catalog, but a bound keeps a bad row from recursing forever.
    let kind = if depth > 16 {
        ValueKind::Text
    } else if row.typtype == b'd' && row.base != 0 {
        resolve_depth(row.base, catalog, depth + 1).kind
    } else if row.category == b'A' && row.element != 0 {
        ValueKind::Array {
            element: Box::new(resolve_depth(row.element, catalog, depth + 1).kind),
            delimiter: row.delimiter,
        }
    } else {
        ValueKind::Text
    };
    TypeInfo {
        oid,
        name: row.name.clone(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        oid: u32,
        name: &str,
        typtype: u8,
        category: u8,
        base: u32,
        element: u32,
    ) -> CatalogType {
        CatalogType {
            oid,
            name: name.into(),
            typtype,
            category,
            base,
            element,
            delimiter: b',',
        }
    }

    #[test]
    fn builtins_resolve_without_the_catalog() {
        let none = HashMap::new();
        assert_eq!(resolve(20, &none).kind, ValueKind::Int);
        assert_eq!(resolve(20, &none).name, "int8");
        assert_eq!(
            resolve(3807, &none).kind,
            ValueKind::array_of(ValueKind::Json)
        );
        assert_eq!(resolve(1184, &none).kind, ValueKind::TimestampTz);
    }

    #[test]
    fn domains_enums_and_their_arrays_resolve_through_the_catalog() {
        let mut cat = HashMap::new();
        cat.insert(16400, row(16400, "mood", b'e', b'E', 0, 0));
        cat.insert(16399, row(16399, "_mood", b'b', b'A', 0, 16400));
        cat.insert(16500, row(16500, "positive", b'd', b'N', 23, 0));
        cat.insert(16501, row(16501, "small_positive", b'd', b'N', 16500, 0));
        cat.insert(16502, row(16502, "_small_positive", b'b', b'A', 0, 16501));
        assert_eq!(resolve(16400, &cat).kind, ValueKind::Text);
        assert_eq!(resolve(16400, &cat).name, "mood");
        assert_eq!(
            resolve(16399, &cat).kind,
            ValueKind::array_of(ValueKind::Text)
        );
        assert_eq!(resolve(16501, &cat).kind, ValueKind::Int);
        assert_eq!(resolve(16501, &cat).name, "small_positive");
        assert_eq!(
            resolve(16502, &cat).kind,
            ValueKind::array_of(ValueKind::Int)
        );
    }

    #[test]
    fn unknown_types_are_text_and_cycles_end() {
        let mut cat = HashMap::new();
        assert_eq!(resolve(99999, &cat).kind, ValueKind::Text);
        cat.insert(1, row(1, "loop_a", b'd', b'N', 2, 0));
        cat.insert(2, row(2, "loop_b", b'd', b'N', 1, 0));
        assert_eq!(resolve(1, &cat).kind, ValueKind::Text);
    }
}
