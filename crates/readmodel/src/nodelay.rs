//! `TCP_NODELAY` on this process's connections to PostgreSQL.
//!
//! sqlx 0.9.0 does not set it (the fix is merged upstream but not yet released), and the
//! projector's `COPY` needs it: a `COPY` sends its data and then its end as two writes, and
//! with Nagle's algorithm on, the kernel holds the small second write until PostgreSQL
//! acknowledges the first, which it delays by ~40 ms. sqlx gives no access to its socket, so
//! this finds the socket among the process's descriptors: every TCP socket whose peer port is
//! PostgreSQL's. A copy of each descriptor is taken with `pidfd_getfd` (safe: it makes a new
//! descriptor of the same socket), the option set through it, and the copy closed. Setting it
//! on a socket that is not PostgreSQL's (a client that happens to connect from that port
//! number) does no harm: the gRPC server sets it on its own connections anyway.
//!
//! Drop this once a sqlx release sets `TCP_NODELAY` itself (`DECISIONS.md`, "Read models").

use std::io;

/// Sets `TCP_NODELAY` on every TCP socket of this process connected to `peer_port`, and
/// returns how many have it set. An error means it could not be tried at all (no `/proc`,
/// or `pidfd_getfd` refused, as a container's seccomp profile may do).
#[cfg(target_os = "linux")]
pub fn set_for_peer_port(peer_port: u16) -> io::Result<usize> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut set = 0;
    let mut refused = None;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Only sockets; the link may vanish as another thread closes the descriptor.
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|target| {
            target
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(b"socket:")
        });
        if !is_socket {
            continue;
        }
        let copy = match pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) {
            Ok(copy) => copy,
            // Closed meanwhile.
            Err(rustix::io::Errno::BADF) => continue,
            Err(e) => {
                refused = Some(e);
                continue;
            }
        };
        let peer = match rustix::net::getpeername(&copy) {
            Ok(Some(peer)) => peer,
            _ => continue,
        };
        let Ok(peer) = std::net::SocketAddr::try_from(peer) else {
            continue;
        };
        if peer.port() == peer_port && rustix::net::sockopt::set_tcp_nodelay(&copy, true).is_ok() {
            set += 1;
        }
    }
    match refused {
        Some(e) if set == 0 => Err(e.into()),
        _ => Ok(set),
    }
}

/// Not available: the read model writes without `COPY`.
#[cfg(not(target_os = "linux"))]
pub fn set_for_peer_port(_peer_port: u16) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "setting TCP_NODELAY on sqlx's sockets needs Linux",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn sets_nodelay_on_sockets_to_the_port_and_leaves_others() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let to_port = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_port.nodelay().unwrap());
        assert!(set_for_peer_port(port).unwrap() >= 1);
        assert!(to_port.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap());
    }
}
