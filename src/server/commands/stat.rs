//! STAT: one response packet per statistic (key: name, value: text), then
//! an empty packet. Without a key: the general statistics and each
//! vbucket's state; `KvConfig::stat_detail_entries` adds more, to make the
//! response as large as a scenario needs.

use std::rc::Rc;

use super::reply::Flow;
use crate::protocol::{Packet, Status};
use crate::server::conn::{Conn, ServerStream};
use crate::server::node::{Node, VERSION};

pub async fn stat<S: ServerStream>(node: &Rc<Node>, conn: &mut Conn<S>, request: &Packet) -> Flow {
    let h = &request.header;
    let group = String::from_utf8_lossy(&request.key).to_string();
    let now = node.now();
    let mut entries: Vec<(String, String)> = Vec::new();
    match group.as_str() {
        "" => {
            let stats = &node.stats;
            let store = &node.store;
            entries.extend([
                ("version".to_string(), VERSION.to_string()),
                ("uptime".to_string(), now.as_secs().to_string()),
                (
                    "curr_connections".to_string(),
                    stats.curr_connections.load().await.to_string(),
                ),
                (
                    "total_connections".to_string(),
                    stats.total_connections.load().await.to_string(),
                ),
                (
                    "cmd_get".to_string(),
                    stats.cmd_get.load().await.to_string(),
                ),
                (
                    "cmd_set".to_string(),
                    stats.cmd_set.load().await.to_string(),
                ),
                (
                    "get_hits".to_string(),
                    stats.get_hits.load().await.to_string(),
                ),
                (
                    "get_misses".to_string(),
                    stats.get_misses.load().await.to_string(),
                ),
                (
                    "curr_items".to_string(),
                    store.live_items(now).await.to_string(),
                ),
                (
                    "total_items".to_string(),
                    store.total_items.load().await.to_string(),
                ),
                ("bytes".to_string(), store.live_bytes(now).await.to_string()),
            ]);
            for vb in 0..store.vbucket_count() {
                let state = match store.vbucket(vb) {
                    Some(v) => v.state().await.name(),
                    None => "dead",
                };
                entries.push((format!("vb_{vb}"), state.to_string()));
            }
            for i in 0..node.config.stat_detail_entries {
                entries.push((format!("detail_{i}"), format!("{i:08}")));
            }
        }
        "vbucket" => {
            let store = &node.store;
            for vb in 0..store.vbucket_count() {
                let v = store.vbucket(vb).expect("in range");
                entries.push((format!("vb_{vb}"), v.state().await.name().to_string()));
                entries.push((
                    format!("vb_{vb}:high_seqno"),
                    v.high_seqno().await.to_string(),
                ));
            }
        }
        _ => {
            conn.respond(Packet::response(h, Status::KEY_ENOENT));
            return Flow::Continue;
        }
    }
    for (key, value) in entries {
        conn.respond(
            Packet::response(h, Status::SUCCESS)
                .key(key.into_bytes())
                .value(value.into_bytes()),
        );
    }
    conn.respond(Packet::response(h, Status::SUCCESS));
    Flow::Continue
}
