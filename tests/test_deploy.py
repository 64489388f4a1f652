"""The Docker deployment, checked without a Docker engine: the compose files validate offline with
`docker-compose config`, the images pin what the suite ran with and start real `rcmseg` commands, the API
image needs no torch, the GPU claiming of the worker image works, and the API and a worker started with
exactly the environment compose gives them answer /readyz against a real Redis."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version
from redis.connection import parse_url

from app.cli import build_parser
from app.settings import Settings
from tests.conftest import REPO, free_port
from tests.deploy_helpers import (
    COMPOSE_FILES,
    DEPLOY_DOC,
    DOCKERFILE_API,
    DOCKERFILE_WORKER,
    ENV_EXAMPLE,
    REQUIREMENTS_API,
    WORKER_ENTRYPOINT,
    ComposeRun,
    EnvEntry,
    arg_defaults,
    compose_configs,
    compose_duration_s,
    compose_variables,
    constraint_versions,
    dependency_closure,
    dockerignore_patterns,
    dockerignored,
    env_file_entries,
    env_values,
    explicit_pins,
    filled_env_example,
    final_stage,
    module_distributions,
    only,
    parse_dockerfile,
    pip_installs,
    pyproject_requirements,
    rcmseg_script,
    requirement_lines,
    yaml_snippets,
)

TEST_SECRETS = {
    "REDIS_PASSWORD": "0123456789abcdef0123456789abcdef",
    "RCMSEG_API_TOKENS": "deploy-test:deploy-test-token-0123456789",
}
BASE = ["docker-compose.yml"]
CPU = ["docker-compose.yml", "docker-compose.cpu.yml"]
PINNED = ["docker-compose.yml", "docker/compose.gpu-pinned.yml"]
SNIPPET_PREFIX = "# docker-compose.override.yml"
COMPOSE_WIRED = {"REDIS_URL", "RCMSEG_DATA_DIR", "RCMSEG_MODEL_ZOO"}
"""Settings that docker-compose.yml sets itself (where Redis, the data and the models are)."""
WORKER_SERVICES = ("worker", "worker-cpu", "worker-gpu0", "worker-gpu1")


def setting_env_name(field: str) -> str:
    return "REDIS_URL" if field == "redis_url" else f"RCMSEG_{field.upper()}"


# -- docker-compose config ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ComposeRun]:
    """Every `docker-compose config` run of this module, started together."""
    work = tmp_path_factory.mktemp("compose")
    env = filled_env_example(TEST_SECRETS)
    snippets = yaml_snippets(DEPLOY_DOC, SNIPPET_PREFIX)
    (work / "extra").mkdir()
    cases: dict[str, tuple[list[str], str]] = {
        "base": (BASE, env),
        "cpu": (CPU, env),
        "pinned": (PINNED, env),
    }
    for i, snippet in enumerate(snippets):
        (work / "extra" / f"snippet{i}.yml").write_text(snippet, encoding="utf-8")
    # All of them at once, as an administrator may combine them in one docker-compose.override.yml.
    cases["snippets"] = ([*BASE, *(f"snippet{i}.yml" for i in range(len(snippets)))], env)
    for key in TEST_SECRETS:
        cases[f"missing-{key}"] = (BASE, filled_env_example({**TEST_SECRETS, key: ""}))
    try:
        return compose_configs(cases, work)
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def base(compose: dict[str, ComposeRun]) -> dict[str, Any]:
    return compose["base"].config()


def test_compose_resolves_redis_api_gpu_worker_and_volumes(base: dict[str, Any]) -> None:
    services = base["services"]
    assert set(services) == {"redis", "api", "worker"}
    assert set(base["volumes"]) == {"redis-data", "data", "gpu-locks"}

    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == TEST_SECRETS["REDIS_PASSWORD"]
    assert "redis-data:/data:rw" in redis["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["environment"]["REDISCLI_AUTH"] == TEST_SECRETS["REDIS_PASSWORD"]  # the health check's login
    assert "ports" not in redis  # never published by default

    api = services["api"]
    assert api["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert api["ports"] == ["0.0.0.0:8000:8000/tcp"]
    assert api["environment"]["RCMSEG_API_TOKENS"] == TEST_SECRETS["RCMSEG_API_TOKENS"]
    assert "deploy" not in api

    worker = services["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    assert worker["restart"] == "unless-stopped"
    # Long enough to finish a job (seconds on a GPU) rather than to lose it at the default 10 s.
    assert compose_duration_s(worker["stop_grace_period"]) >= 300
    assert worker["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert worker["environment"]["RCMSEG_API_TOKENS"] == ""  # the tokens stay out of the workers
    lock_dir = env_values(final_stage(parse_dockerfile(DOCKERFILE_WORKER)))["WORKER_GPU_LOCK_DIR"]
    assert f"gpu-locks:{lock_dir}:rw" in worker["volumes"]


def test_api_and_workers_share_redis_data_and_models(compose: dict[str, ComposeRun]) -> None:
    configs = [compose[name].config() for name in ("base", "cpu", "pinned")]
    services = {name: svc for config in configs for name, svc in config["services"].items()}
    for name in ("api", *WORKER_SERVICES):
        svc, env = services[name], services[name]["environment"]
        url = parse_url(env["REDIS_URL"])
        assert (url["host"], url["port"], url["db"]) == ("redis", 6379, 0), name
        assert url["password"] == TEST_SECRETS["REDIS_PASSWORD"], name
        assert f"data:{env['RCMSEG_DATA_DIR']}:rw" in svc["volumes"], name
        zoo = [v for v in svc["volumes"] if v.endswith(f":{env['RCMSEG_MODEL_ZOO']}:ro")]
        assert zoo and zoo[0].endswith(f"/models/zoo:{env['RCMSEG_MODEL_ZOO']}:ro"), name
        assert svc["init"] is True and svc["restart"] == "unless-stopped", name
        assert svc["cap_drop"] == ["ALL"] and svc["security_opt"] == ["no-new-privileges:true"], name


def test_services_build_from_the_repository_root(compose: dict[str, ComposeRun]) -> None:
    for name in ("base", "cpu", "pinned"):
        for service, svc in compose[name].config()["services"].items():
            if service == "redis":
                continue
            assert Path(svc["build"]["context"]).name == name, service  # the folder of docker-compose.yml
            assert (REPO / svc["build"]["dockerfile"]).is_file(), service
            assert svc["image"].startswith("rcmseg-") and svc["image"].endswith(":latest"), service


def test_cpu_override_swaps_the_gpu_worker_for_a_cpu_one(compose: dict[str, ComposeRun]) -> None:
    services = compose["cpu"].config()["services"]
    assert services["worker"]["profiles"] == ["gpu"]  # left out of `up` unless asked for
    cpu = services["worker-cpu"]
    assert "deploy" not in cpu and "profiles" not in cpu
    assert cpu["environment"]["RCMSEG_DEVICE"] == "cpu"
    assert cpu["build"]["args"] == {"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
    assert_alike(services["worker"], cpu, ignore={"deploy", "profiles", "image", "build", "volumes"})
    assert cpu["volumes"] == [v for v in services["worker"]["volumes"] if not v.startswith("gpu-locks:")]


def test_pinned_gpus_override_reserves_one_device_id_per_worker(compose: dict[str, ComposeRun]) -> None:
    services = compose["pinned"].config()["services"]
    assert services["worker"]["profiles"] == ["gpu-claim"]
    for gpu, name in enumerate(("worker-gpu0", "worker-gpu1")):
        svc = services[name]
        assert svc["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "device_ids": [str(gpu)], "capabilities": ["gpu"]}
        ]
        assert svc["environment"]["CUDA_VISIBLE_DEVICES"] == "0"  # the one GPU the container sees
        assert_alike(services["worker"], svc, ignore={"deploy", "profiles", "volumes"})


def assert_alike(worker: dict[str, Any], other: dict[str, Any], *, ignore: set[str]) -> None:
    """Two worker services agree on everything but ``ignore`` and the device settings."""

    def without_device(env: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in env.items() if k not in ("RCMSEG_DEVICE", "CUDA_VISIBLE_DEVICES")}

    for key in (set(worker) | set(other)) - ignore:
        if key == "environment":
            assert without_device(worker[key]) == without_device(other[key])
        else:
            assert worker.get(key) == other.get(key), key


def test_compose_refuses_to_start_without_the_required_secrets(compose: dict[str, ComposeRun]) -> None:
    for key in TEST_SECRETS:
        run = compose[f"missing-{key}"]
        assert run.returncode != 0, key
        assert f"set {key} in .env" in run.stderr, run.stderr


def test_deploy_doc_snippets_validate(compose: dict[str, ComposeRun]) -> None:
    assert len(yaml_snippets(DEPLOY_DOC, SNIPPET_PREFIX)) >= 2, "the shared-storage and Redis overrides"
    config = compose["snippets"].config()
    assert config["volumes"]["data"]["driver_opts"]["type"] == "nfs"
    assert config["services"]["redis"]["ports"]


# -- .env.example ------------------------------------------------------------------------------------------


def test_env_example_documents_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = env_file_entries()
    documented = {setting_env_name(f) for f in Settings.model_fields}
    assert documented <= set(entries), f"undocumented: {sorted(documented - set(entries))}"
    unknown = {k for k in entries if k.startswith("RCMSEG_")} - documented
    assert not unknown, f"not settings of app/settings.py: {sorted(unknown)}"
    for required in TEST_SECRETS:
        assert entries[required] == EnvEntry("", commented=False), required  # to be filled in

    for key in list(os.environ):
        if key.startswith("RCMSEG_") or key == "REDIS_URL":
            monkeypatch.delenv(key)
    for key, value in TEST_SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    defaults = Settings()  # type: ignore[call-arg]
    shown = {
        key: entry.value
        for key, entry in entries.items()
        if key in documented and key not in COMPOSE_WIRED and entry.commented and entry.value
    }
    for key, value in shown.items():
        monkeypatch.setenv(key, value)
    with_shown = Settings()  # type: ignore[call-arg]
    for field in Settings.model_fields:
        if setting_env_name(field) in shown:
            assert getattr(with_shown, field) == getattr(defaults, field), f"{setting_env_name(field)}"


def test_env_example_documents_every_compose_and_entrypoint_variable() -> None:
    entries = env_file_entries()
    used = set().union(*(compose_variables(p.read_text(encoding="utf-8")) for p in COMPOSE_FILES))
    used |= set(re.findall(r"\$\{?(WORKER_[A-Z_]+)", WORKER_ENTRYPOINT.read_text(encoding="utf-8")))
    used -= {"WORKER_GPU_LOCK_DIR"}  # set by the image
    assert used <= set(entries), f"undocumented in .env.example: {sorted(used - set(entries))}"


# -- Images: pins, commands, contents ----------------------------------------------------------------------


def test_constraints_satisfy_pyproject_and_pin_every_dependency() -> None:
    pins, wanted = constraint_versions(), pyproject_requirements()
    assert set(wanted) <= set(pins), f"not pinned in constraints.txt: {sorted(set(wanted) - set(pins))}"
    for name, req in wanted.items():
        assert req.specifier.contains(Version(pins[name]), prereleases=True), f"{name}=={pins[name]} vs {req}"
    assert "pyvips-binary" in pins  # what pyvips[binary] brings, pinned too


def test_worker_image_pins_equal_the_constraints() -> None:
    instructions = parse_dockerfile(DOCKERFILE_WORKER)
    pins, constraints = explicit_pins(instructions), constraint_versions()
    assert {"torch", "torchvision", "timm", "pyvips"} <= set(pins)
    for name, version in pins.items():
        assert constraints.get(name) == version, f"Dockerfile.worker pins {name}=={version}"
    args = arg_defaults(instructions)
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-", args["CUDA_IMAGE"])
    wheels = re.search(r"/whl/cu(\d+)$", args["TORCH_INDEX_URL"])
    assert cuda and wheels and cuda.group(1) + cuda.group(2) == wheels.group(1), "CUDA of base and wheels"


def test_images_install_through_the_constraints() -> None:
    for dockerfile in (DOCKERFILE_API, DOCKERFILE_WORKER):
        instructions = parse_dockerfile(dockerfile)
        copied = " ".join(i.value for i in instructions if i.keyword == "COPY")
        assert "docker/constraints.txt" in copied, dockerfile.name
        for command in pip_installs(instructions):
            assert "--no-deps" in command or re.search(r"-c \S*constraints\.txt", command), command


def test_images_run_as_a_non_root_user_on_the_tested_python() -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    api, worker = parse_dockerfile(DOCKERFILE_API), parse_dockerfile(DOCKERFILE_WORKER)
    for instructions in (api, worker):
        assert only(final_stage(instructions), "USER").value not in ("root", "0")
    assert arg_defaults(api)["PYTHON_IMAGE"].startswith(f"python:{python}-")
    venv = [c for i in worker if i.keyword == "RUN" for c in i.commands() if " -m venv " in c]
    assert venv == [f"python{python} -m venv /opt/rcmseg"]


def test_api_image_has_the_healthcheck_and_pinned_viewer_assets() -> None:
    instructions = parse_dockerfile(DOCKERFILE_API)
    stage = final_stage(instructions)
    healthcheck = only(stage, "HEALTHCHECK").value
    assert "http://127.0.0.1:8000/healthz" in healthcheck
    assert only(stage, "EXPOSE").value == "8000"
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    osd = re.search(r"^OSD_VERSION := (\S+)$", makefile, re.M)
    assert osd and arg_defaults(instructions)["OPENSEADRAGON_VERSION"] == osd.group(1)
    npm = [i.value for i in instructions if i.keyword == "RUN" and "npm install" in i.value]
    assert npm and "openseadragon@${OPENSEADRAGON_VERSION}" in npm[0]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    copies = [i.value for i in instructions if i.keyword == "COPY" and "--from=viewer-assets" in i.value]
    assert copies and copies[0].split() == [
        "--from=viewer-assets",
        "/build/node_modules/openseadragon/build/openseadragon",
        f"/opt/rcmseg/lib/python{python}/site-packages/app/viewer/static/vendor/openseadragon",
    ]


def test_api_requirements_leave_torch_out() -> None:
    wanted = pyproject_requirements()
    reqs = requirement_lines(REQUIREMENTS_API)
    names = {canonicalize_name(r.name) for r in reqs}
    assert not names & {"torch", "torchvision", "timm"}
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in wanted and req.extras == wanted[name].extras, f"{req} is not a pyproject dependency"
        assert not req.specifier, f"{req}: versions belong in constraints.txt"
    assert "torch" not in dependency_closure(reqs)


API_IMPORTS = """
import json, sys
before = set(sys.modules)
import uvicorn
from app.cli import build_parser
build_parser()  # every sub-command module, as `rcmseg api` loads them
uvicorn.Config("app.api:create_app", factory=True).load()  # what `rcmseg api` imports, app built
print(json.dumps(sorted({name.split(".")[0] for name in set(sys.modules) - before})))
"""


def test_api_process_imports_nothing_beyond_its_requirements(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_") and k != "REDIS_URL"}
    env.update(
        REDIS_URL="redis://127.0.0.1:9/0",  # never contacted: building the app does not connect
        RCMSEG_API_TOKENS=TEST_SECRETS["RCMSEG_API_TOKENS"],
        RCMSEG_DATA_DIR=str(tmp_path / "data"),
        RCMSEG_MODEL_ZOO=str(tmp_path / "zoo"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", API_IMPORTS], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "torch" not in modules and "torchvision" not in modules and "timm" not in modules
    provided = dependency_closure(requirement_lines(REQUIREMENTS_API))
    owners = module_distributions()
    missing = {
        f"{module} ({', '.join(owners[module])})"
        for module in modules - set(sys.stdlib_module_names) - {"app", "worker", "models"}
        if module in owners and not set(owners[module]) & provided
    }
    unknown = {
        m for m in modules - set(sys.stdlib_module_names) - {"app", "worker", "models"} if m not in owners
    }
    assert not missing, f"imported by the API but not installed in its image: {sorted(missing)}"
    runtime = {"cython_runtime"}  # made by Cython extensions (shapely's) at import, not a distribution
    assert not {m for m in unknown - runtime if not m.startswith("_")}, (
        f"modules of no known distribution: {unknown}"
    )


def image_commands() -> dict[str, list[str]]:
    """Every command the images and compose services start, by where it is declared."""
    commands = {}
    for dockerfile in (DOCKERFILE_API, DOCKERFILE_WORKER):
        commands[dockerfile.name] = only(final_stage(parse_dockerfile(dockerfile)), "CMD").exec_form()
    return commands


def test_commands_are_real_rcmseg_commands(compose: dict[str, ComposeRun]) -> None:
    commands = image_commands()
    for name in ("base", "cpu", "pinned"):
        for service, svc in compose[name].config()["services"].items():
            assert "entrypoint" not in svc, service  # the image's entry point stays
            if service != "redis":
                commands[f"{name}:{service}"] = svc["command"]
    parser = build_parser()
    for where, argv in commands.items():
        assert argv[0] == "rcmseg", where
        parser.parse_args(argv[1:])  # exits (failing the test) on an unknown option or value
    script = rcmseg_script()
    subcommands = sorted({argv[1] for argv in commands.values()})
    assert set(subcommands) == {"api", "worker"}
    procs = {
        sub: subprocess.Popen([str(script), sub, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for sub in subcommands
    }
    for sub, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"rcmseg {sub} --help: {err.decode()}"
        assert f"usage: rcmseg {sub}" in out.decode()


def test_worker_entrypoint_hands_over_to_the_command() -> None:
    stage = final_stage(parse_dockerfile(DOCKERFILE_WORKER))
    entrypoint = only(stage, "ENTRYPOINT").exec_form()
    copies = [i.value.split() for i in stage if i.keyword == "COPY"]
    assert ["--chmod=0755", "docker/worker-entrypoint.sh", f"/usr/local/bin/{entrypoint[0]}"] in copies
    lines = [
        line.strip()
        for line in WORKER_ENTRYPOINT.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert lines[-1] == 'exec "$@"'
    assert only(parse_dockerfile(DOCKERFILE_API), "CMD").exec_form()[:2] == ["rcmseg", "api"]


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_images() -> None:
    patterns = dockerignore_patterns()
    left_out = [
        ".env",
        ".venv/bin/python",
        ".git/config",
        "data/uploads/x.tif",
        "models/zoo/phantom-b2/model.safetensors",
        "app/viewer/static/vendor/openseadragon/openseadragon.min.js",
        "app/__pycache__/settings.cpython-311.pyc",
        "tests/conftest.py",
        "build/npm/package.json",
    ]
    for path in left_out:
        assert dockerignored(path, patterns), path
    kept = [
        "pyproject.toml",
        "README.md",
        "app/api/__init__.py",
        "app/viewer/static/index.html",
        "worker/queue/worker_process.py",
        "models/card.py",
        "docker/constraints.txt",
        "docker/requirements-api.txt",
        "docker/worker-entrypoint.sh",
    ]
    for path in kept:
        assert not dockerignored(path, patterns), path


# -- GPU claiming of the worker entry point ----------------------------------------------------------------


@pytest.fixture()
def fake_gpus(tmp_path: Path) -> dict[str, str]:
    """An environment whose nvidia-smi lists two GPUs, with a private lock folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, GPU-aaaa\\n1, GPU-bbbb\\n'\n", encoding="utf-8")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "WORKER_GPUS")}
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        WORKER_GPU_LOCK_DIR=str(tmp_path / "locks"),
        WORKER_GPU_WAIT_S="0.1",
        RCMSEG_DEVICE="auto",
    )
    return env


def start_holder(env: dict[str, str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    """The entry point running a stand-in worker that reports its GPU and holds it until told to stop."""
    command = (
        f'echo "$CUDA_VISIBLE_DEVICES" > {folder}/{name}.gpu; '
        f"while [ ! -e {folder}/{name}.stop ]; do sleep 0.05; done"
    )
    log = (folder / f"{name}.log").open("wb")
    return subprocess.Popen(["sh", str(WORKER_ENTRYPOINT), "sh", "-c", command], env=env, stderr=log)


def wait_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    pytest.fail(f"{path.name} did not appear")


def test_each_worker_claims_a_free_gpu_and_waits_when_none_is_left(
    fake_gpus: dict[str, str], tmp_path: Path
) -> None:
    procs = {name: start_holder(fake_gpus, tmp_path, name) for name in ("a", "b")}
    try:
        assert {wait_file(tmp_path / "a.gpu"), wait_file(tmp_path / "b.gpu")} == {"GPU-aaaa", "GPU-bbbb"}
        procs["c"] = start_holder(fake_gpus, tmp_path, "c")
        assert "waiting for one to be freed" in wait_file(tmp_path / "c.log")
        assert not (tmp_path / "c.gpu").exists()  # both GPUs are held: c waits
        (tmp_path / "a.stop").touch()  # a's worker exits, and its GPU goes to c
        assert wait_file(tmp_path / "c.gpu") == (tmp_path / "a.gpu").read_text().strip()
    finally:
        for name in procs:
            (tmp_path / f"{name}.stop").touch()
        for proc in procs.values():
            proc.wait(timeout=20)
    assert procs["a"].returncode == 0


def run_entrypoint(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(WORKER_ENTRYPOINT), "sh", "-c", 'echo "${CUDA_VISIBLE_DEVICES-unset}"'],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_worker_entrypoint_respects_pinning_cpu_and_worker_gpus(fake_gpus: dict[str, str]) -> None:
    assert run_entrypoint(fake_gpus, WORKER_GPUS="1").stdout.strip() == "GPU-bbbb"
    assert run_entrypoint(fake_gpus, WORKER_GPUS="GPU-aaaa").stdout.strip() == "GPU-aaaa"
    assert run_entrypoint(fake_gpus, CUDA_VISIBLE_DEVICES="1").stdout.strip() == "1"
    assert run_entrypoint(fake_gpus, RCMSEG_DEVICE="cpu").stdout.strip() == "unset"
    wrong = run_entrypoint(fake_gpus, WORKER_GPUS="7")
    assert wrong.returncode == 2 and "WORKER_GPUS=7 names no GPU" in wrong.stderr
    no_fake = {**fake_gpus, "PATH": fake_gpus["PATH"].split(":", 1)[1]}
    if shutil.which("nvidia-smi", path=no_fake["PATH"]) is None:  # no GPU here: nothing to claim
        assert run_entrypoint(no_fake).stdout.strip() == "unset"


# -- The API and a worker with the environment of docker-compose.yml --------------------------------------


def container_env(dockerfile: Path, service: dict[str, Any]) -> dict[str, str]:
    """The environment a container of ``service`` starts with: the image's ENV, then compose's."""
    env = {k: v for k, v in env_values(final_stage(parse_dockerfile(dockerfile))).items() if k != "PATH"}
    env.update({k: "" if v is None else str(v) for k, v in service["environment"].items()})
    return env


def local_command(argv: list[str], *, port: int | None = None) -> list[str]:
    """A compose command run here: `rcmseg` from this environment, listening on loopback."""
    out = [sys.executable, "-m", "app.cli", *argv[1:]]
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in out:
            out[out.index(flag) + 1] = value
    return out


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture()
def started() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_api_and_worker_with_the_compose_environment_pass_readyz(
    base: dict[str, Any],
    redis_url: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    started: dict[str, subprocess.Popen[bytes]],
) -> None:
    """Only the Redis address (the test server has no password), the data folder, the model zoo and the
    GPU lock folder differ from what the containers get."""
    test_redis = urlsplit(redis_url)
    substitutes = {"RCMSEG_DATA_DIR": str(tmp_path / "data"), "RCMSEG_MODEL_ZOO": str(tiny_model_dir.parent)}
    port = free_port()
    for name, dockerfile in (("worker", DOCKERFILE_WORKER), ("api", DOCKERFILE_API)):
        service = base["services"][name]
        env = container_env(dockerfile, service)
        compose_redis = urlsplit(env["REDIS_URL"])
        env["REDIS_URL"] = urlunsplit(compose_redis._replace(netloc=test_redis.netloc))
        env.update(substitutes)
        if "WORKER_GPU_LOCK_DIR" in env:
            env["WORKER_GPU_LOCK_DIR"] = str(tmp_path / "gpu-locks")
        env.update(PATH=os.environ["PATH"], HOME=str(tmp_path))
        command = local_command(service["command"], port=port)
        if name == "worker":  # through the image's entry point, as in the container
            command = ["sh", str(WORKER_ENTRYPOINT), *command]
        log = (tmp_path / f"{name}.log").open("wb")
        started[name] = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=log)

    deadline = time.monotonic() + 120
    status, body = 0, None
    while time.monotonic() < deadline:
        for name, proc in started.items():
            if proc.poll() is not None:
                log = (tmp_path / f"{name}.log").read_text()
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log}")
        try:
            status, body = get(f"http://127.0.0.1:{port}/readyz")
        except (OSError, ValueError):
            status = 0
        if status == 200:
            break
        time.sleep(0.3)
    assert status == 200, f"/readyz: {status} {body}\n{(tmp_path / 'worker.log').read_text()[-3000:]}"
    assert body["ready"] is True and body["redis"] is True and body["workers"] >= 1
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200


def test_readme_section_is_complete() -> None:
    readme = DEPLOY_DOC.read_text(encoding="utf-8")
    assert "\n## Deploy on a GPU server\n" in readme
    text = readme.split("\n## Deploy on a GPU server\n", 1)[1].split("\n## ", 1)[0]
    headings = [
        "Prerequisites",
        "GPUs and scaling",
        "A machine without a GPU",
        "Several hosts",
        "Backup of the Redis volume",
        "Upgrade",
    ]
    for heading in headings:
        assert f"### {heading}" in text, heading
    assert "NVIDIA Container Toolkit" in text
    assert ENV_EXAMPLE.name in text and "docker-compose.cpu.yml" in text and "compose.gpu-pinned.yml" in text
