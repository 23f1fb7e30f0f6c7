//! Who a caller is, for budgets: the key every per-address limit and quota uses.
//!
//! One IPv6 subscriber usually holds a whole /64 (2^64 addresses), so keying IPv6 callers by
//! their full address would hand each of them that many budgets. IPv6 callers are keyed by
//! their /64 prefix; IPv4 callers (and IPv4-mapped IPv6 addresses) by their address.

use std::net::{IpAddr, Ipv6Addr};

/// The budget key of a caller's address as `CF-Connecting-IP` gives it: `a.b.c.d` for IPv4,
/// `xxxx:xxxx:xxxx:xxxx::/64` for IPv6, `unknown` when absent or not an address.
pub fn address_key(header: Option<&str>) -> String {
    let Some(ip) = header.and_then(|h| h.trim().parse::<IpAddr>().ok()) else {
        return "unknown".to_string();
    };
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_callers_share_their_64_and_ipv4_callers_their_address() {
        let a = address_key(Some("2001:db8:1:2:aaaa::1"));
        let b = address_key(Some("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_ne!(a, address_key(Some("2001:db8:1:3::1")));
        assert_eq!(address_key(Some(" 203.0.113.7 ")), "203.0.113.7");
        assert_eq!(address_key(Some("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(address_key(Some("not an address")), "unknown");
        assert_eq!(address_key(None), "unknown");
    }
}
