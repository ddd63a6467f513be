//! The cluster manager's replication, end to end over the simulated
//! network: a rebalance without faults moves every vbucket and the new
//! node holds exactly the model's data; a proxy that sees a stream end
//! during set-up (fixed lines) fails, answers with an error and is rebuilt.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

use faultline::bugs::Bugs;
use faultline::dcp::admin::Admin;
use faultline::dcp::{
    ProxyConfig, RebalanceConfig, Replicator, SetupError, rebalance, replication_name,
};
use faultline::protocol::client::Client;
use faultline::protocol::vbucket_of;
use faultline::server::store::VbState;
use faultline::server::{KV_PORT, KvConfig, Node, VbRange, serve};
use faultline::workloads::store_model::KvModel;
use faultline_harness::testing::Check;
use faultline_harness::{Faults, RunOptions};
use faultline_harness::{SimListener, SimStream, Variant, faults::FaultPlan, scenario_from_fn};

const VBUCKETS: u16 = 8;

type Slot = Rc<RefCell<Option<Rc<Node>>>>;

fn config(active: bool) -> KvConfig {
    KvConfig {
        vbuckets: VBUCKETS,
        active: if active {
            VbRange::all(VBUCKETS)
        } else {
            VbRange { start: 0, end: 0 }
        },
        ..KvConfig::default()
    }
}

async fn node(config: KvConfig, slot: Slot) -> turmoil::Result {
    let listener = SimListener::bind(("0.0.0.0", KV_PORT)).await?;
    let node = Node::new(config);
    *slot.borrow_mut() = Some(node.clone());
    serve(listener, node).await?;
    Ok(())
}

fn replicator() -> Replicator {
    Replicator::new(ProxyConfig {
        name: replication_name("kv-1", "kv-2"),
        consumer_host: "kv-2".into(),
        producer_host: "kv-1".into(),
        port: KV_PORT,
        bugs: Bugs::fixed(),
    })
}

/// Two nodes and `test` as the cluster manager; the run must pass.
fn run<F, Fut>(seed: u64, plan: FaultPlan, test: F)
where
    F: Fn(Slot, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let test = Arc::new(test);
    let scenario = scenario_from_fn(
        "dcp-ns",
        "summary = \"t\"\n[sim]\nduration_ms = 60000\n",
        move |sim, _| {
            let (s1, s2): (Slot, Slot) = (Rc::default(), Rc::default());
            let (n1, n2) = (s1.clone(), s2.clone());
            sim.host("kv-1", move || node(config(true), n1.clone()));
            sim.host("kv-2", move || node(config(false), n2.clone()));
            let test = test.clone();
            sim.client("ns", async move {
                test(s1, s2).await;
                Ok(())
            });
            Ok(())
        },
    );
    let options = RunOptions::new(Variant::Fixed).faults(Faults::Plan {
        plan: Box::new(plan),
        source: None,
    });
    let outcome = faultline_harness::run(&scenario, seed, &options);
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
}

#[test]
fn a_rebalance_moves_every_vbucket_and_the_new_node_holds_the_model() {
    for seed in 0..3 {
        run(seed, FaultPlan::default(), |kv1, kv2| async move {
            let mut model = KvModel::new();
            let mut keys = Vec::new();
            let mut client = Client::new(SimStream::connect(("kv-1", KV_PORT)).await.unwrap());
            for i in 0..200u32 {
                let key = format!("k{}", i % 60).into_bytes();
                let vb = vbucket_of(&key, VBUCKETS);
                if i % 11 == 10 {
                    if client.delete(&key, vb).await.is_ok() {
                        model.acked(&key, None);
                    }
                } else {
                    let value = format!("v{i}").into_bytes();
                    client.set(&key, &value, vb).await.unwrap();
                    model.acked(&key, Some(&value));
                }
                keys.push((key, vb));
            }
            let replicator = replicator();
            let mut old = Admin::connect("kv-1", KV_PORT).await.unwrap();
            let mut new = Admin::connect("kv-2", KV_PORT).await.unwrap();
            let all: BTreeSet<u16> = (0..VBUCKETS).collect();
            let moved = rebalance(
                &replicator,
                &mut old,
                &mut new,
                &all,
                RebalanceConfig::default(),
            )
            .await
            .unwrap();
            assert_eq!(moved, all);
            assert_eq!(replicator.builds(), 1);
            let (a, b) = (kv1.borrow().clone().unwrap(), kv2.borrow().clone().unwrap());
            for vb in 0..VBUCKETS {
                assert_eq!(a.store.vbucket(vb).unwrap().state().await, VbState::Dead);
                assert_eq!(b.store.vbucket(vb).unwrap().state().await, VbState::Active);
            }
            // The new node holds exactly the model's data.
            let held = {
                let store = &b.store;
                let mut held = 0;
                for vb in 0..VBUCKETS {
                    for (key, item) in store.vbucket(vb).unwrap().items().await {
                        assert_eq!(model.expected(&key), Some(item.value.as_ref()), "{key:?}");
                        held += 1;
                    }
                }
                held
            };
            let expected = keys
                .iter()
                .map(|(k, _)| k.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| model.expected(k).is_some())
                .count();
            assert_eq!(held, expected);
            // And serves it; the old node refuses.
            let mut c2 = Client::new(SimStream::connect(("kv-2", KV_PORT)).await.unwrap());
            for (key, vb) in &keys {
                let got = c2.get(key, *vb).await.unwrap();
                model
                    .check_read(key, got.as_ref().map(|i| i.value.as_ref()))
                    .unwrap();
            }
            assert!(client.get(b"k1", 1).await.is_err());
        });
    }
}

#[test]
fn a_stream_end_during_set_up_fails_the_connection_which_is_rebuilt() {
    let plan: FaultPlan = toml::from_str(
        "[[switch]]\nname = \"kv.end_stream_after_accept\"\nhost = \"kv-1\"\nnth = 2\n\
         [[switch]]\nname = \"kv.skip_add_stream_response\"\nhost = \"kv-2\"\n",
    )
    .unwrap();
    run(0, plan, |_, _| async move {
        let mut new = Admin::connect("kv-2", KV_PORT).await.unwrap();
        for vb in 0..4 {
            new.set_vbucket_state(vb, 2).await.unwrap();
        }
        let replicator = replicator();
        let vbs: BTreeSet<u16> = (0..4).collect();
        let started = tokio::time::Instant::now();
        match replicator.setup_replication(&vbs).await {
            Err(SetupError::ConnectionFailed(why)) => {
                assert!(why.contains("stream end (closed) for vb 1"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        // The next call builds a new connection; the switch fired once.
        replicator.setup_replication(&vbs).await.unwrap();
        assert_eq!(replicator.builds(), 2);
        assert_eq!(replicator.partitions().await.unwrap(), vbs);
    });
}

#[test]
fn the_rebalance_scenario_without_faults_passes() {
    let scenario = faultline::registry()
        .load_file(
            &faultline::default_scenarios_dir().join("MB-53445-stream-end-during-setup.toml"),
        )
        .unwrap();
    Check::new(&scenario)
        .variant(Variant::Fixed)
        .faults(Faults::Off)
        .seeds(0..5)
        .expect_pass();
}
