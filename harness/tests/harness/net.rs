//! The simulated TCP primitives: short writes, backpressure and its wake-up,
//! segmentation keeping the byte stream intact, and plain-turmoil
//! behaviour when no fault is active.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_harness::{Faults, RunOptions};
use faultline_harness::{SimListener, SimStream, Variant, Verdict, scenario_from_fn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::plan;

fn expect_pass(outcome: &faultline_harness::Outcome) {
    assert_eq!(outcome.verdict, Verdict::Pass, "{}", outcome.report());
}

#[test]
fn a_write_accepts_at_most_the_free_space_then_blocks_until_the_peer_reads() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = log.clone();
    let scenario = scenario_from_fn("short-writes", "summary = \"t\"\n", move |sim, _| {
        let log = seen.clone();
        sim.host("reader", || async {
            let listener = SimListener::bind(("0.0.0.0", 9)).await?;
            let (mut stream, _) = listener.accept().await?;
            // Read nothing for 50 ms, then 3 bytes, then everything.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut three = [0u8; 3];
            stream.read_exact(&mut three).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
            Ok(())
        });
        sim.client("writer", async move {
            let mut stream = SimStream::connect(("reader", 9)).await?;
            let first = stream.write(&[7u8; 20]).await?;
            log.lock()
                .unwrap()
                .push(format!("first write accepted {first}"));
            let blocked =
                tokio::time::timeout(Duration::from_millis(20), stream.write(&[8u8; 20])).await;
            log.lock()
                .unwrap()
                .push(format!("second write blocked: {}", blocked.is_err()));
            let start = tokio::time::Instant::now();
            let second = stream.write(&[8u8; 20]).await?;
            let waited_ms = start.elapsed().as_millis();
            log.lock().unwrap().push(format!(
                "second write accepted {second} after the reader freed space: {}",
                waited_ms >= 20
            ));
            stream.shutdown().await?;
            Ok(())
        });
        Ok(())
    });
    let options = RunOptions::new(Variant::Fixed)
        .faults(plan("[[send_buffer]]\nhost = \"writer\"\nbytes = 5\n"));
    let outcome = faultline_harness::run(&scenario, 1, &options);
    expect_pass(&outcome);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "first write accepted 5".to_string(),
            "second write blocked: true".to_string(),
            "second write accepted 3 after the reader freed space: true".to_string(),
        ]
    );
    assert!(outcome.coverage.contains_key("send_buffer:short_write"));
    assert!(outcome.coverage.contains_key("send_buffer:full"));
}

#[test]
fn write_all_through_a_tiny_buffer_delivers_every_byte_in_order() {
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let got = received.clone();
    let scenario = scenario_from_fn("backpressure", "summary = \"t\"\n", move |sim, _| {
        let got = got.clone();
        sim.host("reader", move || {
            let got = got.clone();
            async move {
                let listener = SimListener::bind(("0.0.0.0", 9)).await?;
                let (mut stream, _) = listener.accept().await?;
                let mut buf = [0u8; 100];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    got.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                Ok(())
            }
        });
        sim.client("writer", async {
            let mut stream = SimStream::connect(("reader", 9)).await?;
            let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
            stream.write_all(&data).await?;
            stream.shutdown().await?;
            // Wait for the reader to drain before the client ends the run.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        });
        Ok(())
    });
    let options = RunOptions::new(Variant::Fixed)
        .faults(plan("[[send_buffer]]\nhost = \"writer\"\nbytes = 7\n"));
    let outcome = faultline_harness::run(&scenario, 3, &options);
    expect_pass(&outcome);
    let expected: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(*received.lock().unwrap(), expected);
}

/// Writes 20 KB in writes of random sizes, reads with a buffer of random
/// size; returns (bytes received intact, reads, largest read).
fn segmented_transfer(faults: Faults, seed: u64) -> (bool, usize, usize) {
    let result: Arc<Mutex<(bool, usize, usize)>> = Arc::default();
    let out = result.clone();
    let scenario = scenario_from_fn("segmentation", "summary = \"t\"\n", move |sim, _| {
        let out = out.clone();
        sim.host("reader", move || {
            let out = out.clone();
            async move {
                let listener = SimListener::bind(("0.0.0.0", 9)).await?;
                let (mut stream, _) = listener.accept().await?;
                let mut received = Vec::new();
                let mut reads = 0;
                let mut largest = 0;
                let mut buf = [0u8; 512];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    reads += 1;
                    largest = largest.max(n);
                    received.extend_from_slice(&buf[..n]);
                }
                let expected: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 256) as u8).collect();
                *out.lock().unwrap() = (received == expected, reads, largest);
                Ok(())
            }
        });
        sim.client("writer", async {
            let mut stream = SimStream::connect(("reader", 9)).await?;
            let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 256) as u8).collect();
            for chunk in data.chunks(400) {
                stream.write_all(chunk).await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            stream.shutdown().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        });
        Ok(())
    });
    let outcome = faultline_harness::run(
        &scenario,
        seed,
        &RunOptions::new(Variant::Fixed).faults(faults),
    );
    expect_pass(&outcome);
    *result.lock().unwrap()
}

#[test]
fn segmentation_splits_and_coalesces_but_keeps_the_byte_stream_intact() {
    for seed in 0..5 {
        let (intact, reads, largest) = segmented_transfer(
            plan("[[segmentation]]\nfrom = \"writer\"\nto = \"reader\"\nmax_segment_bytes = 16\n"),
            seed,
        );
        assert!(intact, "seed {seed}: the bytes changed");
        // 400-byte writes cut into segments of at most 16 bytes: many reads.
        assert!(reads > 20_000 / 400, "seed {seed}: only {reads} reads");
        // Segments that arrive together are read together.
        assert!(
            largest > 16,
            "seed {seed}: segments were never coalesced (largest read {largest})"
        );
    }
}

#[test]
fn without_faults_a_socket_behaves_like_turmoils_one_write_one_read() {
    let (intact, reads, largest) = segmented_transfer(Faults::Off, 0);
    assert!(intact);
    // 50 writes of 400 bytes, each read whole (512-byte buffer).
    assert_eq!((reads, largest), (50, 400));
}

#[test]
fn a_frame_delay_lets_a_message_on_one_connection_overtake_one_on_another() {
    // Two connections from different hosts to one reader; the first sender
    // sends first, but its frame is delayed, so the reader sees the second
    // sender's frame first.
    struct OneByteLength;
    impl faultline_harness::Framer for OneByteLength {
        fn header_len(&self) -> usize {
            2
        }
        fn parse(&self, header: &[u8]) -> Option<faultline_harness::FrameInfo> {
            let label = match header[0] {
                b'A' => "msg:A",
                b'B' => "msg:B",
                _ => return None,
            };
            Some(faultline_harness::FrameInfo {
                total_len: 2 + header[1] as usize,
                label: label.into(),
            })
        }
    }
    let order: Arc<Mutex<Vec<char>>> = Arc::default();
    let seen = order.clone();
    let scenario = scenario_from_fn("overtake", "summary = \"t\"\n", move |sim, _| {
        sim.set_framer(std::rc::Rc::new(OneByteLength));
        let seen = seen.clone();
        sim.host("reader", move || {
            let seen = seen.clone();
            async move {
                let listener = SimListener::bind(("0.0.0.0", 9)).await?;
                for _ in 0..2 {
                    let (mut stream, _) = listener.accept().await?;
                    let seen = seen.clone();
                    tokio::task::spawn_local(async move {
                        let mut frame = [0u8; 5];
                        if stream.read_exact(&mut frame).await.is_ok() {
                            seen.lock().unwrap().push(frame[0] as char);
                        }
                    });
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        sim.client("sender-a", async {
            let mut stream = SimStream::connect(("reader", 9)).await?;
            stream.write_all(b"A\x03xyz").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        });
        sim.client("sender-b", async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut stream = SimStream::connect(("reader", 9)).await?;
            stream.write_all(b"B\x03xyz").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        });
        Ok(())
    });
    let run = |faults| {
        order.lock().unwrap().clear();
        let outcome = faultline_harness::run(
            &scenario,
            0,
            &RunOptions::new(Variant::Fixed).faults(faults),
        );
        expect_pass(&outcome);
        order.lock().unwrap().clone()
    };
    assert_eq!(run(Faults::Off), vec!['A', 'B']);
    let delayed = run(plan(
        "[[frame_delay]]\nfrom = \"sender-a\"\nto = \"reader\"\nframe = \"msg:A\"\ndelay_ms = 40\n",
    ));
    assert_eq!(delayed, vec!['B', 'A']);
    // A hold until the other frame was delivered gives the same order
    // without choosing a delay.
    let held = run(plan(
        "[[frame_delay]]\nfrom = \"sender-a\"\nto = \"reader\"\nframe = \"msg:A\"\nhold_until = \"frame:sender-b->reader:msg:B\"\n",
    ));
    assert_eq!(held, vec!['B', 'A']);
}

/// Frames of `H` + a one-byte length + that many bytes.
struct LengthFrames;

impl faultline_harness::Framer for LengthFrames {
    fn header_len(&self) -> usize {
        4
    }
    fn parse(&self, header: &[u8]) -> Option<faultline_harness::FrameInfo> {
        (header[0] == b'H').then(|| faultline_harness::FrameInfo {
            total_len: 4 + header[1] as usize,
            label: "msg".into(),
        })
    }
}

#[test]
fn a_send_buffer_smaller_than_a_frame_header_still_delivers_and_traces_every_frame() {
    // Without frame rules, a partial header is readable at once: its bytes
    // count against the writer's 2-byte buffer until read, so holding them
    // back for the whole header would stall the connection for good.
    let scenario = scenario_from_fn("tiny-framed", "summary = \"t\"\n", move |sim, _| {
        sim.set_framer(std::rc::Rc::new(LengthFrames));
        sim.host("reader", || async {
            let listener = SimListener::bind(("0.0.0.0", 9)).await?;
            let (mut stream, _) = listener.accept().await?;
            let mut all = Vec::new();
            stream.read_to_end(&mut all).await?;
            assert_eq!(all.len(), 30 * 9, "every frame arrived");
            faultline_harness::event("all-read");
            Ok(())
        });
        sim.client("writer", async {
            let mut stream = SimStream::connect(("reader", 9)).await?;
            for i in 0..30u8 {
                stream.write_all(&[b'H', 5, 0, i, 1, 2, 3, 4, 5]).await?;
            }
            stream.shutdown().await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(())
        });
        Ok(())
    });
    let options = RunOptions::new(Variant::Fixed)
        .faults(plan("[[send_buffer]]\nhost = \"writer\"\nbytes = 2\n"));
    let outcome = faultline_harness::run(&scenario, 0, &options);
    expect_pass(&outcome);
    assert_eq!(
        outcome.coverage.get("event:frame:writer->reader:msg"),
        Some(&30)
    );
    assert_eq!(outcome.coverage.get("event:all-read"), Some(&1));
    // With a frame rule on the same direction every header is needed whole
    // before its frame is released: the bytes waiting for it count as
    // received, so the tiny buffer still drains, and every frame is held.
    let options = RunOptions::new(Variant::Fixed).faults(plan(
        "[[send_buffer]]\nhost = \"writer\"\nbytes = 2\n\
         [[frame_delay]]\nfrom = \"writer\"\nto = \"reader\"\nframe = \"msg\"\ndelay_ms = 3\n",
    ));
    let outcome = faultline_harness::run(&scenario, 0, &options);
    expect_pass(&outcome);
    assert_eq!(
        outcome.coverage.get("event:frame:writer->reader:msg"),
        Some(&30)
    );
    assert_eq!(outcome.coverage.get("frame_delay:delayed"), Some(&30));
    assert_eq!(outcome.coverage.get("event:all-read"), Some(&1));
}

#[test]
fn closing_with_unread_bytes_resets_the_peer_instead_of_a_clean_end() {
    // The reader takes 1 of 10 bytes and closes: the other 9 are unread, so
    // the writer's next read is a reset (as on a real kernel), not Ok(0).
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let scenario = scenario_from_fn("reset-on-close", "summary = \"t\"\n", move |sim, _| {
        let log = log.clone();
        sim.host("reader", || async {
            let listener = SimListener::bind(("0.0.0.0", 9)).await?;
            let (mut stream, _) = listener.accept().await?;
            let mut one = [0u8; 1];
            stream.read_exact(&mut one).await?;
            drop(stream);
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("writer", async move {
            let mut stream = SimStream::connect(("reader", 9)).await?;
            stream.write_all(&[1u8; 10]).await?;
            let mut buf = [0u8; 4];
            let result = stream.read(&mut buf).await;
            log.lock().unwrap().push(match result {
                Ok(n) => format!("read {n}"),
                Err(e) => format!("error {:?}", e.kind()),
            });
            Ok(())
        });
        Ok(())
    });
    // Without faults turmoil itself still holds the 9 bytes and resets.
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    expect_pass(&outcome);
    assert_eq!(*seen.lock().unwrap(), ["error ConnectionReset"]);
    // With coalescing segmentation the socket had pulled them from turmoil:
    // the harness makes the end of stream a reset.
    seen.lock().unwrap().clear();
    let coalescing =
        plan("[[segmentation]]\nfrom = \"writer\"\nto = \"reader\"\nmax_segment_bytes = 1000\n");
    let outcome = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(coalescing),
    );
    expect_pass(&outcome);
    assert_eq!(*seen.lock().unwrap(), ["error ConnectionReset"]);
    assert!(
        outcome
            .coverage
            .contains_key("net:closed-with-unread-bytes")
    );
}
