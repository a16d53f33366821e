//! A small Phoenix/Supabase Realtime client for the realtime tests: real WebSockets
//! (tokio-tungstenite) against a real gateway, in either framing.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ripple_tests::TestDb;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// A gateway whose `App` the test can reach (for the fan-out, which the replication stream
/// drives in production).
pub struct AppGateway {
    pub addr: std::net::SocketAddr,
    pub app: Arc<ripple::http::App>,
    pub anon_key: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for AppGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl AppGateway {
    pub fn token_for(&self, user: uuid::Uuid, ttl_secs: i64) -> String {
        self.app
            .jwt
            .mint_for("authenticated", Some(&user.to_string()), ttl_secs)
            .expect("mint")
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.app.jwt.mint(claims).expect("mint")
    }
}

pub async fn spawn_app(db: &TestDb, config: ripple::config::ServeConfig) -> AppGateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = ripple::http::App::new(config, &db.url).expect("app");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = app.clone();
    tokio::spawn(async move {
        let _ = ripple::http::serve(listener, served, async {
            let _ = rx.await;
        })
        .await;
    });
    let anon_key = app.jwt.mint_for("anon", None, 3600).unwrap();
    AppGateway {
        addr,
        app,
        anon_key,
        stop: Some(tx),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub join_ref: Option<String>,
    pub r#ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub v2: bool,
    next: u64,
}

fn opt(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

pub fn url(addr: std::net::SocketAddr, apikey: &str, vsn: &str) -> String {
    format!("ws://{addr}/realtime/v1/websocket?apikey={apikey}&vsn={vsn}")
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr, apikey: &str, vsn: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url(addr, apikey, vsn))
            .await
            .expect("websocket connect");
        Client {
            ws,
            v2: vsn == "2.0.0",
            next: 0,
        }
    }

    /// Connects with a tiny receive buffer, so a client that stops reading backs up fast.
    pub async fn connect_small_buffer(
        addr: std::net::SocketAddr,
        apikey: &str,
        vsn: &str,
    ) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) =
            tokio_tungstenite::client_async(url(addr, apikey, vsn), MaybeTlsStream::Plain(stream))
                .await
                .expect("websocket connect");
        Client {
            ws,
            v2: vsn == "2.0.0",
            next: 0,
        }
    }

    pub fn make_ref(&mut self) -> String {
        self.next += 1;
        self.next.to_string()
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Sends a message in this client's framing; returns its ref.
    pub async fn send(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.make_ref();
        let text = if self.v2 {
            json!([join_ref, r, topic, event, payload]).to_string()
        } else {
            json!({"join_ref": join_ref, "ref": r, "topic": topic, "event": event, "payload": payload})
                .to_string()
        };
        self.send_raw(Message::Text(text.into())).await;
        r
    }

    /// The next message (decoding kind 4 binary broadcasts too); panics after `WAIT`.
    pub async fn recv(&mut self) -> Msg {
        self.try_recv(WAIT)
            .await
            .expect("a message before the timeout")
    }

    /// The next message, `None` on timeout or close.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Msg> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match frame {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("server sent JSON");
                    return Some(if self.v2 {
                        Msg {
                            join_ref: opt(&v[0]),
                            r#ref: opt(&v[1]),
                            topic: v[2].as_str().unwrap().into(),
                            event: v[3].as_str().unwrap().into(),
                            payload: v[4].clone(),
                        }
                    } else {
                        Msg {
                            join_ref: opt(&v["join_ref"]),
                            r#ref: opt(&v["ref"]),
                            topic: v["topic"].as_str().unwrap().into(),
                            event: v["event"].as_str().unwrap().into(),
                            payload: v["payload"].clone(),
                        }
                    });
                }
                Message::Binary(b) => {
                    assert_eq!(b[0], 4, "server binary frames are user_broadcast (kind 4)");
                    let (tl, el, ml, enc) = (b[1] as usize, b[2] as usize, b[3] as usize, b[4]);
                    let topic = String::from_utf8(b[5..5 + tl].to_vec()).unwrap();
                    let event = String::from_utf8(b[5 + tl..5 + tl + el].to_vec()).unwrap();
                    let body = &b[5 + tl + el + ml..];
                    let payload = if enc == 1 {
                        serde_json::from_slice(body).unwrap()
                    } else {
                        json!({ "binary": body })
                    };
                    return Some(Msg {
                        join_ref: None,
                        r#ref: None,
                        topic,
                        event: "broadcast".into(),
                        payload: json!({"type": "broadcast", "event": event, "payload": payload}),
                    });
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Waits for a message satisfying `pred`, skipping others.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&Msg) -> bool) -> Msg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self
                .try_recv(left)
                .await
                .expect("the awaited message before the timeout");
            if pred(&m) {
                return m;
            }
        }
    }

    /// The reply to `r`.
    pub async fn reply_to(&mut self, r: &str) -> Msg {
        let r = r.to_string();
        self.recv_until(|m| m.event == "phx_reply" && m.r#ref.as_deref() == Some(&r))
            .await
    }

    /// Joins and returns the reply.
    pub async fn join(&mut self, topic: &str, payload: Value) -> Msg {
        let r = self.make_ref();
        self.next -= 1;
        let sent = self.send(Some(&r), topic, "phx_join", payload).await;
        self.reply_to(&sent).await
    }

    /// Joins, asserts ok, and (with postgres_changes) waits for "Subscribed to PostgreSQL".
    pub async fn join_ok(&mut self, topic: &str, payload: Value) -> Msg {
        let wants_changes = payload["config"]["postgres_changes"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let reply = self.join(topic, payload).await;
        assert_eq!(
            reply.payload["status"], "ok",
            "join of {topic}: {}",
            reply.payload
        );
        if wants_changes {
            let t = topic.to_string();
            let sys = self
                .recv_until(|m| m.event == "system" && m.topic == t)
                .await;
            assert_eq!(
                sys.payload["message"], "Subscribed to PostgreSQL",
                "{}",
                sys.payload
            );
        }
        reply
    }

    /// Proves nothing else is queued for us: a heartbeat's reply must be the very next
    /// message.
    pub async fn assert_nothing_pending(&mut self) {
        let r = self.send(None, "phoenix", "heartbeat", json!({})).await;
        let m = self.recv().await;
        assert_eq!(
            (m.event.as_str(), m.r#ref.as_deref()),
            ("phx_reply", Some(r.as_str())),
            "expected nothing before the heartbeat reply, got {m:?}"
        );
    }
}

/// A group conversation with these members (first is owner), made as the superuser.
pub async fn conversation(db: &TestDb, members: &[uuid::Uuid]) -> uuid::Uuid {
    let id: uuid::Uuid = db
        .client
        .query_one(
            "insert into public.conversations (kind, title, created_by) values ('group', 't', $1) returning id",
            &[&members[0]],
        )
        .await
        .unwrap()
        .get(0);
    for (i, m) in members.iter().enumerate() {
        let role = if i == 0 { "owner" } else { "member" };
        db.client
            .execute(
                "insert into public.conversation_members (conversation_id, user_id, role) values ($1, $2, $3::text::public.member_role)",
                &[&id, m, &role],
            )
            .await
            .unwrap();
    }
    id
}

pub fn changes_payload(token: &str, specs: Value) -> Value {
    json!({"config": {"broadcast": {"self": false, "ack": false},
                      "presence": {"key": "", "enabled": false},
                      "postgres_changes": specs, "private": false},
           "access_token": token})
}
