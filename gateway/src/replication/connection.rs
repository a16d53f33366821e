//! Our own walsender connection: tokio-postgres cannot open one (no replication mode and
//! no CopyBoth), so we speak the protocol directly, with postgres-protocol's startup,
//! authentication (MD5, SCRAM-SHA-256) and message encoding, and our own framing of what
//! the server sends back. One task owns a connection; nothing here is shared.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::{ReplicationError, ServerError};

/// Where and as whom to connect; built from a `postgres://` URL or key=value string.
#[derive(Clone)]
pub struct ConnectParams {
    pub targets: Vec<Target>,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub dbname: String,
    pub application_name: String,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnectParams {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("targets", &self.targets)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("dbname", &self.dbname)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp {
        host: String,
        port: u16,
    },
    /// A Unix socket directory and port (the socket is `{dir}/.s.PGSQL.{port}`).
    Unix {
        dir: PathBuf,
        port: u16,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix { dir, port } => write!(f, "{}/.s.PGSQL.{port}", dir.display()),
        }
    }
}

impl ConnectParams {
    /// Reads the same connection strings tokio-postgres does.
    pub fn from_config(config: &tokio_postgres::Config) -> Result<Self, ReplicationError> {
        use tokio_postgres::config::Host;
        let user = config
            .get_user()
            .map(str::to_owned)
            .or_else(|| std::env::var("USER").ok())
            .ok_or_else(|| ReplicationError::Config("no user in the database URL".into()))?;
        let ports = config.get_ports();
        let port_at = |i: usize| match ports.len() {
            0 => 5432,
            1 => ports[0],
            _ => ports.get(i).copied().unwrap_or(5432),
        };
        let mut targets = Vec::new();
        for (i, host) in config.get_hosts().iter().enumerate() {
            targets.push(match host {
                Host::Tcp(h) => Target::Tcp {
                    host: h.clone(),
                    port: port_at(i),
                },
                Host::Unix(dir) => Target::Unix {
                    dir: dir.clone(),
                    port: port_at(i),
                },
            });
        }
        if targets.is_empty() {
            targets.push(Target::Unix {
                dir: "/var/run/postgresql".into(),
                port: port_at(0),
            });
        }
        Ok(Self {
            targets,
            dbname: config.get_dbname().unwrap_or(&user).to_owned(),
            user,
            password: config.get_password().map(<[u8]>::to_vec),
            application_name: config.get_application_name().unwrap_or("ripple").to_owned(),
            connect_timeout: config
                .get_connect_timeout()
                .copied()
                .unwrap_or(Duration::from_secs(10)),
        })
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A message from the server, framed but not yet interpreted.
#[derive(Debug)]
pub struct BackendMessage {
    pub tag: u8,
    pub body: Bytes,
}

/// One row of a simple query's result, text columns.
pub type TextRow = Vec<Option<String>>;

pub struct ReplicationConnection {
    io: Box<dyn Io>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// `server_version_num`-style number (150018 for 15.18), from the startup parameters.
    pub server_version_num: u32,
    pub user: String,
}

/// Reads reach this size so a busy stream takes few system calls.
const READ_CHUNK: usize = 256 * 1024;
/// Larger messages than this are a broken stream, not data (PostgreSQL caps at 1 GB).
const MAX_MESSAGE: usize = 1 << 30;

fn io_err(e: std::io::Error) -> ReplicationError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ReplicationError::Closed
    } else {
        ReplicationError::Io(e)
    }
}

impl ReplicationConnection {
    /// Connects to the first reachable target, authenticates and opens a logical
    /// replication session (`replication=database`) with ISO dates in UTC, so timestamps
    /// arrive in the form the value decoder turns into ISO-8601.
    pub async fn connect(params: &ConnectParams) -> Result<Self, ReplicationError> {
        let mut last = None;
        for target in &params.targets {
            match tokio::time::timeout(params.connect_timeout, open(target)).await {
                Ok(Ok(io)) => return Self::startup(io, params).await,
                Ok(Err(source)) => {
                    last = Some(ReplicationError::Connect {
                        target: target.to_string(),
                        source,
                    })
                }
                Err(_) => {
                    last = Some(ReplicationError::Connect {
                        target: target.to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        ),
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| ReplicationError::Config("no host to connect to".into())))
    }

    async fn startup(io: Box<dyn Io>, params: &ConnectParams) -> Result<Self, ReplicationError> {
        let mut conn = Self {
            io,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(1024),
            server_version_num: 0,
            user: params.user.clone(),
        };
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
            ("replication", "database"),
            ("application_name", params.application_name.as_str()),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "iso_8601"),
            ("extra_float_digits", "3"),
        ];
        frontend::startup_message(startup.iter().copied(), &mut conn.write_buf)
            .map_err(ReplicationError::Io)?;
        conn.flush().await?;
        conn.authenticate(params).await?;
        // After AuthenticationOk: parameters and key data until ReadyForQuery.
        loop {
            let m = conn.next_message().await?;
            match m.tag {
                b'Z' => break,
                b'S' => {
                    let mut f = m.body.split(|&b| b == 0);
                    if f.next() == Some(b"server_version") {
                        let v = String::from_utf8_lossy(f.next().unwrap_or_default());
                        conn.server_version_num = parse_server_version(&v);
                    }
                }
                b'E' => return Err(conn.classify_startup_error(parse_error(&m.body))),
                _ => {}
            }
        }
        Ok(conn)
    }

    async fn authenticate(&mut self, params: &ConnectParams) -> Result<(), ReplicationError> {
        let mut scram: Option<ScramSha256> = None;
        let password = || {
            params
                .password
                .clone()
                .ok_or_else(|| ReplicationError::PasswordRequired {
                    user: params.user.clone(),
                })
        };
        loop {
            let m = self.next_message().await?;
            match m.tag {
                b'R' => {}
                b'E' => return Err(self.classify_startup_error(parse_error(&m.body))),
                b'N' => continue,
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} during authentication",
                        other as char
                    )))
                }
            }
            let mut body = m.body;
            if body.len() < 4 {
                return Err(ReplicationError::Protocol(
                    "short authentication message".into(),
                ));
            }
            let code = body.get_i32();
            match code {
                0 => return Ok(()),
                3 => {
                    let pw = password()?;
                    frontend::password_message(&pw, &mut self.write_buf)
                        .map_err(ReplicationError::Io)?;
                }
                5 => {
                    if body.len() < 4 {
                        return Err(ReplicationError::Protocol("short MD5 salt".into()));
                    }
                    let salt = [body[0], body[1], body[2], body[3]];
                    let pw = password()?;
                    let hashed = md5_hash(params.user.as_bytes(), &pw, salt);
                    frontend::password_message(hashed.as_bytes(), &mut self.write_buf)
                        .map_err(ReplicationError::Io)?;
                }
                10 => {
                    let offers_scram = body
                        .split(|&b| b == 0)
                        .any(|mech| mech == SCRAM_SHA_256.as_bytes());
                    if !offers_scram {
                        return Err(ReplicationError::UnsupportedAuth(
                            String::from_utf8_lossy(&body)
                                .replace('\0', " ")
                                .trim()
                                .into(),
                        ));
                    }
                    let pw = password()?;
                    // No TLS, so no channel binding to offer.
                    let s = ScramSha256::new(&pw, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        SCRAM_SHA_256,
                        s.message(),
                        &mut self.write_buf,
                    )
                    .map_err(ReplicationError::Io)?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ReplicationError::Protocol("SASL continue without SASL start".into())
                    })?;
                    s.update(&body).map_err(|e| {
                        ReplicationError::Protocol(format!("SCRAM exchange failed: {e}"))
                    })?;
                    frontend::sasl_response(s.message(), &mut self.write_buf)
                        .map_err(ReplicationError::Io)?;
                }
                12 => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ReplicationError::Protocol("SASL final without SASL start".into())
                    })?;
                    // Verifies the server's signature: a server that does not know the
                    // password cannot pretend to.
                    s.finish(&body).map_err(|e| {
                        ReplicationError::Protocol(format!("SCRAM server signature invalid: {e}"))
                    })?;
                    continue;
                }
                other => {
                    let name = match other {
                        2 => "Kerberos V5",
                        7 | 8 => "GSSAPI",
                        9 => "SSPI",
                        _ => "unknown",
                    };
                    return Err(ReplicationError::UnsupportedAuth(format!(
                        "{name} ({other})"
                    )));
                }
            }
            self.flush().await?;
        }
    }

    fn classify_startup_error(&self, e: ServerError) -> ReplicationError {
        match e.code.as_str() {
            "28P01" => ReplicationError::WrongPassword {
                user: self.user.clone(),
                source: Box::new(e),
            },
            // insufficient_privilege while starting a walsender: no REPLICATION attribute.
            "42501" => ReplicationError::NotReplicationRole {
                user: self.user.clone(),
                source: Box::new(e),
            },
            _ => ReplicationError::Rejected(Box::new(e)),
        }
    }

    async fn flush(&mut self) -> Result<(), ReplicationError> {
        self.io
            .write_all(&self.write_buf)
            .await
            .map_err(ReplicationError::Io)?;
        self.write_buf.clear();
        self.io.flush().await.map_err(ReplicationError::Io)
    }

    /// A complete message already in the buffer, if any. No I/O.
    pub fn try_next_message(&mut self) -> Result<Option<BackendMessage>, ReplicationError> {
        if self.read_buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.read_buf[0];
        let len = u32::from_be_bytes([
            self.read_buf[1],
            self.read_buf[2],
            self.read_buf[3],
            self.read_buf[4],
        ]) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(ReplicationError::Protocol(format!(
                "invalid message length {len} for message {:?}",
                tag as char
            )));
        }
        if self.read_buf.len() < len + 1 {
            // Make room for the rest in one go.
            self.read_buf.reserve(len + 1 - self.read_buf.len());
            return Ok(None);
        }
        let mut m = self.read_buf.split_to(len + 1);
        m.advance(5);
        Ok(Some(BackendMessage {
            tag,
            body: m.freeze(),
        }))
    }

    /// Reads more bytes from the socket. Cancel-safe: a `select!` may drop it.
    pub async fn fill(&mut self) -> Result<(), ReplicationError> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
            self.read_buf.reserve(READ_CHUNK);
        }
        let n = self.io.read_buf(&mut self.read_buf).await.map_err(io_err)?;
        if n == 0 {
            return Err(ReplicationError::Closed);
        }
        Ok(())
    }

    pub async fn next_message(&mut self) -> Result<BackendMessage, ReplicationError> {
        loop {
            if let Some(m) = self.try_next_message()? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }

    /// Runs a replication command or SQL statement with the simple query protocol and
    /// returns its rows as text.
    pub async fn simple_query(
        &mut self,
        sql: &str,
        during: &'static str,
    ) -> Result<Vec<TextRow>, ReplicationError> {
        frontend::query(sql, &mut self.write_buf).map_err(ReplicationError::Io)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let m = self.next_message().await?;
            match m.tag {
                b'D' => rows.push(parse_data_row(&m.body)?),
                b'E' => error = Some(parse_error(&m.body)),
                b'Z' => break,
                // RowDescription, CommandComplete, EmptyQuery, Notice, ParameterStatus.
                _ => {}
            }
        }
        match error {
            Some(source) => Err(ReplicationError::Server {
                during,
                source: Box::new(source),
            }),
            None => Ok(rows),
        }
    }

    /// Sends START_REPLICATION and waits for the server to switch to CopyBoth.
    pub async fn start_replication(&mut self, command: &str) -> Result<(), ReplicationError> {
        frontend::query(command, &mut self.write_buf).map_err(ReplicationError::Io)?;
        self.flush().await?;
        loop {
            let m = self.next_message().await?;
            match m.tag {
                // CopyBothResponse: postgres-protocol has no type for it, we need none.
                b'W' => return Ok(()),
                b'E' => {
                    return Err(ReplicationError::Server {
                        during: "START_REPLICATION",
                        source: Box::new(parse_error(&m.body)),
                    })
                }
                b'N' | b'S' => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} after START_REPLICATION",
                        other as char
                    )))
                }
            }
        }
    }

    /// Queues a CopyData message; sent by the next [`Self::send`].
    pub fn queue_copy_data(&mut self, data: &[u8]) -> Result<(), ReplicationError> {
        frontend::CopyData::new(data)
            .map_err(ReplicationError::Io)?
            .write(&mut self.write_buf);
        Ok(())
    }

    pub async fn send(&mut self) -> Result<(), ReplicationError> {
        self.flush().await
    }

    /// Ends the session politely: CopyDone then Terminate. Errors are moot at this point.
    pub async fn close(mut self) {
        frontend::copy_done(&mut self.write_buf);
        frontend::terminate(&mut self.write_buf);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
        let _ = self.io.shutdown().await;
    }
}

async fn open(target: &Target) -> std::io::Result<Box<dyn Io>> {
    match target {
        Target::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s))
        }
        Target::Unix { dir, port } => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            Ok(Box::new(tokio::net::UnixStream::connect(path).await?))
        }
    }
}

/// `15.18 (Debian 15.18-0+deb12u1)` -> 150018; `9.6.24` -> 90624.
pub fn parse_server_version(v: &str) -> u32 {
    let nums: Vec<u32> = v
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    match nums.as_slice() {
        [major, rest @ ..] if *major >= 10 => major * 10000 + rest.first().copied().unwrap_or(0),
        [major, minor, rest @ ..] => {
            major * 10000 + minor * 100 + rest.first().copied().unwrap_or(0)
        }
        [major] => major * 10000,
        [] => 0,
    }
}

/// ErrorResponse/NoticeResponse fields.
pub fn parse_error(body: &[u8]) -> ServerError {
    let mut e = ServerError {
        severity: "ERROR".into(),
        code: "XX000".into(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    for field in body.split(|&b| b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'V' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    e
}

fn parse_data_row(body: &[u8]) -> Result<TextRow, ReplicationError> {
    let bad = || ReplicationError::Protocol("malformed DataRow".into());
    let mut b = body;
    if b.len() < 2 {
        return Err(bad());
    }
    let n = b.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if b.len() < 4 {
            return Err(bad());
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = len as usize;
        if b.len() < len {
            return Err(bad());
        }
        row.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
        b.advance(len);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_become_numbers() {
        assert_eq!(
            parse_server_version("15.18 (Debian 15.18-0+deb12u1)"),
            150018
        );
        assert_eq!(parse_server_version("17.2"), 170002);
        assert_eq!(parse_server_version("14beta1"), 140000);
        assert_eq!(parse_server_version("9.6.24"), 90624);
    }

    #[test]
    fn error_fields_are_read() {
        let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"x\"\0\0";
        let e = parse_error(body);
        assert_eq!(e.code, "28P01");
        assert_eq!(e.severity, "FATAL");
        assert!(e.message.starts_with("password authentication failed"));
    }

    #[test]
    fn connection_params_come_from_urls_and_hide_the_password() {
        let c: tokio_postgres::Config =
            "postgres://bob:secret@127.0.0.1:5433/chat".parse().unwrap();
        let p = ConnectParams::from_config(&c).unwrap();
        assert_eq!(
            p.targets,
            vec![Target::Tcp {
                host: "127.0.0.1".into(),
                port: 5433
            }]
        );
        assert_eq!((p.user.as_str(), p.dbname.as_str()), ("bob", "chat"));
        assert!(!format!("{p:?}").contains("secret"));
        let c: tokio_postgres::Config = "host=/tmp/pg port=5999 user=a dbname=b".parse().unwrap();
        let p = ConnectParams::from_config(&c).unwrap();
        assert_eq!(
            p.targets,
            vec![Target::Unix {
                dir: "/tmp/pg".into(),
                port: 5999
            }]
        );
    }
}
