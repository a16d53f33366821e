//! What must exist before streaming: logical WAL, the publication, the slot. And the
//! catalog lookups the stream needs (type names of enums, domains, extension types).
//! Ordinary queries go over tokio-postgres; slot creation over the replication connection,
//! because a temporary slot lives only as long as the connection that created it.

use tokio_postgres::Client;

use super::connection::ReplicationConnection;
use super::error::ReplicationError;
use crate::change::{parse_lsn, Lsn};
use crate::decode::CatalogType;

/// Quotes an identifier for SQL and replication commands (`"my ""odd"" name"`).
pub use postgres_protocol::escape::escape_identifier as quote_ident;

/// Quotes a string literal (`'it''s'`).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Slot names are restricted by the server to lower-case letters, digits and underscores;
/// we check first so the error names the setting.
pub fn check_slot_name(name: &str) -> Result<(), ReplicationError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ReplicationError::Config(format!(
            "slot name {name:?} must be 1-63 lower-case letters, digits or underscores"
        )))
    }
}

pub async fn catalog_client(config: &tokio_postgres::Config) -> Result<Client, ReplicationError> {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(ReplicationError::Catalog)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "catalog connection closed");
        }
    });
    Ok(client)
}

/// Refuses early, with the fix in the message, when the server cannot decode logically.
pub async fn check_wal_level(conn: &mut ReplicationConnection) -> Result<(), ReplicationError> {
    let rows = conn
        .simple_query("SHOW wal_level", "SHOW wal_level")
        .await?;
    let level = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    if level == "logical" {
        Ok(())
    } else {
        Err(ReplicationError::WalLevel { actual: level })
    }
}

/// Creates the publication, empty, if it does not exist; its tables are the DBA's to add
/// (`ALTER PUBLICATION ... ADD TABLE`). Returns whether it was created.
pub async fn ensure_publication(client: &Client, name: &str) -> Result<bool, ReplicationError> {
    let exists = client
        .query_opt("select 1 from pg_publication where pubname = $1", &[&name])
        .await
        .map_err(ReplicationError::Catalog)?
        .is_some();
    if exists {
        return Ok(false);
    }
    match client
        .batch_execute(&format!("create publication {}", quote_ident(name)))
        .await
    {
        Ok(()) => {
            tracing::info!(
                publication = name,
                "created publication; add tables with ALTER PUBLICATION"
            );
            Ok(true)
        }
        // Someone else created it between our check and now.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(false),
        Err(e) => Err(ReplicationError::Catalog(e)),
    }
}

/// A durable slot as the server knows it.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub plugin: String,
    pub confirmed_flush: Option<Lsn>,
}

pub async fn slot_state(
    client: &Client,
    slot: &str,
) -> Result<Option<SlotState>, ReplicationError> {
    let row = client
        .query_opt(
            "select coalesce(plugin, '')::text, confirmed_flush_lsn::text, \
                    coalesce(database, '')::text, current_database()::text \
             from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(ReplicationError::Catalog)?;
    let Some(r) = row else { return Ok(None) };
    let (database, current): (String, String) = (r.get(2), r.get(3));
    if database != current {
        // Slot names are cluster-wide; another database's slot cannot stream this one.
        return Err(ReplicationError::Config(format!(
            "replication slot {slot:?} belongs to database {database:?}, not {current:?}; \
             choose another slot name"
        )));
    }
    Ok(Some(SlotState {
        plugin: r.get(0),
        confirmed_flush: r.get::<_, Option<String>>(1).as_deref().and_then(parse_lsn),
    }))
}

/// Creates a pgoutput slot on the replication connection. A temporary slot is dropped by
/// the server when this connection ends. Returns the slot's consistent point.
pub async fn create_slot(
    conn: &mut ReplicationConnection,
    slot: &str,
    temporary: bool,
) -> Result<Lsn, ReplicationError> {
    let cmd = format!(
        "CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput NOEXPORT_SNAPSHOT",
        quote_ident(slot),
        if temporary { "TEMPORARY " } else { "" }
    );
    let rows = conn.simple_query(&cmd, "CREATE_REPLICATION_SLOT").await?;
    let lsn = rows
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .and_then(|s| parse_lsn(&s))
        .unwrap_or(0);
    tracing::info!(slot, temporary, consistent_point = %crate::change::format_lsn(lsn), "created replication slot");
    Ok(lsn)
}

/// pg_type rows for `oids` and everything they refer to (domain bases, array elements).
pub async fn catalog_types(
    client: &Client,
    oids: &[u32],
) -> Result<Vec<CatalogType>, ReplicationError> {
    let rows = client
        .query(
            "with recursive closure as ( \
               select oid, typname, typtype, typcategory, typbasetype, typelem, typdelim \
                 from pg_type where oid = any($1::oid[]) \
               union \
               select p.oid, p.typname, p.typtype, p.typcategory, p.typbasetype, p.typelem, p.typdelim \
                 from pg_type p join closure c on p.oid = c.typbasetype or p.oid = c.typelem \
             ) \
             select oid, typname::text, typtype::text, typcategory::text, typbasetype, typelem, typdelim::text \
               from closure",
            &[&oids],
        )
        .await
        .map_err(ReplicationError::Catalog)?;
    let byte = |s: String| s.bytes().next().unwrap_or(b' ');
    Ok(rows
        .into_iter()
        .map(|r| CatalogType {
            oid: r.get(0),
            name: r.get(1),
            typtype: byte(r.get(2)),
            category: byte(r.get(3)),
            base: r.get(4),
            element: r.get(5),
            delimiter: byte(r.get(6)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("ripple"), "\"ripple\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn slot_names_are_checked() {
        assert!(check_slot_name("ripple_1").is_ok());
        assert!(check_slot_name("Ripple").is_err());
        assert!(check_slot_name("").is_err());
        assert!(check_slot_name("a-b").is_err());
    }
}
