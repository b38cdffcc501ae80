//! Refuses outbound URLs that point into private networks (SSRF). Used where
//! a tenant supplies a URL the server will call, such as its own LLM's base URL.
//!
//! This is the configuration-time check; re-checking the resolved address at
//! connection time (DNS rebinding) belongs to the outbound HTTP guard.

use std::net::IpAddr;

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                // Carrier-grade NAT 100.64.0.0/10 and benchmarking 198.18.0.0/15.
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7 and link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves the URL's host and refuses it unless every address is public.
pub async fn check_public_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|_| format!("{raw:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the URL must be http or https".into());
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("the host {host:?} does not resolve"))?
        .map(|address| address.ip())
        .collect();
    if addresses.is_empty() {
        return Err(format!("the host {host:?} does not resolve"));
    }
    if addresses.iter().any(|ip| !is_public(*ip)) {
        return Err(format!(
            "the host {host:?} is on a private network; only public addresses are allowed"
        ));
    }
    Ok(())
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
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
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
}
