//! Real traffic between test namespaces: ping (iputils) and TCP/UDP from threads that live
//! inside the namespaces.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use crate::ns::TestNs;

/// `count` pings from `from` to `dst`; true if any answer came back.
pub fn ping(from: &TestNs, dst: IpAddr, count: u32) -> bool {
    from.cmd("ping")
        .args([
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            "-q",
            &dst.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Ping until it answers (the first packets may wait for neighbour resolution), up to ~3 s.
pub fn ping_ok(from: &TestNs, dst: IpAddr) -> bool {
    (0..3).any(|_| ping(from, dst, 2))
}

/// Bind a TCP listener in `server` on `addr:port` that echoes one connection.
pub fn tcp_echo_server(
    server: &TestNs,
    ip: IpAddr,
    port: u16,
) -> std::thread::JoinHandle<std::io::Result<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = server.spawn(move || {
        let l = TcpListener::bind(SocketAddr::new(ip, port))?;
        tx.send(()).ok();
        l.set_nonblocking(false)?;
        let (mut s, _) = l.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf)?;
        s.write_all(&buf[..n])?;
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server bound");
    h
}

/// Connect from `client` to `ip:port`, send a message, expect it echoed.
pub fn tcp_roundtrip(client: &TestNs, ip: IpAddr, port: u16) -> std::io::Result<()> {
    client.run(move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"sluice says hi")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        if &buf[..n] != b"sluice says hi" {
            return Err(std::io::Error::other("echo mismatch"));
        }
        Ok(())
    })
}

/// A TCP echo through `server`/`client` namespaces on `port`: true when it worked.
pub fn tcp_ok(client: &TestNs, server: &TestNs, server_ip: IpAddr, port: u16) -> bool {
    let srv = tcp_echo_server(server, server_ip, port);
    let ok = tcp_roundtrip(client, server_ip, port).is_ok();
    if !ok {
        // Unblock the server's accept so its thread ends: from inside the server's own
        // namespace (local delivery), since the client's path may be the one that is blocked.
        let _ = server.run(move || {
            TcpStream::connect_timeout(&SocketAddr::new(server_ip, port), Duration::from_millis(200))
        });
    }
    let _ = srv.join();
    ok
}

/// Send one UDP datagram of `size` bytes from `client` to `server_ip:port` and expect it echoed.
pub fn udp_ok(client: &TestNs, server: &TestNs, server_ip: IpAddr, port: u16, size: usize) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.spawn(move || -> std::io::Result<()> {
        let s = UdpSocket::bind(SocketAddr::new(server_ip, port))?;
        tx.send(()).ok();
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut buf = vec![0u8; 65536];
        let (n, from) = s.recv_from(&mut buf)?;
        s.send_to(&buf[..n], from)?;
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("udp server bound");
    let ok = client.run(move || -> std::io::Result<bool> {
        let any: SocketAddr = if server_ip.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("literal");
        let s = UdpSocket::bind(any)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let msg = vec![0x5au8; size];
        s.send_to(&msg, SocketAddr::new(server_ip, port))?;
        let mut buf = vec![0u8; 65536];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(n == size)
    });
    let _ = srv.join();
    matches!(ok, Ok(true))
}
