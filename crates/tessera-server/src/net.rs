//! Network facts about a caller that do not depend on the web framework.

use std::net::IpAddr;

use ipnet::IpNet;

/// Walks `X-Forwarded-For` from the right, past trusted proxies, to the first
/// address a trusted hop vouches for. Headers from untrusted peers are
/// ignored: anyone can write them.
pub fn resolve_client_ip(peer: IpAddr, xff: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in xff.unwrap_or("").rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            resolve_client_ip(ip("192.0.2.1"), Some("203.0.113.9"), &trusted),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn forwarded_for_is_walked_past_trusted_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            resolve_client_ip(
                ip("10.0.0.1"),
                Some("198.51.100.7, 203.0.113.9, 10.0.0.2"),
                &trusted
            ),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last address a trusted hop gave.
        assert_eq!(
            resolve_client_ip(ip("10.0.0.1"), Some("nonsense, 10.0.0.3"), &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(
            resolve_client_ip(ip("10.0.0.1"), None, &trusted),
            ip("10.0.0.1")
        );
    }
}
