//! Private channels, authorized the way Supabase does it: by RLS policies on
//! `realtime.messages`, with the channel's topic readable by policies as `realtime.topic()`.
//!
//! - May this user join (read)? Probe rows for the topic are inserted as the table owner,
//!   then read back as the user; whatever the user's SELECT policies let through is what
//!   they may read. The transaction is rolled back: nothing is ever stored.
//! - May this user send (write)? Probe rows are inserted as the user; INSERT policies (their
//!   WITH CHECK) decide. Rolled back too.

use crate::authorize::Identity;

/// What a user may do on a private topic, per extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopicAccess {
    pub broadcast: bool,
    pub presence: bool,
}

impl TopicAccess {
    pub fn any(self) -> bool {
        self.broadcast || self.presence
    }
}

/// Why an access probe could not run (not a verdict: the caller refuses or retries).
pub type ProbeError = crate::db::DbError;

async fn as_user(
    tx: &tokio_postgres::Transaction<'_>,
    who: &Identity,
    sub_topic: &str,
) -> Result<(), tokio_postgres::Error> {
    crate::db::set_request_claims(tx, who.role(), who.claims_json()).await?;
    tx.execute(
        "select set_config('realtime.topic', $1, true)",
        &[&sub_topic],
    )
    .await?;
    Ok(())
}

/// May these claims read (join) the topic? `sub_topic` is the channel name without
/// `realtime:`, as policies see it.
pub async fn read_access(
    pool: &deadpool_postgres::Pool,
    sub_topic: &str,
    who: &Identity,
) -> Result<TopicAccess, ProbeError> {
    let mut conn = pool.get().await.map_err(ProbeError::Pool)?;
    let tx = conn.transaction().await.map_err(ProbeError::Db)?;
    let rows = tx
        .query(
            "insert into realtime.messages (topic, extension, private)
             values ($1, 'broadcast', true), ($1, 'presence', true)
             returning id, extension",
            &[&sub_topic],
        )
        .await
        .map_err(ProbeError::Db)?;
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    as_user(&tx, who, sub_topic).await.map_err(ProbeError::Db)?;
    let visible = tx
        .query(
            "select extension from realtime.messages where id = any($1)",
            &[&ids],
        )
        .await;
    // A policy that raises for this user (a bad cast, say) is a refusal, not our failure.
    let visible = match visible {
        Ok(rows) => rows,
        Err(e) if e.as_db_error().is_some() => Vec::new(),
        Err(e) => return Err(ProbeError::Db(e)),
    };
    let mut access = TopicAccess::default();
    for r in visible {
        match r.get::<_, String>(0).as_str() {
            "broadcast" => access.broadcast = true,
            "presence" => access.presence = true,
            _ => {}
        }
    }
    let _ = tx.rollback().await;
    Ok(access)
}

/// May these claims send broadcasts / track presence on the topic?
pub async fn write_access(
    pool: &deadpool_postgres::Pool,
    sub_topic: &str,
    who: &Identity,
) -> Result<TopicAccess, ProbeError> {
    let mut conn = pool.get().await.map_err(ProbeError::Pool)?;
    let mut tx = conn.transaction().await.map_err(ProbeError::Db)?;
    as_user(&tx, who, sub_topic).await.map_err(ProbeError::Db)?;
    let mut access = TopicAccess::default();
    for extension in ["broadcast", "presence"] {
        let sp = tx.savepoint(extension).await.map_err(ProbeError::Db)?;
        let r = sp
            .execute(
                "insert into realtime.messages (topic, extension, private) values ($1, $2, true)",
                &[&sub_topic, &extension],
            )
            .await;
        let allowed = match r {
            Ok(_) => true,
            // Refused by a policy or a privilege (or any other rule of the database).
            Err(e) if e.as_db_error().is_some() => false,
            Err(e) => return Err(ProbeError::Db(e)),
        };
        let _ = sp.rollback().await;
        match extension {
            "broadcast" => access.broadcast = allowed,
            _ => access.presence = allowed,
        }
    }
    let _ = tx.rollback().await;
    Ok(access)
}
