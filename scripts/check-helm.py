#!/usr/bin/env python3
"""Checks deploy/helm/callbridge with real tools (scripts/test.sh runs it):

- Helm's own lint (helm-python-sdk: Helm's Go SDK, no helm binary) with the values
  schema, strict;
- renders with the defaults, with KEDA, with the HPA, with ServiceMonitor and
  PrometheusRule; every core object validated against Kubernetes 1.30's schemas,
  strict (kubernetes-validate, offline);
- what the chart promises: the grace period is drain.timeout + 30 s, readiness is
  /readyz/drain (not /readyz), rolling updates never take a pod away first, one pod
  per node on the host network, the PrometheusRule is the file promtool tests, the
  KEDA query counts only pods that are not draining, slow scale-down;
- what it refuses: both autoscalers at once, values the schema forbids, no secret;
- the rendered configuration and environment load in the gateway itself
  (`callbridge check-config`, with the Deployment's CALLBRIDGE_* variables).

Usage: scripts/check-helm.py [path/to/callbridge binary]
"""

import os
import subprocess
import sys
import tempfile

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "deploy", "helm", "callbridge")
K8S = "1.30.0"
SECRET = {"auth": {"hs256Secret": "0123456789abcdef0123456789abcdef-test"}}


def merge(*parts):
    out = {}
    for p in parts:
        for k, v in p.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(values):
    chart = helm.Chart.load(CHART)
    files = chart.render(values, name="cb", namespace="voice", is_install=True)
    objects = []
    for path, text in files.items():
        if path.endswith(".tpl") or not text.strip():
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def by_kind(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"one {kind} expected, got {len(found)}"
    return found[0]


def refused(values, needle):
    try:
        render(values)
    except helm.HelmError as e:
        assert needle in str(e), f"refused, but not for {needle!r}: {e}"
        return
    raise AssertionError(f"values {values} were accepted; expected a refusal ({needle})")


def validate(objects):
    core = ("v1", "apps/v1", "policy/v1", "autoscaling/v2")
    n = 0
    for o in objects:
        if o["apiVersion"] in core:
            kubernetes_validate.validate(o, K8S, strict=True)
            n += 1
    return n


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "callbridge")
    lint = helm.lint(CHART, SECRET, strict=True, kube_version=K8S)
    messages = [m for m in lint.get("messages", []) if str(m.get("severity", "")).upper() not in ("INFO", "1")]
    assert not lint.get("errors") and not messages, f"helm lint: {lint}"

    default = render(SECRET)
    checked = validate(default)
    dep = by_kind(default, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 150, pod["terminationGracePeriodSeconds"]
    assert pod["hostNetwork"] is True
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz/drain"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CALLBRIDGE_DRAIN__TIMEOUT"] == "120s", env
    assert by_kind(default, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not [o for o in default if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")]

    # The grace follows the drain timeout.
    longer = by_kind(render(merge(SECRET, {"drainTimeoutSeconds": 600})), "Deployment")
    assert longer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 630

    keda = render(merge(SECRET, {"autoscaling": {"keda": {"enabled": True}}}))
    checked += validate(keda)
    scaled = by_kind(keda, "ScaledObject")
    assert "replicas" not in by_kind(keda, "Deployment")["spec"], "the autoscaler owns replicas"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "350"
    assert "callbridge_draining" in trigger["metadata"]["query"]
    down = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 600 and down["policies"][0]["value"] == 1

    hpa_objects = render(merge(SECRET, {"autoscaling": {"hpa": {"enabled": True}}}))
    checked += validate(hpa_objects)
    hpa = by_kind(hpa_objects, "HorizontalPodAutoscaler")
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "callbridge_active_calls"
    assert metric["target"]["averageValue"] == "350"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600

    monitored = render(merge(SECRET, {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}))
    rule = by_kind(monitored, "PrometheusRule")
    with open(os.path.join(ROOT, "deploy", "prometheus", "callbridge.rules.yml")) as f:
        assert rule["spec"] == yaml.safe_load(f), "the PrometheusRule is the promtool-tested file"
    monitor = by_kind(monitored, "ServiceMonitor")
    admin = [o for o in monitored if o["kind"] == "Service" and o["metadata"]["labels"].get("app.kubernetes.io/component") == "admin"]
    assert len(admin) == 1
    for k, v in monitor["spec"]["selector"]["matchLabels"].items():
        assert admin[0]["metadata"]["labels"].get(k) == v, f"the ServiceMonitor does not select the admin Service ({k})"

    refused(merge(SECRET, {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}}), "not both")
    refused(merge(SECRET, {"drainTimeoutSeconds": "two minutes"}), "drainTimeoutSeconds")
    refused(merge(SECRET, {"ports": {"sip": 70000}}), "sip")
    refused(merge(SECRET, {"replica": 3}), "replica")
    refused({}, "auth.hs256Secret")

    # The rendered configuration, with the Deployment's environment, loads in the gateway.
    config = by_kind(default, "ConfigMap")["data"]["callbridge.toml"]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "callbridge.toml")
        with open(path, "w") as f:
            f.write(config)
        run_env = dict(os.environ)
        run_env.update({k: v for k, v in env.items() if v is not None})
        # What the kubelet fills in: the Secret, and the node's address (downward API).
        run_env["CALLBRIDGE_AUTH__HS256_SECRET"] = SECRET["auth"]["hs256Secret"]
        host_ip = [e for e in container["env"] if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP"]
        assert [e["name"] for e in host_ip] == ["CALLBRIDGE_SERVER__PUBLIC_IP"], host_ip
        run_env["CALLBRIDGE_SERVER__PUBLIC_IP"] = "192.0.2.10"
        out = subprocess.run([binary, "check-config", path], env=run_env, capture_output=True, text=True)
        assert out.returncode == 0, f"callbridge check-config refused the chart's config:\n{out.stdout}{out.stderr}"

    print(f"helm chart: lint clean, {checked} core objects valid for Kubernetes {K8S}, promises and refusals hold, config loads")


if __name__ == "__main__":
    main()
