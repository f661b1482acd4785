//! `rediss://`: caching over TLS against a `redis-server` that speaks TLS only, with a
//! certificate from a private authority this test makes; a server whose certificate does
//! not chain to the trusted authority is refused.
#![cfg(feature = "tls")]

mod common;

use common::{test_config, RedisServer};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// A certificate authority (its certificate, PEM) and a server certificate and key it
/// signed for 127.0.0.1.
fn authority_and_server() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

#[redcache::cached(prefix = "tls:item", ttl = 60, skip(calls))]
async fn item(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn caching_works_over_tls_with_a_private_authority() {
    let (ca, cert, key) = authority_and_server();
    let server = RedisServer::start_tls(&cert, &key);
    assert!(server.url().starts_with("rediss://"));
    let cache = redcache::Cache::connect(test_config().url(server.url()).tls_ca_cert(ca).build())
        .await
        .expect("a TLS connection to a server our authority signed");
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        assert_eq!(cache.scope(item(1, &calls)).await, 1);
    }
    assert_eq!(calls.load(SeqCst), 1, "stored and read back over TLS");
    assert_eq!(cache.stats().faults, 0);
}

#[tokio::test]
async fn a_certificate_from_another_authority_is_refused() {
    let (_, cert, key) = authority_and_server();
    let (other_ca, _, _) = authority_and_server();
    let server = RedisServer::start_tls(&cert, &key);
    let err = redcache::Cache::connect(
        test_config()
            .url(server.url())
            .tls_ca_cert(other_ca)
            .connect_timeout(std::time::Duration::from_secs(2))
            .build(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, redcache::Error::Connect { .. }), "{err:?}");
    let plain = server.url().replacen("rediss://", "redis://", 1);
    let err = redcache::Cache::connect(
        test_config()
            .url(plain)
            .connect_timeout(std::time::Duration::from_secs(2))
            .build(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, redcache::Error::Connect { .. }),
        "plain text to a TLS port: {err:?}"
    );
}
