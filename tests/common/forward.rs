//! [`Forwarder`]: an address that can be moved, as a DNS name or a load balancer is moved
//! by a failover.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP forwarder on a free loopback port: each connection made to it is joined to a new
/// connection to the server it points at when the connection is made. Moving it
/// ([`point_at`](Self::point_at)) leaves the connections already made where they are.
pub struct Forwarder {
    port: u16,
    target: Arc<AtomicU16>,
    accepting: JoinHandle<()>,
}

impl Forwarder {
    /// A forwarder to the loopback server on `target`, on the current runtime.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let to = target.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let port = to.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder {
            port,
            target,
            accepting,
        }
    }

    /// Connections made from now on go to the loopback server on `target`.
    pub fn point_at(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }

    /// `redis://` at the forwarder.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
