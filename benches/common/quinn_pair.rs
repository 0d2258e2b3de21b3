//! The raw quinn baseline of the benchmarks: two endpoints on loopback with the same quinn,
//! TLS and transport settings as the node, connected; (the dialer's, the listener's)
//! connection. Shared by `benches/transport.rs` and `benches/files.rs`.

use std::sync::Arc;

use dna_p2p::transport::tls::{quic_configs, CertifiedKey, SERVER_NAME};

pub async fn connected_pair() -> (quinn::Connection, quinn::Connection) {
    let key = CertifiedKey::generate().unwrap();
    let (server, client) = quic_configs(&key).unwrap();
    let transport = Arc::new(quinn::TransportConfig::default());
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(server));
    sc.transport_config(transport.clone());
    let mut cc = quinn::ClientConfig::new(Arc::new(client));
    cc.transport_config(transport);
    let mut ecfg = quinn::EndpointConfig::default();
    ecfg.grease_quic_bit(false);
    let b = quinn::Endpoint::new(
        ecfg.clone(),
        Some(sc),
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let mut a = quinn::Endpoint::new(
        ecfg,
        None,
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    a.set_default_client_config(cc);
    let b_addr = b.local_addr().unwrap();
    let accept = tokio::spawn(async move { b.accept().await.unwrap().await.unwrap() });
    let conn_a = a.connect(b_addr, SERVER_NAME).unwrap().await.unwrap();
    let conn_b = accept.await.unwrap();
    (conn_a, conn_b)
}
