#!/usr/bin/env bash
# Validate every YAML manifest in deploy/kubernetes/ offline, strictly, against the Kubernetes
# OpenAPI schemas bundled in the PyPI package kubernetes-validate (no cluster, no network
# besides PyPI the first time).
#
#   deploy/kubernetes/validate.sh [VENV]     # VENV default: <repo>/target/kubernetes-validate-venv
#
# Env: K8S_VERSIONS="1.30 1.37" - Kubernetes versions to validate against (the package bundles
#      schemas for 1.25 to 1.37; 1.30 is the oldest we support, 1.37 the newest bundled).
#
# What it checks, and the gaps it closes:
#   - kubernetes-validate --strict: types, required fields, and unknown fields at any depth.
#     It only WARNS (exit 0) when it has no schema for a kind/apiVersion, e.g. a misspelled
#     `kind:`; here any WARN/ERROR/FATAL output is a failure.
#   - The bundled schemas carry no enums and no quantity format, and PyYAML silently keeps the
#     last of two duplicate keys, so lint.py below also checks: duplicate keys, the enum
#     fields the manifests use, resource quantities, rollingUpdate int-or-percent values,
#     workload selectors matching the template labels, and volumeMounts naming a declared
#     volume.
# Exit status: 0 when everything passes, 1 otherwise.
set -euo pipefail

KV_VERSION=1.37.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${1:-$root/target/kubernetes-validate-venv}
versions=${K8S_VERSIONS:-1.30 1.37}

if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv" || {
        echo "validate.sh: cannot create a venv at $venv (Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
if ! "$venv/bin/python" - "$KV_VERSION" <<'EOF' 2>/dev/null; then
import sys, importlib.metadata as m
sys.exit(m.version("kubernetes-validate") != sys.argv[1])
EOF
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$venv/bin/pip" install --quiet "kubernetes-validate==$KV_VERSION"
fi

shopt -s nullglob
files=("$here"/*.yaml "$here"/*.yml)
if ((${#files[@]} == 0)); then
    echo "validate.sh: no YAML files in $here" >&2
    exit 1
fi

kflags=()
for v in $versions; do kflags+=(-k "$v"); done

status=0
for f in "${files[@]}"; do
    rel=${f#"$root"/}
    # --quiet prints only WARN/ERROR/FATAL lines: any output is a failure.
    out=$("$venv/bin/kubernetes-validate" --strict --quiet "${kflags[@]}" "$f" 2>&1) && rc=0 || rc=$?
    if ((rc != 0)) || [[ -n $out ]]; then
        printf '%s\n' "$out" >&2
        echo "FAIL $rel: kubernetes-validate --strict ${kflags[*]}" >&2
        status=1
        continue
    fi
    if ! "$venv/bin/python" - "$f" <<'EOF' >&2; then
# lint.py: the checks the bundled schemas cannot express.
import re, sys, yaml

path = sys.argv[1]
errors = []

class Loader(yaml.SafeLoader):
    pass

def mapping(loader, node, deep=False):
    seen = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in seen:
            errors.append(f"line {k.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)

Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
docs = [d for d in yaml.load_all(open(path), Loader=Loader) if d]

QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
ENUMS = {
    "imagePullPolicy": {"Always", "Never", "IfNotPresent"},
    "mountPropagation": {"None", "HostToContainer", "Bidirectional"},
    "restartPolicy": {"Always", "OnFailure", "Never"},
    "dnsPolicy": {"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"},
}

def check_enum(where, obj, key, allowed):
    if isinstance(obj, dict) and key in obj and obj[key] not in allowed:
        errors.append(f"{where}.{key}: {obj[key]!r} is not one of {sorted(allowed)}")

def check_pod(where, spec):
    check_enum(where, spec, "restartPolicy", ENUMS["restartPolicy"])
    check_enum(where, spec, "dnsPolicy", ENUMS["dnsPolicy"])
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    for i, v in enumerate(spec.get("volumes") or []):
        check_enum(f"{where}.volumes[{i}].hostPath", v.get("hostPath"), "type",
                   {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                    "CharDevice", "BlockDevice"})
    for i, t in enumerate(spec.get("tolerations") or []):
        check_enum(f"{where}.tolerations[{i}]", t, "operator", {"Exists", "Equal"})
        check_enum(f"{where}.tolerations[{i}]", t, "effect",
                   {"", "NoSchedule", "PreferNoSchedule", "NoExecute"})
    check_enum(f"{where}.securityContext.seccompProfile",
               (spec.get("securityContext") or {}).get("seccompProfile"), "type",
               {"Unconfined", "RuntimeDefault", "Localhost"})
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            cw = f"{where}.{kind}[{i}]"
            check_enum(cw, c, "imagePullPolicy", ENUMS["imagePullPolicy"])
            for j, m in enumerate(c.get("volumeMounts") or []):
                check_enum(f"{cw}.volumeMounts[{j}]", m, "mountPropagation",
                           ENUMS["mountPropagation"])
                if m.get("name") not in volumes:
                    errors.append(f"{cw}.volumeMounts[{j}]: no volume named {m.get('name')!r}")
            for section in ("requests", "limits"):
                for r, q in ((c.get("resources") or {}).get(section) or {}).items():
                    if not QUANTITY.match(str(q)):
                        errors.append(f"{cw}.resources.{section}.{r}: bad quantity {q!r}")
            sc = c.get("securityContext") or {}
            check_enum(f"{cw}.securityContext.seccompProfile", sc.get("seccompProfile"), "type",
                       {"Unconfined", "RuntimeDefault", "Localhost"})
            caps = sc.get("capabilities") or {}
            for cap in (caps.get("add") or []) + (caps.get("drop") or []):
                if not re.fullmatch(r"[A-Z][A-Z_]*", str(cap)) or str(cap).startswith("CAP_"):
                    errors.append(f"{cw}.securityContext.capabilities: bad name {cap!r}"
                                  " (upper case, no CAP_ prefix)")

for d in docs:
    where = f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
    spec = d.get("spec") or {}
    if d.get("kind") == "Pod":
        check_pod(f"{where}.spec", spec)
    template = spec.get("template")
    if isinstance(template, dict) and d.get("kind") in (
            "DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job"):
        labels = (template.get("metadata") or {}).get("labels") or {}
        for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items():
            if labels.get(k) != v:
                errors.append(f"{where}: selector {k}={v} does not match the template labels")
        strategy = spec.get("updateStrategy") or spec.get("strategy") or {}
        check_enum(f"{where}.spec.updateStrategy", strategy, "type",
                   {"RollingUpdate", "OnDelete", "Recreate"})
        for k, v in (strategy.get("rollingUpdate") or {}).items():
            if k in ("maxUnavailable", "maxSurge") and not (
                    isinstance(v, int) or re.fullmatch(r"\d+%", str(v))):
                errors.append(f"{where}: rollingUpdate.{k}: {v!r} is neither an integer nor N%")
        check_pod(f"{where}.spec.template.spec", template.get("spec") or {})

for e in errors:
    print(f"ERROR {path}: {e}")
sys.exit(1 if errors else 0)
EOF
        echo "FAIL $rel: lint" >&2
        status=1
        continue
    fi
    echo "ok   $rel (kubernetes-validate $KV_VERSION --strict, Kubernetes $versions)"
done
exit $status
