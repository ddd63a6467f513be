//! A property: any sequence of commands gets the same answers from a kv
//! node (in a simulation, over the network) as from a simple model of
//! memcached's semantics written here in a few lines.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use faultline::protocol::client::{Client, ClientError, Store};
use faultline::protocol::{Opcode, Packet, Status};
use faultline::server::{KvConfig, run_node};
use faultline_harness::RunOptions;
use faultline_harness::{SimStream, Variant, scenario_from_fn};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Cmd {
    Store(Opcode, u8, Vec<u8>, u32),
    Get(u8),
    GetK(u8),
    Delete(u8),
    Arith(bool, u8, u64, u64),
    Flush,
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let k = 0u8..4;
    // Values are short text, sometimes a number (so INCR/DECR may apply).
    let value = prop_oneof![
        proptest::collection::vec(b'a'..=b'z', 0..12),
        (0u64..1000).prop_map(|n| n.to_string().into_bytes()),
    ];
    let store_op = prop_oneof![
        Just(Opcode::SET),
        Just(Opcode::ADD),
        Just(Opcode::REPLACE),
        Just(Opcode::APPEND),
        Just(Opcode::PREPEND),
    ];
    prop_oneof![
        4 => (store_op, k.clone(), value, any::<u32>()).prop_map(|(o, k, v, f)| Cmd::Store(o, k, v, f)),
        3 => k.clone().prop_map(Cmd::Get),
        1 => k.clone().prop_map(Cmd::GetK),
        2 => k.clone().prop_map(Cmd::Delete),
        2 => (any::<bool>(), k, 0u64..100, 0u64..100).prop_map(|(i, k, d, n)| Cmd::Arith(i, k, d, n)),
        1 => Just(Cmd::Flush),
    ]
}

/// memcached's semantics over a map of key → (value, flags).
#[derive(Default)]
struct Model {
    items: BTreeMap<Vec<u8>, (Vec<u8>, u32)>,
}

impl Model {
    fn apply(&mut self, cmd: &Cmd) -> String {
        match cmd {
            Cmd::Store(op, k, v, flags) => {
                let key = key(*k);
                let existing = self.items.get(&key).cloned();
                let stored = match (*op, existing) {
                    (Opcode::ADD, Some(_)) => return "KEY_EEXISTS".into(),
                    (Opcode::REPLACE, None) => return "KEY_ENOENT".into(),
                    (Opcode::APPEND | Opcode::PREPEND, None) => return "NOT_STORED".into(),
                    (Opcode::APPEND, Some((old, f))) => ([old, v.clone()].concat(), f),
                    (Opcode::PREPEND, Some((old, f))) => ([v.clone(), old].concat(), f),
                    _ => (v.clone(), *flags),
                };
                self.items.insert(key, stored);
                "SUCCESS".into()
            }
            Cmd::Get(k) | Cmd::GetK(k) => match self.items.get(&key(*k)) {
                Some((v, f)) => format!("SUCCESS {} flags={f}", String::from_utf8_lossy(v)),
                None => "KEY_ENOENT".into(),
            },
            Cmd::Delete(k) => match self.items.remove(&key(*k)) {
                Some(_) => "SUCCESS".into(),
                None => "KEY_ENOENT".into(),
            },
            Cmd::Arith(incr, k, delta, initial) => {
                let key = key(*k);
                let (next, flags) = match self.items.get(&key) {
                    None => (*initial, 0),
                    Some((v, f)) => {
                        let text = String::from_utf8_lossy(v);
                        let numeric =
                            !v.is_empty() && v.len() <= 20 && v.iter().all(u8::is_ascii_digit);
                        let Some(n) = numeric.then(|| text.parse::<u64>().ok()).flatten() else {
                            return "DELTA_BADVAL".into();
                        };
                        (
                            if *incr {
                                n.wrapping_add(*delta)
                            } else {
                                n.saturating_sub(*delta)
                            },
                            *f,
                        )
                    }
                };
                self.items
                    .insert(key, (next.to_string().into_bytes(), flags));
                format!("SUCCESS {next}")
            }
            Cmd::Flush => {
                self.items.clear();
                "SUCCESS".into()
            }
        }
    }
}

fn answer<T>(r: Result<T, ClientError>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(ClientError::Status(s)) => s.to_string(),
        Err(e) => format!("error {e}"),
    }
}

/// Runs the commands against a node; returns one answer per command.
fn server_answers(cmds: Vec<Cmd>) -> Vec<String> {
    let answers: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = answers.clone();
    let scenario = scenario_from_fn("kv-model", "summary = \"t\"\n", move |sim, _| {
        sim.host("kv", || async { Ok(run_node(KvConfig::default()).await?) });
        let (cmds, out) = (cmds.clone(), out.clone());
        sim.client("client", async move {
            let mut c = Client::new(SimStream::connect(("kv", 11210)).await?);
            for cmd in cmds {
                let a = match &cmd {
                    Cmd::Store(op, k, v, flags) => answer(
                        c.store(&Store::new(*op, &key(*k), v).flags(*flags)).await,
                        |_| "SUCCESS".into(),
                    ),
                    Cmd::Get(k) => answer(c.get(&key(*k), 0).await, |item| match item {
                        Some(i) => format!(
                            "SUCCESS {} flags={}",
                            String::from_utf8_lossy(&i.value),
                            i.flags
                        ),
                        None => "KEY_ENOENT".into(),
                    }),
                    Cmd::GetK(k) => answer(
                        c.call(Packet::request(Opcode::GETK).key(key(*k))).await,
                        |p| match p.status_code() {
                            Status::SUCCESS => format!(
                                "SUCCESS {} flags={}",
                                String::from_utf8_lossy(&p.value),
                                p.extras_u32(0).unwrap_or(u32::MAX)
                            ),
                            other => other.to_string(),
                        },
                    ),
                    Cmd::Delete(k) => answer(c.delete(&key(*k), 0).await, |_| "SUCCESS".into()),
                    Cmd::Arith(incr, k, delta, initial) => {
                        let op = if *incr {
                            Opcode::INCREMENT
                        } else {
                            Opcode::DECREMENT
                        };
                        answer(c.arith(op, &key(*k), *delta, *initial, 0).await, |n| {
                            format!("SUCCESS {n}")
                        })
                    }
                    Cmd::Flush => answer(c.call(Packet::request(Opcode::FLUSH)).await, |p| {
                        p.status_code().to_string()
                    }),
                };
                out.lock().unwrap().push(a);
            }
            Ok(())
        });
        Ok(())
    });
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
    answers.lock().unwrap().clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_answer_like_the_model(cmds in proptest::collection::vec(cmd(), 1..40)) {
        let mut model = Model::default();
        let expected: Vec<String> = cmds.iter().map(|c| model.apply(c)).collect();
        let got = server_answers(cmds.clone());
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            prop_assert_eq!(g, e, "command {} of {:?}", i, cmds);
        }
        prop_assert_eq!(got.len(), expected.len());
    }
}
