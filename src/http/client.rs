//! Who a request comes from: the peer's address, or behind a proxy that the operator
//! trusts (`[web] trusted_proxies`), the rightmost address in `X-Forwarded-For` that is
//! not itself a trusted proxy. Nobody else's `X-Forwarded-For` is read: any client can
//! write one. Limits count clients by bucket: an IPv4 address, or an IPv6 /64 (one
//! household or server gets a whole /64, so counting its addresses apart would let it
//! be billions of clients).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The peer's address, as handlers see it (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn none() -> TrustedProxies {
        TrustedProxies(Vec::new())
    }

    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    /// The config's `[web] trusted_proxies` (none without `[web]`).
    pub fn from_config(config: &crate::config::Config) -> TrustedProxies {
        TrustedProxies(
            config
                .web
                .as_ref()
                .map(|w| w.trusted_proxies.clone())
                .unwrap_or_default(),
        )
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: the peer itself, unless it is a trusted proxy; then
    /// the rightmost forwarded address that is not a trusted proxy (the hops to its
    /// left were written by whoever connected to the first proxy, and prove nothing).
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer.ip());
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.contains(client) {
                        return client;
                    }
                }
                // A hop that is not an address: nothing to its left can be trusted,
                // and the last trusted hop answers for the request.
                Err(_) => return client,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The bucket a client is counted in: its IPv4 address, or its IPv6 /64.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn without_trusted_proxies_the_header_changes_nothing() {
        let none = TrustedProxies::none();
        assert_eq!(
            none.client(peer("127.0.0.1"), &headers("203.0.113.9")),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = TrustedProxies::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        // The client wrote "198.51.100.1" itself; the proxies appended the rest.
        let h = headers("198.51.100.1, 203.0.113.9, 10.1.2.3");
        assert_eq!(
            trusted.client(peer("127.0.0.1"), &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // From an untrusted peer, the header is ignored.
        assert_eq!(
            trusted.client(peer("192.0.2.7"), &h),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        // Garbage in the chain stops the walk at the last trusted hop.
        assert_eq!(
            trusted.client(peer("127.0.0.1"), &headers("203.0.113.9, nonsense")),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = bucket("2001:db8:1:2::1".parse().unwrap());
        let b = bucket("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        let c = bucket("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            bucket("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
