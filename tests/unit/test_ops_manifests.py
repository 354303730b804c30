"""The operations material (ops/k8s, ops/prometheus, ops/grafana, ops/RUNBOOK.md) cannot be applied here (no cluster,
no Prometheus, no Grafana): parse it and check it against the code and against itself."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from worker.adapters.queues import TASK_ROUTES, WORK_QUEUES
from worker.cli.main import cli, command_line_is_valid
from worker.core.retailers import load_retailers

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
NAMESPACE = "tlogsync"

# The metrics `tlogsync metrics` exports; alerts and dashboard may use no others.
KNOWN_METRICS = {
    "tlogsync_files",
    "tlogsync_files_discovered_total",
    "tlogsync_orders",
    "tlogsync_allocations",
    "tlogsync_unfillable_lines",
    "tlogsync_inventory_variances",
    "tlogsync_oldest_unprocessed_file_age_seconds",
    "tlogsync_last_scan_age_seconds",
    "tlogsync_scan_errors",
    "tlogsync_dead_letters",
    "tlogsync_queue_messages",
    "tlogsync_workers",
    "tlogsync_pending_followups",
    "tlogsync_unmoved_files",
    "tlogsync_oldest_unmoved_file_age_seconds",
    "tlogsync_files_too_young",
    "tlogsync_files_ignored",
    "tlogsync_oldest_too_young_seconds",
    "tlogsync_retailers_file_valid",
    "tlogsync_audit_consistent",
    "tlogsync_audit_differences",
    "tlogsync_audit_business_date_seconds",
}
METRIC_NAME = re.compile(r"\btlogsync_[a-z0-9_]+\b")

REQUIRED_ALERTS = {
    "OldestFileTooOld",
    "DeadLettersPresent",
    "NoWorkers",
    "ScanFailing",
    "ScansStopped",
    "FollowupsStuck",
    "IngestBacklog",
    "UnfillableLines",
    "AuditNotConsistent",
}
REQUIRED_K8S_FILES = {
    "namespace.yaml",
    "configmap-retailers.yaml",
    "secret-example.yaml",
    "worker-ingest.yaml",
    "worker-routing.yaml",
    "beat.yaml",
    "flower.yaml",
    "metrics.yaml",
    "keda-scaledobjects.yaml",
    "migrate-job.yaml",
}


# -- loading -----------------------------------------------------------------------------------------------------


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def k8s() -> dict[str, list[dict]]:
    return {path.name: load_documents(path) for path in sorted((OPS / "k8s").glob("*.y*ml"))}


@pytest.fixture(scope="module")
def objects(k8s) -> list[dict]:
    return [doc for docs in k8s.values() for doc in docs]


def of_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    return pod_spec(workload)["containers"]


def is_celery_worker(command: list[str]) -> bool:
    return command[:4] == ["celery", "-A", "worker", "worker"]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.fixture(scope="module")
def workers(objects) -> dict[str, dict]:
    """Deployments running a Celery worker, by name."""
    return {
        name: d
        for name, d in of_kind(objects, "Deployment").items()
        if any(is_celery_worker(c["command"]) for c in containers(d))
    }


def worker_container(deployment: dict) -> dict:
    (container,) = [c for c in containers(deployment) if is_celery_worker(c["command"])]
    return container


def worker_queues(deployment: dict) -> list[str]:
    return option(worker_container(deployment)["command"], "-Q").split(",")


@pytest.fixture(scope="module")
def alerts() -> list[dict]:
    docs = load_documents(OPS / "prometheus" / "alerts.yml")
    assert len(docs) == 1
    return [rule for group in docs[0]["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((OPS / "grafana" / "tlogsync-dashboard.json").read_text())


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lowercase, punctuation dropped (hyphens and underscores kept), spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def markdown_headings(text: str) -> list[str]:
    headings, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)):
            headings.append(m.group(1))
    return headings


@pytest.fixture(scope="module")
def runbook_anchors() -> set[str]:
    headings = markdown_headings((OPS / "RUNBOOK.md").read_text())
    anchors = [github_anchor(h) for h in headings]
    assert len(anchors) == len(set(anchors)), "duplicate headings get numbered anchors: keep them unique"
    return set(anchors)


def task_time_limits() -> dict[str, float]:
    """The longest hard time limit of the tasks routed to each queue, from the Celery app itself."""
    import tasks.ingest
    import tasks.ops
    import tasks.routing
    import tasks.scan  # noqa: F401  (importing registers the tasks)
    from worker.celery import app

    limits: dict[str, float] = {}
    for name, task in app.tasks.items():
        route = next((r for pattern, r in TASK_ROUTES.items() if fnmatch.fnmatchcase(name, pattern)), None)
        if route is None:
            continue
        limit = task.time_limit or app.conf.task_time_limit
        limits[route["queue"]] = max(limits.get(route["queue"], 0), limit)
    return limits


# -- Kubernetes ----------------------------------------------------------------------------------------------------


def test_every_expected_manifest_file_exists(k8s):
    assert set(k8s) >= REQUIRED_K8S_FILES


def test_every_kubernetes_document_has_an_api_version_a_kind_and_a_name(k8s):
    for file, docs in k8s.items():
        assert docs, f"{file} has no document"
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), f"{file}: {doc}"
            assert doc.get("metadata", {}).get("name"), f"{file}: {doc['kind']} without metadata.name"


def test_every_object_is_named_once_and_lives_in_the_tlogsync_namespace(objects):
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    for o in objects:
        if o["kind"] == "Namespace":
            assert o["metadata"]["name"] == NAMESPACE
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']} {o['metadata']['name']}"


def test_deployments_run_celery_with_the_worker_app_or_the_tlogsync_cli(objects):
    for name, deployment in of_kind(objects, "Deployment").items():
        for container in containers(deployment):
            command = container["command"]
            assert command[:3] == ["celery", "-A", "worker"] or command[0] == "tlogsync", name


def test_worker_queue_lists_are_work_queues_and_together_cover_every_one(workers):
    assert {"tlogsync-worker-ingest", "tlogsync-worker-routing"} <= set(workers)
    covered: set[str] = set()
    for name, deployment in workers.items():
        queues = worker_queues(deployment)
        assert set(queues) <= set(WORK_QUEUES), f"{name} consumes a queue that is not a work queue: {queues}"
        assert not any(q.endswith(".dead") for q in queues), "dead-letter queues are never consumed"
        covered |= set(queues)
    assert covered == set(WORK_QUEUES)
    assert set(worker_queues(workers["tlogsync-worker-ingest"])) == {"tlog.scan", "tlog.ingest", "tlog.ops"}
    assert set(worker_queues(workers["tlogsync-worker-routing"])) == {"brokering", "inventory"}


def test_workers_send_events_and_have_their_own_hostnames(workers):
    prefixes = set()
    for deployment in workers.values():
        command = worker_container(deployment)["command"]
        assert "-E" in command
        assert int(option(command, "-c")) >= 1
        prefix, _, host = option(command, "--hostname").partition("@")
        assert host == "%h"
        prefixes.add(prefix)
    assert len(prefixes) == len(workers)


def test_workers_wait_longer_than_the_hard_time_limit_of_any_task_on_their_queues(workers):
    limits = task_time_limits()
    assert set(limits) <= set(WORK_QUEUES)
    for name, deployment in workers.items():
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert grace >= 200, name
        longest = max(limits.get(q, 180) for q in worker_queues(deployment))
        assert grace >= longest + 20, f"{name}: grace {grace}s, a task on its queues may run {longest}s"


def test_worker_liveness_probes_ping_their_own_celery_node(workers):
    for name, deployment in workers.items():
        container = worker_container(deployment)
        prefix = option(container["command"], "--hostname").split("@")[0]
        probe = container["livenessProbe"]
        script = " ".join(probe["exec"]["command"])
        assert "celery -A worker inspect ping" in script, name
        assert re.search(rf'-d "?{re.escape(prefix)}@\$HOSTNAME"?', script), name
        assert probe["timeoutSeconds"] >= 30 and probe["periodSeconds"] >= 60, "the probe runs a whole celery client"
        assert "readinessProbe" not in container


def test_workers_run_as_pid_1_without_a_shell_so_they_get_sigterm(workers):
    for deployment in workers.values():
        assert worker_container(deployment)["command"][0] == "celery"


def test_every_container_has_resource_requests_and_limits(objects):
    for kind in ("Deployment", "Job"):
        for name, workload in of_kind(objects, kind).items():
            for container in containers(workload):
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), name
                assert "memory" in resources["limits"], name


def test_scaled_deployments_leave_the_replica_count_to_keda(objects, workers):
    scaled = {so["spec"]["scaleTargetRef"]["name"] for so in of_kind(objects, "ScaledObject").values()}
    for name in scaled:
        assert name in workers, f"a ScaledObject targets {name}, which is no worker Deployment"
        assert "replicas" not in workers[name]["spec"], f"{name}: kubectl apply would fight KEDA's HPA"


def test_beat_runs_exactly_one_replica_and_is_recreated_not_rolled(objects):
    beats = {
        name: d
        for name, d in of_kind(objects, "Deployment").items()
        if any(c["command"][:4] == ["celery", "-A", "worker", "beat"] for c in containers(d))
    }
    assert list(beats) == ["tlogsync-beat"]
    beat = beats["tlogsync-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    command = containers(beat)[0]["command"]
    assert option(command, "-s").startswith("/tmp/")


def test_pods_read_the_retailers_file_from_the_configmap_mounted_as_a_directory(objects):
    configmaps = of_kind(objects, "ConfigMap")
    readers = 0
    for name, deployment in of_kind(objects, "Deployment").items():
        volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
        for container in containers(deployment):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            path = env.get("TLOGSYNC_RETAILERS")
            if path is None:
                continue
            readers += 1
            mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
            assert len(mounts) == 1, f"{name}: {path} is not on a mounted volume"
            assert "subPath" not in mounts[0], f"{name}: a subPath mount never sees ConfigMap updates"
            configmap = volumes[mounts[0]["name"]]["configMap"]["name"]
            assert Path(path).name in configmaps[configmap]["data"]
    assert readers >= 3  # both worker Deployments and beat at least


def test_the_example_retailers_file_is_valid_and_its_keys_are_in_the_example_secrets(objects, workers, tmp_path):
    retailers_file = tmp_path / "retailers.toml"
    retailers_file.write_text(of_kind(objects, "ConfigMap")["tlogsync-retailers"]["data"]["retailers.toml"])
    retailers = load_retailers(retailers_file)
    assert retailers
    secrets = of_kind(objects, "Secret")
    for deployment in workers.values():
        spec = pod_spec(deployment)
        assert spec.get("automountServiceAccountToken") is False, "/var/run/secrets is /run/secrets in the image"
        (mount,) = [m for m in worker_container(deployment)["volumeMounts"] if m["mountPath"] == "/run/secrets"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        sources = [s["secret"] for s in volume["projected"]["sources"]]
        assert all("items" not in s for s in sources), "an items list would hide keys added for a rotation"
        files = {key for s in sources for key in secrets[s["name"]]["stringData"]}
        for retailer in retailers.values():
            for path in (retailer.sftp.private_key, retailer.sftp.known_hosts):
                assert path is not None and path.startswith("/run/secrets/")
                assert Path(path).name in files, f"{retailer.retailer_id}: {path} is in no mounted secret"


def test_every_secret_and_configmap_a_workload_uses_is_defined(objects):
    secrets, configmaps = of_kind(objects, "Secret"), of_kind(objects, "ConfigMap")

    def secret_keys(name: str) -> set[str]:
        assert name in secrets, f"Secret {name} is not in secret-example.yaml"
        return set(secrets[name]["stringData"])

    for kind in ("Deployment", "Job"):
        for workload in of_kind(objects, kind).values():
            spec = pod_spec(workload)
            for container in containers(workload):
                for source in container.get("envFrom", []):
                    secret_keys(source["secretRef"]["name"])
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in secret_keys(ref["name"])
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in configmaps
                for source in volume.get("projected", {}).get("sources", []):
                    secret_keys(source["secret"]["name"])
    for auth in of_kind(objects, "TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secret_keys(ref["name"])


def test_the_example_secrets_hold_placeholders_only(k8s):
    text = (OPS / "k8s" / "secret-example.yaml").read_text()
    assert "EXAMPLE ONLY" in text and "Do NOT apply" in text
    not_secret = {"FLOWER_USER", "host"}
    for secret in k8s["secret-example.yaml"]:
        assert secret["kind"] == "Secret"
        for key, value in secret["stringData"].items():
            assert key in not_secret or "REPLACE_ME" in value, f"{secret['metadata']['name']}.{key}"
            assert "BEGIN OPENSSH PRIVATE KEY" not in value or "REPLACE_ME" in value


def test_keda_scales_existing_worker_deployments_on_queues_they_consume(objects, workers):
    scaled = of_kind(objects, "ScaledObject")
    auths = of_kind(objects, "TriggerAuthentication")
    assert scaled
    watched: dict[str, set[str]] = {}
    for name, so in scaled.items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        spec = so["spec"]
        target = spec["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert target["name"] in workers, f"{name} scales {target['name']}, which is no worker Deployment"
        # never zero: these pods also consume queues no trigger watches (tlog.scan, tlog.ops, inventory)
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        consumed = set(worker_queues(workers[target["name"]]))
        for trigger in spec["triggers"]:
            assert trigger["type"] == "rabbitmq"
            meta = trigger["metadata"]
            assert meta["mode"] == "QueueLength"
            assert meta["queueName"] in WORK_QUEUES
            assert meta["queueName"] in consumed, f"{name}: {meta['queueName']} is not consumed by its target"
            assert float(meta["value"]) > 0
            assert "hostFromEnv" in meta or trigger["authenticationRef"]["name"] in auths
            watched.setdefault(target["name"], set()).add(meta["queueName"])
    assert "tlog.ingest" in watched["tlogsync-worker-ingest"]
    assert "brokering" in watched["tlogsync-worker-routing"]


def test_flower_has_basic_auth_from_a_secret_and_keeps_its_state_on_a_volume(objects):
    flower = of_kind(objects, "Deployment")["tlogsync-flower"]
    (container,) = containers(flower)
    command = container["command"]
    assert command[:2] == ["tlogsync", "flower"]

    command_line_is_valid(command[1:])  # `tlogsync flower` turns on persistence and takes auth from the env
    env = {e["name"]: e for e in container["env"]}
    assert env["TLOGSYNC_BROKER_API"]["value"].startswith("http://")
    for variable in ("FLOWER_USER", "FLOWER_PASSWORD"):
        assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == "tlogsync-flower"
    db = command[command.index("--db") + 1]
    (mount,) = [m for m in container["volumeMounts"] if db.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod_spec(flower)["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] in of_kind(objects, "PersistentVolumeClaim")
    assert flower["spec"]["replicas"] == 1 and flower["spec"]["strategy"]["type"] == "Recreate"
    service = of_kind(objects, "Service")["tlogsync-flower"]
    assert service["spec"]["ports"][0]["port"] == 5555


def test_the_metrics_service_exposes_9808_for_prometheus(objects):
    deployment = of_kind(objects, "Deployment")["tlogsync-metrics"]
    (container,) = containers(deployment)
    command = container["command"]
    assert command[:2] == ["tlogsync", "metrics"] and option(command, "--port") == "9808"
    assert container["ports"][0]["containerPort"] == 9808
    service = of_kind(objects, "Service")["tlogsync-metrics"]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9808"
    assert service["spec"]["ports"][0]["port"] == 9808
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_migration_job_runs_a_real_cli_command(objects):
    job = of_kind(objects, "Job")["tlogsync-migrate"]
    (container,) = containers(job)
    command = container["command"]
    assert command == ["tlogsync", "migrate"]
    command_line_is_valid(command[1:])
    assert pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}


def cli_commands() -> set[str]:
    return set(cli.commands)


def test_the_metrics_command_is_one_the_cli_accepts_once_it_has_it(objects):
    if "metrics" not in cli_commands():
        pytest.skip("`tlogsync metrics` is not in the CLI yet")
    (container,) = containers(of_kind(objects, "Deployment")["tlogsync-metrics"])
    command_line_is_valid(container["command"][1:])


def test_every_deployment_selector_matches_its_pod_labels(objects):
    for name, deployment in of_kind(objects, "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name


# -- Prometheus ----------------------------------------------------------------------------------------------------


def test_every_required_alert_is_defined_once(alerts):
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS


def test_every_alert_has_an_expression_a_duration_a_severity_and_a_runbook_link(alerts):
    for rule in alerts:
        name = rule["alert"]
        assert rule.get("expr"), name
        assert re.fullmatch(r"\d+[smhd]", str(rule.get("for", ""))), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        assert annotations.get("runbook_url"), name


def test_every_runbook_link_points_at_a_heading_of_the_runbook(alerts, runbook_anchors):
    for rule in alerts:
        url = urlparse(rule["annotations"]["runbook_url"])
        assert url.path.endswith("ops/RUNBOOK.md"), rule["alert"]
        assert url.fragment in runbook_anchors, f"{rule['alert']}: no heading for #{url.fragment}"


def test_the_alerts_keep_the_agreed_thresholds(alerts):
    rules = {rule["alert"]: rule for rule in alerts}
    assert "tlogsync_oldest_unprocessed_file_age_seconds" in rules["OldestFileTooOld"]["expr"]
    assert "> 1800" in rules["OldestFileTooOld"]["expr"] and rules["OldestFileTooOld"]["for"] == "10m"
    assert "> 0" in rules["DeadLettersPresent"]["expr"] and rules["DeadLettersPresent"]["for"] == "5m"
    assert "== 0" in rules["NoWorkers"]["expr"] and "absent(tlogsync_workers)" in rules["NoWorkers"]["expr"]
    assert rules["NoWorkers"]["for"] == "2m"
    assert "== 1" in rules["ScanFailing"]["expr"] and rules["ScanFailing"]["for"] == "15m"
    assert "tlogsync_last_scan_age_seconds" in rules["ScansStopped"]["expr"]
    assert "> 1800" in rules["ScansStopped"]["expr"]
    assert rules["FollowupsStuck"]["for"] == "30m"
    assert 'queue="tlog.ingest"' in rules["IngestBacklog"]["expr"] and "> 5000" in rules["IngestBacklog"]["expr"]
    assert rules["IngestBacklog"]["for"] == "15m"
    assert rules["UnfillableLines"]["for"] == "1h" and rules["UnfillableLines"]["labels"]["severity"] == "info"


def test_alert_expressions_use_only_exported_metrics(alerts):
    for rule in alerts:
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= KNOWN_METRICS, f"{rule['alert']}: {used - KNOWN_METRICS}"


def test_every_yaml_file_under_ops_parses():
    files = sorted([*(OPS / "k8s").glob("*.y*ml"), *(OPS / "prometheus").glob("*.y*ml")])
    assert files
    for path in files:
        assert load_documents(path), path


# -- Grafana -------------------------------------------------------------------------------------------------------


def dashboard_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [p for p in panels if p.get("type") != "row"]


def test_the_dashboard_has_panels_with_prometheus_expressions(dashboard):
    assert 37 <= dashboard["schemaVersion"] <= 41
    panels = dashboard_panels(dashboard)
    assert len(panels) >= 12
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_the_dashboard_covers_the_agreed_views(dashboard):
    used = {m for p in dashboard_panels(dashboard) for t in p["targets"] for m in METRIC_NAME.findall(t["expr"])}
    assert KNOWN_METRICS - {"tlogsync_files_discovered_total"} <= used
    stat = [
        p
        for p in dashboard_panels(dashboard)
        if p["type"] == "stat" and any("oldest_unprocessed" in t["expr"] for t in p["targets"])
    ]
    assert stat and len(stat[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]) >= 2
    processed = [
        t["expr"] for p in dashboard_panels(dashboard) for t in p["targets"] if 'status="processed"' in t["expr"]
    ]
    # tlogsync_files is a gauge of totals: its throughput is a slope, not rate() (which reads drops as resets)
    assert processed and all("rate(" not in e and ("deriv(" in e or "delta(" in e) for e in processed)


def test_dashboard_expressions_use_only_exported_metrics(dashboard):
    expressions = [t["expr"] for p in dashboard_panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable["type"] == "query":
            expressions.append(query)
    for expr in expressions:
        used = set(METRIC_NAME.findall(expr))
        assert used, expr
        assert used <= KNOWN_METRICS, f"{expr}: {used - KNOWN_METRICS}"


def test_the_dashboard_has_a_retailer_variable_and_a_prometheus_input(dashboard):
    (data_source,) = dashboard["__inputs"]
    assert data_source["name"] == "DS_PROMETHEUS" and data_source["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    retailer = variables["retailer"]
    query = retailer["query"]["query"] if isinstance(retailer["query"], dict) else retailer["query"]
    assert query == "label_values(tlogsync_files, retailer)"
    assert retailer["datasource"]["uid"] == "${DS_PROMETHEUS}"


# -- the runbook ---------------------------------------------------------------------------------------------------


def test_the_runbook_has_a_section_for_every_alert_and_procedure(runbook_anchors):
    assert {a.lower() for a in REQUIRED_ALERTS} <= runbook_anchors
    for section in (
        "replay",
        "pause-a-retailer",
        "rotate-a-retailers-sftp-key",
        "add-or-rotate-a-host-key-in-known_hosts",
        "deploy-and-upgrade-workers-without-losing-tasks",
        "scale-for-a-sale-event",
        "where-each-table-lives",
    ):
        assert section in runbook_anchors, section


def test_every_link_inside_the_runbook_resolves(runbook_anchors):
    text = (OPS / "RUNBOOK.md").read_text()
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in runbook_anchors, target
    for target in re.findall(r"\]\(((?!#|https?:)[^)#]+)\)", text):
        assert (OPS / target).exists(), target


def test_the_runbook_only_uses_commands_the_cli_has():
    text = (OPS / "RUNBOOK.md").read_text()
    commands = set(re.findall(r"(?:^|[`\s])tl ([a-z-]+)", text, flags=re.MULTILINE))
    assert {"status", "dlq", "scan", "replay-file", "broker", "retailers"} <= commands
    assert commands <= cli_commands()
