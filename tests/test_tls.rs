//! `rediss://`: caching over TLS against a `redis-server` that speaks TLS only, with a
//! certificate from a private authority this test makes; a server whose certificate does
//! not chain to the trusted authority is refused. The same for a cluster, and for a master
//! behind Sentinels that speak TLS only.
#![cfg(feature = "tls")]

mod common;

use common::{test_config, RedisCluster, RedisSentinel, RedisServer, Tls, MASTER_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// A certificate authority (its certificate, PEM) and a server certificate and key it
/// signed for 127.0.0.1.
fn authority_and_server() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // Distinct names: OpenSSL (redis-cli, the cluster bus) takes a certificate whose issuer
    // is its own subject for a self-signed one.
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "redcache test authority");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server_params.distinguished_name = DistinguishedName::new();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "redcache test server");
    let server = server_params.signed_by(&server_key, &ca).unwrap();
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

#[tokio::test]
async fn a_cluster_over_tls_caches_and_invalidates_on_every_master() {
    let (ca, cert, key) = authority_and_server();
    let cluster = RedisCluster::start_tls(
        3,
        0,
        &Tls {
            cert: &cert,
            key: &key,
            ca: Some(&ca),
        },
    );
    assert!(cluster.urls()[0].starts_with("rediss://"));
    let cache = cluster.cache_with(test_config().tls_ca_cert(ca)).await;
    let calls = AtomicUsize::new(0);
    for id in 0..30 {
        assert_eq!(cache.scope(item(id, &calls)).await, id);
        assert_eq!(cache.scope(item(id, &calls)).await, id);
    }
    assert_eq!(calls.load(SeqCst), 30, "stored and read back over TLS");
    assert!(
        cluster.keys_per_master().iter().all(|n| *n > 0),
        "on every master"
    );
    assert_eq!(cache.invalidate_prefix("tls:item").await.unwrap(), 30);
    assert_eq!(cache.stats().faults, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_over_tls_find_the_master_and_follow_a_failover() {
    let (ca, cert, key) = authority_and_server();
    let sentinel = RedisSentinel::start_tls(&Tls {
        cert: &cert,
        key: &key,
        ca: Some(&ca),
    });
    assert!(sentinel.urls()[0].starts_with("rediss://"));
    let cache = sentinel
        .cache_with(test_config().tls_ca_cert(ca.clone()))
        .await;
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        assert_eq!(cache.scope(item(1, &calls)).await, 1);
    }
    assert_eq!(calls.load(SeqCst), 1, "stored and read back over TLS");
    // Another authority: the Sentinels' certificates are refused.
    let (other_ca, _, _) = authority_and_server();
    let refused = redcache::Cache::connect(
        sentinel
            .configure(test_config().tls_ca_cert(other_ca))
            .connect_timeout(std::time::Duration::from_secs(2))
            .build(),
    )
    .await;
    assert!(
        matches!(refused, Err(redcache::Error::Connect { .. })),
        "{refused:?}"
    );
    // A manual failover, heard over TLS: the next miss is stored on the new master.
    sentinel.wait_until_ready_for_failover();
    let (old, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    let reply = sentinel.sentinel_cli(
        sentinel.sentinels[0].port(),
        &["SENTINEL", "FAILOVER", MASTER_NAME],
    );
    assert!(reply.contains("OK"), "SENTINEL FAILOVER: {reply}");
    sentinel
        .wait_for_new_master(old, std::time::Duration::from_secs(15))
        .await;
    let key = cache.scope(async { redcache::key!(item(2, _)) }).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        cache.scope(item(2, &calls)).await;
        if sentinel.data_cli(replica, &["EXISTS", &key]).trim() == "1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not stored on the new master: {:?}",
            cache.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sentinel.data_cli(old, &["EXISTS", &key]).trim(), "0");
}
