//! Redis Cluster: the same store over redis-rs's async cluster connection.

use super::redis::{connect_checked, connect_error, local_tier, tracking, Conn, Node, RedisStore};
use crate::local::Invalidations;
use crate::{Config, Error, Result};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::ProtocolVersion;

impl Conn for ClusterConnection {
    const PIPELINES_SPAN_SLOTS: bool = false;

    async fn pipe_at(
        &self,
        key: &str,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        // Routed by the key itself: redis-rs would route `CLIENT CACHING YES` by its
        // second word, as if it were a key.
        let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
        self.clone()
            .route_pipeline(pipe.clone(), 0, pipe.len(), route)
            .await
    }

    async fn masters(&self) -> Result<Vec<Node>> {
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.clone())
            .await
            .map_err(Error::redis)?;
        Ok(masters_of(&nodes).into_iter().map(Some).collect())
    }

    async fn send_to(&self, node: &Node, cmd: redis::Cmd) -> Result<redis::Value> {
        let Some((host, port)) = node else {
            return cmd
                .query_async(&mut self.clone())
                .await
                .map_err(Error::redis);
        };
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        self.clone()
            .route_command(cmd, route)
            .await
            .map_err(Error::redis)
    }
}

/// The reachable masters in `CLUSTER NODES` output (`<id> <ip:port@cport> <flags> ...`).
fn masters_of(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, address, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.contains(&"fail") || flags.contains(&"noaddr") {
                return None;
            }
            let (host, port) = address.split('@').next()?.rsplit_once(':')?;
            Some((
                host.trim_matches(['[', ']']).to_string(),
                port.parse().ok()?,
            ))
        })
        .collect()
}

impl RedisStore<ClusterConnection> {
    /// Connects to the cluster through its seed nodes and checks it with `PING`, within
    /// `connect_timeout` (or not at all, when lazy).
    pub(crate) async fn connect_cluster(config: &Config) -> Result<Self> {
        let seeds = config.cluster_connection_infos()?;
        let mut builder = ClusterClientBuilder::new(seeds).retries(2);
        let local = local_tier(config);
        if let Some(tier) = &local {
            // Client tracking needs RESP3's push messages; each node pushes the
            // invalidations of the keys read from it.
            builder = builder
                .use_protocol(ProtocolVersion::RESP3)
                .cache_config(tracking())
                .push_sender(Invalidations(tier.clone()));
        }
        #[cfg(feature = "tls")]
        if let Some(certificates) = super::redis::tls_certificates(config) {
            builder = builder.certs(certificates);
        }
        let client = builder.build().map_err(|e| connect_error(config, e))?;
        let cluster_config = ClusterConfig::new()
            .set_connection_timeout(config.connect_timeout())
            .set_response_timeout(config.op_timeout());
        let reopen = {
            let (client, cluster_config) = (client.clone(), cluster_config.clone());
            move || -> super::redis::Connecting<ClusterConnection> {
                let (client, cluster_config) = (client.clone(), cluster_config.clone());
                Box::pin(async move {
                    client
                        .get_async_connection_with_config(cluster_config)
                        .await
                })
            }
        };
        let conn = if config.lazy() {
            client.get_pending_async_connection_with_config(cluster_config)
        } else {
            connect_checked(
                config,
                client.get_async_connection_with_config(cluster_config),
            )
            .await?
        };
        Ok(RedisStore::new(Some(conn), reopen, local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1700000000000 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 1700000000000 3 disconnected
d4 127.0.0.1:7003@17003 slave a1 0 1700000000000 1 connected
e5 [::1]:7004@17004 master - 0 1700000000000 4 connected 10923-16383
";
        assert_eq!(
            masters_of(nodes),
            [
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001),
                ("::1".to_string(), 7004)
            ]
        );
    }
}
