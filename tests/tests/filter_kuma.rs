//! The filter on Kuma dataplanes, in the wasmtime host: identity from Kuma's node, listener
//! tags and `x-kuma-tags` (never an outbound listener's tags), the cluster on both sides,
//! Istio nodes as before, and what Kuma costs in host calls beside Istio.

use waggle_tests::kuma::{self, Dataplane};
use waggle_tests::{istio, CallAnswer, Vm};
use waggle_wire::{decode, Batch, MeshKind, Reporter};

fn dp(service: &str) -> Dataplane {
    Dataplane {
        mesh: "default".into(),
        pod: "podinfo-7d9f8b6c5-k2x4q".into(),
        namespace: "test".into(),
        service: kuma::service_tag(service, "test", 9898),
        zone: "zone-1".into(),
        app: "podinfo".into(),
        version: "v2".into(),
        listen_port: 0,
        app_port: 9898,
        admin_port: 0,
        ingest_port: 0,
        outbound: vec![],
        wasm: Default::default(),
        plugin_config: "{}".into(),
    }
}

const CALLER: &str = "&app=loadtester&&k8s.kuma.io/namespace=test&&kuma.io/service=loadtester_test_svc_80&&kuma.io/zone=zone-2&&version=v7&";

fn vm(d: &Dataplane, config: &str) -> Vm {
    let mut vm = Vm::new().unwrap();
    kuma::set_node(&mut vm, d);
    assert!(vm.start(config).unwrap());
    vm
}

fn batches(vm: &mut Vm) -> Vec<Batch> {
    vm.advance_ms(2000).unwrap();
    vm.answer_all(CallAnswer::Status(202))
        .unwrap()
        .iter()
        .map(|c| decode(&c.body).unwrap())
        .collect()
}

#[test]
fn kuma_dataplanes_report_kumas_identity_on_both_sides() {
    let d = dp("podinfo-canary");
    let mut vm = vm(&d, "{}");
    let mut inbound = kuma::request(&d, true, "localhost:9898", Some(CALLER));
    inbound.connection_id = Some(1);
    inbound.run(&mut vm).unwrap();
    let mut outbound = kuma::request(
        &d,
        false,
        "podinfo-primary_test_svc_9898-0123456789abcdef",
        None,
    );
    outbound.upstream_address = Some("10.0.0.9:9898".into());
    outbound.run(&mut vm).unwrap();
    let b = batches(&mut vm);
    assert_eq!(b.len(), 1);
    let h = &b[0].header;
    assert_eq!(h.mesh, MeshKind::Kuma);
    assert_eq!(h.mesh_id, "default");
    let l = &h.local;
    assert_eq!(
        [
            &l.workload,
            &l.namespace,
            &l.app,
            &l.version,
            &l.canonical_service,
            &l.canonical_revision,
            &l.cluster
        ]
        .map(String::as_str),
        [
            "podinfo-7d9f8b6c5-k2x4q",
            "test",
            "podinfo",
            "v2",
            "podinfo-canary_test_svc_9898",
            "v2",
            "zone-1"
        ],
        "node id, node cluster, then the inbound listener's tags"
    );
    let events: Vec<_> = b[0].events().collect();
    let (i, o) = (&events[0], &events[1]);
    assert_eq!(i.reporter, Reporter::Destination);
    assert_eq!(
        [
            &i.peer.canonical_service,
            &i.peer.namespace,
            &i.peer.cluster,
            &i.peer.version,
            &i.peer.app,
            &i.peer.workload
        ]
        .map(String::as_str),
        [
            "loadtester_test_svc_80",
            "test",
            "zone-2",
            "v7",
            "loadtester",
            "unknown"
        ],
        "the caller from x-kuma-tags"
    );
    assert_eq!(
        i.upstream_cluster, "localhost:9898",
        "inbound names the local cluster"
    );
    assert_eq!(
        i.service.name, "podinfo-canary_test_svc_9898",
        "the listener's service"
    );
    assert_eq!(o.reporter, Reporter::Source);
    assert_eq!(
        o.peer.canonical_service, "podinfo-primary_test_svc_9898",
        "split suffix folded"
    );
    assert_eq!(o.peer.namespace, "test");
    assert_eq!(
        o.peer.cluster, "unknown",
        "an outbound cluster says nothing of the zone"
    );
    assert!(
        vm.logs().iter().any(|l| l
            .message
            .contains("recording as podinfo-7d9f8b6c5-k2x4q.test")),
        "{:?}",
        vm.logs()
    );
}

#[test]
fn an_outbound_listeners_tags_never_become_the_local_identity() {
    let d = dp("podinfo-canary");
    let mut vm = vm(&d, "{}");
    // An outbound listener carrying the destination's tags (zone-9) must not be read.
    let mut other = dp("elsewhere");
    other.zone = "zone-9".into();
    other.version = "v9".into();
    let mut req = kuma::request(&other, true, "elsewhere_test_svc_9898", None);
    req.inbound = false;
    req.connection_id = Some(9);
    req.upstream_address = Some("10.0.0.7:9898".into());
    req.run(&mut vm).unwrap();
    let b = batches(&mut vm);
    let l = &b[0].header.local;
    assert_eq!(l.cluster, "unknown");
    assert_eq!(l.version, "unknown");
    assert_eq!(l.canonical_service, "podinfo-canary_test_svc_9898");
}

#[test]
fn each_inbound_listener_names_its_own_service_and_the_vm_refines_once() {
    // A dataplane behind two Services: one inbound listener each.
    let first = dp("podinfo-primary");
    let second = dp("podinfo");
    let mut vm = vm(&first, "{}");
    for (c, d) in [(1, &first), (2, &second), (1, &first)] {
        let mut r = kuma::request(d, true, "localhost:9898", Some(CALLER));
        r.connection_id = Some(c);
        r.run(&mut vm).unwrap();
    }
    let b = batches(&mut vm);
    let names: Vec<String> = b[0].events().map(|e| e.service.name).collect();
    assert_eq!(
        names,
        [
            "podinfo-primary_test_svc_9898",
            "podinfo_test_svc_9898",
            "podinfo-primary_test_svc_9898"
        ]
    );
    assert_eq!(
        b[0].header.local.canonical_service, "podinfo-primary_test_svc_9898",
        "the node's cluster"
    );
}

#[test]
fn istio_nodes_are_not_taken_for_kuma() {
    let mut vm = Vm::new().unwrap();
    istio::set_node(&mut vm, "reviews-v1", "bookinfo", "reviews", "v1", false);
    assert!(vm.start("{}").unwrap());
    istio::Request {
        connection_id: Some(3),
        ..Default::default()
    }
    .run(&mut vm)
    .unwrap();
    let b = batches(&mut vm);
    assert_eq!(b[0].header.mesh, MeshKind::Istio);
    assert_eq!(b[0].header.local.workload, "reviews-v1");
    let e = b[0].events().next().unwrap();
    assert_eq!(
        e.upstream_cluster, "",
        "Istio inbound events name no cluster, as before"
    );
}

/// Kuma costs one host call per request more than Istio (the caller's header, read before the
/// router removes it), whichever way attributes are read; nothing more once caches are warm.
#[test]
fn kuma_costs_one_host_call_per_request_more_than_istio() {
    let steady = |vm: &mut Vm, r: &istio::Request| {
        r.run(vm).unwrap();
        let before = vm.state().host_calls;
        for _ in 0..50 {
            r.run(vm).unwrap();
        }
        (vm.state().host_calls - before) as f64 / 50.0
    };
    for config in ["{}", r#"{"expression": true}"#] {
        let d = dp("podinfo-canary");
        let mut k = vm(&d, config);
        let mut kr = kuma::request(&d, true, "localhost:9898", Some(CALLER));
        kr.connection_id = Some(5);
        let mut i = Vm::new().unwrap();
        istio::set_node(&mut i, "reviews-v1", "bookinfo", "reviews", "v1", false);
        assert!(i.start(config).unwrap());
        // The same request attributes as the Kuma one, on an Istio node.
        let ir = istio::Request {
            extra: vec![],
            headers: vec![],
            ..kr.clone()
        };
        let (kuma_calls, istio_calls) = (steady(&mut k, &kr), steady(&mut i, &ir));
        eprintln!(
            "{config}: kuma {kuma_calls}, istio {istio_calls} host calls per inbound request"
        );
        assert_eq!(kuma_calls, istio_calls + 1.0, "{config}");
    }
}
