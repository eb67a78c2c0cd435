"""Validates every object waggle ships for Kubernetes against the real schemas: core kinds with
kubernetes-validate (strict), Istio, Kuma and Flagger kinds against the openAPIV3Schema of their
upstream CRDs (tests/crds/), PrometheusRule groups with promtool. Exits non-zero naming each
failure.

Usage: validate.py <rendered or checked-in YAML file>..."""

import json
import os
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
K8S_VERSION = "1.31"


def crd_schemas():
    schemas = {}
    for name in ("istio.yaml", "flagger.yaml", "kuma.yaml"):
        with open(os.path.join(HERE, "..", "crds", name)) as f:
            for crd in yaml.safe_load_all(f):
                if not crd:
                    continue
                group = crd["spec"]["group"]
                kind = crd["spec"]["names"]["kind"]
                for v in crd["spec"]["versions"]:
                    schema = v["schema"]["openAPIV3Schema"]
                    schemas[(f"{group}/{v['name']}", kind)] = schema
    return schemas


def strict(schema):
    """Kubernetes prunes unknown fields; a typo would vanish silently. Refuse them instead,
    except where the CRD preserves unknown fields (pluginConfig, for instance)."""
    if isinstance(schema, dict):
        schema = dict(schema)
        if schema.get("type") == "object" and "properties" in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields") \
                and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for key in ("properties",):
            if key in schema:
                schema[key] = {k: strict(v) for k, v in schema[key].items()}
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                schema[key] = strict(schema[key])
        for key in ("oneOf", "anyOf", "allOf"):
            if key in schema:
                schema[key] = [strict(s) for s in schema[key]]
    return schema


def main() -> int:
    schemas = crd_schemas()
    failures = []
    checked = 0
    for path in sys.argv[1:]:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for i, obj in enumerate(docs):
            where = f"{path}#{i + 1} {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            key = (obj.get("apiVersion"), obj.get("kind"))
            try:
                if key in schemas:
                    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
                    jsonschema.validate(body, strict(schemas[key]))
                    if not obj.get("metadata", {}).get("name"):
                        raise ValueError("metadata.name is missing")
                elif key == ("monitoring.coreos.com/v1", "PrometheusRule"):
                    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as t:
                        yaml.safe_dump({"groups": obj["spec"]["groups"]}, t)
                    r = subprocess.run(["promtool", "check", "rules", t.name], capture_output=True, text=True)
                    os.unlink(t.name)
                    if r.returncode != 0:
                        raise ValueError(r.stdout + r.stderr)
                elif "." not in key[0].split("/")[0] or key[0].split("/")[0].endswith(".k8s.io"):
                    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
                else:
                    raise ValueError(f"no schema known for {key}")
                checked += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported by name
                msg = getattr(e, "message", None) or str(e)
                text = " | ".join(l.strip() for l in msg.splitlines() if l.strip()) if msg else type(e).__name__
                failures.append(f"{where}: {text[:400]}")
    for f in failures:
        print("INVALID", f)
    print(f"{checked} objects valid, {len(failures)} invalid")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
