//! The Phoenix/Supabase Realtime wire format. Pure: frames in, messages out, and back.
//!
//! - vsn 1.0.0: text frames holding `{"join_ref","ref","topic","event","payload"}`.
//! - vsn 2.0.0: text frames holding `[join_ref, ref, topic, event, payload]`, plus binary
//!   broadcast frames: kind 3 (`user_broadcast_push`, client to server) and kind 4
//!   (`user_broadcast`, server to client), whose string fields carry one-byte lengths.

use std::sync::Arc;

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    /// `None` for a version we do not speak. No `vsn` at all means 1.0.0.
    pub fn parse(v: Option<&str>) -> Option<Vsn> {
        match v {
            None | Some("1.0.0") | Some("1.0") => Some(Vsn::V1),
            Some("2.0.0") | Some("2.0") => Some(Vsn::V2),
            Some(_) => None,
        }
    }
}

const KIND_USER_BROADCAST_PUSH: u8 = 3;
const KIND_USER_BROADCAST: u8 = 4;
const ENCODING_BINARY: u8 = 0;
const ENCODING_JSON: u8 = 1;

/// A message from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub join_ref: Option<String>,
    pub r#ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
    /// The raw bytes of a binary-encoded broadcast (kind 3 frame with binary encoding); its
    /// `payload` then holds only `type`, `event` and `meta`.
    pub binary: Option<Vec<u8>>,
}

/// A frame we could not read, with whatever we could salvage to address the error reply.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub reason: String,
    pub join_ref: Option<String>,
    pub r#ref: Option<String>,
    pub topic: Option<String>,
}

impl DecodeError {
    fn bare(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            join_ref: None,
            r#ref: None,
            topic: None,
        }
    }
}

/// Refs are strings in every client we know; numbers are accepted and read as text.
fn ref_field(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err("ref and join_ref must be strings or null".into()),
    }
}

/// Decodes a text frame in the socket's framing.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Inbound, DecodeError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::bare(format!("frame is not valid JSON: {e}")))?;
    let (join_ref, r#ref, topic, event, payload) = match (vsn, value) {
        (Vsn::V2, Value::Array(mut a)) => {
            if a.len() != 5 {
                return Err(DecodeError::bare(format!(
                    "frame must be an array of 5 elements [join_ref, ref, topic, event, payload], got {}",
                    a.len()
                )));
            }
            let payload = a.pop().unwrap_or(Value::Null);
            let event = a.pop().unwrap_or(Value::Null);
            let topic = a.pop().unwrap_or(Value::Null);
            let r = a.pop();
            let j = a.pop();
            (j, r, topic, event, payload)
        }
        (Vsn::V1, Value::Object(mut o)) => (
            o.remove("join_ref"),
            o.remove("ref"),
            o.remove("topic").unwrap_or(Value::Null),
            o.remove("event").unwrap_or(Value::Null),
            o.remove("payload").unwrap_or(Value::Null),
        ),
        (Vsn::V2, _) => {
            return Err(DecodeError::bare(
                "frame must be a JSON array [join_ref, ref, topic, event, payload] (vsn 2.0.0)",
            ))
        }
        (Vsn::V1, _) => {
            return Err(DecodeError::bare(
                "frame must be a JSON object with topic, event, payload and ref (vsn 1.0.0)",
            ))
        }
    };
    let mut err = DecodeError::bare("");
    err.r#ref = ref_field(r#ref.as_ref()).ok().flatten();
    err.join_ref = ref_field(join_ref.as_ref()).ok().flatten();
    err.topic = topic.as_str().map(str::to_string);
    let fail = |mut e: DecodeError, reason: String| {
        e.reason = reason;
        Err(e)
    };
    let r#ref = match ref_field(r#ref.as_ref()) {
        Ok(r) => r,
        Err(reason) => return fail(err, reason),
    };
    let join_ref = match ref_field(join_ref.as_ref()) {
        Ok(r) => r,
        Err(reason) => return fail(err, reason),
    };
    let Value::String(topic) = topic else {
        return fail(err, "topic must be a string".into());
    };
    let Value::String(event) = event else {
        return fail(err, "event must be a string".into());
    };
    if !payload.is_object() {
        return fail(err, "payload must be a JSON object".into());
    }
    Ok(Inbound {
        join_ref,
        r#ref,
        topic,
        event,
        payload,
        binary: None,
    })
}

/// Decodes a binary frame (vsn 2.0.0 only): a kind 3 `user_broadcast_push`.
pub fn decode_binary(vsn: Vsn, bytes: &[u8]) -> Result<Inbound, DecodeError> {
    if vsn != Vsn::V2 {
        return Err(DecodeError::bare(
            "binary frames are only understood with vsn 2.0.0",
        ));
    }
    let short = || DecodeError::bare("binary frame is shorter than its header says");
    let (&kind, rest) = bytes.split_first().ok_or_else(short)?;
    if kind != KIND_USER_BROADCAST_PUSH {
        return Err(DecodeError::bare(format!(
            "binary frame kind {kind} is not understood (only 3, user_broadcast_push)"
        )));
    }
    if rest.len() < 6 {
        return Err(short());
    }
    let lens = [rest[0], rest[1], rest[2], rest[3], rest[4]].map(usize::from);
    let encoding = rest[5];
    let mut at = 6;
    let mut field = |len: usize| -> Result<String, DecodeError> {
        let s = rest.get(at..at + len).ok_or_else(short)?;
        at += len;
        String::from_utf8(s.to_vec())
            .map_err(|_| DecodeError::bare("binary frame field is not UTF-8"))
    };
    let join_ref = field(lens[0])?;
    let r#ref = field(lens[1])?;
    let topic = field(lens[2])?;
    let event = field(lens[3])?;
    let meta = field(lens[4])?;
    let body = &rest[at..];
    let salvage = |reason: &str| DecodeError {
        reason: reason.into(),
        join_ref: Some(join_ref.clone()).filter(|s| !s.is_empty()),
        r#ref: Some(r#ref.clone()).filter(|s| !s.is_empty()),
        topic: Some(topic.clone()),
    };
    let mut payload = Map::new();
    payload.insert("type".into(), Value::String("broadcast".into()));
    payload.insert("event".into(), Value::String(event));
    if !meta.is_empty() {
        let meta: Value = serde_json::from_str(&meta)
            .map_err(|_| salvage("binary frame metadata is not JSON"))?;
        // realtime-js puts allowed extra keys of the broadcast payload here.
        if let Value::Object(m) = meta {
            for (k, v) in m {
                payload.entry(k).or_insert(v);
            }
        }
    }
    let binary = match encoding {
        ENCODING_JSON => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|_| salvage("binary frame payload is not JSON"))?;
            payload.insert("payload".into(), v);
            None
        }
        ENCODING_BINARY => Some(body.to_vec()),
        other => {
            return Err(salvage(&format!(
                "binary frame payload encoding {other} is not understood"
            )))
        }
    };
    Ok(Inbound {
        join_ref: Some(join_ref).filter(|s| !s.is_empty()),
        r#ref: Some(r#ref).filter(|s| !s.is_empty()),
        topic,
        event: "broadcast".into(),
        payload: Value::Object(payload),
        binary,
    })
}

/// A message to a client; `payload` is JSON text, so a payload shared by many recipients
/// is serialized once.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerMessage {
    pub join_ref: Option<Arc<str>>,
    pub r#ref: Option<String>,
    pub topic: Arc<str>,
    pub event: &'static str,
    pub payload: String,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn json_opt(s: Option<&str>) -> String {
    s.map(json_str).unwrap_or_else(|| "null".into())
}

/// Encodes a message as a text frame in the socket's framing.
pub fn encode_text(vsn: Vsn, m: &ServerMessage) -> String {
    let join_ref = json_opt(m.join_ref.as_deref());
    let r#ref = json_opt(m.r#ref.as_deref());
    let topic = json_str(&m.topic);
    let event = json_str(m.event);
    match vsn {
        Vsn::V1 => format!(
            r#"{{"join_ref":{join_ref},"ref":{ref},"topic":{topic},"event":{event},"payload":{}}}"#,
            m.payload
        ),
        Vsn::V2 => format!("[{join_ref},{ref},{topic},{event},{}]", m.payload),
    }
}

/// A user broadcast to deliver: its body is JSON (shared text) or raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastOut {
    pub topic: Arc<str>,
    pub event: String,
    pub body: BroadcastBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BroadcastBody {
    Json(String),
    Binary(Vec<u8>),
}

/// The frame for a broadcast, or `None` when the socket cannot represent it (raw bytes on
/// a vsn 1.0.0 socket, which has no binary frames; the sender's own vsn 1.0.0 peers never
/// produce such broadcasts).
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

pub fn encode_broadcast(vsn: Vsn, b: &BroadcastOut) -> Option<Frame> {
    let fits = b.topic.len() <= 255 && b.event.len() <= 255;
    match (vsn, &b.body) {
        (Vsn::V2, body) if fits => {
            let (encoding, bytes): (u8, &[u8]) = match body {
                BroadcastBody::Json(s) => (ENCODING_JSON, s.as_bytes()),
                BroadcastBody::Binary(v) => (ENCODING_BINARY, v),
            };
            let mut out = Vec::with_capacity(5 + b.topic.len() + b.event.len() + bytes.len());
            out.push(KIND_USER_BROADCAST);
            out.push(b.topic.len() as u8);
            out.push(b.event.len() as u8);
            out.push(0); // no metadata
            out.push(encoding);
            out.extend_from_slice(b.topic.as_bytes());
            out.extend_from_slice(b.event.as_bytes());
            out.extend_from_slice(bytes);
            Some(Frame::Binary(out))
        }
        (_, BroadcastBody::Json(payload)) => {
            let m = ServerMessage {
                join_ref: None,
                r#ref: None,
                topic: b.topic.clone(),
                event: "broadcast",
                payload: format!(
                    r#"{{"type":"broadcast","event":{},"payload":{payload}}}"#,
                    json_str(&b.event)
                ),
            };
            Some(Frame::Text(encode_text(vsn, &m)))
        }
        (Vsn::V1, BroadcastBody::Binary(_)) | (Vsn::V2, BroadcastBody::Binary(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vsn_defaults_to_1_and_refuses_unknown_versions() {
        assert_eq!(Vsn::parse(None), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Some(Vsn::V2));
        assert_eq!(Vsn::parse(Some("3.0.0")), None);
    }

    #[test]
    fn v1_object_frames_decode() {
        let m = decode_text(
            Vsn::V1,
            r#"{"topic":"realtime:room","event":"phx_join","payload":{"config":{}},"ref":"1","join_ref":"1"}"#,
        )
        .unwrap();
        assert_eq!(m.topic, "realtime:room");
        assert_eq!(m.event, "phx_join");
        assert_eq!(m.r#ref.as_deref(), Some("1"));
        assert_eq!(m.payload, json!({"config": {}}));
    }

    #[test]
    fn v2_array_frames_decode() {
        let m = decode_text(Vsn::V2, r#"[null,"7","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!(m.join_ref, None);
        assert_eq!(m.r#ref.as_deref(), Some("7"));
        assert_eq!(m.topic, "phoenix");
    }

    #[test]
    fn framing_must_match_the_version() {
        assert!(decode_text(
            Vsn::V2,
            r#"{"topic":"x","event":"e","payload":{},"ref":"1"}"#
        )
        .unwrap_err()
        .reason
        .contains("array"));
        assert!(decode_text(Vsn::V1, r#"[null,"1","x","e",{}]"#)
            .unwrap_err()
            .reason
            .contains("object"));
    }

    #[test]
    fn malformed_frames_keep_what_can_address_a_reply() {
        let e = decode_text(Vsn::V2, r#"["1","2","realtime:a",5,{}]"#).unwrap_err();
        assert_eq!(e.r#ref.as_deref(), Some("2"));
        assert_eq!(e.topic.as_deref(), Some("realtime:a"));
        assert!(e.reason.contains("event"));
        let e = decode_text(Vsn::V2, r#"["1","2","realtime:a","x","nope"]"#).unwrap_err();
        assert!(e.reason.contains("payload"));
        let e = decode_text(Vsn::V2, "{{{").unwrap_err();
        assert!(e.reason.contains("JSON"));
        assert_eq!(e.r#ref, None);
        assert!(decode_text(Vsn::V2, "[1,2]").is_err());
    }

    fn push_frame(
        join_ref: &str,
        r: &str,
        topic: &str,
        event: &str,
        meta: &str,
        enc: u8,
        body: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![
            3,
            join_ref.len() as u8,
            r.len() as u8,
            topic.len() as u8,
            event.len() as u8,
            meta.len() as u8,
            enc,
        ];
        for s in [join_ref, r, topic, event, meta] {
            f.extend_from_slice(s.as_bytes());
        }
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn binary_user_broadcast_push_decodes_json_and_raw_payloads() {
        let f = push_frame(
            "1",
            "5",
            "realtime:room",
            "typing",
            "",
            1,
            br#"{"who":"a"}"#,
        );
        let m = decode_binary(Vsn::V2, &f).unwrap();
        assert_eq!(m.event, "broadcast");
        assert_eq!(m.topic, "realtime:room");
        assert_eq!(m.r#ref.as_deref(), Some("5"));
        assert_eq!(
            m.payload,
            json!({"type": "broadcast", "event": "typing", "payload": {"who": "a"}})
        );
        let f = push_frame("1", "", "realtime:room", "blob", "", 0, &[0, 1, 2]);
        let m = decode_binary(Vsn::V2, &f).unwrap();
        assert_eq!(m.binary.as_deref(), Some(&[0u8, 1, 2][..]));
        assert_eq!(m.r#ref, None);
    }

    #[test]
    fn bad_binary_frames_are_errors_not_panics() {
        assert!(decode_binary(Vsn::V1, &[3]).is_err());
        assert!(decode_binary(Vsn::V2, &[]).is_err());
        assert!(decode_binary(Vsn::V2, &[9, 0, 0]).is_err());
        assert!(decode_binary(Vsn::V2, &[3, 5, 5, 5, 5, 5, 1, b'a']).is_err());
        let f = push_frame("1", "2", "realtime:x", "e", "", 1, b"not json");
        let e = decode_binary(Vsn::V2, &f).unwrap_err();
        assert_eq!(e.r#ref.as_deref(), Some("2"));
        // Every truncation of a valid frame is an error, never a panic.
        let f = push_frame("1", "2", "realtime:x", "e", r#"{"a":1}"#, 1, b"{}");
        for n in 0..f.len() - 2 {
            let _ = decode_binary(Vsn::V2, &f[..n]);
        }
    }

    #[test]
    fn messages_encode_in_both_framings() {
        let m = ServerMessage {
            join_ref: Some("1".into()),
            r#ref: Some("2".into()),
            topic: "realtime:a".into(),
            event: "phx_reply",
            payload: r#"{"status":"ok","response":{}}"#.into(),
        };
        let v1: Value = serde_json::from_str(&encode_text(Vsn::V1, &m)).unwrap();
        assert_eq!(
            v1,
            json!({"join_ref":"1","ref":"2","topic":"realtime:a","event":"phx_reply",
                   "payload":{"status":"ok","response":{}}})
        );
        let v2: Value = serde_json::from_str(&encode_text(Vsn::V2, &m)).unwrap();
        assert_eq!(
            v2,
            json!(["1", "2", "realtime:a", "phx_reply", {"status":"ok","response":{}}])
        );
    }

    #[test]
    fn broadcasts_are_binary_kind_4_on_v2_and_json_on_v1() {
        let b = BroadcastOut {
            topic: "realtime:room".into(),
            event: "typing".into(),
            body: BroadcastBody::Json(r#"{"x":1}"#.into()),
        };
        let Some(Frame::Binary(f)) = encode_broadcast(Vsn::V2, &b) else {
            panic!("expected a binary frame");
        };
        assert_eq!(&f[..5], &[4, 13, 6, 0, 1]);
        assert_eq!(&f[5..18], b"realtime:room");
        assert_eq!(&f[18..24], b"typing");
        assert_eq!(&f[24..], br#"{"x":1}"#);
        let Some(Frame::Text(t)) = encode_broadcast(Vsn::V1, &b) else {
            panic!("expected a text frame");
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(
            v["payload"],
            json!({"type":"broadcast","event":"typing","payload":{"x":1}})
        );
        let raw = BroadcastOut {
            body: BroadcastBody::Binary(vec![1]),
            ..b
        };
        assert!(encode_broadcast(Vsn::V1, &raw).is_none());
    }
}
