"""Deployment artefacts, exercised without Docker or Kubernetes: the Dockerfile's invariants and
its HEALTHCHECK against a running wsgate, the installed layout (cmake --install into a staging
tree, as scripts/build-release.sh does for the image and the .deb) checked by
packaging/check-installed.sh, the systemd unit, the Compose example and the Kubernetes
manifests, each embedded wsgate config checked with the real binary."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request

import yaml

from harness import SOURCE_DIR, WSGATE_BIN, admin_address, run_wsgate

PACKAGED_CONFIG = os.path.join(SOURCE_DIR, "packaging", "wsgate.yaml")
UNIT = os.path.join(SOURCE_DIR, "packaging", "systemd", "wsgate.service")
COMPOSE_DIR = os.path.join(SOURCE_DIR, "examples", "compose")
KUBERNETES_DIR = os.path.join(SOURCE_DIR, "examples", "kubernetes")

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "min": 60}


def seconds(text):
    """'30s', '1500ms', '2m', '0', 90 -> seconds (wsgate and systemd spellings)."""
    match = re.fullmatch(r"(\d+)(ms|s|min|m|h|d)?", str(text).strip())
    assert match, f"not a duration: {text!r}"
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def longest_drain(config_path):
    """drain.grace + timeouts.drain + drain.spread + timeouts.close of a config file, taken
    from --print-config so that defaults count too."""
    result = run_wsgate("--print-config", "-c", config_path)
    assert result.returncode == 0, f"{config_path}:\n{result.stderr}"
    c = yaml.safe_load(result.stdout)
    return sum(seconds(v) for v in (c["drain"]["grace"], c["timeouts"]["drain"],
                                    c["drain"]["spread"], c["timeouts"]["close"]))


def packaged_config_with_token(directory):
    """packaging/wsgate.yaml with its token_file (systemd's credential copy of the token, which
    exists only under the unit) pointed at a stand-in token; returns its path."""
    token = os.path.join(str(directory), "admin-token")
    with open(token, "w") as f:
        f.write("stand-in-token\n")
    with open(PACKAGED_CONFIG) as f:
        text = f.read()
    path = os.path.join(str(directory), "packaged.yaml")
    with open(path, "w") as f:
        f.write(text.replace("/run/credentials/wsgate.service/admin-token", token))
    return path


def check_config(path):
    result = run_wsgate("--check", "-c", str(path))
    assert result.returncode == 0, f"{path} fails --check:\n{result.stderr}"


def port_of(address):
    return int(address.rpartition(":")[2])


# ------------------------------------------------------------------------------------------
# Dockerfile
# ------------------------------------------------------------------------------------------

def dockerfile_stages():
    """[(from_line, [(INSTRUCTION, arguments)])], continuation lines joined."""
    with open(os.path.join(SOURCE_DIR, "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append((args, []))
        else:
            stages[-1][1].append((instruction.upper(), args.strip()))
    return stages


def test_dockerfile_invariants():
    stages = dockerfile_stages()
    assert len(stages) == 2, "multi-stage: a build stage and a runtime stage"
    (build_from, build), (runtime_from, runtime) = stages
    assert build_from == "debian:bookworm AS build"
    assert runtime_from == "debian:bookworm-slim"
    # The build stage runs exactly the release script CI runs; the runtime stage installs the
    # .deb it made, so the image has the package's layout and Depends.
    assert ("RUN", "scripts/build-release.sh /build /build/staging") in build
    assert ("COPY", "--from=build /build/wsgate_*.deb /tmp/") in runtime
    assert any(i == "RUN" and "apt-get install" in a and "/tmp/wsgate_*.deb" in a
               for i, a in runtime)
    last = {i: a for i, a in runtime}
    uid = re.search(r"useradd [^&]*--uid (\d+)", last["RUN"]).group(1)
    assert last["USER"] == f"{uid}:{uid}" and int(uid) > 0, "numeric non-root user"
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert last["ENTRYPOINT"] == '["/usr/bin/wsgate"]'
    assert json.loads(last["CMD"]) == ["-c", "/etc/wsgate/wsgate.yaml"]
    assert "/healthz" in last["HEALTHCHECK"]
    # EXPOSE documents exactly the ports the shipped config listens on.
    with open(PACKAGED_CONFIG) as f:
        config = yaml.safe_load(f)
    listening = {port_of(l["address"]) for l in config["listeners"]}
    listening.add(port_of(config["admin"]["address"]))
    assert {int(p) for p in last["EXPOSE"].split()} == listening
    with open(os.path.join(SOURCE_DIR, ".dockerignore")) as f:
        ignored = f.read().split()
    assert "build/" in ignored and "build-*/" in ignored


def healthcheck_command(admin_port):
    """The image's HEALTHCHECK CMD, aimed at |admin_port| instead of 9901."""
    args = dict(i for i in dockerfile_stages()[-1][1])["HEALTHCHECK"]
    command = json.loads(args[args.index("CMD ") + 4:])
    return [part.replace("/127.0.0.1/9901", f"/127.0.0.1/{admin_port}") for part in command]


def test_install_tree_and_healthcheck(tmp_path, gates):
    """cmake --install into a staging tree; check it; run the installed binary with the
    installed config (ports moved to free ones) and probe it with the image's HEALTHCHECK."""
    build_dir = os.path.dirname(WSGATE_BIN)
    assert os.path.exists(os.path.join(build_dir, "CMakeCache.txt")), build_dir
    staging = tmp_path / "staging"
    subprocess.run(["cmake", "--install", build_dir, "--prefix", "/usr"], check=True,
                   env={**os.environ, "DESTDIR": str(staging)}, capture_output=True)
    check = subprocess.run(["bash", os.path.join(SOURCE_DIR, "packaging", "check-installed.sh"),
                            str(staging)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(" ok\n") >= 2, check.stdout

    installed = staging / "etc" / "wsgate" / "wsgate.yaml"
    with open(installed) as f:
        config = yaml.safe_load(f)
    config["listeners"][0]["address"] = "127.0.0.1:0"
    config["admin"]["address"] = "127.0.0.1:0"
    # systemd's credential copy of /etc/wsgate/admin.token, which exists only under the unit.
    token = tmp_path / "admin-token"
    token.write_text("test-token\n")
    config["admin"]["token_file"] = str(token)
    gates.binary = str(staging / "usr" / "bin" / "wsgate")
    gate = gates.start(yaml.safe_dump(config))
    probe = healthcheck_command(admin_address(gate)[1])
    result = subprocess.run(probe, capture_output=True, timeout=10)
    assert result.returncode == 0, result
    gate.terminate(timeout=60)
    result = subprocess.run(probe, capture_output=True, timeout=10)
    assert result.returncode != 0, "HEALTHCHECK passes with wsgate stopped"


# ------------------------------------------------------------------------------------------
# systemd
# ------------------------------------------------------------------------------------------

def unit_settings():
    """{key: [values]} of the unit's [Service] section."""
    settings = {}
    section = None
    with open(UNIT) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif line and not line.startswith("#") and section == "[Service]":
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit(tmp_path):
    s = {k: v[-1] for k, v in unit_settings().items()}
    reloads = unit_settings()["ExecReload"]
    assert reloads[-1] == "/bin/kill -HUP $MAINPID"
    assert s["ExecStart"] == "/usr/bin/wsgate -c /etc/wsgate/wsgate.yaml"
    assert s["KillSignal"] == "SIGTERM"
    assert s["LimitNOFILE"] == "1048576"
    # systemd must not SIGKILL wsgate while it drains with the shipped config.
    assert seconds(s["TimeoutStopSec"]) > longest_drain(packaged_config_with_token(tmp_path))
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "DynamicUser": "yes",
                       "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
                       "AmbientCapabilities": "CAP_NET_BIND_SERVICE"}.items():
        assert s.get(key) == value, f"{key}={s.get(key)}"
    # DynamicUser cannot read the root-only token file: systemd hands it over as a credential,
    # under the unit's name, where the packaged config reads it.
    assert "admin-token:/etc/wsgate/admin.token" in unit_settings()["LoadCredential"]
    assert os.path.basename(UNIT) == "wsgate.service"
    with open(PACKAGED_CONFIG) as f:
        assert yaml.safe_load(f)["admin"]["token_file"] == \
            "/run/credentials/wsgate.service/admin-token"
    # Two descriptors per connection: the shipped max_connections fits the descriptor limit.
    with open(PACKAGED_CONFIG) as f:
        assert 2 * yaml.safe_load(f)["limits"]["max_connections"] < int(s["LimitNOFILE"])
    # systemd-analyze verify runs in check-installed.sh (test_install_tree_and_healthcheck);
    # here: it does reject a broken unit, so its silence means something.
    if shutil.which("systemd-analyze"):
        broken = subprocess.run(
            ["bash", "-c", f"d=$(mktemp -d) && sed 's/^KillSignal=.*/KillSignal=SIGNOPE/' "
                           f"{shlex.quote(UNIT)} > $d/wsgate.service && "
                           "systemd-analyze verify $d/wsgate.service; rm -r $d"],
            capture_output=True, text=True, timeout=30)
        assert "SIGNOPE" in broken.stderr, broken


# ------------------------------------------------------------------------------------------
# Compose
# ------------------------------------------------------------------------------------------

def test_compose_example(tmp_path):
    with open(os.path.join(COMPOSE_DIR, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    assert set(services) == {"wsgate", "backend-1", "backend-2", "prometheus", "grafana"}

    def host_path(spec):
        return os.path.normpath(os.path.join(COMPOSE_DIR, spec.split(":")[0]))

    mounts = {}  # container path -> host path, every service
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = os.path.join(COMPOSE_DIR, build["context"])
            dockerfile = os.path.join(context, build["dockerfile"])
            assert os.path.isfile(dockerfile), dockerfile
            with open(dockerfile) as f:
                for copied in re.findall(r"^COPY (?!--from)(\S+)", f.read(), re.M):
                    assert copied == "." or os.path.exists(os.path.join(context, copied)), copied
        for volume in service.get("volumes", []):
            assert os.path.exists(host_path(volume)), f"{name}: {volume}"
            mounts[volume.split(":")[1]] = host_path(volume)

    # wsgate: its config passes --check, its backends are the two demo backends, and Compose
    # waits longer than its drain before SIGKILL.
    config_path = mounts["/etc/wsgate/wsgate.yaml"]
    # --check resolves backend names as start does; the service names resolve only inside
    # Compose's network, so check the file with them pointed at loopback.
    with open(config_path) as f:
        text = f.read()
    in_compose = tmp_path / "in-compose.yaml"
    in_compose.write_text(text.replace("backend-1:", "localhost:").replace("backend-2:",
                                                                           "localhost:"))
    check_config(in_compose)
    config_path = str(in_compose)
    config = yaml.safe_load(text)
    backends = {b["address"] for b in config["pools"][0]["backends"]}
    for name in ("backend-1", "backend-2"):
        port = services[name]["command"][services[name]["command"].index("--port") + 1]
        assert f"{name}:{port}" in backends
        assert "demo_backend.py" in open(os.path.join(COMPOSE_DIR, "backend.Dockerfile")).read()
    assert seconds(services["wsgate"]["stop_grace_period"]) > longest_drain(config_path)

    # Prometheus scrapes wsgate's admin listener with its token.
    prometheus_path = mounts["/etc/prometheus/prometheus.yml"]
    with open(prometheus_path) as f:
        prometheus = yaml.safe_load(f)
    job = prometheus["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == [f"wsgate:{port_of(config['admin']['address'])}"]
    assert job["authorization"]["credentials"] == config["admin"]["token"]
    # It sends Host: wsgate:9901, a name: the admin listener must accept it.
    assert "wsgate" in config["admin"]["allowed_hosts"]
    if shutil.which("promtool"):
        result = subprocess.run(["promtool", "check", "config", prometheus_path],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr

    # Grafana: provisioned Prometheus data source at the prometheus service, and a dashboard
    # provider whose folder holds the wsgate dashboard.
    provisioning = mounts["/etc/grafana/provisioning"]
    with open(os.path.join(provisioning, "datasources", "prometheus.yml")) as f:
        source = yaml.safe_load(f)["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    with open(os.path.join(provisioning, "dashboards", "wsgate.yml")) as f:
        provider = yaml.safe_load(f)["providers"][0]
    dashboards = [c for c in mounts if c.startswith(provider["options"]["path"] + "/")]
    assert dashboards, mounts
    with open(mounts[dashboards[0]]) as f:
        dashboard = json.load(f)
    assert any(v["type"] == "datasource" and v["query"] == "prometheus"
               for v in dashboard["templating"]["list"])


def test_compose_fleet_example(tmp_path):
    """examples/compose/fleet: three instances from one config, Redis with the password they
    are given, the demo auth hook answering the identity contract."""
    fleet_dir = os.path.join(COMPOSE_DIR, "fleet")
    with open(os.path.join(fleet_dir, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    gates = {name: s for name, s in services.items() if name.startswith("wsgate-")}
    assert set(services) == {"redis", "auth", "backend-1"} | set(gates) and len(gates) == 3
    for name, service in services.items():
        build = service["build"]
        context = os.path.join(fleet_dir, build["context"])
        with open(os.path.join(context, build["dockerfile"])) as f:
            dockerfile = f.read()
        for copied in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
            assert os.path.exists(os.path.join(context, copied)), f"{name}: {copied}"
    # One config for all: distinct host names (the instance names) and published ports.
    assert len({g["hostname"] for g in gates.values()}) == 3
    published = [p for g in gates.values() for p in g["ports"]]
    assert len(set(published)) == len(published)
    with open(os.path.join(fleet_dir, "redis.Dockerfile")) as f:
        password = re.search(r'"--requirepass", "([^"]+)"', f.read()).group(1)
    config_path = os.path.join(fleet_dir, "wsgate.yaml")
    with open(config_path) as f:
        text = f.read()
    config = yaml.safe_load(text)
    assert config["cluster"]["redis"].startswith(f"redis://:{password}@redis:")
    for gate in gates.values():
        assert any(v.endswith(":/etc/wsgate/wsgate.yaml:ro") for v in gate["volumes"])
    in_compose = tmp_path / "fleet.yaml"
    in_compose.write_text(text.replace("backend-1:9001", "localhost:9001"))
    check_config(in_compose)

    # The demo hook speaks the identity contract.
    hook = subprocess.Popen([sys.executable, os.path.join(fleet_dir, "auth_hook.py"),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
            match = re.search(rf"127\.0\.0\.1:(\d+)\s.*pid={hook.pid},", out)
            port = int(match.group(1)) if match else None
            if port is None:
                time.sleep(0.1)
        assert port, "auth_hook.py did not listen"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/ws-auth",
            headers={"X-Original-Uri": "/chat?user=alice&tags=room-1,room-2&ttl=60"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
            assert answer.headers["X-Wsgate-User"] == "alice"
            assert answer.headers["X-Wsgate-Tags"] == "room-1,room-2"
            assert int(answer.headers["X-Wsgate-Expires"]) > time.time()
    finally:
        hook.kill()
        hook.wait()


# ------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------

def kubernetes_objects():
    """{(kind, name): object} of every file in examples/kubernetes/."""
    objects = {}
    for name in sorted(os.listdir(KUBERNETES_DIR)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(KUBERNETES_DIR, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    key = (doc["kind"], doc["metadata"]["name"])
                    assert key not in objects, f"{name}: {key} twice"
                    objects[key] = doc
    return objects


def test_kubernetes_manifests(tmp_path):
    objects = kubernetes_objects()
    assert set(objects) == {("Deployment", "wsgate"), ("Service", "wsgate"),
                            ("PodDisruptionBudget", "wsgate"), ("ConfigMap", "wsgate-config"),
                            ("Deployment", "app-backend"), ("Service", "app-backend"),
                            ("PodDisruptionBudget", "app-backend")}
    deployment, service = objects["Deployment", "wsgate"], objects["Service", "wsgate"]
    pdb = objects["PodDisruptionBudget", "wsgate"]
    config_map = objects["ConfigMap", "wsgate-config"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]

    # The ConfigMap's config is the one mounted, and it passes --check.
    volume = next(v for v in pod["spec"]["volumes"]
                  if v["name"] == container["volumeMounts"][0]["name"])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert container["volumeMounts"][0]["mountPath"] == "/etc/wsgate"
    assert container["args"] == ["-c", "/etc/wsgate/wsgate.yaml"]
    config_path = tmp_path / "wsgate.yaml"
    config_path.write_text(config_map["data"]["wsgate.yaml"])
    # The backends' headless Service resolves only in the cluster: with require_at_start false
    # --check passes outside it with a warning, and the pool starts empty there.
    service_host = "app-backend.default.svc.cluster.local"
    assert service_host in config_map["data"]["wsgate.yaml"]
    outside = run_wsgate("--check", "-c", str(config_path))
    assert outside.returncode == 0 and f"cannot resolve {service_host}:" in outside.stderr \
        and "require_at_start is false" in outside.stderr, outside.stderr
    in_cluster = tmp_path / "in-cluster.yaml"
    in_cluster.write_text(config_map["data"]["wsgate.yaml"].replace(service_host, "localhost"))
    check_config(in_cluster)
    config = yaml.safe_load(config_map["data"]["wsgate.yaml"])

    # The kubelet must not SIGKILL a draining pod.
    assert pod["spec"]["terminationGracePeriodSeconds"] > longest_drain(str(in_cluster))
    # drain.grace gives the endpoints controller time to drop the pod after /readyz turns 503.
    probe = container["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"
    assert seconds(config["drain"]["grace"]) >= probe["periodSeconds"] * probe["failureThreshold"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ws"] == port_of(config["listeners"][0]["address"])
    assert ports["admin"] == port_of(config["admin"]["address"])
    assert probe["httpGet"]["port"] in ports
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    labels = pod["metadata"]["labels"]
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"],
                     deployment["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    # The image's numeric user (Dockerfile USER) lets runAsNonRoot verify it.
    user = dict(dockerfile_stages()[-1][1])["USER"]
    assert f"{pod['spec']['securityContext']['runAsUser']}:" \
           f"{pod['spec']['securityContext']['runAsGroup']}" == user
    assert container["securityContext"]["runAsNonRoot"] is True


def test_kubernetes_backends_through_a_headless_service():
    """The pool follows the backends' headless Service with discovery and moves sessions; the
    Service's name and port are the pool's backend address, and the backend pods outlive the
    time wsgate needs to notice they left."""
    objects = kubernetes_objects()
    config = yaml.safe_load(objects["ConfigMap", "wsgate-config"]["data"]["wsgate.yaml"])
    pool = next(p for p in config["pools"] if p["name"] == "app")
    assert pool["migrate"] is True
    assert pool["discovery"]["require_at_start"] is False
    assert pool["rebalance"]["enabled"] is True

    service, deployment = objects["Service", "app-backend"], objects["Deployment", "app-backend"]
    pdb = objects["PodDisruptionBudget", "app-backend"]
    assert service["spec"]["clusterIP"] == "None"
    assert not service["spec"].get("publishNotReadyAddresses", False)
    [entry] = pool["backends"]
    host, _, port = entry["address"].rpartition(":")
    namespace = service["metadata"].get("namespace", "default")
    assert host == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"

    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # A headless Service resolves to the pods themselves: the pool's port is the container's.
    assert int(port) in ports.values()
    assert all(ports[p["targetPort"]] == p["port"] for p in service["spec"]["ports"])
    labels = pod["metadata"]["labels"]
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"],
                     deployment["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    # Only ready pods are in the DNS answer: the probe decides when a pod joins the pool.
    assert container["readinessProbe"]["httpGet"]["port"] in ports
    # A rollout adds a pod before it takes one away, so moved sessions have somewhere to go,
    # and waits until wsgate can have seen the new pod (interval plus the 30s DNS cache).
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    interval = seconds(pool["discovery"]["interval"])
    assert deployment["spec"]["minReadySeconds"] >= interval + 30
    # A leaving pod serves until wsgate has seen it vanish (the interval plus the cluster DNS's
    # cache: 30s with kubeadm's Corefile) and moved its sessions (give them 15s).
    assert pod["spec"]["terminationGracePeriodSeconds"] >= interval + 30 + 15
