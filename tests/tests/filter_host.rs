//! The real filter `.wasm`, run in the wasmtime proxy-wasm host: what it records, how it
//! batches and retries, and that nothing a proxy can hand it makes it fail a request.

use proptest::prelude::*;
use waggle_tests::istio::{self, PeerForm, Request};
use waggle_tests::{CallAnswer, HttpCall, Vm};
use waggle_wire::{decode, Batch, Protocol, Reporter};

const LOG_ERROR: u32 = 4;

fn vm(config: &str) -> Vm {
    let mut vm = Vm::new().unwrap();
    istio::set_node(&mut vm, "reviews-v1", "bookinfo", "reviews", "v1", false);
    assert!(vm.start(config).unwrap(), "on_configure must accept");
    vm
}

fn batch(call: &HttpCall) -> Batch {
    decode(&call.body).unwrap()
}

/// Runs `n` default inbound requests, each `Continue`ing both header phases.
fn run(vm: &mut Vm, n: usize, req: &Request) {
    for _ in 0..n {
        assert_eq!(
            req.run(vm).unwrap(),
            (0, 0),
            "the filter never pauses a request"
        );
    }
}

#[test]
fn records_every_field_of_an_inbound_request() {
    let mut vm = vm(r#"{"capture_path": true}"#);
    let req = Request {
        code: 503,
        flags: 1 << 5,
        duration_ns: 12_345_678,
        method: "POST".into(),
        headers: vec![(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        )],
        ..Request::default()
    };
    req.run(&mut vm).unwrap();
    vm.advance_ms(1000).unwrap();
    let calls = vm.pending_calls().to_vec();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        call.cluster,
        "outbound|9091||waggle.waggle-system.svc.cluster.local"
    );
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":path"), Some("/v1/events"));
    assert_eq!(
        call.header(":authority"),
        Some("waggle.waggle-system.svc.cluster.local")
    );
    assert_eq!(call.header("content-type"), Some(waggle_wire::CONTENT_TYPE));
    assert_eq!(call.header("authorization"), None);
    assert_eq!(call.context_id, 1, "batches are sent from the root context");

    let b = batch(call);
    assert_eq!(b.header.local.workload, "reviews-v1");
    assert_eq!(b.header.local.namespace, "bookinfo");
    assert_eq!(
        (b.header.local.app.as_str(), b.header.local.version.as_str()),
        ("reviews", "v1")
    );
    assert_eq!(b.header.local.cluster, "Kubernetes");
    assert_eq!(b.header.mesh_id, "cluster.local");
    assert_eq!((b.header.sequence, b.header.dropped), (0, 0));
    let e = b.events().next().unwrap();
    assert_eq!(e.reporter, Reporter::Destination);
    assert_eq!(e.start_unix_us, req.start_unix_ns / 1000);
    assert_eq!(e.duration_us, 12_345);
    assert_eq!((e.response_code, e.response_flags.as_str()), (503, "UF"));
    assert_eq!((e.protocol, e.grpc_status), (Protocol::Http, None));
    assert_eq!(
        (e.method.as_str(), e.request_bytes, e.response_bytes),
        ("POST", 300, 1200)
    );
    assert_eq!(e.peer.workload, "productpage-v1");
    assert_eq!(e.peer.namespace, "bookinfo");
    assert_eq!(
        (e.peer.app.as_str(), e.peer.version.as_str()),
        ("productpage", "v1")
    );
    assert_eq!(
        e.peer_principal,
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"
    );
    assert_eq!(
        e.local_principal,
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    );
    assert_eq!(e.service.host, "reviews.bookinfo.svc.cluster.local");
    assert_eq!(
        (e.service.name.as_str(), e.service.namespace.as_str()),
        ("reviews", "bookinfo")
    );
    assert_eq!(e.upstream_cluster, "");
    assert_eq!(
        e.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(
        e.path.as_deref(),
        Some("/reviews/1"),
        "query string stripped"
    );
}

#[test]
fn records_an_outbound_grpc_request() {
    let mut vm = vm("{}");
    let req = Request {
        inbound: false,
        code: 200,
        peer: [
            "ratings-v2",
            "bookinfo",
            "ratings",
            "v2",
            "ratings",
            "v2",
            "Kubernetes",
        ]
        .map(String::from),
        peer_form: PeerForm::Object,
        cluster_name: Some("outbound|9080||ratings.bookinfo.svc.cluster.local".into()),
        service: Some((
            "ratings.bookinfo.svc.cluster.local".into(),
            "ratings".into(),
            "bookinfo".into(),
        )),
        headers: vec![
            ("content-type".into(), "application/grpc".into()),
            ("x-b3-traceid".into(), "80f198ee56343ba8".into()),
        ],
        ..Request::default()
    };
    let mut props = req.properties();
    props.push((
        vec!["response".into(), "grpc_status".into()],
        14u64.to_le_bytes().to_vec(),
    ));
    vm.request(&props, &req.header_map()).unwrap();
    vm.advance_ms(1000).unwrap();
    let e = batch(&vm.pending_calls()[0]).events().next().unwrap();
    assert_eq!(e.reporter, Reporter::Source);
    assert_eq!((e.protocol, e.grpc_status), (Protocol::Grpc, Some(14)));
    assert_eq!(e.peer.workload, "ratings-v2");
    assert_eq!(e.peer.canonical_revision, "v2");
    assert_eq!(
        e.upstream_cluster,
        "outbound|9080||ratings.bookinfo.svc.cluster.local"
    );
    assert_eq!(e.trace_id.as_deref(), Some("80f198ee56343ba8"));
    assert_eq!(e.path, None, "paths are off by default");
}

#[test]
fn identity_falls_back_to_old_paths_and_unknown() {
    let mut vm = Vm::new().unwrap();
    istio::set_node(&mut vm, "legacy-v1", "old", "legacy", "v1", true);
    assert!(vm.start("{}").unwrap());
    let req = Request {
        peer_form: PeerForm::Missing,
        peer_principal: None,
        service: None,
        host: "legacy.old.svc.cluster.local:80".into(),
        ..Request::default()
    };
    req.run(&mut vm).unwrap();
    vm.advance_ms(1000).unwrap();
    let b = batch(&vm.pending_calls()[0]);
    assert_eq!(
        b.header.local.workload, "legacy-v1",
        "pre-1.33 node.metadata path"
    );
    assert_eq!(b.header.local.canonical_service, "legacy");
    let e = b.events().next().unwrap();
    assert_eq!(e.peer.workload, "unknown");
    assert_eq!(e.peer.namespace, "unknown");
    assert_eq!(e.peer.canonical_revision, "latest");
    assert_eq!(e.peer_principal, "unknown");
    assert_eq!(
        (e.service.name.as_str(), e.service.namespace.as_str()),
        ("legacy", "old"),
        "from the authority"
    );
}

#[test]
fn flushes_by_size_without_waiting_for_the_interval() {
    let mut vm = vm(r#"{"max_batch_events": 10, "flush_interval_ms": 5000}"#);
    run(&mut vm, 25, &Request::default());
    assert!(vm.pending_calls().is_empty(), "request contexts never send");
    vm.advance_ms(100).unwrap();
    let calls = vm.pending_calls().to_vec();
    assert_eq!(
        calls.len(),
        2,
        "two full batches at the first tick; max_in_flight bounds the rest"
    );
    assert!(calls.iter().all(|c| batch(c).records.len() == 10));
    vm.answer_all(CallAnswer::Status(202)).unwrap();
    vm.advance_ms(100).unwrap();
    assert!(
        vm.pending_calls().is_empty(),
        "the 5 left wait for their interval"
    );
    vm.advance_ms(4800).unwrap();
    let b = batch(&vm.pending_calls()[0]);
    assert_eq!((b.records.len(), b.header.sequence), (5, 2));
}

#[test]
fn flushes_by_tick_within_the_interval() {
    let mut vm = vm(r#"{"flush_interval_ms": 1000}"#);
    assert_eq!(vm.state().tick_period_ms, 100);
    run(&mut vm, 3, &Request::default());
    vm.advance_ms(900).unwrap();
    assert!(vm.pending_calls().is_empty());
    vm.advance_ms(100).unwrap();
    assert_eq!(batch(&vm.pending_calls()[0]).records.len(), 3);
}

/// While the backend fails, the same batch is retried with growing, capped delays, the
/// buffer stays bounded, and the drops are reported once the backend is back.
#[test]
fn retries_with_backoff_and_counts_drops_while_the_backend_fails() {
    let mut vm = vm(
        r#"{"max_batch_events": 10, "max_buffer_events": 50, "max_in_flight": 1,
                       "retry_initial_ms": 200, "retry_max_ms": 1600, "flush_interval_ms": 100}"#,
    );
    run(&mut vm, 10, &Request::default());
    vm.advance_ms(100).unwrap();
    let first = vm.pending_calls()[0].body.clone();
    let mut attempts = vec![vm.now_ns()];
    let answers = [
        CallAnswer::Status(503),
        CallAnswer::Failure,
        CallAnswer::Status(429),
        CallAnswer::Timeout,
        CallAnswer::Status(500),
        CallAnswer::Failure,
    ];
    for answer in answers.clone() {
        let token = vm.pending_calls()[0].token;
        vm.answer(token, answer.clone()).unwrap();
        // Keep traffic flowing during the outage: far more than the buffer holds.
        run(&mut vm, 20, &Request::default());
        let before = vm.now_ns();
        while vm.pending_calls().is_empty() {
            vm.advance_ms(100).unwrap();
            assert!(
                vm.now_ns() - before < 10_000_000_000,
                "no retry within 10 s after {answer:?}"
            );
        }
        assert_eq!(
            vm.pending_calls()[0].body,
            first,
            "the same batch is retried"
        );
        attempts.push(vm.now_ns());
    }
    let gaps_ms: Vec<u64> = attempts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    assert!(
        gaps_ms.windows(2).all(|w| w[1] + 100 >= w[0] / 2),
        "delays grow: {gaps_ms:?}"
    );
    assert!(
        gaps_ms.iter().all(|g| *g <= 1600 + 100),
        "delays are capped: {gaps_ms:?}"
    );
    assert!(
        gaps_ms.last().unwrap() >= &700,
        "backoff reached the cap region: {gaps_ms:?}"
    );

    // Recover: drain everything, counting what arrives and what was reported dropped.
    let (mut delivered, mut reported_dropped, mut seqs) = (0, 0, vec![]);
    for _ in 0..200 {
        for call in vm.answer_all(CallAnswer::Status(202)).unwrap() {
            let b = batch(&call);
            delivered += b.records.len();
            reported_dropped += b.header.dropped;
            seqs.push(b.header.sequence);
        }
        vm.advance_ms(100).unwrap();
    }
    let recorded = 10 + 20 * answers.len();
    assert_eq!(delivered, 50, "the buffer bound: {delivered} delivered");
    assert_eq!(
        delivered as u64 + reported_dropped,
        recorded as u64,
        "every request is delivered or reported dropped"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no batch twice, none skipped: {seqs:?}"
    );
}

#[test]
fn refused_batches_are_dropped_counted_and_logged_once() {
    let mut vm = vm(r#"{"max_batch_events": 5}"#);
    for _ in 0..3 {
        run(&mut vm, 5, &Request::default());
        vm.advance_ms(100).unwrap();
        vm.answer_all(CallAnswer::Status(400)).unwrap();
    }
    let refusals = vm
        .logs()
        .iter()
        .filter(|l| l.message.contains("HTTP 400"))
        .count();
    assert_eq!(refusals, 1, "logged once per status");
    run(&mut vm, 1, &Request::default());
    vm.advance_ms(1000).unwrap();
    let b = batch(&vm.pending_calls()[0]);
    assert_eq!(b.header.dropped, 15);
}

#[test]
fn unanswered_calls_time_out_and_are_retried() {
    let mut vm = vm(r#"{"timeout_ms": 500, "retry_initial_ms": 100, "retry_max_ms": 100}"#);
    run(&mut vm, 1, &Request::default());
    vm.advance_ms(1000).unwrap();
    let first = vm.pending_calls()[0].clone();
    assert_eq!(first.timeout_ms, 500);
    vm.advance_ms(600).unwrap();
    let again = &vm.pending_calls()[0];
    assert_ne!(again.token, first.token, "a new call after the timeout");
    assert_eq!(again.body, first.body);
}

#[test]
fn bearer_token_comes_from_the_vm_environment() {
    let mut vm = Vm::new().unwrap();
    istio::set_node(&mut vm, "reviews-v1", "bookinfo", "reviews", "v1", false);
    vm.state_mut()
        .env
        .push(("WAGGLE_TOKEN".into(), "s3cret".into()));
    assert!(vm.start(r#"{"token_env": "WAGGLE_TOKEN"}"#).unwrap());
    run(&mut vm, 1, &Request::default());
    vm.advance_ms(1000).unwrap();
    assert_eq!(
        vm.pending_calls()[0].header("authorization"),
        Some("Bearer s3cret")
    );
    assert!(
        vm.logs().iter().all(|l| !l.message.contains("s3cret")),
        "the token is never logged"
    );
}

/// An invalid configuration is logged once, naming the field, and traffic flows unrecorded.
#[test]
fn invalid_configuration_passes_traffic_through() {
    let cases = [
        (r#"{"flush_interval_ms": 5}"#, "flush_interval_ms"),
        (r#"{"flush_ms": 1000}"#, "unknown field `flush_ms`"),
        ("not json", "pluginConfig must be a JSON object"),
        (r#"{"token_env": "MISSING"}"#, "token_env"),
    ];
    for (config, field) in cases {
        let mut vm = Vm::new().unwrap();
        assert!(
            vm.start(config).unwrap(),
            "{config}: on_configure must not reject"
        );
        run(&mut vm, 5, &Request::default());
        vm.advance_ms(5000).unwrap();
        assert!(
            vm.pending_calls().is_empty(),
            "{config}: nothing is recorded or sent"
        );
        let errors: Vec<_> = vm.logs().iter().filter(|l| l.level == LOG_ERROR).collect();
        assert_eq!(errors.len(), 1, "{config}: logged once: {errors:?}");
        assert!(
            errors[0].message.contains(field),
            "{config}: {}",
            errors[0].message
        );
        assert!(
            errors[0].message.contains("passing traffic through"),
            "{}",
            errors[0].message
        );
    }
}

#[test]
fn an_unknown_cluster_backs_off_without_affecting_traffic() {
    let mut vm = Vm::new().unwrap();
    istio::set_node(&mut vm, "reviews-v1", "bookinfo", "reviews", "v1", false);
    vm.state_mut().clusters = Some(vec!["some-other-cluster".into()]);
    assert!(vm.start("{}").unwrap());
    run(&mut vm, 3, &Request::default());
    vm.advance_ms(3000).unwrap();
    assert!(vm.pending_calls().is_empty());
    vm.state_mut().clusters = None;
    let start = vm.now_ns();
    while vm.pending_calls().is_empty() {
        vm.advance_ms(100).unwrap();
        assert!(
            vm.now_ns() - start <= 31_000_000_000,
            "retried within the 30 s cap"
        );
    }
    assert_eq!(
        batch(&vm.pending_calls()[0]).records.len(),
        3,
        "sent once the cluster exists"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever bytes the proxy returns for any attribute, the VM neither traps nor pauses a
    /// request, and it still delivers a decodable batch.
    #[test]
    fn random_property_values_never_trap_the_vm(seed in any::<u64>()) {
        let mut vm = Vm::new().unwrap();
        vm.state_mut().random_properties = Some(seed);
        let started = vm.start(r#"{"capture_path": true}"#).unwrap();
        prop_assert!(started);
        for _ in 0..30 {
            prop_assert_eq!(vm.request(&[], &[]).unwrap(), (0, 0));
        }
        vm.advance_ms(1000).unwrap();
        let calls = vm.pending_calls().to_vec();
        prop_assert!(!calls.is_empty());
        let n: usize = calls.iter().map(|c| decode(&c.body).unwrap().records.len()).sum();
        prop_assert_eq!(n, 30);
        prop_assert!(vm.state().property_reads.len() > 15, "the filter read its attributes");
    }
}
