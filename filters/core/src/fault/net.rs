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
        let network = parse_ip(addr_text)
            .ok_or_else(|| format!("invalid CIDR {text:?}: {addr_text:?} is not an IP address"))?;
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

/// A `trustedCidrs` list, parsed (the fault filter's `headerFaults` and the suite's `debug`
/// section share it); errors name the entry, `trustedCidrs[1]: invalid CIDR ...`.
pub fn parse_cidrs(cidrs: &[String]) -> Result<Vec<Cidr>, String> {
    cidrs
        .iter()
        .enumerate()
        .map(|(i, c)| Cidr::parse(c).map_err(|err| format!("trustedCidrs[{i}]: {err}")))
        .collect()
}

/// Whether `addr` is inside any of `cidrs`.
pub fn is_trusted(cidrs: &[Cidr], addr: IpAddr) -> bool {
    cidrs.iter().any(|cidr| cidr.contains(addr))
}

/// The IP of Envoy's `source.address` / `destination.address` property value: `ip:port`,
/// `[ipv6]:port`, or a bare IP. `None` for anything else (e.g. a pipe path).
pub fn parse_socket_ip(value: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Some(ip) = parse_ip(text) {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return parse_ipv6(ip.as_bytes()).map(IpAddr::V6);
    }
    let (ip, _port) = text.rsplit_once(':')?;
    parse_ip(ip)
}

/// `text` as an IP address, accepting exactly what `text.parse::<IpAddr>()` accepts, to the
/// same value: std's parser (`core::net::parser`) costs each module about 3 KB, this one a
/// third of it. The same steps as std's: an IPv4 address (four decimal octets, no leading
/// zero), else an IPv6 address (groups of 1-4 hex digits, at most one `::`, an IPv4 address
/// as its last two groups). Tested against std on a few hundred thousand strings.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let s = text.as_bytes();
    match ipv4_at(s, 0) {
        Some((octets, end)) if end == s.len() => Some(IpAddr::from(octets)),
        _ => parse_ipv6(s).map(IpAddr::V6),
    }
}

/// An IPv6 address that is the whole of `s` (std's `read_ipv6_addr`).
fn parse_ipv6(s: &[u8]) -> Option<Ipv6Addr> {
    let mut head = [0u16; 8];
    let (head_size, head_ipv4, at) = ipv6_groups(s, 0, &mut head);
    if head_size == 8 {
        return (at == s.len()).then(|| Ipv6Addr::from(head));
    }
    // An embedded IPv4 address ends the address: no `::` after it.
    if head_ipv4 || s.get(at..at + 2) != Some(b"::") {
        return None;
    }
    // `::` stands for one group at least, so the tail has at most 7 - head_size.
    let mut tail = [0u16; 7];
    let limit = 7usize.saturating_sub(head_size);
    let (tail_size, _, end) = ipv6_groups(s, at + 2, tail.get_mut(..limit)?);
    if end != s.len() {
        return None;
    }
    // The tail fills the last groups; `::` stands for the zeros between.
    for index in 0..tail_size {
        if let (Some(slot), Some(group)) = (head.get_mut(8 - tail_size + index), tail.get(index)) {
            *slot = *group;
        }
    }
    Some(Ipv6Addr::from(head))
}

/// Reads up to `groups.len()` `:`-separated groups from `at` (std's `read_groups`): the count
/// read, whether the last two were an IPv4 address, and where reading stopped (before a
/// separator that no group follows).
fn ipv6_groups(s: &[u8], mut at: usize, groups: &mut [u16]) -> (usize, bool, usize) {
    let limit = groups.len();
    for index in 0..limit {
        let start = if index == 0 {
            at
        } else if s.get(at) == Some(&b':') {
            at + 1
        } else {
            return (index, false, at);
        };
        // An IPv4 address needs two groups' room.
        if index + 1 < limit
            && let Some(([a, b, c, d], end)) = ipv4_at(s, start)
        {
            if let [first, second] = groups.get_mut(index..index + 2).unwrap_or_default() {
                *first = u16::from_be_bytes([a, b]);
                *second = u16::from_be_bytes([c, d]);
            }
            return (index + 2, true, end);
        }
        let mut value: u16 = 0;
        let mut end = start;
        while end - start < 4
            && let Some(digit) = s.get(end).and_then(|b| char::from(*b).to_digit(16))
        {
            value = (value << 4) | digit as u16;
            end += 1;
        }
        if end == start {
            return (index, false, at);
        }
        if let Some(slot) = groups.get_mut(index) {
            *slot = value;
        }
        at = end;
    }
    (limit, false, at)
}

/// Four `.`-separated decimal octets from `at` (std's `read_ipv4_addr`: 1-3 digits, at most
/// 255, no leading zero): the octets and where they end.
fn ipv4_at(s: &[u8], mut at: usize) -> Option<([u8; 4], usize)> {
    let mut octets = [0u8; 4];
    for (index, octet) in octets.iter_mut().enumerate() {
        if index > 0 {
            if s.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let start = at;
        let mut value: u32 = 0;
        while at - start < 3
            && let Some(digit) = s.get(at).filter(|b| b.is_ascii_digit())
        {
            value = value * 10 + u32::from(digit - b'0');
            at += 1;
        }
        if at == start || (at - start > 1 && s.get(start) == Some(&b'0')) {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    Some((octets, at))
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

    /// `parse_ip` against std's parser: hand-picked edge cases, every std-formatted address of
    /// a random spread (mutated too), and random strings over the addresses' alphabet.
    #[test]
    fn parse_ip_accepts_exactly_what_std_accepts() {
        let check = |text: &str| {
            assert_eq!(parse_ip(text), text.parse::<IpAddr>().ok(), "{text:?}");
            assert_eq!(
                parse_ipv6(text.as_bytes()),
                text.parse::<Ipv6Addr>().ok(),
                "{text:?}"
            );
        };
        for text in [
            "",
            ".",
            ":",
            "::",
            ":::",
            "1",
            "1.2.3",
            "1.2.3.4",
            "1.2.3.4.",
            "01.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3.04",
            "1.2.3.4:80",
            "::1",
            "::ffff:1.2.3.4",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::1.2.3.4",
            "1.2.3.4::",
            "1:2:3:4:5::1.2.3.4",
            "::1:2:3:4:5:6:7",
            "::1:2:3:4:5:6:7:8",
            "1::2::3",
            "12345::",
            "fe80::1%eth0",
            "FFFF::abcd",
            "[::1]",
            "0:0:0:0:0:0:0:0",
            "1:2:3:4:5:6:7:8::",
            ":1::",
            "1:::2",
            "::01.2.3.4",
            "1::0.0.0.0",
            "a:b:c:d:e:f:1.2.3.4",
            "::ffff:1.2.3",
        ] {
            check(text);
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"0123456789abcdefABCDEFg:.:.:0f";
        for _ in 0..200_000 {
            let len = usize::try_from(next() % 24).unwrap();
            let text: String = (0..len)
                .map(|_| char::from(alphabet[usize::try_from(next() % 30).unwrap()]))
                .collect();
            check(&text);
        }
        for _ in 0..20_000 {
            let v6 = Ipv6Addr::from(u128::from(next()) << (next() % 65) | u128::from(next() % 3));
            let v4 = std::net::Ipv4Addr::from(u32::try_from(next() >> 32).unwrap());
            for text in [v6.to_string(), v4.to_string(), format!("::ffff:{v4}")] {
                check(&text);
                let cut = usize::try_from(next()).unwrap() % (text.len() + 1);
                check(&text[..cut]);
                check(&format!("{}:{}", &text[..cut], &text[cut..]));
                check(&format!("{}0{}", &text[..cut], &text[cut..]));
            }
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
