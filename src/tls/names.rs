//! The names a locally issued server certificate is valid for: `localhost`,
//! the listen addresses, every `--hostname`, and the host's own addresses
//! when listening on 0.0.0.0 or ::.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustls::pki_types::DnsName;

use super::TlsError;

/// The certificate's subject alternative names, sorted and without
/// repeats so that two starts with the same settings compare equal.
/// IP addresses are in their canonical text form, DNS names lower case.
pub(crate) fn subject_names(listen: &[SocketAddr], hostnames: &[String]) -> Result<Vec<String>, TlsError> {
    let mut names = BTreeSet::from(["localhost".to_string()]);
    let any_v4 = listen.iter().any(|addr| addr.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // Linux sockets on [::] take IPv4 connections too (unless bindv6only).
    let any_v6 = listen.iter().any(|addr| addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    for addr in listen.iter().filter(|addr| !addr.ip().is_unspecified()) {
        names.insert(addr.ip().to_string());
    }
    if any_v4 || any_v6 {
        let wanted = |ip: &IpAddr| ip.is_ipv4() || any_v6;
        names.extend(host_addresses().iter().filter(|ip| wanted(ip)).map(IpAddr::to_string));
    }
    for hostname in hostnames {
        names.insert(canonical_hostname(hostname)?);
    }
    Ok(names.into_iter().collect())
}

/// A `--hostname` value as it goes into the certificate: an IP address
/// (`[::1]` allowed), a DNS name, or a wildcard `*.name`.
fn canonical_hostname(text: &str) -> Result<String, TlsError> {
    let trimmed = text.trim();
    let unbracketed = trimmed.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = trimmed.trim_end_matches('.').to_ascii_lowercase();
    let base = name.strip_prefix("*.").unwrap_or(&name);
    // DnsName also accepts things like "1.2.3" that are no host name.
    let numeric = base.rsplit('.').next().is_some_and(|label| label.bytes().all(|b| b.is_ascii_digit()));
    match DnsName::try_from(base) {
        Ok(_) if !numeric => Ok(name),
        _ => Err(TlsError::BadHostname(text.to_string())),
    }
}

/// The addresses of this host's interfaces (libc `getifaddrs`), without
/// IPv6 link-local ones, which clients cannot use without a zone.
fn host_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        log::warn!("TLS: cannot list the host's addresses: {}", std::io::Error::last_os_error());
        return Vec::new();
    }
    let mut addrs = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed.
        let node = unsafe { &*entry };
        // SAFETY: ifa_addr is null or points to a sockaddr of the family it names.
        if let Some(ip) = unsafe { sockaddr_ip(node.ifa_addr) } {
            let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
            if !link_local && !ip.is_unspecified() {
                addrs.push(ip);
            }
        }
        entry = node.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    addrs
}

/// # Safety
/// `addr` must be null or point to a valid sockaddr of the family in its header.
unsafe fn sockaddr_ip(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    match i32::from((*addr).sa_family) {
        libc::AF_INET => {
            let v4 = &*(addr as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            let v6 = &*(addr as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(listen: &[&str], hostnames: &[&str]) -> Result<Vec<String>, TlsError> {
        let listen: Vec<SocketAddr> = listen.iter().map(|addr| addr.parse().unwrap()).collect();
        subject_names(&listen, &hostnames.iter().map(|name| name.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn listen_addresses_and_hostnames() {
        let got =
            names(&["127.0.0.1:5000", "[::1]:5000"], &["Registry.Lan.", "10.0.0.7", "[fd00::1]", "*.lan"]).unwrap();
        assert_eq!(got, ["*.lan", "10.0.0.7", "127.0.0.1", "::1", "fd00::1", "localhost", "registry.lan"]);
    }

    #[test]
    fn wildcard_listen_adds_the_host_addresses() {
        let got = names(&["0.0.0.0:5000"], &[]).unwrap();
        // Every Linux host has a loopback interface.
        assert!(got.contains(&"127.0.0.1".to_string()), "{got:?}");
        assert!(!got.iter().any(|name| name == "0.0.0.0" || name.contains(':')), "{got:?}");
    }

    #[test]
    fn bad_hostnames() {
        for bad in ["", "exa mple", "-x.lan", "1.2.3", "a..b", "*", "host/path"] {
            assert!(matches!(names(&[], &[bad]), Err(TlsError::BadHostname(_))), "{bad:?}");
        }
    }
}
