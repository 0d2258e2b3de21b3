// Tests drive real sockets against real time.
#![allow(clippy::disallowed_methods)]
//! The one UDP socket: STUN datagrams reach the STUN queue while QUIC runs on the same port,
//! probes leave from that port, and IPv6 / dual-stack work.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::Identity;
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent};
use dna_p2p::nat::stun::Binding;
use dna_p2p::transport::demux::STUN_MAGIC_COOKIE;
use rand_core::OsRng;

async fn node_at(addr: &str) -> Node {
    Node::bind(
        Identity::generate(&mut OsRng),
        NodeConfig::listening_on(addr.parse().unwrap()),
    )
    .await
    .unwrap()
}

fn binding_request() -> Vec<u8> {
    let mut v = vec![0x00, 0x01, 0x00, 0x00];
    v.extend_from_slice(&STUN_MAGIC_COOKIE);
    v.extend_from_slice(&[0x42; 12]);
    v
}

async fn exchange_one(a: &mut Node, b: &mut Node, b_addr: SocketAddr) {
    a.connect(b.fingerprint(), vec![b_addr]).await;
    a.send(b.fingerprint(), Bytes::from_static(b"over QUIC"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(NodeEvent::Message { body, .. }) = b.next_event().await {
                return body;
            }
        }
    })
    .await
    .expect("no message over QUIC");
    assert_eq!(&got[..], b"over QUIC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_and_quic_share_the_port() {
    let mut a = node_at("127.0.0.1:0").await;
    let mut b = node_at("127.0.0.1:0").await;
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A Binding request to the node's QUIC port is answered with the prober's address.
    let mut binding = Binding::new(a.local_addr(), [7; 12], std::time::Instant::now());
    let (to, request) = binding.poll_transmit(std::time::Instant::now()).unwrap();
    probe.send_to(request, to).unwrap();
    let mut buf = [0u8; 512];
    let (n, src) = probe.recv_from(&mut buf).unwrap();
    assert_eq!(src, a.local_addr(), "answered from the node's one socket");
    assert!(binding.handle_response(src, &buf[..n]));
    assert_eq!(
        binding
            .result()
            .and_then(|r| r.as_ref().ok())
            .map(|a| a.mapped),
        Some(probe.local_addr().unwrap())
    );
    // Garbage in the STUN range: dropped, counted.
    probe.send_to(&[0x01, 0x02, 0x03], a.local_addr()).unwrap();
    // QUIC on the same port meanwhile.
    let a_addr = a.local_addr();
    exchange_one(&mut b, &mut a, a_addr).await;
    // A raw datagram leaves from the node's own port.
    a.send_raw(probe.local_addr().unwrap(), &binding_request())
        .await
        .unwrap();
    let (n, src) = probe.recv_from(&mut buf).unwrap();
    assert_eq!(src, a.local_addr());
    assert_eq!(&buf[..n], &binding_request()[..]);
    // And a node learns its own address from another node, through the same socket.
    assert_eq!(b.stun_binding(a.local_addr()).await, Ok(b.local_addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_binding_retransmits_until_answered() {
    let a = node_at("127.0.0.1:0").await;
    // A server that ignores the first two requests.
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let serve = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        for i in 0..3 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            if i == 2 {
                let answer = dna_p2p::nat::stun::respond(from, &buf[..n]).unwrap();
                server.send_to(&answer, from).unwrap();
            }
        }
    });
    let start = std::time::Instant::now();
    assert_eq!(a.stun_binding(server_addr).await, Ok(a.local_addr()));
    // Third request goes out at 1.5 s (0, 0.5, 1.5 s).
    assert!(start.elapsed() >= Duration::from_millis(1400));
    serve.join().unwrap();
}

fn ipv6_loopback() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_dual_stack() {
    if !ipv6_loopback() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "IPv6 loopback is required under CI=true"
        );
        eprintln!("SKIP ipv6_and_dual_stack: no IPv6 loopback on this machine");
        return;
    }
    // IPv6 to IPv6.
    let mut a = node_at("[::1]:0").await;
    let mut b = node_at("[::1]:0").await;
    let b_addr = b.local_addr();
    exchange_one(&mut a, &mut b, b_addr).await;
    // A dual-stack node on [::]:0 answers an IPv4 dialer.
    let mut dual = node_at("[::]:0").await;
    let mut v4 = node_at("127.0.0.1:0").await;
    let port = dual.local_addr().port();
    exchange_one(&mut v4, &mut dual, SocketAddr::from(([127, 0, 0, 1], port))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_counts_what_it_sorts() {
    // The counters are public for status output; check they move.
    let a = node_at("127.0.0.1:0").await;
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.send_to(&[0x01, 0x02, 0x03], a.local_addr()).unwrap();
    probe.send_to(&binding_request(), a.local_addr()).unwrap();
    for _ in 0..100 {
        let s = a.socket_stats();
        if s.dropped.load(Ordering::Relaxed) >= 1 && s.stun.load(Ordering::Relaxed) >= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("counters did not move");
}
