//! A self-started agentry: built with cargo, on a fresh database and Redis
//! prefix, on a free loopback port; stopped and removed afterwards.
//!
//! Everything the run creates is registered in [`Resources`] the moment it
//! exists, so `release` removes it whether the run finished, failed or was
//! interrupted (the caller drops the run's future on Ctrl-C, then releases).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::cli::ChatArgs;
use crate::client::{BaseUrl, Connection};
use crate::pg;

/// How long the server may take to answer /readyz 200.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a SIGTERM'd server may take to finish before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the run created and must remove.
#[derive(Default)]
pub struct Resources {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Processes the run started, by name, stopped in reverse order.
    children: Vec<(String, Child)>,
    /// Owner URL (any database) and the name of the database to drop.
    database: Option<(String, String)>,
    /// Redis URL and the key prefix to clear.
    redis: Option<(String, String)>,
    log: Option<PathBuf>,
    /// A directory of the run's files (configs, logs, data), removed with
    /// the log.
    scratch: Option<PathBuf>,
}

/// The name the chat scenario's one server is registered under.
const AGENTRY: &str = "agentry";

/// The started server.
pub struct Started {
    pub base: BaseUrl,
    /// Its metrics listener.
    pub metrics: BaseUrl,
    pub pid: u32,
    pub database: String,
}

impl Resources {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut inner)
    }

    /// The exit status of the process registered as `name`, if it has exited.
    pub fn exited(&self, name: &str) -> Option<std::process::ExitStatus> {
        self.with(|inner| {
            let (_, child) = inner.children.iter_mut().find(|(n, _)| n == name)?;
            child.try_wait().ok().flatten()
        })
    }

    /// Registers a started process, to be stopped on release.
    pub fn add_child(&self, name: &str, child: Child) {
        self.with(|inner| inner.children.push((name.to_owned(), child)));
    }

    /// Takes a process back (to stop or replace it itself).
    pub fn take_child(&self, name: &str) -> Option<Child> {
        self.with(|inner| {
            let index = inner.children.iter().position(|(n, _)| n == name)?;
            Some(inner.children.remove(index).1)
        })
    }

    /// Registers the database to drop and the Redis prefix to clear.
    pub fn add_store(&self, database: (String, String), redis: Option<(String, String)>) {
        self.with(|inner| {
            inner.database = Some(database);
            inner.redis = redis;
        });
    }

    /// Registers the run's directory of files.
    pub fn set_scratch(&self, dir: PathBuf) {
        self.with(|inner| inner.scratch = Some(dir));
    }

    /// Stops the server, drops its database, clears its Redis keys and
    /// (unless `keep_log`) removes its log. Returns what could not be done.
    pub async fn release(&self, keep_log: bool) -> Vec<String> {
        let (children, database, redis, log, scratch) = self.with(|inner| {
            (
                std::mem::take(&mut inner.children),
                inner.database.take(),
                inner.redis.take(),
                inner.log.take(),
                inner.scratch.take(),
            )
        });
        let mut problems = Vec::new();
        // The last started (a balancer, then the servers) stops first; a
        // private Redis, started before the servers, after them.
        stop_all(children.into_iter().rev().map(|(_, child)| child).collect()).await;
        if let Some((url, name)) = database {
            let dropped = async {
                let mut connection = pg::connect_maintenance(&url).await?;
                pg::drop_database(&mut connection, &name).await
            };
            if let Err(error) = dropped.await {
                problems.push(format!("could not drop database {name}: {error:#}"));
            }
        }
        if let Some((url, prefix)) = redis {
            if let Err(error) = delete_redis_prefix(&url, &prefix).await {
                problems.push(format!("could not remove Redis keys {prefix}:*: {error:#}"));
            }
        }
        if let Some(log) = log {
            if keep_log {
                eprintln!("loadtest: the server's log is at {}", log.display());
            } else {
                let _ = std::fs::remove_file(log);
            }
        }
        if let Some(dir) = scratch {
            if keep_log {
                eprintln!("loadtest: the cluster's logs are in {}", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        problems
    }
}

/// Sends `signal` to a child we spawned and have not yet reaped.
pub fn signal(child: &Child, signal: i32) -> bool {
    match child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: the pid is our own unreaped child's, so it names no other process.
        Some(pid) => unsafe { libc::kill(pid, signal) == 0 },
        None => false,
    }
}

/// SIGTERM to all at once (agentry finishes in-flight requests and closes
/// its pools), then SIGKILL to any still running after STOP_TIMEOUT.
pub async fn stop_all(children: Vec<Child>) {
    for child in &children {
        signal(child, libc::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    for mut child in children {
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            eprintln!("loadtest: a process did not stop within {STOP_TIMEOUT:?}, killing it");
            let _ = child.kill().await;
        }
    }
}

/// The workspace this crate belongs to (agentry's own).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `cargo build --release --bin agentry` (a no-op when up to date) and the
/// binary it produced, as cargo reports it.
pub async fn build_agentry() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("loadtest: cargo build --release --bin agentry");
    let output = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            "agentry",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("could not run cargo (pass --agentry-bin PATH to skip the build)")?;
    if !output.status.success() {
        bail!(
            "cargo build --release --bin agentry failed ({})",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "agentry" {
            if let Some(path) = message["executable"].as_str() {
                return Ok(PathBuf::from(path));
            }
        }
    }
    // Cargo names the artifact on every build; these are its usual places.
    let candidates = [
        std::env::var_os("CARGO_TARGET_DIR")
            .map(|dir| workspace_root().join(dir).join("release/agentry")),
        Some(workspace_root().join("target/release/agentry")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .context("cargo built agentry but loadtest cannot find the binary; pass --agentry-bin PATH")
}

pub fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `agentry operator create`, which also creates the database and migrates
/// it, as `serve` would.
pub async fn operator_create(
    binary: &Path,
    env: &[(&str, &str)],
    email: &str,
    password: &str,
) -> anyhow::Result<()> {
    let output = Command::new(binary)
        .args([
            "operator",
            "create",
            "--email",
            email,
            "--password",
            password,
        ])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("could not run {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "agentry operator create failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Starts agentry for this run; every resource it creates is registered in
/// `resources` before the next step.
pub async fn start(
    args: &ChatArgs,
    run_id: &str,
    resources: &Resources,
) -> anyhow::Result<Started> {
    let binary = match &args.agentry_bin {
        Some(path) => path.clone(),
        None => build_agentry().await?,
    };
    anyhow::ensure!(
        binary.is_file(),
        "no agentry binary at {}",
        binary.display()
    );
    let database = format!("agentry_load_{run_id}");
    let prefix = format!("agentry-load-{run_id}");
    let database_url = pg::with_database(&args.database_url, &database)?;
    // With limits on, the tiers stay at their defaults: the seeding raises
    // the load-test tenant's own tiers through the operator API.
    let limits_on = if args.rate_limits { "true" } else { "false" };
    let metrics_port = free_loopback_port()?;
    let metrics_bind = format!("127.0.0.1:{metrics_port}");
    let env = [
        ("AGENTRY__METRICS__BIND", metrics_bind.as_str()),
        ("DATABASE_URL", database_url.as_str()),
        ("REDIS_URL", args.redis_url.as_str()),
        ("AGENTRY__DEMO__SEED", "false"),
        ("AGENTRY__REDIS__PREFIX", prefix.as_str()),
        ("AGENTRY__LOG__FILTER", "warn"),
        ("AGENTRY__RATE_LIMITS__ENABLED", limits_on),
    ];

    resources.add_store(
        (args.database_url.clone(), database.clone()),
        Some((args.redis_url.clone(), prefix.clone())),
    );
    eprintln!("loadtest: creating database {database} and the operator");
    operator_create(&binary, &env, &args.operator_email, &args.operator_password).await?;

    let port = free_loopback_port()?;
    let log = std::env::temp_dir().join(format!("agentry-load-{run_id}.log"));
    let log_file = std::fs::File::create(&log)
        .with_context(|| format!("could not create {}", log.display()))?;
    resources.with(|inner| inner.log = Some(log.clone()));
    let bind = format!("127.0.0.1:{port}");
    let child = Command::new(&binary)
        .args(["serve", "--bind", &bind])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let pid = child.id().context("agentry exited at once")?;
    resources.add_child(AGENTRY, child);

    let base = BaseUrl::loopback(port);
    eprintln!("loadtest: agentry (pid {pid}) starting on {base}");
    wait_ready(&base, resources, AGENTRY, &log).await?;
    Ok(Started {
        base,
        metrics: BaseUrl::loopback(metrics_port),
        pid,
        database,
    })
}

/// Polls `base`/readyz until it answers 200; fails if the process
/// registered as `name` exits first, with the end of its `log`.
pub async fn wait_ready(
    base: &BaseUrl,
    resources: &Resources,
    name: &str,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut connection = Connection::new(base.clone());
    loop {
        if let Some(status) = resources.exited(name) {
            bail!(
                "{name} exited during start-up ({status}); its log ends:\n{}",
                tail(log)
            );
        }
        let last = match connection
            .call(Method::GET, "/readyz", None, None, None)
            .await
        {
            Ok((StatusCode::OK, _)) => return Ok(()),
            Ok((status, body)) => format!("{status}: {}", crate::client::snippet(&body)),
            Err(error) => {
                connection.reset();
                format!("{error:#}")
            }
        };
        if Instant::now() > deadline {
            bail!(
                "{name} was not ready within {READY_TIMEOUT:?} (last: {last}); its log ends:\n{}",
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of a log, for an error message.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Removes every key under `prefix:` with one server-side SCAN loop, speaking
/// RESP directly (three commands do not justify a Redis client crate).
async fn delete_redis_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let target = RedisTarget::parse(url)?;
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .context("Redis did not accept in time")??;
    let mut stream = BufReader::new(stream);
    if let Some(password) = &target.password {
        match &target.user {
            Some(user) => command(&mut stream, &["AUTH", user, password]).await?,
            None => command(&mut stream, &["AUTH", password]).await?,
        };
    }
    if let Some(db) = &target.db {
        command(&mut stream, &["SELECT", db]).await?;
    }
    const SCRIPT: &str = "local cursor = '0' local n = 0 \
        repeat local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000) \
        cursor = r[1] for _, k in ipairs(r[2]) do redis.call('UNLINK', k) n = n + 1 end \
        until cursor == '0' return n";
    let pattern = format!("{prefix}:*");
    command(&mut stream, &["EVAL", SCRIPT, "0", &pattern]).await?;
    Ok(())
}

/// Sends one command and reads its one-line reply (`+OK`, `:n`; `-ERR` fails).
async fn command(stream: &mut BufReader<TcpStream>, parts: &[&str]) -> anyhow::Result<String> {
    let mut request = format!("*{}\r\n", parts.len());
    for part in parts {
        request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
    }
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_line(&mut reply))
        .await
        .context("Redis did not answer in time")??;
    let reply = reply.trim_end().to_owned();
    if let Some(error) = reply.strip_prefix('-') {
        bail!("{} failed: {error}", parts[0]);
    }
    Ok(reply)
}

#[derive(Debug, PartialEq, Eq)]
struct RedisTarget {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    db: Option<String>,
}

impl RedisTarget {
    /// `redis://[[user]:password@]host[:port][/db]`.
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("redis://")
            .with_context(|| format!("only redis:// URLs can be cleaned up, not {url:?}"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host_port)) => (Some(credentials), host_port),
            None => (None, authority),
        };
        let (user, password) = match credentials.map(|c| c.split_once(':')) {
            Some(Some((user, password))) => (
                Some(user.to_owned()).filter(|u| !u.is_empty()),
                Some(password.to_owned()),
            ),
            Some(None) => (None, credentials.map(str::to_owned)),
            None => (None, None),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .with_context(|| format!("bad port in {url:?}"))?,
            ),
            None => (host_port, 6379),
        };
        let db = path
            .split('?')
            .next()
            .filter(|d| !d.is_empty())
            .map(str::to_owned);
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            user,
            password,
            db,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_parse() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379").unwrap(),
            RedisTarget {
                host: "127.0.0.1".into(),
                port: 6379,
                user: None,
                password: None,
                db: None
            }
        );
        let full = RedisTarget::parse("redis://me:pw@cache:7000/2").unwrap();
        assert_eq!(full.user.as_deref(), Some("me"));
        assert_eq!(full.password.as_deref(), Some("pw"));
        assert_eq!((full.host.as_str(), full.port), ("cache", 7000));
        assert_eq!(full.db.as_deref(), Some("2"));
        let password_only = RedisTarget::parse("redis://:pw@cache").unwrap();
        assert_eq!(password_only.user, None);
        assert_eq!(password_only.password.as_deref(), Some("pw"));
        assert_eq!(password_only.port, 6379);
        assert!(RedisTarget::parse("redis-cluster://a:1").is_err());
        assert!(RedisTarget::parse("redis://a:notaport").is_err());
    }
}
