//! The one contract between the stream's consumers and whoever decides visibility: who asks
//! ([`Identity`]), what is asked ([`Check`]), what is answered ([`Verdict`]), and the
//! [`Authorizer`] trait. `realtime` and the pump use these types; `authorize` never looks
//! at sockets or channels.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::change::Transaction;

/// Whom a row is judged for: the database role a check runs as and the claims it sees in
/// `request.jwt.claims`. Subscribers with the same role and claims are one identity and
/// are asked about once.
///
/// Role and claims live in one string (`role`, NUL, claims JSON): it is the identity's key
/// for deduplication and for the verdict cache, and the claims text the checks send, so a
/// joined channel holds one allocation for it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    key: Box<str>,
    role_len: usize,
}

impl Identity {
    pub fn new(role: &str, claims: &serde_json::Value) -> Self {
        Self {
            key: format!("{role}\u{0}{claims}").into_boxed_str(),
            role_len: role.len(),
        }
    }

    pub fn role(&self) -> &str {
        &self.key[..self.role_len]
    }

    /// The claims as JSON text (what `request.jwt.claims` holds).
    pub fn claims_json(&self) -> &str {
        &self.key[self.role_len + 1..]
    }

    /// Role and claims in one string: equal keys, equal identities.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Claims can hold personal data: only the role is shown.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

/// The columns of a table a role may select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnAccess {
    All,
    Only(Arc<HashSet<String>>),
}

impl ColumnAccess {
    pub fn allows(&self, column: &str) -> bool {
        match self {
            ColumnAccess::All => true,
            ColumnAccess::Only(set) => set.contains(column),
        }
    }
}

/// The answer for one change and one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// RLS (or table privileges) hide the row from this identity.
    Hidden,
    /// Visible, without the columns the role may not select.
    Visible(ColumnAccess),
}

impl Verdict {
    pub fn is_visible(&self) -> bool {
        matches!(self, Verdict::Visible(_))
    }
}

/// One change and the distinct identities asking about it.
#[derive(Debug)]
pub struct Check {
    /// Index into the transactions handed to [`Authorizer::authorize`].
    pub tx: usize,
    /// Index into that transaction's `changes`.
    pub change: usize,
    pub identities: Vec<Arc<Identity>>,
}

/// Why a batch could not be answered. None of these is a verdict: the caller retries the
/// whole batch (on a fresh connection) and confirms nothing until it is answered.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("no database connection for authorization")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("authorization query failed")]
    Db(#[source] tokio_postgres::Error),
    /// A transaction was streamed but other sessions still do not see it (its commit is
    /// waiting, for example for a synchronous standby). Judging it now would judge the
    /// state before it.
    #[error("transaction {xid} is not yet visible to other sessions after {waited:?}")]
    NotVisible { xid: u32, waited: Duration },
}

impl AuthorizeError {
    pub fn is_not_visible(&self) -> bool {
        matches!(self, AuthorizeError::NotVisible { .. })
    }
}

pub type AuthorizeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Vec<Verdict>>, AuthorizeError>> + Send + 'a>>;

/// Decides, for one or more committed transactions at once, which identities may see which
/// changes.
///
/// `txs` are in commit order; `checks` name only changes that have someone asking, each with
/// distinct identities. The answer is parallel to `checks`: `verdicts[i][j]` is the verdict
/// for `txs[checks[i].tx].changes[checks[i].change]` under `checks[i].identities[j]`. For
/// INSERT and UPDATE the row judged is the new row; for DELETE the full old row (callers
/// never ask about deletes that cannot be judged). A shorter answer than asked counts as
/// Hidden for what is missing; an error answers nothing (fail closed, the caller retries).
/// The checks run once every transaction of `txs` is visible to them, so a policy reading
/// other tables sees the state the transactions left.
pub trait Authorizer: Send + Sync {
    fn authorize<'a>(
        &'a self,
        txs: &'a [&'a Transaction],
        checks: &'a [Check],
    ) -> AuthorizeFuture<'a>;

    /// Sees every transaction, in commit order, before any of its changes are authorized
    /// (whether or not they have candidates): an authorizer that caches what it read drops
    /// it here when the stream shows a change that could alter it.
    fn observe(&self, _tx: &Transaction) {}
}
