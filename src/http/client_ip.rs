//! The client's IP address, as the limits and the lockout key it.
//!
//! It is the socket's peer, unless that peer is a configured trusted proxy:
//! then `X-Forwarded-For` is read from the right, skipping trusted hops, and
//! the first untrusted address is the client. Anything to its left was
//! written by the client itself and is ignored, so a spoofed header from an
//! untrusted peer changes nothing.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        // A malformed chain names nobody reliably: the proxy is the client.
        .unwrap_or_default();
    hops.iter()
        .rev()
        .find(|hop| !is_trusted(hop))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn forwarded(chain: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(chain).unwrap());
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = ip("203.0.113.9");
        assert_eq!(client_ip(peer, &forwarded("1.2.3.4"), &trusted), peer);
        assert_eq!(client_ip(peer, &HeaderMap::new(), &[]), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        ];
        let peer = ip("10.0.0.2");
        // The client wrote "6.6.6.6" itself; the proxies appended the rest.
        let chain = forwarded("6.6.6.6, 198.51.100.7, 192.168.1.1");
        assert_eq!(client_ip(peer, &chain, &trusted), ip("198.51.100.7"));
        assert_eq!(
            client_ip(peer, &forwarded("192.168.1.1, 10.1.1.1"), &trusted),
            ip("192.168.1.1"),
            "all trusted: the farthest hop"
        );
        assert_eq!(client_ip(peer, &forwarded("junk, 1.2.3.4"), &trusted), peer);
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }
}
