//! Realtime over WebSocket, speaking Supabase Realtime's protocol so `@supabase/supabase-js`
//! works unchanged.
//!
//! ```text
//! start_socket (after `crate::http` checked the apikey and upgraded)
//!   -> socket   (one task per socket: reads frames, writes its bounded queue;
//!                socket/channels a channel's life, socket/extensions broadcast and presence)
//!        join   (config + postgres_changes checked against the catalog)
//!        private (RLS probes on realtime.messages for private channels)
//!        topics (broadcast and presence, in memory)
//!        registry (live postgres_changes subscriptions, indexed by table and eq filter)
//! fanout::deliver (a committed transaction -> authorizer -> the channels allowed to see it)
//! ```
//!
//! `protocol` and `filter` are pure (no I/O). Who may see what is `crate::authorize`'s
//! contract (`Authorizer`, `Identity`, `Verdict`); this module only asks it.
//!
//! Wiring (`crate::server`): `App::new` creates the hub (`app.realtime`) and the
//! `SocketContext` sockets run with; this module never sees the `App`. The pump calls, for each
//! committed transaction in commit order, `fanout::deliver(&app.realtime, &tx, &authorizer)`
//! and may confirm `tx.commit_lsn` once it returns (messages are then in the sockets' queues).
//! A subscription takes part in every `deliver` that starts after its channel was told
//! "Subscribed to PostgreSQL".

pub mod db_broadcast;
pub mod fanout;
pub mod filter;
pub mod join;
pub mod last_seen;
pub mod private;
pub mod protocol;
pub mod rate;
pub mod registry;
pub mod resume;
pub mod revocation;
mod socket;
pub mod socket_handle;
pub mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::auth::{AuthError, JwtVerifier};
use crate::config::ServeConfig;

pub use fanout::{deliver, DeliveryReport};
pub use registry::Registry;
pub use revocation::RevocationWatch;

/// The shared realtime state: held by `App`, used by every socket task and by the fan-out.
#[derive(Default)]
pub struct Realtime {
    pub registry: Registry,
    pub topics: topics::Topics,
    /// Joins that asked to resume, for the pump to serve between transactions.
    pub replays: resume::ReplayQueue,
    next_id: AtomicU64,
    /// Open sockets per user (`sub`), to record `last_seen_at` on their last disconnect.
    users: Mutex<HashMap<String, usize>>,
    /// Open sockets in all, against `RIPPLE_MAX_SOCKETS`.
    open_sockets: std::sync::atomic::AtomicUsize,
    /// Private channels joined now: a membership change concerns only them, so with none
    /// no socket is woken for it.
    private_channels: std::sync::atomic::AtomicUsize,
    /// What every socket task reacts to (it watches for the counters to move).
    pub notices: tokio::sync::watch::Sender<Notices>,
}

/// Counters that move when something happens that concerns every socket; a socket compares
/// them with the values it last saw, so bursts coalesce into one reaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notices {
    /// Rows that policies on `realtime.messages` read changed (memberships): private
    /// channels are checked again and closed if no longer allowed.
    pub access: u64,
    /// Grants, policies or tables changed: every joined channel is checked again (private
    /// ones, and the SELECT privilege on the columns its filters name).
    pub grants: u64,
    /// The replication slot was lost and recreated: changes may have been missed.
    pub slot_lost: u64,
}

/// What a transaction changed that joined channels' authorization depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessChange {
    /// What the policies on `realtime.messages` read (`revocation`), such as
    /// memberships.
    pub members: bool,
    /// The security feed (grants, policies, tables).
    pub grants: bool,
}

/// Holds one place among the open sockets until dropped.
pub struct SocketSlot(Arc<Realtime>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.open_sockets.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Realtime {
    pub fn new() -> Self {
        Self::default()
    }

    /// A process-unique id for a socket or channel.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn user_connected(&self, sub: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        *users.entry(sub.to_string()).or_default() += 1;
    }

    /// True when this was the user's last socket.
    fn user_disconnected(&self, sub: &str) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        match users.get_mut(sub) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                users.remove(sub);
                true
            }
            None => false,
        }
    }

    /// Sockets re-check their channels' authorization: private channels when memberships
    /// changed, every channel when grants or policies did. (Only private channels ask the
    /// database for a membership change: in a chat every message updates its members'
    /// counters, and ten thousand sockets asking per message would starve the pipeline.)
    pub fn access_may_have_changed(&self, change: AccessChange) {
        // Waking every socket per message costs more than the rest of the fan-out (the
        // profile's top entries): skipped when no private channel is joined.
        let members = change.members && self.private_channels.load(Ordering::Acquire) > 0;
        let change = AccessChange { members, ..change };
        if change.members || change.grants {
            self.notices.send_modify(|n| {
                n.access += u64::from(change.members);
                n.grants += u64::from(change.grants);
            });
        }
    }

    /// A private channel was joined (true) or closed (false).
    pub(crate) fn private_channel(&self, joined: bool) {
        if joined {
            self.private_channels.fetch_add(1, Ordering::AcqRel);
        } else {
            let _ = self
                .private_channels
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Every joined channel is told that changes may have been missed.
    pub fn slot_lost(&self) {
        self.notices.send_modify(|n| n.slot_lost += 1);
    }

    /// Sockets open now.
    pub fn open_sockets(&self) -> usize {
        self.open_sockets.load(Ordering::Acquire)
    }

    /// Takes a place for a new socket, or None when `max` are open.
    pub fn reserve_socket(self: &Arc<Self>, max: usize) -> Option<SocketSlot> {
        self.open_sockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SocketSlot(self.clone()))
    }

    /// Sockets currently open for a user.
    pub fn sockets_of(&self, sub: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(sub).copied().unwrap_or(0)
    }
}

pub(crate) fn describe_auth_error(e: &AuthError) -> String {
    match e {
        AuthError::Expired => "token has expired".into(),
        other => other.to_string(),
    }
}

/// What every socket task uses, handed over by the composition root (`App::new`) rather
/// than the whole application.
pub struct SocketContext {
    pub hub: Arc<Realtime>,
    pub jwt: Arc<JwtVerifier>,
    /// Joins (catalog and private-channel checks) and the last-seen call, as the user.
    pub pool: deadpool_postgres::Pool,
    /// The pipeline's own connections: re-checks of joined channels must not wait behind
    /// REST load.
    pub authorize_pool: deadpool_postgres::Pool,
    pub config: Arc<ServeConfig>,
}

/// The parts of an accepted WebSocket handshake the socket task needs.
pub struct Accepted {
    pub vsn: protocol::Vsn,
    /// The verified `apikey`'s text (a join without `access_token` runs under it).
    pub apikey_token: String,
    /// Held until the socket closes (a place among the open sockets, a connection permit).
    pub holds: Vec<Box<dyn std::any::Any + Send>>,
    /// Closes the socket when the server shuts down.
    pub stop: Option<crate::shutdown::Shutdown>,
}

/// What each socket reads the client into (see `start_socket`).
const READ_BUFFER_BYTES: usize = 512;

/// Starts the socket's own task over the upgraded connection; it runs until the socket
/// closes.
///
/// Its own task, rather than the rest of the handshake's: a task keeps the room of the
/// largest state its future can be in for its whole life, and the handshake's states
/// (the request, the upgrade) would otherwise be paid by every idle socket.
pub async fn start_socket(
    ctx: Arc<SocketContext>,
    upgraded: hyper::upgrade::Upgraded,
    accepted: Accepted,
) {
    let max = ctx.config.max_body_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        // Kept by every socket for its whole life, idle or not: the frames a client sends
        // (joins, heartbeats, broadcasts) are small, and a larger one grows the buffer to
        // its length. tungstenite's 128 KiB default would be most of an idle socket.
        .read_buffer_size(READ_BUFFER_BYTES);
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    tokio::spawn(socket::run(ws, ctx, accepted));
}

#[cfg(test)]
mod access_notice_tests {
    use super::*;

    #[test]
    fn a_membership_change_wakes_sockets_only_while_a_private_channel_is_joined() {
        let hub = Realtime::new();
        let members = AccessChange {
            members: true,
            grants: false,
        };
        hub.access_may_have_changed(members);
        assert_eq!(
            *hub.notices.borrow(),
            Notices::default(),
            "no private channel"
        );
        hub.private_channel(true);
        hub.access_may_have_changed(members);
        assert_eq!(hub.notices.borrow().access, 1);
        hub.private_channel(false);
        hub.access_may_have_changed(members);
        assert_eq!(hub.notices.borrow().access, 1, "closed again");
        // Grants and policies concern every channel, private or not.
        hub.access_may_have_changed(AccessChange {
            members: false,
            grants: true,
        });
        assert_eq!(hub.notices.borrow().grants, 1);
        // More closes than joins never wrap around.
        hub.private_channel(false);
        hub.access_may_have_changed(members);
        assert_eq!(hub.notices.borrow().access, 1);
    }
}
