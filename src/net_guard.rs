//! Outbound requests to URLs a tenant supplies (its LLM's base URL, its
//! webhook receivers) must not reach into our own networks (SSRF).
//!
//! [`is_public`] says which addresses are on the public internet. The
//! [`GuardedClient`] applies it where it counts, at connection time: the host
//! is resolved through a resolver hook that refuses the whole name when any of
//! its addresses is not allowed, the connection goes only to the addresses
//! that were checked (no second resolution, so DNS rebinding cannot slip
//! through), IP literals are checked before the request, and redirects are
//! never followed. [`check_public_url`] is the configuration-time check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address on the public internet. IPv6 forms that carry an
/// IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that address;
/// Teredo is refused outright (its embedded server and client addresses
/// tunnel anywhere).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_unspecified()
        || v4.is_multicast()
        // "This network" 0.0.0.0/8.
        || a == 0
        // Carrier-grade NAT 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments 192.0.0.0/24 and the 6to4 relay 192.88.99.0/24.
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 88 && c == 99)
        // Benchmarking 198.18.0.0/15.
        || (a == 198 && (18..20).contains(&b))
        // Reserved 240.0.0.0/4.
        || a >= 240)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let segments = v6.segments();
    let embedded_v4 = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    match segments {
        // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
        [0, 0, 0, 0, 0, 0, high, low] => {
            return (high, low) != (0, 0)
                && (high, low) != (0, 1)
                && is_public_v4(embedded_v4(high, low))
        }
        // NAT64 64:ff9b::/96 (and the local-use 64:ff9b:1::/48, never public).
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return is_public_v4(embedded_v4(high, low)),
        [0x64, 0xff9b, 1, ..] => return false,
        // 6to4 2002::/16 carries the IPv4 address in its next 32 bits.
        [0x2002, high, low, ..] => return is_public_v4(embedded_v4(high, low)),
        // IETF protocol assignments 2001::/23 (Teredo 2001::/32, benchmarking,
        // ORCHID) and the documentation ranges 2001:db8::/32 and 3fff::/20.
        [0x2001, 0..=0x1ff, ..] | [0x2001, 0xdb8, ..] | [0x3fff, 0..=0xfff, ..] => return false,
        _ => {}
    }
    let first = segments[0];
    !(v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        // Discard-only 100::/64.
        || segments[..4] == [0x100, 0, 0, 0]
        // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // Only 2000::/3 is allocated as global unicast.
        || (first & 0xe000) != 0x2000)
}

/// What a guarded client may reach besides the public internet.
#[derive(Clone, Debug, Default)]
pub struct GuardPolicy {
    /// Plain `http://` URLs (otherwise https only).
    pub allow_http: bool,
    /// Loopback addresses (tests, and receivers on the same host).
    pub allow_loopback: bool,
    /// Every address (a tenant LLM on a private network, by operator opt-in).
    pub allow_private: bool,
    /// Private networks the operator runs receivers on.
    pub allowed_networks: Vec<IpNet>,
    /// Host names allowed whatever they resolve to (lowercase).
    pub allowed_hosts: Vec<String>,
}

impl GuardPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private
            || is_public(ip)
            || (self.allow_loopback && is_loopback(ip))
            || self.allowed_networks.iter().any(|net| net.contains(&ip))
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.contains(&host)
    }

    /// Checks what can be checked before a request: the scheme, and the host
    /// when it is an IP literal (those never reach the resolver). The `url`
    /// crate has already read decimal, octal, hex and short IPv4 forms
    /// (`http://2130706433/`, `http://0x7f.1/`) as the addresses they are.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Blocked> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(Blocked::new("the URL must use https")),
            _ => return Err(Blocked::new("the URL must be http or https")),
        }
        let ip = match url.host() {
            None => return Err(Blocked::new("the URL has no host")),
            Some(url::Host::Domain(host)) => {
                // An all-numeric name the URL parser did not read as an address
                // would be resolved as one by the system; refuse it.
                if host.parse::<IpAddr>().is_ok() {
                    return Err(Blocked::new("the host is not a valid name"));
                }
                return Ok(());
            }
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err(Blocked::address(ip))
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl GuardPolicy {
    /// The full check of a URL before it is saved: [`Self::check_url`], then
    /// every address its host resolves to now. (Deliveries check again when
    /// they connect: what a name resolves to can change.)
    pub async fn check_reachable(
        &self,
        url: &url::Url,
        names: &dyn NameResolver,
    ) -> Result<(), Blocked> {
        self.check_url(url)?;
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let addresses = names
            .lookup(host.to_owned())
            .await
            .map_err(|_| Blocked::new(format!("the host {host:?} does not resolve")))?;
        self.check_addresses(host, &addresses)
    }

    /// Whether `host` may be reached at `addresses` (what it resolved to):
    /// every one of them must be allowed, unless the host itself is.
    fn check_addresses(&self, host: &str, addresses: &[IpAddr]) -> Result<(), Blocked> {
        if addresses.is_empty() {
            return Err(Blocked::new(format!("the host {host:?} does not resolve")));
        }
        if self.allows_host(host) {
            return Ok(());
        }
        match addresses.iter().find(|ip| !self.allows(**ip)) {
            Some(refused) => Err(Blocked::new(format!(
                "the host {host:?} resolves to {refused}, which {NOT_PUBLIC}"
            ))),
            None => Ok(()),
        }
    }
}

/// Why an address is refused, in words a tenant can act on.
const NOT_PUBLIC: &str = "is not a public address (loopback, private network or reserved); \
                          only public addresses are allowed";

/// Why a request was not sent; fit for the tenant who owns the URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Blocked {
    pub reason: String,
}

impl Blocked {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    fn address(ip: IpAddr) -> Self {
        Self::new(format!("{ip} {NOT_PUBLIC}"))
    }

    /// The block behind a failed request, if that is why it failed.
    pub fn behind<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e Blocked> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(blocked) = error.downcast_ref::<Blocked>() {
                return Some(blocked);
            }
            current = error.source();
        }
        None
    }
}

/// Turns a host name into addresses: the system resolver, or a test's.
pub trait NameResolver: Send + Sync + 'static {
    fn lookup(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver.
pub struct SystemResolver;

impl NameResolver for SystemResolver {
    fn lookup(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
    {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|address| address.ip())
                .collect())
        })
    }
}

/// The resolver hook: a name resolves only if every one of its addresses is
/// allowed, and the client then connects to exactly those.
struct GuardedResolve {
    policy: Arc<GuardPolicy>,
    names: Arc<dyn NameResolver>,
}

impl Resolve for GuardedResolve {
    fn resolve(&self, name: Name) -> Resolving {
        let (policy, names) = (self.policy.clone(), self.names.clone());
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // A failed lookup stays an I/O error: worth retrying, unlike a block.
            let addresses = names.lookup(host.clone()).await?;
            policy.check_addresses(&host, &addresses)?;
            let checked: Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(checked)
        })
    }
}

/// An HTTP client that reaches only what its policy allows.
#[derive(Clone)]
pub struct GuardedClient {
    policy: Arc<GuardPolicy>,
    http: reqwest::Client,
}

impl GuardedClient {
    pub fn new(policy: GuardPolicy) -> reqwest::Result<Self> {
        Self::with_resolver(policy, Arc::new(SystemResolver))
    }

    pub fn with_resolver(
        policy: GuardPolicy,
        names: Arc<dyn NameResolver>,
    ) -> reqwest::Result<Self> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolve {
                policy: policy.clone(),
                names,
            }))
            .redirect(reqwest::redirect::Policy::none())
            // A system proxy would connect on our behalf, unchecked.
            .no_proxy()
            .build()?;
        Ok(Self { policy, http })
    }

    pub fn policy(&self) -> &GuardPolicy {
        &self.policy
    }

    /// The underlying client, for adapters that check each URL with
    /// [`GuardPolicy::check_url`] (or [`GuardedClient::request`]) first.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request to `url`, refused before anything is sent when the URL is.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, Blocked> {
        let parsed = url::Url::parse(url).map_err(|_| Blocked::new("the URL is not valid"))?;
        self.policy.check_url(&parsed)?;
        Ok(self.http.request(method, parsed))
    }
}

/// Resolves the URL's host and refuses it unless every address is public:
/// the configuration-time check of a tenant's LLM base URL.
pub async fn check_public_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|_| format!("{raw:?} is not a URL"))?;
    let policy = GuardPolicy {
        allow_http: true,
        ..GuardPolicy::default()
    };
    policy
        .check_reachable(&url, &SystemResolver)
        .await
        .map_err(|blocked| blocked.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "fec0::1",
            "100::1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_to_private_hosts_are_refused() {
        assert!(check_public_url("http://127.0.0.1:11434/v1").await.is_err());
        assert!(check_public_url("http://localhost/v1").await.is_err());
        assert!(check_public_url("http://[::1]:8080").await.is_err());
        assert!(check_public_url("http://169.254.169.254/latest")
            .await
            .is_err());
        assert!(check_public_url("file:///etc/passwd").await.is_err());
        // Public IP literals need no DNS.
        assert!(check_public_url("https://1.1.1.1/v1").await.is_ok());
    }

    /// Names a test decides: each resolves to the addresses given.
    struct FixedNames(Vec<(&'static str, Vec<IpAddr>)>);

    impl NameResolver for FixedNames {
        fn lookup(
            &self,
            host: String,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        {
            let found = self
                .0
                .iter()
                .find(|(name, _)| *name == host)
                .map(|(_, addresses)| addresses.clone());
            Box::pin(async move {
                found.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such name")
                })
            })
        }
    }

    fn test_names() -> Arc<FixedNames> {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        Arc::new(FixedNames(vec![
            ("rebind.test", vec![ip("127.0.0.1")]),
            ("localhost", vec![ip("::1"), ip("127.0.0.1")]),
            ("mixed.test", vec![ip("8.8.8.8"), ip("10.0.0.1")]),
            ("metadata.test", vec![ip("169.254.169.254")]),
            ("mapped.test", vec![ip("::ffff:127.0.0.1")]),
            ("receiver.internal", vec![ip("127.0.0.1")]),
        ]))
    }

    /// A loopback listener counting the connections that reach it.
    async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = reached.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buffer = [0u8; 1024];
                    let _ = socket.read(&mut buffer).await;
                    let _ = socket
                        .write_all(b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/next\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        (port, reached)
    }

    #[tokio::test]
    async fn hostile_urls_are_refused_and_no_connection_reaches_the_target() {
        let (port, reached) = counting_listener().await;
        let client = GuardedClient::with_resolver(
            GuardPolicy {
                allow_http: true,
                ..GuardPolicy::default()
            },
            test_names(),
        )
        .unwrap();
        for host in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "127.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::127.0.0.1]",
            "[64:ff9b::7f00:1]",
            "[2002:7f00:1::]",
            "rebind.test",
            "localhost",
            "mixed.test",
            "metadata.test",
            "mapped.test",
            "169.254.169.254",
            "0.0.0.0",
        ] {
            let url = format!("http://{host}:{port}/hook");
            let outcome: Result<(), Blocked> = match client.request(reqwest::Method::POST, &url) {
                Err(blocked) => Err(blocked),
                Ok(request) => match request.send().await {
                    Ok(response) => panic!("{url} answered {}", response.status()),
                    Err(error) => Err(Blocked::behind(&error)
                        .cloned()
                        .unwrap_or_else(|| panic!("{url} failed but was not blocked: {error:?}"))),
                },
            };
            assert!(outcome.is_err(), "{url}");
        }
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);

        let https_only =
            GuardedClient::with_resolver(GuardPolicy::default(), test_names()).unwrap();
        let refused = https_only
            .request(reqwest::Method::POST, "http://8.8.8.8/hook")
            .unwrap_err();
        assert_eq!(refused.reason, "the URL must use https");
    }

    #[tokio::test]
    async fn allowed_receivers_are_reached_and_redirects_are_not_followed() {
        let (port, reached) = counting_listener().await;
        for policy in [
            GuardPolicy {
                allow_http: true,
                allow_loopback: true,
                ..GuardPolicy::default()
            },
            GuardPolicy {
                allow_http: true,
                allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
                ..GuardPolicy::default()
            },
            GuardPolicy {
                allow_http: true,
                allowed_hosts: vec!["receiver.internal".into()],
                ..GuardPolicy::default()
            },
        ] {
            let client = GuardedClient::with_resolver(policy, test_names()).unwrap();
            let host = if client.policy().allowed_hosts.is_empty() {
                "rebind.test"
            } else {
                "receiver.internal"
            };
            let response = client
                .request(reqwest::Method::POST, &format!("http://{host}:{port}/hook"))
                .unwrap()
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                302,
                "the redirect is returned, not followed"
            );
        }
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
