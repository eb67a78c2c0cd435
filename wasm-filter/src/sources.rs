//! Which source feeds which identity field, for each mesh: the one table the filter reads its
//! own identity and its peer's by (`shared/reference/istio-wasm.md`, `kuma.md` §3-§5).

use waggle_wire::{MeshKind, Workload};

use crate::properties::UNKNOWN;

/// A part of Kuma's node id, `<mesh>.<dataplane>`; a Kubernetes dataplane is
/// `<pod>.<namespace>` (pod names may hold dots, meshes and namespaces may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdPart {
    Mesh,
    Pod,
    Namespace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `node.metadata` at this path (read at `xds.node.metadata` first, as Envoy ≥ 1.33 has it).
    Meta(&'static [&'static str]),
    NodeId(IdPart),
    /// `node.cluster`: Kuma puts the dataplane's (alphabetically first) `kuma.io/service` there.
    NodeCluster,
    /// A Kuma tag: the inbound listener's `io.kuma.tags` for the local side, the caller's
    /// `x-kuma-tags` header for the peer. Never an outbound listener's tags: they describe the
    /// destination.
    Tag(&'static str),
    /// A field of Istio's peer metadata (`filter_state.<downstream|upstream>_peer[_obj]`).
    Peer(&'static str),
    /// A `;`-separated part of the picked endpoint's `istio.workload` metadata (outbound).
    Endpoint(u8),
    /// The destination's `kuma.io/service`: the outbound cluster's name, split suffix removed.
    ClusterService,
    /// The namespace of a Kubernetes service tag, `<name>_<namespace>_svc_<port>`.
    ClusterNamespace,
    Literal(&'static str),
}

use IdPart::*;
use Source::*;

/// One identity field's sources, in priority order: the first that answers wins, else
/// `unknown`. Columns: Istio local, Istio peer, Kuma local, Kuma peer.
pub struct Row {
    pub field: &'static str,
    pub sources: [&'static [Source]; 4],
}

const CANONICAL_NAME: &[&str] = &["LABELS", "service.istio.io/canonical-name"];
const CANONICAL_REVISION: &[&str] = &["LABELS", "service.istio.io/canonical-revision"];

/// [`Workload`]'s fields in order, then the mesh id.
pub const TABLE: [Row; 8] = [
    Row {
        field: "workload",
        sources: [
            &[Meta(&["WORKLOAD_NAME"])],
            &[Peer("workload"), Endpoint(0)],
            &[NodeId(Pod)],
            &[],
        ],
    },
    Row {
        field: "namespace",
        sources: [
            &[Meta(&["NAMESPACE"])],
            &[Peer("namespace"), Endpoint(1)],
            &[NodeId(Namespace), Tag("k8s.kuma.io/namespace")],
            &[Tag("k8s.kuma.io/namespace"), ClusterNamespace],
        ],
    },
    Row {
        field: "app",
        sources: [
            &[Meta(&["LABELS", "app"])],
            &[Peer("app")],
            &[Tag("app")],
            &[Tag("app")],
        ],
    },
    Row {
        field: "version",
        sources: [
            &[Meta(&["LABELS", "version"])],
            &[Peer("version")],
            &[Tag("version")],
            &[Tag("version")],
        ],
    },
    Row {
        // Istio's injector sets the canonical labels; without them it falls back to app, then name.
        field: "canonical_service",
        sources: [
            &[
                Meta(CANONICAL_NAME),
                Meta(&["LABELS", "app"]),
                Meta(&["WORKLOAD_NAME"]),
            ],
            &[Peer("service"), Endpoint(2)],
            &[NodeCluster, Tag("kuma.io/service")],
            &[Tag("kuma.io/service"), ClusterService],
        ],
    },
    Row {
        field: "canonical_revision",
        sources: [
            &[
                Meta(CANONICAL_REVISION),
                Meta(&["LABELS", "version"]),
                Literal("latest"),
            ],
            &[Peer("revision"), Endpoint(3), Literal("latest")],
            &[Tag("version"), Literal("latest")],
            &[Tag("version"), Literal("latest")],
        ],
    },
    Row {
        // Istio's cluster id; Kuma's zone.
        field: "cluster",
        sources: [
            &[Meta(&["CLUSTER_ID"])],
            &[Peer("cluster"), Endpoint(4)],
            &[Tag("kuma.io/zone")],
            &[Tag("kuma.io/zone")],
        ],
    },
    Row {
        field: "mesh_id",
        sources: [&[Meta(&["MESH_ID"])], &[], &[NodeId(Mesh)], &[]],
    },
];

/// Which side of the connection a workload is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Local,
    Peer,
}

/// Answers one source, or `None` when it has nothing.
pub trait Lookup {
    fn lookup(&self, source: Source) -> Option<String>;
}

fn column(mesh: MeshKind, side: Side) -> usize {
    match (mesh, side) {
        (MeshKind::Istio, Side::Local) => 0,
        (MeshKind::Istio, Side::Peer) => 1,
        (MeshKind::Kuma, Side::Local) => 2,
        (MeshKind::Kuma, Side::Peer) => 3,
    }
}

/// Every field of one side, by the table: the workload and the mesh id.
pub fn resolve(mesh: MeshKind, side: Side, l: &dyn Lookup) -> (Workload, String) {
    let c = column(mesh, side);
    let [w, n, a, v, s, r, cl, m] = TABLE.each_ref().map(|row| {
        row.sources
            .get(c)
            .copied()
            .unwrap_or_default()
            .iter()
            .find_map(|s| match s {
                Literal(v) => Some((*v).to_owned()),
                s => l.lookup(*s),
            })
            .unwrap_or_else(|| UNKNOWN.to_owned())
    });
    let workload = Workload {
        workload: w,
        namespace: n,
        app: a,
        version: v,
        canonical_service: s,
        canonical_revision: r,
        cluster: cl,
    };
    (workload, m)
}

/// The sources of one side that a lookup of this kind could answer, for tests and docs.
pub fn sources(mesh: MeshKind, side: Side) -> impl Iterator<Item = (&'static str, Source)> {
    let c = column(mesh, side);
    TABLE.iter().flat_map(move |row| {
        let column = row.sources.get(c).copied().unwrap_or_default();
        column.iter().map(move |s| (row.field, *s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_column_reads_the_other_meshs_sources() {
        for side in [Side::Local, Side::Peer] {
            for (field, s) in sources(MeshKind::Kuma, side) {
                assert!(
                    !matches!(s, Meta(_) | Peer(_) | Endpoint(_)),
                    "kuma {field}: {s:?}"
                );
            }
            for (field, s) in sources(MeshKind::Istio, side) {
                assert!(
                    !matches!(
                        s,
                        NodeId(_) | NodeCluster | Tag(_) | ClusterService | ClusterNamespace
                    ),
                    "istio {field}: {s:?}"
                );
            }
        }
        for mesh in [MeshKind::Istio, MeshKind::Kuma] {
            assert!(
                sources(mesh, Side::Local).count() >= TABLE.len(),
                "every local field has a source"
            );
        }
        // The peer is never read from node metadata, the local side never from peer metadata.
        for mesh in [MeshKind::Istio, MeshKind::Kuma] {
            assert!(sources(mesh, Side::Peer).all(|(_, s)| !matches!(s, Meta(_) | NodeId(_))));
            assert!(sources(mesh, Side::Local).all(|(_, s)| !matches!(s, Peer(_) | Endpoint(_))));
        }
    }
}
