//! Binding listening sockets. An IPv6 address is bound IPv6-only, so that
//! `0.0.0.0:5000` and `[::]:5000` can be listened on side by side (Linux
//! otherwise lets `[::]` take the IPv4 port too, and the second bind fails).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;

const BACKLOG: libc::c_int = 1024;

pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let SocketAddr::V6(v6) = addr else { return TcpListener::bind(addr) };
    // SAFETY: plain socket calls on a descriptor this function owns until it
    // hands it to TcpListener (or closes it on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fail = |fd| {
            let err = io::Error::last_os_error();
            libc::close(fd);
            Err(err)
        };
        let one: libc::c_int = 1;
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let on = &one as *const libc::c_int as *const libc::c_void;
        if libc::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, on, size) != 0
            || libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, on, size) != 0
        {
            return fail(fd);
        }
        let mut sockaddr: libc::sockaddr_in6 = std::mem::zeroed();
        sockaddr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sockaddr.sin6_port = v6.port().to_be();
        sockaddr.sin6_addr.s6_addr = v6.ip().octets();
        sockaddr.sin6_flowinfo = v6.flowinfo();
        sockaddr.sin6_scope_id = v6.scope_id();
        let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        if libc::bind(fd, &sockaddr as *const _ as *const libc::sockaddr, len) != 0 || libc::listen(fd, BACKLOG) != 0 {
            return fail(fd);
        }
        Ok(TcpListener::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_any_side_by_side() {
        let v4 = bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = match bind(format!("[::]:{port}").parse().unwrap()) {
            Ok(v6) => v6,
            // A machine without IPv6 cannot show it.
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => return,
            Err(e) => panic!("[::]:{port} next to 0.0.0.0:{port}: {e}"),
        };
        assert_eq!(v6.local_addr().unwrap().port(), port);
        let client = std::net::TcpStream::connect(("::1", port)).unwrap();
        let (_, peer) = v6.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }
}
