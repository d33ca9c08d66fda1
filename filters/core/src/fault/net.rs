//! Trusted client networks: CIDR parsing and matching, and the client address Envoy reports
//! in the `source.address` property (`"10.1.2.3:54321"`, `"[::1]:54321"`).

use std::net::{IpAddr, Ipv6Addr};

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Parses `"10.0.0.0/8"`, `"::1/128"`, or a bare address (a single host). Host bits set
    /// below the prefix (`"10.1.2.3/8"`) are refused, as Istio refuses them, because they
    /// usually mean a typo.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("invalid CIDR {text:?}: {addr_text:?} is not an IP address"))?;
        let max_len: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_text {
            None => max_len,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= max_len)
                .ok_or_else(|| {
                    format!("invalid CIDR {text:?}: prefix length must be 0..={max_len}")
                })?,
        };
        let cidr = Self {
            network: normalize(network),
            prefix_len: if network.is_ipv4() || !is_v4_mapped(network) {
                prefix_len
            } else {
                // ::ffff:10.0.0.0/104 is 10.0.0.0/8.
                prefix_len.saturating_sub(96)
            },
        };
        if !cidr.contains(cidr.network) || masked(cidr.network, cidr.prefix_len) != cidr.network {
            return Err(format!(
                "invalid CIDR {text:?}: address has bits set beyond the /{prefix_len} prefix"
            ));
        }
        Ok(cidr)
    }

    /// Whether `addr` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = normalize(addr);
        addr.is_ipv4() == self.network.is_ipv4() && masked(addr, self.prefix_len) == self.network
    }
}

fn is_v4_mapped(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// `::ffff:a.b.c.d` -> `a.b.c.d`: a dual-stack listener reports IPv4 clients that way.
fn normalize(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

fn masked(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Whether `addr` is inside any of `cidrs`.
pub fn is_trusted(cidrs: &[Cidr], addr: IpAddr) -> bool {
    cidrs.iter().any(|cidr| cidr.contains(addr))
}

/// The IP of Envoy's `source.address` / `destination.address` property value: `ip:port`,
/// `[ipv6]:port`, or a bare IP. `None` for anything else (e.g. a pipe path).
pub fn parse_socket_ip(value: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return ip.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (ip, _port) = text.rsplit_once(':')?;
    ip.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_networks() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("::1")));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!(!all.contains(ip("::2")));
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("10.9.9.9")));
        assert!(is_trusted(&[net, host], ip("127.0.0.1")));
        assert!(!is_trusted(&[net, host], ip("192.168.1.1")));
    }

    #[test]
    fn refuses_bad_cidrs() {
        for (bad, needle) in [
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.0/x", "prefix length"),
            ("ten/8", "not an IP"),
            ("10.1.2.3/8", "bits set"),
            ("", "not an IP"),
        ] {
            let err = Cidr::parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_envoy_addresses() {
        assert_eq!(parse_socket_ip(b"127.0.0.1:5432"), Some(ip("127.0.0.1")));
        assert_eq!(parse_socket_ip(b"[::1]:80"), Some(ip("::1")));
        assert_eq!(parse_socket_ip(b"10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(parse_socket_ip(b"fe80::1"), Some(ip("fe80::1")));
        assert_eq!(parse_socket_ip(b"/tmp/sock"), None);
        assert_eq!(parse_socket_ip(b"\xff\xfe"), None);
    }
}
