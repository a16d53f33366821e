//! What can go wrong on the replication connection, with the server's own words kept as
//! the source.

use std::fmt;

use tokio_postgres::error::SqlState;

use crate::decode::DecodeError;

/// An ErrorResponse from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    /// SQLSTATE, e.g. `28P01`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(d) = &self.detail {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("invalid replication configuration: {0}")]
    Config(String),
    #[error("invalid database URL")]
    Url(#[source] tokio_postgres::Error),
    #[error("could not connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("password authentication failed for user {user:?}")]
    WrongPassword {
        user: String,
        #[source]
        source: Box<ServerError>,
    },
    #[error("the server asked for a password for user {user:?} and none was configured")]
    PasswordRequired { user: String },
    #[error("the server rejected the connection")]
    Rejected(#[source] Box<ServerError>),
    #[error("the server asked for an authentication method Ripple does not speak ({0})")]
    UnsupportedAuth(String),
    #[error(
        "role {user:?} may not open a replication connection: it needs the REPLICATION \
         attribute (ALTER ROLE {user} REPLICATION) or to be a superuser"
    )]
    NotReplicationRole {
        user: String,
        #[source]
        source: Box<ServerError>,
    },
    #[error(
        "the server runs with wal_level = {actual}; logical replication needs \
         wal_level = logical (set it in postgresql.conf and restart PostgreSQL)"
    )]
    WalLevel { actual: String },
    #[error("replication slot {slot:?} uses output plugin {plugin:?}; Ripple needs pgoutput")]
    SlotPlugin { slot: String, plugin: String },
    #[error("server error during {during}")]
    Server {
        during: &'static str,
        #[source]
        source: Box<ServerError>,
    },
    #[error("i/o error on the replication connection")]
    Io(#[source] std::io::Error),
    #[error("the server closed the replication connection")]
    Closed,
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("could not decode a replication message")]
    Decode(#[source] DecodeError),
    #[error("the replication stream contradicted itself")]
    Assemble(#[source] super::assemble::AssembleError),
    #[error("catalog query failed")]
    Catalog(#[source] tokio_postgres::Error),
    #[error("could not spill a streamed transaction to disk")]
    Spill(#[source] std::io::Error),
}

impl ReplicationError {
    /// SQLSTATE of the server error behind this one, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplicationError::WrongPassword { source, .. }
            | ReplicationError::NotReplicationRole { source, .. }
            | ReplicationError::Rejected(source)
            | ReplicationError::Server { source, .. } => Some(&source.code),
            _ => None,
        }
    }

    /// Worth retrying as it is: the network, a restarting server, a slot still held by a
    /// connection that is going away. Configuration and permission errors are not.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Io(_)
            | ReplicationError::Closed
            | ReplicationError::Connect { .. }
            | ReplicationError::Catalog(_) => true,
            ReplicationError::Server { source, .. } | ReplicationError::Rejected(source) => {
                let c = source.code.as_str();
                // 08 connection exceptions, 57P0x shutdown/startup, 55006 slot in use,
                // 53 resources (too many connections), 40 serialization/deadlock.
                c.starts_with("08")
                    || c.starts_with("57P")
                    || c.starts_with("53")
                    || c.starts_with("40")
                    || c == SqlState::OBJECT_IN_USE.code()
            }
            _ => false,
        }
    }
}
