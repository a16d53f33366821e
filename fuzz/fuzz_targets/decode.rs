//! Fuzzes the pure decoder: walsender frames, pgoutput messages (inside and outside a
//! streamed block) and value conversion. Any input must give a value or an error, never
//! a panic, a hang or an allocation the input cannot justify. The json/jsonb reader is
//! also compared with serde_json: both must agree on every document, and on which fail.
//!
//! Run (stable toolchain; cargo-fuzz needs RUSTC_BOOTSTRAP for its sanitizer flags):
//!   cargo install cargo-fuzz
//!   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time=60 -rss_limit_mb=1024

#![no_main]

use libfuzzer_sys::fuzz_target;

// The decoder's own files, compiled here without the rest of the gateway: it depends on
// nothing but std and serde_json, by design.
#[allow(dead_code, unused_imports)]
#[path = "../../gateway/src/decode/mod.rs"]
mod decode;

use decode::{Cell, OldTuple, PgOutput, ValueKind, WalFrame};

fn kinds() -> Vec<ValueKind> {
    vec![
        ValueKind::Bool,
        ValueKind::Int,
        ValueKind::Float,
        ValueKind::Numeric,
        ValueKind::Json,
        ValueKind::Timestamp,
        ValueKind::TimestampTz,
        ValueKind::Text,
        ValueKind::array_of(ValueKind::Int),
        ValueKind::array_of(ValueKind::Json),
        ValueKind::array_of(ValueKind::TimestampTz),
        ValueKind::Array {
            element: Box::new(ValueKind::Text),
            delimiter: b';',
        },
    ]
}

fn convert_cells(cells: &[Cell<'_>], kinds: &[ValueKind]) {
    for (i, cell) in cells.iter().enumerate() {
        let kind = &kinds[i % kinds.len()];
        match cell {
            Cell::Text(t) => {
                let _ = decode::text_to_json(kind, t);
            }
            Cell::Binary(b) => {
                let _ = decode::binary_to_json(b);
            }
            Cell::Null | Cell::UnchangedToast => {}
        }
    }
}

fn exercise(msg: &PgOutput<'_>, kinds: &[ValueKind]) {
    match msg {
        PgOutput::Insert(m) => convert_cells(&m.new, kinds),
        PgOutput::Update(m) => {
            convert_cells(&m.new, kinds);
            if let Some(OldTuple::Key(t) | OldTuple::Full(t)) = &m.old {
                convert_cells(t, kinds);
            }
        }
        PgOutput::Delete(m) => convert_cells(m.old.tuple(), kinds),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kinds = kinds();
    match mode % 5 {
        0 | 1 => {
            if let Ok(msg) = decode::parse(rest, mode % 4 == 1) {
                exercise(&msg, &kinds);
            }
        }
        2 => {
            if let Ok(WalFrame::XLogData { data, .. }) = decode::parse_frame(rest) {
                if let Ok(msg) = decode::parse(data, false) {
                    exercise(&msg, &kinds);
                }
            }
        }
        3 => {
            let Some((&k, text)) = rest.split_first() else {
                return;
            };
            let _ = decode::text_to_json(&kinds[k as usize % kinds.len()], text);
        }
        _ => {
            // serde_json reads its private tokens as a number or raw value; ours keeps
            // them as the keys they are (documented in decode/json.rs).
            if rest.windows(20).any(|w| w == b"$serde_json::private") {
                return;
            }
            let ours = decode::json::parse(rest);
            let theirs: Option<serde_json::Value> = serde_json::from_slice(rest).ok();
            assert_eq!(ours, theirs, "json reader disagrees with serde_json");
            if let (Some(a), Some(b)) = (&ours, &theirs) {
                assert_eq!(a.to_string(), b.to_string());
            }
        }
    }
});
