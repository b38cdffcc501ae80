//! The processes of a cluster run: N agentry instances, nginx in front of
//! them, and (for a Redis fault) a private redis-server. Each is registered
//! in [`Resources`] the moment it is spawned, so it is stopped however the
//! run ends.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::Command;

use crate::cli::Persistence;
use crate::client::BaseUrl;
use crate::server::{self, Resources};

/// The address nginx connects to the instances from: the one address the
/// instances trust as a proxy (`http.trusted_proxies`). Clients reach nginx
/// from other loopback addresses, so a client can never pass as the proxy.
pub const PROXY_SOURCE: &str = "127.0.0.2";

/// One agentry instance.
pub struct Instance {
    /// Its name in [`Resources`] and in the report: `agentry-1` …
    pub name: String,
    pub api: BaseUrl,
    pub metrics: BaseUrl,
    pub pid: u32,
}

/// What every instance is started with.
pub struct InstanceEnv {
    pub binary: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl InstanceEnv {
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Starts instance `index` (1-based) and waits until it is ready.
pub async fn start_instance(
    env: &InstanceEnv,
    index: usize,
    dir: &Path,
    resources: &Resources,
) -> anyhow::Result<Instance> {
    let name = format!("agentry-{index}");
    let port = server::free_loopback_port()?;
    let metrics_port = server::free_loopback_port()?;
    let log = dir.join(format!("{name}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let bind = format!("127.0.0.1:{port}");
    let child = Command::new(&env.binary)
        .args(["serve", "--bind", &bind])
        .envs(env.pairs())
        .env(
            "AGENTRY__METRICS__BIND",
            format!("127.0.0.1:{metrics_port}"),
        )
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("could not start {}", env.binary.display()))?;
    let pid = child.id().context("agentry exited at once")?;
    resources.add_child(&name, child);
    let api = BaseUrl::loopback(port);
    server::wait_ready(&api, resources, &name, &log).await?;
    eprintln!("loadtest: {name} (pid {pid}) ready on {api}");
    Ok(Instance {
        name,
        api,
        metrics: BaseUrl::loopback(metrics_port),
        pid,
    })
}

/// nginx on PATH or in /usr/sbin; installed from Debian's package when
/// missing and loadtest runs as root.
pub async fn find_or_install_nginx(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(path.is_file(), "no nginx at {}", path.display());
        return Ok(path.to_owned());
    }
    let found = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nginx"))
            .find(|path| path.is_file())
    };
    if let Some(path) = found() {
        return Ok(path);
    }
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        bail!("nginx is not installed: `apt-get install nginx` (as root), or pass --nginx-bin");
    }
    eprintln!("loadtest: nginx is missing; installing Debian's package");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "nginx"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .await
            .context("could not run apt-get")?;
        anyhow::ensure!(
            status.success(),
            "apt-get {} failed ({status})",
            args.join(" ")
        );
    }
    found().context("apt-get installed nginx, but no nginx binary is on PATH or in /usr/sbin")
}

/// nginx's version line (`nginx/1.22.1`), for the report.
pub async fn nginx_version(binary: &Path) -> String {
    match Command::new(binary).arg("-v").output().await {
        // nginx prints `nginx version: nginx/1.22.1` on stderr.
        Ok(output) => String::from_utf8_lossy(&output.stderr)
            .trim()
            .trim_start_matches("nginx version: ")
            .to_owned(),
        Err(_) => "nginx".to_owned(),
    }
}

/// The balancer's configuration: round robin over the instances, with the
/// client's address in X-Forwarded-For (set, not appended: nginx is the
/// edge, and what a client claims there must not reach the instances),
/// connections to the instances kept alive and from [`PROXY_SOURCE`], and
/// no buffering, so event streams flow. A request that cannot be sent to
/// an instance (connect refused: it died) goes to the next; one already
/// sent is not repeated (POSTs are not idempotent), so it fails.
pub fn nginx_config(dir: &Path, listen_port: u16, instances: &[BaseUrl], as_root: bool) -> String {
    let servers: String = instances
        .iter()
        .map(|api| {
            format!(
                "        server {} max_fails=1 fail_timeout=2s;\n",
                api.authority()
            )
        })
        .collect();
    let dir = dir.display();
    let user = if as_root { "user root;\n" } else { "" };
    format!(
        "{user}daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp/body;
    proxy_temp_path {dir}/nginx-tmp/proxy;
    fastcgi_temp_path {dir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {dir}/nginx-tmp/uwsgi;
    scgi_temp_path {dir}/nginx-tmp/scgi;
    client_max_body_size 2m;
    upstream agentry {{
{servers}        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{listen_port} backlog=4096;
        location / {{
            proxy_pass http://agentry;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_bind {PROXY_SOURCE};
            proxy_buffering off;
            proxy_read_timeout 120s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"
    )
}

/// Starts nginx in front of `instances`; returns its base URL once it
/// answers /readyz from an instance.
pub async fn start_nginx(
    binary: &Path,
    dir: &Path,
    instances: &[BaseUrl],
    resources: &Resources,
) -> anyhow::Result<BaseUrl> {
    std::fs::create_dir_all(dir.join("nginx-tmp"))?;
    let port = server::free_loopback_port()?;
    // SAFETY: geteuid only reads the process's credentials.
    let as_root = unsafe { libc::geteuid() } == 0;
    let config = dir.join("nginx.conf");
    std::fs::write(&config, nginx_config(dir, port, instances, as_root))?;
    let log = dir.join("nginx-error.log");
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&config)
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("could not start {}", binary.display()))?;
    resources.add_child("nginx", child);
    let base = BaseUrl::loopback(port);
    server::wait_ready(&base, resources, "nginx", &log).await?;
    Ok(base)
}

/// A redis-server of the run's own, which a fault may restart.
pub struct PrivateRedis {
    pub port: u16,
    pub dir: PathBuf,
    pub persistence: Persistence,
}

impl PrivateRedis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again: on the same port and directory, so an append-only
    /// file written before is read back).
    pub async fn start(&self, resources: &Resources) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let aof = match self.persistence {
            Persistence::None => "no",
            Persistence::Aof => "yes",
        };
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", aof, "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("could not start redis-server (Debian's redis-server package)")?;
        resources.add_child("redis", child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !redis_answers(self.port).await {
            if let Some(status) = resources.exited("redis") {
                bail!(
                    "redis-server exited at start ({status}); see {}",
                    self.dir.join("redis.log").display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops it as an operator's restart does (SIGTERM: with the append-only
    /// file on, Redis writes it out before it exits).
    pub async fn stop(&self, resources: &Resources) {
        if let Some(child) = resources.take_child("redis") {
            server::stop_all(vec![child]).await;
        }
    }
}

/// PING over a plain socket.
async fn redis_answers(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Client source addresses: the hot key's one, and the pool of many.
pub fn hot_client() -> IpAddr {
    IpAddr::from([127, 0, 0, 10])
}

/// The `n`th of 65,536 client addresses in 127.1.0.0/16.
pub fn many_client(n: u64) -> IpAddr {
    IpAddr::from([127, 1, (n >> 8) as u8, n as u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balancer_trusts_nothing_a_client_forwards_and_names_every_instance() {
        let instances = [BaseUrl::loopback(8001), BaseUrl::loopback(8002)];
        let config = nginx_config(Path::new("/tmp/x"), 9000, &instances, false);
        assert!(config.contains("server 127.0.0.1:8001 max_fails=1"));
        assert!(config.contains("server 127.0.0.1:8002 max_fails=1"));
        assert!(config.contains("listen 127.0.0.1:9000"));
        assert!(config.contains("proxy_set_header X-Forwarded-For $remote_addr;"));
        assert!(config.contains(&format!("proxy_bind {PROXY_SOURCE};")));
        assert!(!config.contains("user root"));
        assert!(nginx_config(Path::new("/tmp/x"), 9000, &instances, true).starts_with("user root;"));
    }

    #[test]
    fn client_addresses_are_distinct_loopback_addresses_apart_from_the_proxy() {
        let proxy: IpAddr = PROXY_SOURCE.parse().unwrap();
        assert_ne!(hot_client(), proxy);
        assert_eq!(many_client(0), IpAddr::from([127, 1, 0, 0]));
        assert_eq!(many_client(258), IpAddr::from([127, 1, 1, 2]));
        assert!(many_client(65_535).is_loopback());
    }
}
