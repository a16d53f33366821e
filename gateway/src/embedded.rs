//! An embedded PostgreSQL cluster: `ripple dev` runs one when no database URL is given, and
//! the test harness runs a throwaway one per test run.
//!
//! We drive the stock binaries (`initdb`, `pg_ctl`) rather than bundling a server: every
//! platform already packages PostgreSQL, and a cluster made this way is an ordinary one a DBA
//! can open with `psql`. `initdb` refuses to run as root, so when we are root the cluster is
//! owned by and run as an unprivileged account (`postgres`, else `nobody`).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH, via `pg_config --bindir`, \
         or under /usr/lib/postgresql/*/bin. Install them, e.g. `sudo apt-get install postgresql` \
         on Debian/Ubuntu or `brew install postgresql@16` on macOS, or pass --database-url"
    )]
    BinariesMissing,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error(
        "the `{account}` account, which runs the embedded PostgreSQL when Ripple runs as root, \
         cannot enter {path}: choose a --data-dir it can reach, or `chmod o+x {path}`"
    )]
    Unreachable { account: String, path: PathBuf },
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the PostgreSQL server binaries live.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bindir: PathBuf,
}

impl PgBinaries {
    /// Finds `initdb` and `pg_ctl`: PATH first, then `pg_config --bindir`, then the newest
    /// Debian-style `/usr/lib/postgresql/<major>/bin`.
    ///
    /// `RIPPLE_PG_BINDIR`, when set, is the only place looked at (to pin a version).
    pub fn find() -> Result<Self, EmbeddedError> {
        let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
        if let Some(dir) = std::env::var_os("RIPPLE_PG_BINDIR") {
            let dir = PathBuf::from(dir);
            return if has_both(&dir) {
                Ok(Self { bindir: dir })
            } else {
                Err(EmbeddedError::BinariesMissing)
            };
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_both(&dir) {
                    return Ok(Self { bindir: dir });
                }
            }
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && has_both(&dir) {
                return Ok(Self { bindir: dir });
            }
        }
        let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .filter(|(_, dir)| has_both(dir))
            .collect();
        debian.sort();
        debian
            .pop()
            .map(|(_, bindir)| Self { bindir })
            .ok_or(EmbeddedError::BinariesMissing)
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// The OS account that owns and runs the cluster when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    name: &'static str,
    uid: u32,
    gid: u32,
}

/// The first folder from `/` down to `dir` that `ra` may not enter (no search permission).
fn first_unreachable(dir: &Path, ra: &RunAs) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut path = PathBuf::new();
    for part in dir.components() {
        path.push(part);
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = m.mode();
        let can_enter = if m.uid() == ra.uid {
            mode & 0o100 != 0
        } else if m.gid() == ra.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_enter {
            return Some(path);
        }
    }
    None
}

fn running_as_root() -> bool {
    // /proc/self is owned by the effective uid; avoids a libc dependency for one call.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn unprivileged_account() -> Option<RunAs> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let lookup = |name: &'static str| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == name {
                Some(RunAs {
                    name,
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            } else {
                None
            }
        })
    };
    lookup("postgres").or_else(|| lookup("nobody"))
}

/// Settings for a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Loopback TCP port; `None` picks a free one.
    pub port: Option<u16>,
    /// Throwaway clusters trade durability for speed (fsync off).
    pub ephemeral: bool,
    /// Name of the bootstrap superuser.
    pub superuser: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            port: None,
            ephemeral: false,
            superuser: "postgres".into(),
        }
    }
}

/// A PostgreSQL cluster in a data folder, started on 127.0.0.1 with `wal_level=logical`.
#[derive(Debug)]
pub struct Cluster {
    bin: PgBinaries,
    data_dir: PathBuf,
    port: u16,
    superuser: String,
    run_as: Option<RunAs>,
}

pub fn free_port() -> Result<u16, EmbeddedError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err(Path::new("127.0.0.1:0")))?;
    Ok(l.local_addr()
        .map_err(io_err(Path::new("127.0.0.1:0")))?
        .port())
}

impl Cluster {
    /// Creates the cluster in `data_dir` unless one is already there (a kept `ripple dev`
    /// folder), writes our settings, and returns it stopped.
    pub fn init(
        bin: PgBinaries,
        data_dir: &Path,
        opts: &ClusterOptions,
    ) -> Result<Self, EmbeddedError> {
        let run_as = if running_as_root() {
            Some(
                unprivileged_account().ok_or_else(|| EmbeddedError::Command {
                    what: "finding an unprivileged account for initdb".into(),
                    detail: "running as root and neither `postgres` nor `nobody` exists".into(),
                })?,
            )
        } else {
            None
        };
        std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        let data_dir = data_dir.canonicalize().map_err(io_err(data_dir))?;
        if let Some(ra) = run_as {
            std::os::unix::fs::chown(&data_dir, Some(ra.uid), Some(ra.gid))
                .map_err(io_err(&data_dir))?;
            // initdb would fail with a message about some file deep inside; name the
            // folder on the way that the account cannot pass.
            if let Some(path) = first_unreachable(&data_dir, &ra) {
                return Err(EmbeddedError::Unreachable {
                    account: ra.name.to_string(),
                    path,
                });
            }
        }
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let cluster = Self {
            bin,
            data_dir,
            port,
            superuser: opts.superuser.clone(),
            run_as,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            let mut cmd = cluster.command("initdb");
            cmd.arg("-D")
                .arg(&cluster.data_dir)
                .args(["-U", &cluster.superuser, "--auth=trust", "-E", "UTF8"])
                .args(["--locale=C", "--no-instructions"]);
            if opts.ephemeral {
                cmd.arg("--no-sync");
            }
            cluster.run(cmd, "initdb")?;
            cluster.write_config(opts.ephemeral)?;
        }
        Ok(cluster)
    }

    fn write_config(&self, ephemeral: bool) -> Result<(), EmbeddedError> {
        // Loopback only; trust is safe there for a development or test cluster. The socket
        // lives in the data folder so two clusters never fight over /var/run/postgresql.
        let mut conf = format!(
            "\n# written by ripple\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_wal_senders = 20\nmax_replication_slots = 20\n\
             max_connections = 300\nshared_buffers = 128MB\nwal_sender_timeout = 60s\n",
            self.data_dir.display()
        );
        if ephemeral {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).map_err(io_err(&conf_path))?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).map_err(io_err(&conf_path))?;
        let hba = "# written by ripple: loopback only\n\
                   local all all trust\nlocal replication all trust\n\
                   host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n";
        self.write_hba(hba)
    }

    /// Replaces pg_hba.conf (tests use this to require md5 or SCRAM for some roles) and
    /// reloads a running server.
    pub fn write_hba(&self, contents: &str) -> Result<(), EmbeddedError> {
        let path = self.hba_path();
        std::fs::write(&path, contents).map_err(io_err(&path))?;
        if let Some(ra) = self.run_as {
            std::os::unix::fs::chown(&path, Some(ra.uid), Some(ra.gid)).map_err(io_err(&path))?;
        }
        if self.is_running() {
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D").arg(&self.data_dir).arg("reload");
            self.run(cmd, "pg_ctl reload")?;
        }
        Ok(())
    }

    pub fn hba_path(&self) -> PathBuf {
        self.data_dir.join("pg_hba.conf")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// Directory of the cluster's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            self.superuser, self.port, database
        )
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("ripple-postgres.log")
    }

    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// The postmaster's pid while it runs (first line of postmaster.pid, if that process lives).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), EmbeddedError> {
        let log = self.log_path();
        if !log.exists() {
            std::fs::write(&log, b"").map_err(io_err(&log))?;
            if let Some(ra) = self.run_as {
                std::os::unix::fs::chown(&log, Some(ra.uid), Some(ra.gid)).map_err(io_err(&log))?;
            }
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start");
        self.run(cmd, "pg_ctl start").map_err(|e| match e {
            EmbeddedError::Command { what, detail } => {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = tail
                    .lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                EmbeddedError::Command {
                    what,
                    detail: format!("{detail}\nserver log:\n{tail}"),
                }
            }
            other => other,
        })
    }

    /// Fast shutdown: disconnects clients, then stops cleanly.
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        if !self.is_running() {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "60", "-m", "fast", "stop"]);
        self.run(cmd, "pg_ctl stop")
    }

    /// Starts a detached watchdog that, once process `parent` has exited, stops this
    /// cluster and deletes `remove_dir`. Test binaries use it because Rust runs no
    /// destructors for statics: the cluster goes away even if the test process is killed.
    pub fn reap_after_exit(&self, parent: u32, remove_dir: &Path) -> Result<(), EmbeddedError> {
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; \
             pid=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pid\" ]; then kill -INT \"$pid\" 2>/dev/null; \
               for i in $(seq 1 100); do kill -0 \"$pid\" 2>/dev/null || break; sleep 0.1; done; \
               kill -QUIT \"$pid\" 2>/dev/null; fi; rm -rf '{dir}'",
            data = self.data_dir.display(),
            dir = remove_dir.display()
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io_err(Path::new("sh")))?;
        Ok(())
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.tool(tool));
        cmd.stdin(Stdio::null());
        // The server must not inherit our stdout: a test harness that captures output would
        // wait for the pipe to close until the server exits.
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(ra) = self.run_as {
            cmd.uid(ra.uid).gid(ra.gid).current_dir(&self.data_dir);
            // HOME of root is not readable by the account; initdb does not need one.
            cmd.env("HOME", &self.data_dir);
        }
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<(), EmbeddedError> {
        // pg_ctl start leaves the server holding the pipes we gave it; it logs to -l, so
        // give it /dev/null instead of a pipe we would wait on forever.
        if what == "pg_ctl start" {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            let status = cmd.status().map_err(io_err(&self.bin.bindir))?;
            return if status.success() {
                Ok(())
            } else {
                Err(EmbeddedError::Command {
                    what: what.into(),
                    detail: format!("exit status {status}"),
                })
            };
        }
        let out = cmd.output().map_err(io_err(&self.bin.bindir))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(EmbeddedError::Command {
                what: what.into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }
}
