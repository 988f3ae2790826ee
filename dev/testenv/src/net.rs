//! Loopback addresses and ports for components, chosen so concurrent tests do not collide.
//!
//! Linux routes all of 127.0.0.0/8 to `lo`, so each Kafka node (like each Pod later) can have
//! its own address and bind the same ports as in a real cluster.
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;
use rand::Rng;

/// Ports handed out below the kernel's ephemeral range (32768–60999 by default): outgoing
/// connections take ephemeral ports, so a port the kernel picked with bind(0) and released can
/// be taken by some client's connection before the server that was meant to get it binds.
const PORT_RANGE: std::ops::Range<u16> = 15000..32000;

/// Every port handed out by this process, so concurrent tests never get the same one.
static PORTS_TAKEN: Mutex<Option<HashSet<(Ipv4Addr, u16)>>> = Mutex::new(None);

/// A free TCP port on `ip`: random below the ephemeral range, bindable right now, and never
/// handed out twice by this process. It is released before it is returned: use it at once.
pub fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(free_ports(ip, 1)?[0])
}

/// `n` distinct free ports on `ip` (see [`free_port`]).
pub fn free_ports(ip: Ipv4Addr, n: usize) -> anyhow::Result<Vec<u16>> {
    let mut taken = PORTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let mut rng = rand::rng();
    let mut out = Vec::with_capacity(n);
    for _ in 0..10_000 {
        if out.len() == n {
            break;
        }
        let port = rng.random_range(PORT_RANGE);
        if taken.contains(&(ip, port)) || out.contains(&port) {
            continue;
        }
        if TcpListener::bind(SocketAddr::from((ip, port))).is_ok() {
            out.push(port);
        }
    }
    if out.len() < n {
        bail!("no {n} free ports on {ip} in {PORT_RANGE:?}");
    }
    taken.extend(out.iter().map(|p| (ip, *p)));
    Ok(out)
}

/// `n` loopback addresses no other user of this module in this process holds, and on which
/// every port in `ports` is free right now. They are taken from random /24s of 127.0.0.0/8
/// (not 127.0.0.0/16, where system services and the demo live), which makes clashes between
/// test processes unlikely; the bind probe rules out the remaining ones that are already live.
pub fn loopback_ips(n: usize, ports: &[u16]) -> anyhow::Result<Vec<Ipv4Addr>> {
    static TAKEN: Mutex<Option<HashSet<Ipv4Addr>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let mut rng = rand::rng();
    for _ in 0..100 {
        let (a, b) = (rng.random_range(1..=254u8), rng.random_range(0..=254u8));
        let ips: Vec<Ipv4Addr> = (1..=n as u8).map(|i| Ipv4Addr::new(127, a, b, i)).collect();
        if ips.iter().any(|ip| taken.contains(ip)) {
            continue;
        }
        let free = ips.iter().all(|ip| {
            ports
                .iter()
                .all(|p| TcpListener::bind(SocketAddr::from((*ip, *p))).is_ok())
        });
        if free {
            taken.extend(ips.iter().copied());
            return Ok(ips);
        }
    }
    bail!("no free block of {n} loopback addresses with ports {ports:?} found")
}

/// True once something accepts TCP connections at `addr`.
pub async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_blocks_are_distinct_and_usable() {
        let a = loopback_ips(3, &[9092]).unwrap();
        let b = loopback_ips(3, &[9092]).unwrap();
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|ip| ip.is_loopback() && !b.contains(ip)));
        let ports = free_ports(a[0], 4).unwrap();
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 4);
    }
}
