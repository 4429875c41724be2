#!/usr/bin/env python3
"""Validates the Kubernetes manifests in deploy/kubernetes offline; .ci/run runs it.

  - core kinds against Kubernetes' OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors);
  - KEDA kinds against models generated from KEDA's CRDs (cloudcoil-models-keda), with unknown fields found by
    round-tripping each document through its model;
  - the settings in the ConfigMap through masq's own configuration reader (src/settings/config.ts), so a bad value fails
    here rather than as an exit 2 in the cluster;
  - the invariants that tie the files together: kustomization lists every manifest, the grace period outlasts
    the shutdown deadline, probes hit /healthz and /readyz on MASQ_HTTP_PORT, the pod is non-root with a
    read-only root filesystem and no capabilities, every name referenced exists, KEDA scales this Deployment.

Needs: pip install kubernetes-validate cloudcoil-models-keda (which bring pyyaml and pydantic); node (22.18+) for the settings check.
"""
import os
import pathlib
import re
import subprocess
import sys

import kubernetes_validate
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from pydantic import ValidationError

DEPLOY = pathlib.Path(__file__).resolve().parent
REPO = DEPLOY.parent
K8S = DEPLOY / "kubernetes"
# The newest schemas the package ships, and an older release still in wide use (EKS standard support).
KUBERNETES_VERSIONS = [kubernetes_validate.latest_version(), "1.30.0"]
# Postgres's default max_connections: every replica holds MASQ_WRITERS + 2 connections.
PG_DEFAULT_MAX_CONNECTIONS = 100

problems: list[str] = []
checked = 0


def check(ok: bool, what: str) -> None:
    global checked
    checked += 1
    if not ok:
        problems.append(what)


def dropped(given, kept, path="") -> list[str]:
    """Paths present in `given` but absent from `kept`: fields the model did not recognise."""
    out: list[str] = []
    if isinstance(given, dict) and isinstance(kept, dict):
        for k, v in given.items():
            if k not in kept:
                out.append(f"{path}.{k}")
            else:
                out += dropped(v, kept[k], f"{path}.{k}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept)):
            out += dropped(a, b, f"{path}[{i}]")
    return out


# ---- load and validate every document ---------------------------------------------------------------------------
objects: dict[tuple[str, str], tuple[str, dict]] = {}
kustomization: dict = {}
for path in sorted(K8S.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if kind == "Kustomization":
            kustomization = doc
            continue
        where = f"{path.name}: {kind}/{name}"
        if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
            model = getattr(keda, kind, None)
            check(model is not None, f"{where}: not a KEDA kind")
            if model is not None:
                try:
                    kept = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
                    unknown = dropped(doc, kept)
                    check(not unknown, f"{where}: fields unknown to KEDA's CRD: {', '.join(unknown)}")
                except ValidationError as e:  # lists every bad field
                    check(False, f"{where}: {e}")
        else:
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    check(True, "")
                except kubernetes_validate.ValidationError as e:
                    check(False, f"{where} (Kubernetes {version}): {e.message} at {'.'.join(map(str, e.path))}")
        objects[(kind, name)] = (path.name, doc)


def get(kind: str, name: str) -> dict:
    found = objects.get((kind, name))
    check(found is not None, f"no {kind} named {name}")
    return found[1] if found else {}


# ---- kustomization ------------------------------------------------------------------------------------------------
resources = kustomization.get("resources", [])
check(bool(kustomization), "kustomization.yaml is missing")
for r in resources:
    check((K8S / r).is_file(), f"kustomization.yaml lists {r}, which does not exist")
for path in K8S.glob("*.yaml"):
    if path.name not in ("kustomization.yaml", "secret.example.yaml"):
        check(path.name in resources, f"{path.name} is not listed in kustomization.yaml")
check("secret.example.yaml" not in resources, "secret.example.yaml must not be applied: it holds placeholders")

# ---- the Deployment -------------------------------------------------------------------------------------------------
deployments = [doc for (kind, _), (_, doc) in objects.items() if kind == "Deployment"]
check(len(deployments) == 1, "exactly one Deployment")
deployment = deployments[0] if deployments else {}
pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
container = (pod.get("containers") or [{}])[0]
config = {}
for ref in container.get("envFrom", []):
    if "configMapRef" in ref:
        config.update(get("ConfigMap", ref["configMapRef"]["name"]).get("data", {}))
env = {e["name"]: e for e in container.get("env", [])}

check(container.get("args") == ["run"], "the container runs `masq run`")
check(any(i.get("name") == container.get("image") for i in kustomization.get("images", [])), "kustomization.yaml sets the container's image")
check("replicas" not in deployment.get("spec", {}), "no replicas in the Deployment: KEDA's HPA owns the count")

shutdown_ms = int(config.get("MASQ_SHUTDOWN_TIMEOUT_MS", "30000"))
grace = pod.get("terminationGracePeriodSeconds", 30)
check(grace * 1000 >= shutdown_ms + 10_000, f"terminationGracePeriodSeconds ({grace}) must exceed MASQ_SHUTDOWN_TIMEOUT_MS ({shutdown_ms} ms) by 10 s or more")

http_port = int(config.get("MASQ_HTTP_PORT", "8717"))
ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    get_ = container.get(probe, {}).get("httpGet", {})
    port = get_.get("port")
    check(get_.get("path") == path, f"{probe} must GET {path}")
    check(ports.get(port, port) == http_port, f"{probe} must use MASQ_HTTP_PORT ({http_port})")
annotations = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
check(annotations.get("prometheus.io/port") in (None, str(http_port)), "the scrape annotation names MASQ_HTTP_PORT")

pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
check(pod_sc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is True, "runAsNonRoot")
check(isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] != 0, "a numeric, non-root runAsUser")
check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
check("ALL" in sc.get("capabilities", {}).get("drop", []), "capabilities dropped: ALL")
check("memory" in container.get("resources", {}).get("limits", {}), "a memory limit")
check(bool(container.get("resources", {}).get("requests")), "resource requests")

sa = pod.get("serviceAccountName")
check(sa is not None and (("ServiceAccount", sa) in objects), f"the ServiceAccount {sa} is defined")

# Secrets: every key the Deployment reads is in the example; no key material reaches masq through the environment.
example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
secret_keys = set(example.get("stringData", {})) | set(example.get("data", {}))
for e in env.values():
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    if ref:
        check(ref["name"] == example["metadata"]["name"] and ref["key"] in secret_keys, f"secret {ref['name']}/{ref['key']} is in secret.example.yaml")
# No key material in the pod's environment or ConfigMap: with KMS, masq's keys are wrapped in Postgres.
for secret_setting in ("MASQ_PSEUDONYM_KEY", "MASQ_MASTER_KEY", "MASQ_MASTER_KEY_PREVIOUS"):
    check(secret_setting not in env and secret_setting not in config, f"{secret_setting} is not in the environment or the ConfigMap")
check(bool(config.get("MASQ_KMS_KEY_ID")) or "MASQ_MASTER_KEY_FILE" in env, "a master key is configured (MASQ_KMS_KEY_ID, or a MASQ_MASTER_KEY_FILE)")
for file_setting in ("MASQ_PSEUDONYM_KEY_FILE", "MASQ_MASTER_KEY_FILE"):
    key_file = env.get(file_setting, {}).get("value")
    if key_file is None:
        continue
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = False
    for m in container.get("volumeMounts", []):
        secret = volumes.get(m["name"], {}).get("secret")
        if secret and key_file.startswith(m["mountPath"].rstrip("/") + "/"):
            rel = key_file[len(m["mountPath"].rstrip("/")) + 1 :]
            items = secret.get("items")
            mounted = secret.get("secretName") == example["metadata"]["name"] and (
                items is None or any(i["path"] == rel and i["key"] in secret_keys for i in items)
            )
    check(mounted, f"{file_setting} ({key_file}) is a file of the mounted Secret")

# Every variable name is one masq reads (a typo would be silently ignored in the cluster).
config_source = (REPO / "src" / "settings" / "spec.ts").read_text()
for name in list(config) + list(env):
    check(re.search(rf"\b{re.escape(name)}\b", config_source) is not None, f"{name} is not a setting masq reads (src/settings/spec.ts)")

# ---- the settings, through masq's own reader -------------------------------------------------------------------------
settings_env = {**config, "DATABASE_URL": "postgres://masq@db.invalid:5432/masq", "PATH": os.environ.get("PATH", "")}
reader = subprocess.run(
    [
        "node",
        "--input-type=module",
        "-e",
        (
            'import { readRunConfig, settingSources } from "./src/settings/config.ts";'
            "try { readRunConfig(settingSources({}, process.env), false); } catch (e) { console.error(e.message); process.exit(2); }"
        ),
    ],
    check=False,
    cwd=REPO,
    env=settings_env,
    capture_output=True,
    text=True,
)
check(reader.returncode == 0, f"masq rejects the ConfigMap's settings: {reader.stderr.strip() or reader.returncode}")

# ---- KEDA -------------------------------------------------------------------------------------------------------------
scaled = [doc for (kind, _), (_, doc) in objects.items() if kind == "ScaledObject"]
check(len(scaled) == 1, "exactly one ScaledObject")
for so in scaled:
    spec = so["spec"]
    check(spec["scaleTargetRef"]["name"] == deployment.get("metadata", {}).get("name"), "the ScaledObject scales the masq Deployment")
    check(spec.get("minReplicaCount", 0) >= 1, "minReplicaCount of at least 1")
    writers = int(config.get("MASQ_WRITERS", "2"))
    check(
        spec.get("maxReplicaCount", 100) * (writers + 2) <= PG_DEFAULT_MAX_CONNECTIONS,
        f"maxReplicaCount × (MASQ_WRITERS + 2) stays within Postgres's default max_connections ({PG_DEFAULT_MAX_CONNECTIONS})",
    )
    for t in spec["triggers"]:
        check(t["type"] == "aws-sqs-queue", "the trigger is aws-sqs-queue")
        md = t.get("metadata", {})
        check(md.get("queueURL") == config.get("QUEUE_URL"), "the trigger's queueURL is the ConfigMap's QUEUE_URL")
        check(md.get("awsRegion") == config.get("AWS_REGION"), "the trigger's awsRegion is the ConfigMap's AWS_REGION")
        check(md.get("queueLength", "").isdigit(), "queueLength is a whole number, as a string")
        auth = t.get("authenticationRef", {}).get("name")
        ta = get("TriggerAuthentication", auth)
        check(ta.get("spec", {}).get("podIdentity", {}).get("provider") == "aws", "the TriggerAuthentication uses AWS pod identity")

# ---- report -----------------------------------------------------------------------------------------------------------
for p in problems:
    print(f"FAIL {p}")
print(f"deploy/kubernetes: {len(objects)} objects, {checked} checks, {len(problems) or 'no'} problem{'' if len(problems) == 1 else 's'}")
sys.exit(1 if problems else 0)
