"""Every kustomize overlay, rendered by a real kustomize (tests/ops/conftest.py), deploys what
"Deployment" in docs/operations.md says: the image and replicas of its environment, settings
from its ConfigMap, secrets only by reference, probes, resources, a non-root pod, and the
migration Job that Argo CD runs before the new pods."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.ops.conftest import OVERLAYS, REPO, by_kind, kustomize_build

EXPECTED = {
    "dev": {"namespace": "school-payments-dev", "replicas": 1, "tag": re.compile(r"dev-[0-9a-f]{7,40}")},
    "staging": {"namespace": "school-payments-staging", "replicas": 2, "tag": re.compile(r"rc-[0-9a-f]{7,40}")},
    "prod": {"namespace": "school-payments", "replicas": 3, "tag": re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")},
}
SECRET_NAME = "school-payments-secrets"
REQUIRED_SECRETS = {"SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL", "SCHOOL_API_TOKEN", "METRICS_BEARER_TOKEN"}
OPTIONAL_SECRETS = {"QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "SENTRY_DSN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
ECR_REPOSITORY = re.compile(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/school-payments")
SECRET_LOOKING = re.compile(r"SECRET|TOKEN|PASSWORD|_KEY|KEYS|DATABASE_URL|REDIS_URL")
WORKLOADS = ("school-payments-web", "school-payments-worker", "school-payments-beat", "school-payments-relay")


def pod_specs(resources):
    """(name, pod spec) of every Deployment and Job."""
    for resource in resources:
        if resource["kind"] in ("Deployment", "Job"):
            yield resource["metadata"]["name"], resource["spec"]["template"]["spec"]


def container(resource) -> dict:
    (only,) = resource["spec"]["template"]["spec"]["containers"]
    return only


def test_each_overlay_renders_the_same_set_of_resources(overlay):
    name, resources = overlay
    kinds = sorted((r["kind"], r["metadata"]["name"].rsplit("-", 1)[0] if r["kind"] == "ConfigMap" else r["metadata"]["name"]) for r in resources)
    assert kinds == sorted(
        [
            ("ConfigMap", "school-payments-config"),
            ("Deployment", "school-payments-beat"),
            ("Deployment", "school-payments-relay"),
            ("Deployment", "school-payments-web"),
            ("Deployment", "school-payments-worker"),
            ("Ingress", "school-payments-web"),
            ("Job", "school-payments-migrate"),
            ("PodDisruptionBudget", "school-payments-web"),
            ("Service", "school-payments-web"),
            ("ServiceAccount", "school-payments"),
        ]
    )
    assert {r["metadata"]["namespace"] for r in resources} == {EXPECTED[name]["namespace"]}


def test_image_is_the_overlays_own_tag_everywhere(overlay):
    name, resources = overlay
    images = {c["image"] for _, spec in pod_specs(resources) for c in spec["containers"]}
    assert len(images) == 1, images  # web, worker, beat and the migration run the same build
    (image,) = images
    repository, tag = image.rsplit(":", 1)
    assert ECR_REPOSITORY.fullmatch(repository), repository  # Amazon ECR, where the workflows push
    assert EXPECTED[name]["tag"].fullmatch(tag), f"{name}: unexpected tag {tag}"


def test_image_tags_differ_per_environment():
    tags = {}
    for name in OVERLAYS:
        deployments = by_kind(kustomize_build(f"overlays/{name}"), "Deployment")
        tags[name] = container(deployments["school-payments-web"])["image"].rsplit(":", 1)[1]
    assert len(set(tags.values())) == 3, tags


def test_replicas_per_overlay_and_beat_always_one(overlay):
    name, resources = overlay
    deployments = by_kind(resources, "Deployment")
    assert deployments["school-payments-web"]["spec"]["replicas"] == EXPECTED[name]["replicas"]
    assert deployments["school-payments-worker"]["spec"]["replicas"] == EXPECTED[name]["replicas"]
    beat = deployments["school-payments-beat"]["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"] == {"type": "Recreate"}  # never two beats, not even during a rollout
    relay = deployments["school-payments-relay"]["spec"]
    assert relay["replicas"] == 1 and relay["strategy"] == {"type": "Recreate"}


def test_the_outbox_relay_runs_as_its_own_process(overlay):
    _, resources = overlay
    relay = container(by_kind(resources, "Deployment")["school-payments-relay"])
    assert relay["command"] == ["python", "manage.py", "outbox_relay"]
    env = {item["name"]: item for item in relay["env"]}
    for variable in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": variable, "optional": True}
    (config_map,) = by_kind(resources, "ConfigMap").values()
    assert config_map["data"]["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"


def test_secrets_only_by_reference(overlay):
    name, resources = overlay
    assert not by_kind(resources, "Secret"), "secrets are created out of band, never rendered from git"
    for workload, spec in pod_specs(resources):
        (main,) = spec["containers"]
        env = {item["name"]: item for item in main.get("env", [])}
        for variable in REQUIRED_SECRETS | OPTIONAL_SECRETS:
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME and ref["key"] == variable, (workload, variable)
            assert ref.get("optional", False) is (variable in OPTIONAL_SECRETS), (workload, variable)
        for item in main.get("env", []):
            if SECRET_LOOKING.search(item["name"]):
                assert "value" not in item, f"{workload}: {item['name']} is inlined"
        assert all("secretRef" not in source for source in main.get("envFrom", []))
    (config_map,) = by_kind(resources, "ConfigMap").values()
    leaked = [key for key in config_map["data"] if SECRET_LOOKING.search(key)]
    assert not leaked, f"secret-looking keys in the ConfigMap: {leaked}"


def test_settings_come_from_the_generated_config_map(overlay):
    name, resources = overlay
    (config_map,) = by_kind(resources, "ConfigMap").values()
    # The hash suffix makes a settings change roll the pods; every workload uses that exact name.
    assert re.fullmatch(r"school-payments-config-[a-z0-9]{10}", config_map["metadata"]["name"])
    data = config_map["data"]
    assert data["APP_ENV"] == "production"
    assert data["LOG_FORMAT"] == "json"
    assert data["WEBHOOK_BODY_RETENTION_DAYS"] == "90"
    assert data["QBO_ENVIRONMENT"] == ("production" if name == "prod" else "sandbox")
    for workload, spec in pod_specs(resources):
        (main,) = spec["containers"]
        assert main["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}], workload
    # The ingress host is the one Django accepts and links to.
    (ingress,) = by_kind(resources, "Ingress").values()
    host = ingress["spec"]["rules"][0]["host"]
    assert data["ALLOWED_HOSTS"] == host
    assert data["PUBLIC_BASE_URL"] == f"https://{host}"
    assert ingress["spec"]["tls"][0]["hosts"] == [host]


def test_ingress_hosts_differ_per_environment():
    hosts = {
        name: by_kind(kustomize_build(f"overlays/{name}"), "Ingress")["school-payments-web"]["spec"]["rules"][0]["host"]
        for name in OVERLAYS
    }
    assert len(set(hosts.values())) == 3, hosts


def test_web_probes_ports_and_service(overlay):
    _, resources = overlay
    web = by_kind(resources, "Deployment")["school-payments-web"]
    main = container(web)
    assert main["command"] == ["gunicorn", "config.wsgi", "--config", "config/gunicorn.conf.py"]
    assert main["ports"] == [{"name": "http", "containerPort": 8000}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Readiness runs two checks of READINESS_TIMEOUT_SECONDS each: its timeout leaves room.
    (config_map,) = by_kind(resources, "ConfigMap").values()
    assert main["readinessProbe"]["timeoutSeconds"] >= 2 * float(config_map["data"]["READINESS_TIMEOUT_SECONDS"])
    service = by_kind(resources, "Service")["school-payments-web"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    pod_labels = web["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "web"
    assert web["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    annotations = web["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == "8000"


def test_worker_and_beat_commands_and_worker_metrics(overlay):
    _, resources = overlay
    deployments = by_kind(resources, "Deployment")
    worker = container(deployments["school-payments-worker"])
    assert worker["command"][:4] == ["celery", "-A", "config", "worker"]
    worker_env = {item["name"]: item.get("value") for item in worker["env"]}
    assert worker_env["WORKER_METRICS_PORT"] == "9100"
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9100} in worker["ports"]
    beat = container(deployments["school-payments-beat"])
    assert beat["command"][:4] == ["celery", "-A", "config", "beat"]
    # Beat writes its schedule where the read-only root filesystem allows.
    assert beat["command"][beat["command"].index("--schedule") + 1].startswith("/tmp/")


def test_resources_requests_and_limits(overlay):
    name, resources = overlay
    for workload, spec in pod_specs(resources):
        (main,) = spec["containers"]
        for part in ("requests", "limits"):
            assert set(main["resources"][part]) == {"cpu", "memory"}, (workload, part)
    web = container(by_kind(resources, "Deployment")["school-payments-web"])
    expected_web_memory = "1Gi" if name == "prod" else "512Mi"
    assert web["resources"]["limits"]["memory"] == expected_web_memory


def test_pods_run_as_non_root_with_a_read_only_root(overlay):
    _, resources = overlay
    for workload, spec in pod_specs(resources):
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        assert spec["securityContext"]["runAsUser"] == 10001, workload  # the image's USER
        assert spec["automountServiceAccountToken"] is False
        (main,) = spec["containers"]
        security = main["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        # The one writable place: metrics files and beat's schedule.
        assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
        env = {item["name"]: item.get("value") for item in main["env"]}
        assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_migration_job_runs_before_the_new_pods(overlay):
    _, resources = overlay
    (job,) = by_kind(resources, "Job").values()
    main = container(job)
    assert main["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"

    def wave(resource):
        return int(resource["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))

    (config_map,) = by_kind(resources, "ConfigMap").values()
    # The settings exist before the Job starts; the Deployments roll after it finished.
    assert wave(config_map) < wave(job)
    assert all(wave(deployment) > wave(job) for deployment in by_kind(resources, "Deployment").values())


def test_real_kustomize_rejects_a_broken_overlay(tmp_path, monkeypatch):
    """The renderer is kustomize itself: a patch on a missing resource is an error, not a
    silently different result."""
    from tests.ops import conftest

    broken = tmp_path / "k8s" / "overlays" / "broken"
    broken.mkdir(parents=True)
    shutil.copytree(REPO / "k8s" / "base", tmp_path / "k8s" / "base")
    (broken / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../../base"],
                "patches": [
                    {
                        "target": {"kind": "Deployment", "name": "school-payments-web"},
                        "patch": "- op: replace\n  path: /spec/template/spec/no/such/path\n  value: 1\n",
                    }
                ],
            }
        )
    )
    monkeypatch.setattr(conftest, "REPO", tmp_path)
    with pytest.raises(Exception, match="no/such/path|not found|doesn't exist|does not exist"):
        conftest.kustomize_build.__wrapped__("overlays/broken")


@pytest.mark.skipif(not shutil.which("kubectl"), reason="cross-check only where kubectl is installed")
def test_kubectl_kustomize_renders_the_same():
    for name in OVERLAYS:
        output = subprocess.run(
            ["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / name)], check=True, capture_output=True, text=True
        ).stdout
        assert tuple(doc for doc in yaml.safe_load_all(output) if doc) == kustomize_build(f"overlays/{name}")


def test_cluster_settings_are_in_the_config_map(overlay):
    """What a pod behind the ingress needs: the proxies to trust (else IP allowlists see the
    ingress pod's address), the zone of "today", and where receipts go (the bucket of this
    environment, reached with this environment's IAM role)."""
    import ipaddress
    import zoneinfo

    name, resources = overlay
    (config_map,) = by_kind(resources, "ConfigMap").values()
    data = config_map["data"]
    assert data["TRUSTED_PROXIES"] and all(ipaddress.ip_network(item.strip()) for item in data["TRUSTED_PROXIES"].split(","))
    assert zoneinfo.ZoneInfo(data["TIME_ZONE"])
    assert data["AWS_STORAGE_BUCKET_NAME"] == f"school-payments-receipts-{name}"
    assert data["AWS_S3_REGION_NAME"]
    assert data["SENTRY_ENVIRONMENT"] == name
    (account,) = by_kind(resources, "ServiceAccount").values()
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == f"arn:aws:iam::123456789012:role/school-payments-{name}"
    for _, spec in pod_specs(resources):
        assert spec["serviceAccountName"] == "school-payments"


def test_production_settings_start_with_what_the_manifests_give(overlay):
    """The settings' production start-up checks pass with exactly the ConfigMap and the
    Secret's required keys: nothing production requires is missing from the manifests."""
    import os
    import subprocess
    import sys

    from cryptography.fernet import Fernet

    name, resources = overlay
    (config_map,) = by_kind(resources, "ConfigMap").values()
    web = container(by_kind(resources, "Deployment")["school-payments-web"])
    plain_env = {item["name"]: item["value"] for item in web["env"] if "value" in item}
    secrets = {
        "SECRET_KEY": "x" * 50,
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": "postgres://app:password@db.internal:5432/school_payments",
        "REDIS_URL": "redis://redis.internal:6379/0",
        "SCHOOL_API_TOKEN": "token",
        "METRICS_BEARER_TOKEN": "token",
    }
    assert set(secrets) == REQUIRED_SECRETS
    env = {"PATH": os.environ["PATH"], **config_map["data"], **plain_env, **secrets, "DJANGO_SETTINGS_MODULE": "config.settings"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # not this test's concern: metrics stay in memory
    script = "import django; django.setup(); from django.conf import settings; print(settings.STORAGES['default']['BACKEND'])"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "storages.backends.s3.S3Storage"
