//! `/proc/<pid>/net/{tcp,tcp6,udp,udp6,unix}`: the sockets of one network namespace. Only
//! listening ones are kept: TCP in state LISTEN, UDP bound and unconnected, unix stream and
//! seqpacket sockets accepting connections.
//!
//! The TCP and UDP tables are parsed by `procfs-core`. The unix table has a parser of its own:
//! `procfs-core`'s leaves out the flags that tell a listening socket from a bound one, and cuts
//! paths at their first space.

use std::net::SocketAddr;

use procfs_core::net::{TcpNetEntries, TcpState, UdpNetEntries, UdpState};
use procfs_core::{ExplicitSystemInfo, FromBufReadSI};
use procwatch_crds::SocketProtocol;

use super::ParseError;

/// A listening TCP or UDP socket and its inode, which `/proc/<pid>/fd` links name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetListener {
    pub protocol: SocketProtocol,
    pub address: SocketAddr,
    pub inode: u64,
}

/// A listening unix socket: its path as bound (inside its owner's mount namespace), or
/// `@name` for an abstract one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListener {
    pub path: String,
    pub inode: u64,
}

const SO_ACCEPTCON: u32 = 0x0001_0000;
const SOCK_STREAM: &str = "0001";
const SOCK_SEQPACKET: &str = "0005";

/// The kernel prints each 32-bit word of an address as a number in host byte order: the only
/// fact of the system the table parsers use.
const HOST: ExplicitSystemInfo = ExplicitSystemInfo {
    boot_time_secs: 0,
    ticks_per_second: 0,
    page_size: 0,
    is_little_endian: cfg!(target_endian = "little"),
};

/// Parses a `tcp`, `tcp6`, `udp` or `udp6` table, keeping listening sockets of `protocol`:
/// TCP in state LISTEN, UDP unconnected (TCP_CLOSE, no remote port).
pub fn parse_inet_listeners(
    text: &[u8],
    protocol: SocketProtocol,
) -> Result<Vec<InetListener>, ParseError> {
    let listener = |address, inode| InetListener {
        protocol,
        address,
        inode,
    };
    let listeners = match protocol {
        SocketProtocol::Udp => UdpNetEntries::from_buf_read(text, &HOST)
            .map_err(|source| ParseError::procfs("net/udp", source))?
            .0
            .into_iter()
            .filter(|entry| entry.state == UdpState::Close && entry.remote_address.port() == 0)
            .map(|entry| listener(entry.local_address, entry.inode))
            .collect(),
        _ => TcpNetEntries::from_buf_read(text, &HOST)
            .map_err(|source| ParseError::procfs("net/tcp", source))?
            .0
            .into_iter()
            .filter(|entry| entry.state == TcpState::Listen)
            .map(|entry| listener(entry.local_address, entry.inode))
            .collect(),
    };
    Ok(listeners)
}

/// Parses `/proc/net/unix`, keeping named stream and seqpacket sockets that accept
/// connections.
pub fn parse_unix_listeners(text: &[u8]) -> Vec<UnixListener> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path — the path may contain spaces.
            let mut rest = line.trim_start();
            let mut fields = [""; 7];
            for field in &mut fields {
                let end = rest.find(' ').unwrap_or(rest.len());
                *field = &rest[..end];
                rest = rest[end..].trim_start();
            }
            let flags = u32::from_str_radix(fields[3], 16).ok()?;
            let accepting = flags & SO_ACCEPTCON != 0;
            if !accepting
                || !(fields[4] == SOCK_STREAM || fields[4] == SOCK_SEQPACKET)
                || rest.is_empty()
            {
                return None;
            }
            Some(UnixListener {
                path: rest.to_string(),
                inode: fields[6].parse().ok()?,
            })
        })
        .collect()
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    const TCP: &[u8] = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn tcp_v4_listeners() {
        assert_eq!(
            parse_inet_listeners(TCP, SocketProtocol::Tcp).unwrap(),
            [
                InetListener {
                    protocol: SocketProtocol::Tcp,
                    address: "0.0.0.0:80".parse().unwrap(),
                    inode: 31337
                },
                InetListener {
                    protocol: SocketProtocol::Tcp,
                    address: "127.0.0.1:8080".parse().unwrap(),
                    inode: 4242
                },
            ]
        );
    }

    #[test]
    fn tcp_v6_listeners() {
        let tcp6 = b"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1 0000000000000000 100 0 0 10 0
   3: B80D01200000000000000000010000A0:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 103 1 0000000000000000 100 0 0 10 0
";
        let addresses: Vec<String> = parse_inet_listeners(tcp6, SocketProtocol::Tcp)
            .unwrap()
            .iter()
            .map(|l| l.address.to_string())
            .collect();
        assert_eq!(
            addresses,
            [
                "[::]:80",
                "[::1]:8080",
                "[::ffff:127.0.0.1]:443",
                "[2001:db8::a000:1]:22"
            ]
        );
    }

    #[test]
    fn udp_bound_unconnected_only() {
        let udp = b"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 500 2 0000000000000000 0
  101: 0100007F:0035 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 501 2 0000000000000000 0
";
        let listeners = parse_inet_listeners(udp, SocketProtocol::Udp).unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].address.to_string(), "0.0.0.0:68");
        assert_eq!(listeners[0].protocol, SocketProtocol::Udp);
    }

    #[test]
    fn a_damaged_table_is_an_error() {
        for protocol in [SocketProtocol::Tcp, SocketProtocol::Udp] {
            let error =
                parse_inet_listeners(b"header\n 0: zz:zz 00:00 0A 0:0 0:0 0 0 0 1\n", protocol)
                    .unwrap_err();
            assert!(error.to_string().starts_with("malformed net/"), "{error}");
        }
        assert_eq!(
            parse_inet_listeners(b"header only\n", SocketProtocol::Tcp).unwrap(),
            []
        );
    }

    #[test]
    fn unix_listeners_with_paths_and_abstract_names() {
        let unix = b"Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 20001 /run/nginx.sock
0000000000000000: 00000002 00000000 00010000 0001 01 20002 @flux-broker
0000000000000000: 00000002 00000000 00010000 0005 01 20003 /tmp/flux x/local-0
0000000000000000: 00000003 00000000 00000000 0001 03 20004 /run/nginx.sock
0000000000000000: 00000002 00000000 00010000 0001 01 20005
0000000000000000: 00000002 00000000 00000000 0002 01 20006 /dev/log
";
        assert_eq!(
            parse_unix_listeners(unix),
            [
                UnixListener {
                    path: "/run/nginx.sock".into(),
                    inode: 20001
                },
                UnixListener {
                    path: "@flux-broker".into(),
                    inode: 20002
                },
                UnixListener {
                    path: "/tmp/flux x/local-0".into(),
                    inode: 20003
                },
            ]
        );
    }
}
