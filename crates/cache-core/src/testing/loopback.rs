//! Loopback helpers shared by ferrolite's test support and `cargo xtask` (which includes this
//! file with `#[path]` so that it stays free of the workspace's dependencies): a free port, and
//! whether a Redis answers `PING` on a port. Standard library only.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

/// A free loopback port (the operating system's pick for a listener on port 0).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether a Redis answers `PING` with `+PONG` on the loopback port (200 ms to connect, 500 ms
/// for the reply).
pub fn ping(port: u16) -> bool {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
