use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn headers_round_trip() {
    let p = Packet::request(Opcode::SET)
        .key(b"key".to_vec())
        .extras(vec![0, 0, 0, 1, 0, 0, 0, 0])
        .value(b"value".to_vec())
        .opaque(7)
        .cas(9)
        .vbucket(3);
    let bytes = p.encode();
    assert_eq!(bytes.len(), HEADER_LEN + 3 + 8 + 5);
    let (back, used) = Packet::try_parse(&bytes, &limits()).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(back.header, p.finished_header());
    assert_eq!(
        (back.key.as_ref(), back.value.as_ref(), back.extras.len()),
        (&b"key"[..], &b"value"[..], 8)
    );
    assert_eq!(back.header.vbucket(), 3);
}

#[test]
fn durability_travels_in_framing_extras_with_the_alternative_magic() {
    let p = Packet::request(Opcode::SET)
        .key(b"k".to_vec())
        .durability(Durability::Majority);
    let bytes = p.encode();
    assert_eq!(bytes[0], MAGIC_ALT_REQUEST);
    let (back, _) = Packet::try_parse(&bytes, &limits()).unwrap().unwrap();
    assert_eq!(
        back.durability_requirement().unwrap(),
        Some(Durability::Majority)
    );
    assert_eq!(back.key.as_ref(), b"k");
    let plain = Packet::request(Opcode::SET).key(b"k".to_vec());
    assert_eq!(plain.durability_requirement().unwrap(), None);
}

#[test]
fn malformed_headers_are_errors_not_panics() {
    let good = Packet::request(Opcode::GET).key(b"k".to_vec()).encode();
    // Truncated: not enough bytes yet.
    assert_eq!(Packet::try_parse(&good[..10], &limits()), Ok(None));
    assert_eq!(Packet::try_parse(&good[..HEADER_LEN], &limits()), Ok(None));
    // Wrong magic.
    let mut bad = good.clone();
    bad[0] = 0x42;
    assert_eq!(
        Packet::try_parse(&bad, &limits()),
        Err(ProtocolError::BadMagic(0x42))
    );
    // Body length past the limit: refused before any allocation.
    let mut huge = good.clone();
    huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Packet::try_parse(&huge, &limits()),
        Err(ProtocolError::BodyTooLarge { .. })
    ));
    // Key longer than 250 bytes.
    let long = Packet::request(Opcode::GET).key(vec![b'k'; 251]).encode();
    assert!(matches!(
        Packet::try_parse(&long, &limits()),
        Err(ProtocolError::KeyTooLong { key_bytes: 251, .. })
    ));
    // Key and extras longer than the body.
    let mut inconsistent = good;
    inconsistent[8..12].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        Packet::try_parse(&inconsistent, &limits()),
        Err(ProtocolError::LengthsExceedBody { .. })
    ));
}

#[test]
fn the_framer_labels_requests_and_responses() {
    use faultline_harness::Framer;
    let req = Packet::request(Opcode::DCP_ADD_STREAM)
        .extras(vec![0; 4])
        .encode();
    let info = McbpFramer.parse(&req[..HEADER_LEN]).unwrap();
    assert_eq!(
        (info.label.as_str(), info.total_len),
        ("req:DCP_ADD_STREAM", 28)
    );
    let header = Packet::request(Opcode::DCP_ADD_STREAM).finished_header();
    let res = Packet::response(&header, Status::SUCCESS).encode();
    assert_eq!(
        McbpFramer.parse(&res[..HEADER_LEN]).unwrap().label,
        "res:DCP_ADD_STREAM"
    );
    assert!(
        McbpFramer
            .parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..HEADER_LEN].as_ref())
            .is_none()
    );
}

#[test]
fn names_of_opcodes_and_statuses() {
    assert_eq!(Opcode::GETKQ.name(), "GETKQ");
    assert_eq!(Opcode(0xee).name(), "0xee");
    assert!(Opcode::GETQ.is_quiet() && !Opcode::GET.is_quiet());
    assert_eq!(Opcode::SETQ.loud(), Opcode::SET);
    assert_eq!(Status::NOT_MY_VBUCKET.name(), "NOT_MY_VBUCKET");
}

#[test]
fn dcp_extras_round_trip() {
    let req = dcp::StreamReq {
        flags: 0,
        start_seqno: 5,
        end_seqno: dcp::SEQNO_INFINITY,
        vbucket_uuid: 77,
        snap_start: 5,
        snap_end: 5,
    };
    let p = req.packet(9);
    assert_eq!(dcp::StreamReq::parse(&p).unwrap(), req);
    let m = dcp::Mutation {
        by_seqno: 3,
        rev_seqno: 1,
        flags: 2,
        expiration: 0,
        key: "k".into(),
        value: "v".into(),
    };
    assert_eq!(dcp::Mutation::parse(&m.packet(1)).unwrap(), m);
    assert_eq!(dcp::Mutation::parse(&m.prepare_packet(1)).unwrap(), m);
    assert_eq!(
        dcp::stream_end_status(&dcp::stream_end(4, dcp::end_status::STATE_CHANGED)).unwrap(),
        2
    );
    assert_eq!(
        dcp::commit_seqnos(&dcp::commit(1, 4, 5, "k".into())).unwrap(),
        (4, 5)
    );
    assert!(dcp::stream_end_status(&Packet::request(Opcode::DCP_STREAM_END)).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Packet::try_parse(&bytes, &limits());
        use faultline_harness::Framer;
        if bytes.len() >= HEADER_LEN {
            let _ = McbpFramer.parse(&bytes[..HEADER_LEN]);
        }
    }

    #[test]
    fn packets_round_trip(
        opcode in any::<u8>(),
        key in proptest::collection::vec(any::<u8>(), 0..250),
        extras in proptest::collection::vec(any::<u8>(), 0..32),
        value in proptest::collection::vec(any::<u8>(), 0..2000),
        opaque in any::<u32>(),
        cas in any::<u64>(),
    ) {
        let p = Packet::request(Opcode(opcode)).key(key).extras(extras).value(value).opaque(opaque).cas(cas);
        let bytes = p.encode();
        let (back, used) = Packet::try_parse(&bytes, &limits()).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(back.header, p.finished_header());
        prop_assert_eq!(back.key, p.key);
        prop_assert_eq!(back.extras, p.extras);
        prop_assert_eq!(back.value, p.value);
    }
}

#[test]
fn keys_map_to_vbuckets_as_couchbase_clients_map_them() {
    // CRC-32 (IEEE) of "123456789" is the reference 0xcbf43926: bits
    // 16..31 masked to 15 bits are 0x4bf4 = 19444.
    assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    assert_eq!(super::vbucket_of(b"123456789", 1024), (19444 % 1024) as u16);
    assert_eq!(super::vbucket_of(b"", 16), 0);
    for key in [&b"a"[..], b"some key", b"client-3:k7"] {
        assert!(super::vbucket_of(key, 16) < 16);
    }
}
