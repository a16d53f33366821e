//! The optional hook called when a user's last socket closes, named in SQL terms: a
//! function without arguments (`RIPPLE_LAST_SEEN_FUNCTION`, by default the chat schema's
//! `public.touch_last_seen`), called as that user, in a transaction of its own. An empty
//! setting calls nothing; a database that does not have the function is not called and not
//! warned about (Ripple also serves databases other than the chat schema).

use postgres_protocol::escape::escape_identifier;

use crate::authorize::Identity;
use crate::db::DbError;

/// A function to call, parsed from its setting (`name` or `schema.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSeenHook {
    /// `"schema"."name"()`, for `to_regprocedure`.
    signature: String,
    /// `select "schema"."name"()`.
    call: String,
}

impl LastSeenHook {
    /// `None` for an empty setting: nothing is called.
    pub fn from_setting(setting: &str) -> Option<Self> {
        let setting = setting.trim();
        if setting.is_empty() {
            return None;
        }
        let quoted = match setting.split_once('.') {
            Some((schema, name)) => {
                format!("{}.{}", escape_identifier(schema), escape_identifier(name))
            }
            None => escape_identifier(setting),
        };
        Some(Self {
            signature: format!("{quoted}()"),
            call: format!("select {quoted}()"),
        })
    }

    /// Calls the function as the user `who`, if the database has it.
    pub async fn call(
        &self,
        pool: &deadpool_postgres::Pool,
        who: &Identity,
    ) -> Result<(), DbError> {
        let mut conn = pool.get().await?;
        let tx = conn.transaction().await?;
        crate::db::set_request_claims(&*tx, who.role(), who.claims_json()).await?;
        let exists: bool = tx
            .query_one("select to_regprocedure($1) is not null", &[&self.signature])
            .await?
            .get(0);
        if !exists {
            return Ok(());
        }
        tx.execute(&self.call, &[]).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_quoted_calls_and_empty_means_none() {
        let hook = LastSeenHook::from_setting("public.touch_last_seen").unwrap();
        assert_eq!(hook.call, r#"select "public"."touch_last_seen"()"#);
        assert_eq!(hook.signature, r#""public"."touch_last_seen"()"#);
        let odd = LastSeenHook::from_setting(r#"gone"(); drop table x; --"#).unwrap();
        assert_eq!(odd.call, r#"select "gone""(); drop table x; --"()"#);
        assert_eq!(LastSeenHook::from_setting("  "), None);
    }
}
