//! Round trips, totality and golden vectors for the batch codec.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use waggle_wire::sample;
use waggle_wire::{
    decode, BatchBuilder, DecodeError, Event, Header, MeshKind, Protocol, Reporter, Service,
    Workload,
};

fn encode(header: &Header, events: &[Event]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for e in events {
        b.push(e);
    }
    b.finish(header)
}

fn small_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("unknown".to_owned()),
        "[a-z0-9.-]{1,12}",
        "\\PC{0,20}",
    ]
}

fn workload() -> impl Strategy<Value = Workload> {
    proptest::array::uniform7(small_string()).prop_map(|[a, b, c, d, e, f, g]| Workload {
        workload: a,
        namespace: b,
        app: c,
        version: d,
        canonical_service: e,
        canonical_revision: f,
        cluster: g,
    })
}

fn trace_id() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "[0-9a-f]{16}".prop_map(Some),
        "[0-9a-f]{32}".prop_map(Some),
        "[0-9A-Fa-z]{0,40}".prop_map(Some),
    ]
}

prop_compose! {
    fn event()(
        dest in any::<bool>(), grpc in any::<bool>(),
        start_unix_us in any::<u64>(), duration_us in any::<u64>(),
        response_code in any::<u16>(), grpc_status in proptest::option::of(any::<u32>()),
        strings in proptest::array::uniform8(small_string()),
        request_bytes in any::<u64>(), response_bytes in any::<u64>(),
        peer in workload(), trace_id in trace_id(), path in proptest::option::of(small_string()),
    ) -> Event {
        let [flags, method, lp, pp, host, name, ns, cluster] = strings;
        Event {
            reporter: if dest { Reporter::Destination } else { Reporter::Source },
            start_unix_us, duration_us, response_code, grpc_status,
            response_flags: flags,
            protocol: if grpc { Protocol::Grpc } else { Protocol::Http },
            method, request_bytes, response_bytes, peer,
            local_principal: lp, peer_principal: pp,
            service: Service { host, name, namespace: ns },
            upstream_cluster: cluster, trace_id, path,
        }
    }
}

prop_compose! {
    fn header()(vm_id: u64, sequence: u64, dropped: u64, local in workload(), mesh_id in small_string(), kuma: bool) -> Header {
        let mesh = if kuma { MeshKind::Kuma } else { MeshKind::Istio };
        Header { vm_id, sequence, dropped, local, mesh_id, mesh }
    }
}

proptest! {
    #[test]
    fn events_round_trip(header in header(), events in proptest::collection::vec(event(), 0..40)) {
        let bytes = encode(&header, &events);
        let batch = decode(&bytes).unwrap();
        prop_assert_eq!(&batch.header, &header);
        let back: Vec<Event> = batch.events().collect();
        // Hex trace ids come back lowercase; the generator only produces lowercase hex.
        prop_assert_eq!(back, events);
    }

    #[test]
    fn decoder_is_total_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let mut with_magic = b"WGL\x01".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = decode(&with_magic);
    }

    #[test]
    fn decoder_is_total_on_mutated_batches(
        seed in 1u64..1000, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode(&sample::header(seed), &sample::inbound(20, seed, seed % 2 == 0));
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let _ = decode(&bytes);
        let n = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..n]).is_err(), "a truncated batch must not decode");
    }
}

#[test]
fn builder_is_reusable_after_finish() {
    let mut b = BatchBuilder::new();
    let first = sample::inbound(3, 1, true);
    for e in &first {
        b.push(e);
    }
    let one = b.finish(&sample::header(0));
    assert!(b.is_empty());
    let second = sample::inbound(2, 2, false);
    for e in &second {
        b.push(e);
    }
    let two = decode(&b.finish(&sample::header(1))).unwrap();
    assert_eq!(decode(&one).unwrap().events().collect::<Vec<_>>(), first);
    assert_eq!(two.events().collect::<Vec<_>>(), second);
    assert_eq!(two.header.sequence, 1);
}

/// The size goal: a typical inbound batch of 500 events averages at most 24 bytes an
/// event. Trace ids are 16 random bytes each and cannot be compressed away, so a traced batch
/// is measured too and held to its own, honest bound.
#[test]
fn typical_inbound_batch_is_compact() {
    for (traced, budget) in [(false, 24.0), (true, 24.0 + 17.0)] {
        let events = sample::inbound(500, 42, traced);
        let bytes = encode(&sample::header(0), &events);
        let per_event = bytes.len() as f64 / events.len() as f64;
        println!(
            "traced={traced}: {} bytes, {per_event:.2} bytes/event",
            bytes.len()
        );
        assert!(
            per_event <= budget,
            "traced={traced}: {per_event:.2} bytes/event > {budget}"
        );
    }
}

fn golden_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for line in bytes.chunks(32) {
        for b in line {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
    }
    s
}

/// Golden vectors pin the format: if encoding changes, these fail, and the version must move.
/// Regenerate deliberately with `WAGGLE_BLESS=1 cargo test -p waggle-wire --test codec`.
#[test]
fn golden_vectors() {
    let cases: Vec<(&str, Header, Vec<Event>)> = vec![
        ("empty.hex", sample::header(0), vec![]),
        (
            "inbound-4.hex",
            sample::header(3),
            sample::inbound(4, 9, true),
        ),
        (
            "outbound-grpc.hex",
            Header {
                dropped: 12,
                ..sample::header(5)
            },
            vec![outbound_grpc()],
        ),
    ];
    for (file, header, events) in cases {
        let bytes = encode(&header, &events);
        let path = golden_path(file);
        if std::env::var_os("WAGGLE_BLESS").is_some() {
            std::fs::write(&path, to_hex(&bytes)).unwrap();
        }
        let golden = from_hex(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(to_hex(&bytes), to_hex(&golden), "{file}: encoding changed");
        let batch = decode(&golden).unwrap();
        assert_eq!(batch.header, header, "{file}");
        assert_eq!(batch.events().collect::<Vec<_>>(), events, "{file}");
    }
}

/// Batches of version 1 (written before the header said which mesh sent them) still decode, as
/// Istio's: a backend upgraded first keeps accepting the filters already running.
#[test]
fn version_1_batches_decode_as_istio() {
    for (file, header, events) in [
        ("v1-empty.hex", sample::header(0), vec![]),
        (
            "v1-inbound-4.hex",
            sample::header(3),
            sample::inbound(4, 9, true),
        ),
    ] {
        let golden = from_hex(&std::fs::read_to_string(golden_path(file)).unwrap());
        assert_eq!(golden[3], 1, "{file} is a version 1 batch");
        let batch = decode(&golden).unwrap();
        assert_eq!(batch.header, header, "{file}");
        assert_eq!(batch.header.mesh, MeshKind::Istio);
        assert_eq!(batch.events().collect::<Vec<_>>(), events, "{file}");
    }
    let kuma = Header {
        mesh: MeshKind::Kuma,
        ..sample::header(1)
    };
    let mut bytes = encode(&kuma, &[outbound_grpc()]);
    assert_eq!(decode(&bytes).unwrap().header.mesh, MeshKind::Kuma);
    // The one byte where the Istio and the Kuma encodings differ is the header's mesh.
    let istio = encode(&sample::header(1), &[outbound_grpc()]);
    let at: Vec<usize> = (0..bytes.len())
        .filter(|i| bytes[*i] != istio[*i])
        .collect();
    assert_eq!(at.len(), 1, "{at:?}");
    bytes[at[0]] = 7;
    assert_eq!(decode(&bytes), Err(DecodeError::UnknownMesh(7)));
}

fn outbound_grpc() -> Event {
    Event {
        reporter: Reporter::Source,
        start_unix_us: 1_767_225_600_123_456,
        duration_us: 2_500,
        response_code: 200,
        grpc_status: Some(14),
        response_flags: "UH,UF".into(),
        protocol: Protocol::Grpc,
        method: "POST".into(),
        request_bytes: 10,
        response_bytes: 0,
        peer: sample::workload("ratings-v2", "bookinfo", "ratings", "v2"),
        local_principal: "unknown".into(),
        peer_principal: "spiffe://cluster.local/ns/bookinfo/sa/ratings".into(),
        service: Service {
            host: "ratings.bookinfo.svc.cluster.local".into(),
            name: "ratings".into(),
            namespace: "bookinfo".into(),
        },
        upstream_cluster: "outbound|9080||ratings.bookinfo.svc.cluster.local".into(),
        trace_id: Some("80f198ee56343ba8".into()),
        path: Some("/ratings.Ratings/Get".into()),
    }
}

/// Each malformed input is rejected with the error that names its fault.
#[test]
fn malformed_batches_name_their_fault() {
    let valid = encode(&sample::header(0), &[outbound_grpc()]);
    let mut bad_version = valid.clone();
    bad_version[3] = 9;
    let mut trailing = valid.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        ("empty", vec![], DecodeError::BadMagic),
        ("json", b"[{\"a\":1}]".to_vec(), DecodeError::BadMagic),
        ("version", bad_version, DecodeError::UnsupportedVersion(9)),
        ("trailing", trailing, DecodeError::TrailingBytes(1)),
        (
            "no header",
            b"WGL\x01".to_vec(),
            DecodeError::Truncated("vm_id"),
        ),
        (
            "huge string count",
            b"WGL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\x0f".to_vec(),
            DecodeError::CountTooLarge {
                what: "string",
                count: 0xffff_ffff,
                remaining: 0,
            },
        ),
        (
            "dangling local ref",
            b"WGL\x01\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            DecodeError::BadStringRef {
                what: "local workload",
                index: 5,
                len: 0,
            },
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(decode(&bytes), Err(want), "{name}");
    }
    let err = decode(&[]).unwrap_err().to_string();
    assert!(err.contains("magic"), "{err}");
}
