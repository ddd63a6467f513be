//! What the benchmarks measure (`faultline bench`, `cargo bench`): the
//! worked example's echo traffic on bare turmoil, as the baseline the
//! harness's overhead is measured against.
//!
//! The bare run builds the same simulation as the `echo` workload with
//! faults off (same tick, latencies, seed, hosts, messages, server and
//! client code) but over turmoil's own `TcpStream`, with no faultline
//! trace, oracles or fault plumbing.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use rand::SeedableRng;

use crate::echo::{WritePath, echo};
use crate::workloads::echo::{ECHO_PORT, echo_messages, random_message};

/// The echo traffic of a benchmark.
#[derive(Clone, Copy, Debug)]
pub struct EchoLoad {
    pub clients: u32,
    pub messages: u32,
    pub max_message_bytes: usize,
}

impl EchoLoad {
    /// The `[params]` of an `echo` scenario with this load.
    pub fn scenario_toml(&self) -> String {
        format!(
            "summary = \"echo benchmark\"\nworkload = \"echo\"\n[sim]\nduration_ms = 600000\n\
             [params]\nclients = {}\nmessages = {}\nmax_message_bytes = {}\n",
            self.clients, self.messages, self.max_message_bytes
        )
    }
}

/// Runs the echo load on bare turmoil; the simulated time it took.
pub fn bare_echo(seed: u64, load: EchoLoad) -> Result<Duration, String> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(600))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::from_millis(2))
        .build();
    sim.host("server", || async {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", ECHO_PORT)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let _ = echo(stream, WritePath::WriteAll).await;
            });
        }
    });
    let failure: Rc<RefCell<Option<String>>> = Rc::default();
    for id in 0..load.clients {
        let failure = failure.clone();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ u64::from(id));
        sim.client(format!("client-{id}"), async move {
            let stream = turmoil::net::TcpStream::connect(("server", ECHO_PORT)).await?;
            let next = || random_message(&mut rng, load.max_message_bytes);
            if let Err(why) =
                echo_messages(stream, id, load.messages, Duration::from_secs(1), next).await
            {
                *failure.borrow_mut() = Some(why);
            }
            Ok(())
        });
    }
    sim.run().map_err(|e| e.to_string())?;
    if let Some(why) = failure.borrow_mut().take() {
        return Err(why);
    }
    Ok(sim.elapsed())
}
