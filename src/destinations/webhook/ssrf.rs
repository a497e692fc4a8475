//! The webhook sink's SSRF guard: which addresses a delivery may reach.
//!
//! Owns the address policy and the DNS resolver that enforces it. Invariants: unless the
//! operator sets `allow_private_destinations = true`, a delivery never connects to a loopback,
//! private, link-local (cloud metadata included), CGNAT, multicast or reserved address, nor to
//! an IPv6 address embedding one; the check runs at every connection (after DNS), so a name
//! that later resolves elsewhere is caught too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A name resolved only to addresses the sink must not deliver to.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to forbidden addresses ({ip}, ...)")]
pub(crate) struct ForbiddenDestination {
    host: String,
    ip: IpAddr,
}

/// DNS resolver that drops forbidden addresses (unless allowed); runs on every new connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let Some(first) = all.first().copied() else {
                return Err(format!("{host} has no addresses").into());
            };
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| allow_private || !is_forbidden_destination(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(ForbiddenDestination {
                    host,
                    ip: first.ip(),
                }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether the sink must refuse to deliver to `ip` (SSRF guard) unless explicitly allowed.
///
/// Forbidden: unspecified/"this network" (0.0.0.0/8, ::), loopback (127/8, ::1), RFC 1918
/// private ranges, CGNAT 100.64/10, link-local 169.254/16 (incl. the cloud metadata address
/// 169.254.169.254) and fe80::/10, deprecated site-local fec0::/10, unique-local fc00::/7,
/// multicast, broadcast and the reserved 240/4; and IPv6 addresses embedding such an IPv4 address
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`).
pub(crate) fn is_forbidden_destination(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    a == 0 // "this network", incl. 0.0.0.0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240 // reserved 240.0.0.0/4
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return true;
    }
    // Unique-local fc00::/7, link-local fe80::/10, deprecated site-local fec0::/10.
    if (seg[0] & 0xfe00) == 0xfc00 || matches!(seg[0] & 0xffc0, 0xfe80 | 0xfec0) {
        return true;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let embedded = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    // IPv4-compatible ::a.b.c.d (deprecated) and NAT64 well-known prefix 64:ff9b::/96.
    let compatible = seg[..6].iter().all(|&s| s == 0);
    let nat64 = seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6].iter().all(|&s| s == 0);
    if compatible || nat64 {
        return is_forbidden_v4(embedded);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrf_table() {
        let forbidden = [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::ffff:100.64.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ];
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "192.169.0.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        for s in forbidden {
            let ip: IpAddr = s.parse().unwrap();
            assert!(is_forbidden_destination(ip), "{s} should be forbidden");
        }
        for s in allowed {
            let ip: IpAddr = s.parse().unwrap();
            assert!(!is_forbidden_destination(ip), "{s} should be allowed");
        }
    }
}
