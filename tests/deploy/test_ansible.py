"""Offline checks of infra/ansible: lint, syntax, and the roles run for real against local hosts.

The inventory has five hosts (frontend, Milvus node, two CPU workers, one GPU worker), all with
`ansible_connection: local` and each with its own `idios_root` (a copy of the repository's docker/ and
traefik/ files in a temporary directory), so every file the roles write lands there. The docker CLI is
a recording stub: `docker --context C compose ...` is logged and answers like compose does when
nothing changes; `docker context ...` goes to the real docker CLI when there is one (with DOCKER_CONFIG
in the temporary directory), else the stub keeps the contexts itself. The secrets come from an
ansible-vault encrypted group_vars/all/vault.yml. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "infra" / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOKS = sorted((ANSIBLE / "playbooks").glob("*.yml"))
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "ansible"

pytestmark = pytest.mark.skipif(
    not (BIN / "ansible-playbook").exists(), reason="ansible is not installed in this venv (the dev extra)"
)

SECRETS = {
    "vault_rabbitmq_user": "idios",
    "vault_rabbitmq_password": "rabbit-pw-0123456789abcdef",
    "vault_milvus_root_password": "milvus-pw-0123456789abcdef",
    "vault_minio_root_user": "idios-minio",
    "vault_minio_root_password": "minio-pw-0123456789",
    "vault_idios_api_keys": ["write:" + "a" * 64, "read:" + "b" * 64],
    "vault_admin_users": ["admin:$2y$05$abcdefghijklmnopqrstuu5vMq5Vg1xZ9Yl0F2qk7Jm1pXw3b4QeK"],
    "vault_acme_email": "ops@idios.test",
    "vault_backup_api_key": "backup-read-key",
}
VAULT_PASSWORD = "test-vault-password"

# name -> (group, ansible_host, private_address, docker_context)
HOSTS = {
    "front": ("frontend", "192.0.2.10", "10.9.0.10", "idios-frontend"),
    "mil": ("milvus", "192.0.2.11", "10.9.0.11", "idios-milvus"),
    "w1": ("workers", "192.0.2.21", None, "idios-worker-1"),
    "w2": ("workers", "192.0.2.22", None, "idios-worker-2"),
    "g1": ("gpu_workers", "192.0.2.31", None, "idios-gpu-worker-1"),
}
STACK_OF = {"front": "frontend", "mil": "milvus", "w1": "worker", "w2": "worker", "g1": "worker"}

STUB_DOCKER = """#!{python}
import json, os, pathlib, sys

args = sys.argv[1:]
state = pathlib.Path(os.environ["DOCKER_CONFIG"])
state.mkdir(parents=True, exist_ok=True)
if len(args) > 2 and args[0] == "--context" and args[2] == "compose":
    with open(state / "compose.jsonl", "a") as log:
        log.write(json.dumps({{"cwd": os.getcwd(), "argv": args}}) + "\\n")
    print(" Container stub-worker-1  Running", file=sys.stderr)
    sys.exit(0)
if args[:1] == ["context"]:
    with open(state / "context.jsonl", "a") as log:
        log.write(json.dumps(args) + "\\n")
real = {real!r}
if real:
    os.execv(real, [real, *args])
store = state / "contexts.json"
contexts = json.loads(store.read_text()) if store.exists() else {{}}
if args[:2] == ["context", "inspect"]:
    name = args[2]
    if name not in contexts:
        print("[]")
        print(f"context {{name!r}}: context not found", file=sys.stderr)
        sys.exit(1)
    print(json.dumps([{{"Name": name, "Endpoints": {{"docker": {{"Host": contexts[name]}}}}}}]))
    sys.exit(0)
if args[:2] in (["context", "create"], ["context", "update"]):
    name, host = args[2], args[args.index("--docker") + 1].removeprefix("host=")
    if (args[1] == "create") == (name in contexts):
        print(f"context {{name}}: wrong state for {{args[1]}}", file=sys.stderr)
        sys.exit(1)
    contexts[name] = host
    store.write_text(json.dumps(contexts))
    print(name)
    sys.exit(0)
print("stub docker: unexpected " + " ".join(args), file=sys.stderr)
sys.exit(2)
"""

STUB_IDIOS = """#!{python}
import json, os, pathlib, sys

with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "key": os.environ.get("IDIOS_API_KEY")}}) + "\\n")
out = pathlib.Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
(out / (sys.argv[2] + "-000000.jsonl")).write_text("")
"""

RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)='([^'\n]*)'$")


def ansible_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("ANSIBLE_"):
            del env[name]
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"),
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_REMOTE_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run(args: list[str], env: dict[str, str], cwd: Path = ANSIBLE, timeout: int = 240) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{output[-6000:]}"
    return output


def recap(output: str) -> dict[str, tuple[int, int, int, int]]:
    found = {m[1]: (int(m[2]), int(m[3]), int(m[4]), int(m[5])) for m in RECAP.finditer(output)}
    assert found, f"no PLAY RECAP in:\n{output[-3000:]}"
    return found


def parse_env(path: Path) -> dict[str, str]:
    """docker/<stack>.env as compose reads it; every assignment must be KEY='literal'."""
    values = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = ENV_LINE.match(line)
        assert match, f"{path.name}: not a KEY='value' line: {line!r}"
        values[match[1]] = match[2]
    return values


def example_keys(stack: str) -> set[str]:
    text = (REPO / "docker" / f"{stack}.env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.M))


def required_keys(stack: str) -> set[str]:
    text = (REPO / "docker" / f"docker-compose.{stack}.yml").read_text()
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text))


def jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Deployment:
    """A temporary control node: inventory, vault, per-host roots, stub docker."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = ansible_env(tmp)
        self.docker_config = tmp / "docker-config"
        self.roots = {name: tmp / "roots" / name for name in HOSTS}
        for root in self.roots.values():
            shutil.copytree(REPO / "docker", root / "docker", ignore=shutil.ignore_patterns("*.env"))
            shutil.copytree(REPO / "traefik", root / "traefik")
        stub = tmp / "bin" / "docker"
        stub.parent.mkdir()
        stub.write_text(STUB_DOCKER.format(python=sys.executable, real=shutil.which("docker") or ""))
        stub.chmod(0o755)
        self.docker = stub
        self.inventory = self.write_inventory()

    def write_inventory(self) -> Path:
        inv = self.tmp / "inventory"
        group_vars = inv / "group_vars" / "all"
        group_vars.mkdir(parents=True)
        # The repository's settings, the test's vault, and the test's control-node overrides
        # (a later file of group_vars/all/ wins).
        shutil.copy(ANSIBLE / "group_vars" / "all" / "main.yml", group_vars / "main.yml")
        (group_vars / "vault.yml").write_text(json.dumps(SECRETS, indent=2))
        password = self.tmp / "vault-password"
        password.write_text(VAULT_PASSWORD)
        self.vault_args = ["--vault-password-file", str(password)]
        run([str(BIN / "ansible-vault"), "encrypt", str(group_vars / "vault.yml"), *self.vault_args], self.env)
        overrides = {
            "idios_docker_cli": str(self.docker),
            "idios_docker_config": str(self.docker_config),
            "idios_manage_hosts": False,
        }
        (group_vars / "zz_test.yml").write_text(json.dumps(overrides))
        children: dict = {}
        for name, (group, address, private, context) in HOSTS.items():
            host = {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "ansible_host": address,
                "docker_context": context,
                "idios_root": str(self.roots[name]),
            }
            if private:
                host["private_address"] = private
            children.setdefault(group, {"hosts": {}})["hosts"][name] = host
        children["worker_nodes"] = {"children": {"workers": {}, "gpu_workers": {}}}
        inventory = {"all": {"vars": {"ansible_user": "deploy", "idios_domain": "idios.test"}, "children": children}}
        (inv / "hosts.yml").write_text(json.dumps(inventory, indent=2))
        return inv / "hosts.yml"

    def playbook(self, name: str, *extra: str) -> str:
        args = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), *self.vault_args, f"playbooks/{name}", *extra]
        return run(args, self.env)

    def compose_calls(self) -> list[dict]:
        return jsonl(self.docker_config / "compose.jsonl")

    def context_calls(self) -> list[list[str]]:
        return jsonl(self.docker_config / "context.jsonl")

    def context_host(self, name: str) -> str:
        proc = subprocess.run(
            [str(self.docker), "context", "inspect", name],
            env={**self.env, "DOCKER_CONFIG": str(self.docker_config)},
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(proc.stdout)[0]["Endpoints"]["docker"]["Host"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """site.yml in check mode, then for real twice; what each run printed and called."""
    dep = Deployment(tmp_path_factory.mktemp("ansible"))
    check = dep.playbook("site.yml", "--check")
    after_check = {
        "env_files": sorted(str(p) for p in (dep.tmp / "roots").glob("*/docker/*.env")),
        "compose": dep.compose_calls(),
        "contexts": [c for c in dep.context_calls() if c[1] != "inspect"],
    }
    # A context that exists but points elsewhere must be updated, not recreated.
    subprocess.run(
        [str(dep.docker), "context", "create", "idios-milvus", "--docker", "host=ssh://old@192.0.2.99"],
        env={**dep.env, "DOCKER_CONFIG": str(dep.docker_config)},
        check=True,
        capture_output=True,
    )
    (dep.docker_config / "context.jsonl").unlink()
    first = dep.playbook("site.yml")
    first_contexts = [c for c in dep.context_calls() if c[1] != "inspect"]
    first_compose = dep.compose_calls()
    second = dep.playbook("site.yml")
    return {
        "dep": dep,
        "check": check,
        "after_check": after_check,
        "first": first,
        "first_contexts": first_contexts,
        "first_compose": first_compose,
        "second": second,
        "second_contexts": [c for c in dep.context_calls() if c[1] != "inspect"][len(first_contexts) :],
        "second_compose": dep.compose_calls()[len(first_compose) :],
    }


def test_ansible_lint_production() -> None:
    env = ansible_env(Path(os.environ.get("TMPDIR", "/tmp")))
    del env["ANSIBLE_HOME"], env["ANSIBLE_LOCAL_TEMP"], env["ANSIBLE_REMOTE_TEMP"]
    output = run([str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor", "."], env)
    assert "Profile 'production' was required, and it passed" in output, output[-3000:]


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_syntax_check(playbook: Path, tmp_path: Path) -> None:
    run(
        [str(BIN / "ansible-playbook"), "-i", "inventory/example.yml", "--syntax-check", str(playbook)],
        ansible_env(tmp_path),
    )


def test_expected_files() -> None:
    assert {p.name for p in PLAYBOOKS} == {"site.yml", "scale-workers.yml", "backup.yml"}
    rendering = ("docker", "docker_context", "milvus", "api", "worker")
    for role in (*rendering, "traefik", "rabbitmq", "compose"):
        base = ANSIBLE / "roles" / role
        for part in ("defaults/main.yml", "tasks/main.yml", "handlers/main.yml", "meta/main.yml"):
            assert (base / part).is_file(), f"{role}/{part}"
        assert (base / "meta" / "argument_specs.yml").is_file(), role
        assert (base / "README.md").is_file(), role
        assert role not in rendering or any((base / "templates").iterdir()), role
    vault = (ANSIBLE / "group_vars" / "all" / "vault.yml.example").read_text()
    for name in SECRETS:
        assert f"\n{name}:" in vault, name
    assert "ansible-vault encrypt" in vault


def test_check_mode_writes_nothing(deployment: dict) -> None:
    """--check on bare control node: no env file, no context, no compose command; the commands shown."""
    assert deployment["after_check"] == {"env_files": [], "compose": [], "contexts": []}
    for host, (_, failed) in {h: (r[1], r[3]) for h, r in recap(deployment["check"]).items()}.items():
        assert failed == 0, host
    shown = " ".join(deployment["check"].split())  # the callback folds long lines
    assert "--context idios-frontend compose -p idios-frontend" in shown
    assert "--profile gpu up -d --build --remove-orphans --scale worker=0 --scale worker-gpu=1" in shown


def test_first_run_changes_second_does_not(deployment: dict) -> None:
    first, second = recap(deployment["first"]), recap(deployment["second"])
    for host in HOSTS:
        assert first[host][1] > 0 and first[host][3] == 0, (host, first[host])
        assert second[host][1] == 0 and second[host][3] == 0, (host, second[host])
    assert all(r[2] == 0 and r[3] == 0 for r in second.values())


def test_docker_contexts(deployment: dict) -> None:
    dep = deployment["dep"]
    for name, (_, address, _, context) in HOSTS.items():
        assert dep.context_host(context) == f"ssh://deploy@{address}", name
    expected = sorted(
        [
            ["context", "create", c, "--docker", f"host=ssh://deploy@{a}"]
            for _, a, _, c in HOSTS.values()
            if c != "idios-milvus"
        ]
        + [["context", "update", "idios-milvus", "--docker", "host=ssh://deploy@192.0.2.11"]]
    )
    assert sorted(deployment["first_contexts"]) == expected
    assert deployment["second_contexts"] == []


def test_compose_commands(deployment: dict) -> None:
    dep = deployment["dep"]

    def expected(name: str) -> list[str]:
        root, stack, context = dep.roots[name], STACK_OF[name], HOSTS[name][3]
        project = "idios-worker" if stack == "worker" else f"idios-{stack}"
        argv = ["--context", context, "compose", "-p", project, "-f", f"{root}/docker/docker-compose.{stack}.yml"]
        argv += ["--env-file", f"{root}/docker/{stack}.env"]
        if name == "g1":
            gpu = ["--profile", "gpu", "up", "-d", "--build", "--remove-orphans"]
            return [*argv, *gpu, "--scale", "worker=0", "--scale", "worker-gpu=1"]
        argv += ["up", "-d", "--build", "--remove-orphans"]
        return [*argv, "--scale", "worker=1"] if stack == "worker" else argv

    for calls in (deployment["first_compose"], deployment["second_compose"]):
        by_context = {c["argv"][1]: c for c in calls}
        assert len(calls) == len(HOSTS) == len(by_context)
        for name in HOSTS:
            call = by_context[HOSTS[name][3]]
            assert call["argv"] == expected(name), name
            assert call["cwd"] == str(dep.roots[name])


def test_env_files(deployment: dict) -> None:
    import testinfra

    local = testinfra.get_host("local://")
    dep = deployment["dep"]
    for name, root in dep.roots.items():
        stack = STACK_OF[name]
        present = {p.name for p in (root / "docker").glob("*.env")}
        assert present == {f"{stack}.env"}, name
        env_file = local.file(str(root / "docker" / f"{stack}.env"))
        assert env_file.is_file and env_file.mode == 0o600, name
        values = parse_env(root / "docker" / f"{stack}.env")
        missing = (example_keys(stack) | required_keys(stack)) - set(values)
        assert not missing, f"{name}: {stack}.env lacks {sorted(missing)}"
        assert all(values[k] for k in required_keys(stack)), name

    front = parse_env(dep.roots["front"] / "docker" / "frontend.env")
    assert front["IDIOS_DOMAIN"] == "idios.test"
    assert front["ACME_EMAIL"] == SECRETS["vault_acme_email"]
    assert front["ADMIN_USERS"] == SECRETS["vault_admin_users"][0]
    assert front["IDIOS_API_KEYS"] == ",".join(SECRETS["vault_idios_api_keys"])
    assert front["RABBITMQ_USER"] == SECRETS["vault_rabbitmq_user"]
    assert front["RABBITMQ_PASSWORD"] == SECRETS["vault_rabbitmq_password"]
    assert front["RABBITMQ_BIND_ADDRESS"] == "10.9.0.10"
    assert front["MILVUS_ADDRESS"] == "10.9.0.11:19530"
    assert (front["IDIOS_RATE_AVERAGE"], front["IDIOS_RATE_BURST"]) == ("50", "100")

    milvus = parse_env(dep.roots["mil"] / "docker" / "milvus.env")
    assert milvus == {
        "MILVUS_ROOT_PASSWORD": SECRETS["vault_milvus_root_password"],
        "MINIO_ROOT_USER": SECRETS["vault_minio_root_user"],
        "MINIO_ROOT_PASSWORD": SECRETS["vault_minio_root_password"],
        "MILVUS_BIND_ADDRESS": "10.9.0.11",
    }

    worker_files = {dep.roots[n].joinpath("docker", "worker.env").read_text() for n in ("w1", "w2", "g1")}
    assert len(worker_files) == 1, "every worker host must get the same worker.env"
    worker = parse_env(dep.roots["w1"] / "docker" / "worker.env")
    user, password = SECRETS["vault_rabbitmq_user"], SECRETS["vault_rabbitmq_password"]
    assert worker["IDIOS_AMQP_URL"] == f"amqp://{user}:{password}@10.9.0.10:5672/"
    assert worker["IDIOS_MILVUS_URI"] == "http://10.9.0.11:19530"
    assert worker["IDIOS_MILVUS_TOKEN"] == "root:" + SECRETS["vault_milvus_root_password"]
    assert worker["IDIOS_MODELS"] == "vit_b32,phash"
    assert worker["PRELOAD_MODELS"] == "vit_b32"


def test_env_files_exact(deployment: dict) -> None:
    """The env files are byte for byte those of tests/data/ansible/ (the test inventory and vault):
    a change in what the roles render, comments and blank lines included, shows here."""
    dep = deployment["dep"]
    for name, root in dep.roots.items():
        stack = STACK_OF[name]
        expected = (GOLDEN / f"{stack}.env").read_text()
        assert (root / "docker" / f"{stack}.env").read_text() == expected, name


def test_api_role_alone(tmp_path: Path) -> None:
    """The api role's inputs are its variables and the group settings, not facts of the roles before it:
    a play of the api role alone writes the same docker/frontend.env."""
    dep = Deployment(tmp_path)
    playbook = tmp_path / "api-only.yml"
    playbook.write_text(
        json.dumps([{"name": "api only", "hosts": "frontend", "gather_facts": False, "roles": ["api"]}])
    )
    args = [str(BIN / "ansible-playbook"), "-i", str(dep.inventory), *dep.vault_args, str(playbook)]
    output = run([*args, "-e", "idios_docker_apply=false"], dep.env)
    assert recap(output)["front"][3] == 0
    written = dep.roots["front"] / "docker" / "frontend.env"
    assert written.read_text() == (GOLDEN / "frontend.env").read_text()
    assert "--context idios-frontend compose -p idios-frontend" in " ".join(output.split())
    assert dep.compose_calls() == []


def test_traefik_config_not_forked() -> None:
    """The roles render env values only; Traefik's and RabbitMQ's configuration stay the repository's."""
    names = {p.name for p in (ANSIBLE / "roles").glob("*/templates/*")}
    assert not {"traefik.yml", "rabbitmq.conf", "milvus.yaml"} & names
    assert not list(ANSIBLE.rglob("docker-compose*.yml"))


@pytest.mark.parametrize(
    ("extra", "replicas"),
    [
        (["-e", "workers=5"], {"w1": 2, "w2": 2, "g1": 1}),
        (["-e", "workers=1"], {"w1": 1, "w2": 0, "g1": 0}),
        (["-e", "workers=3", "-e", "per_host=true"], {"w1": 3, "w2": 3, "g1": 3}),
    ],
    ids=["total-5", "total-1", "per-host-3"],
)
def test_scale_workers(deployment: dict, extra: list[str], replicas: dict[str, int]) -> None:
    dep = deployment["dep"]
    before = len(dep.compose_calls())
    output = dep.playbook("scale-workers.yml", *extra)
    assert all(r[1] == 0 and r[3] == 0 for r in recap(output).values())
    calls = {c["argv"][1]: c["argv"] for c in dep.compose_calls()[before:]}
    assert set(calls) == {HOSTS[n][3] for n in replicas}
    for name, count in replicas.items():
        argv = calls[HOSTS[name][3]]
        if name == "g1":
            scale = ["--scale", "worker=0", "--scale", f"worker-gpu={count}"]
            assert argv[9:] == ["--profile", "gpu", "up", "-d", "--no-recreate", *scale]
        else:
            assert argv[9:] == ["up", "-d", "--no-recreate", "--scale", f"worker={count}"], name


def test_scale_workers_needs_a_count(deployment: dict) -> None:
    dep = deployment["dep"]
    args = [str(BIN / "ansible-playbook"), "-i", str(dep.inventory), *dep.vault_args, "playbooks/scale-workers.yml"]
    proc = subprocess.run(args, cwd=ANSIBLE, env=dep.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "-e workers=N" in proc.stdout + proc.stderr


def test_backup(deployment: dict) -> None:
    dep = deployment["dep"]
    log = dep.tmp / "idios-calls.jsonl"
    cli = dep.tmp / "bin" / "idios"
    cli.write_text(STUB_IDIOS.format(python=sys.executable, log=str(log)))
    cli.chmod(0o755)
    root = dep.tmp / "backups"
    dep.playbook(
        "backup.yml",
        "-e",
        json.dumps({"backup_root": str(root), "backup_idios_cli": str(cli), "backup_models": ["vit_b32", "phash"]}),
    )
    (dated,) = list(root.iterdir())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d{6}Z", dated.name)
    assert oct(dated.stat().st_mode & 0o777) == oct(0o700)
    calls = jsonl(log)
    assert [c["argv"] for c in calls] == [
        ["dump", model, str(dated / model), "--api", "https://idios.test", "--batch", "1000"]
        for model in ("vit_b32", "phash")
    ]
    assert {c["key"] for c in calls} == {SECRETS["vault_backup_api_key"]}
    assert (dated / "phash" / "phash-000000.jsonl").exists()


def test_terraform_inventory(tmp_path: Path) -> None:
    """inventory/terraform.py turns the cluster module's `inventory` output into Ansible's groups."""
    output = {
        "all": {
            "vars": {
                "ansible_user": "deploy",
                "idios_domain": "idios.test",
                "idios_milvus_uri": "http://10.0.0.11:19530",
            },
            "children": {
                "frontend": {
                    "hosts": {"c-frontend": {"ansible_host": "198.51.100.1", "docker_context": "idios-frontend"}}
                },
                "milvus": {
                    "hosts": {"c-milvus": {"ansible_host": "198.51.100.2", "docker_context": "idios-milvus"}},
                    "vars": {"data_disk_gb": 100},
                },
                "workers": {
                    "hosts": {"c-worker-1": {"ansible_host": "198.51.100.3", "docker_context": "idios-worker-1"}}
                },
                "gpu_workers": {"hosts": {}},
                "worker_nodes": {"children": {"workers": {}, "gpu_workers": {}}},
            },
        }
    }
    saved = tmp_path / "inventory.json"
    saved.write_text(json.dumps(output))
    env = {**ansible_env(tmp_path), "IDIOS_TF_OUTPUT_JSON": str(saved)}
    listed = json.loads(
        subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", "inventory/terraform.py", "--list"],
            cwd=ANSIBLE,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert listed["frontend"]["hosts"] == ["c-frontend"]
    assert listed["workers"]["hosts"] == ["c-worker-1"]
    assert set(listed["worker_nodes"]["children"]) == {"workers", "gpu_workers"}
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars["c-worker-1"]["docker_context"] == "idios-worker-1"
    assert hostvars["c-milvus"]["data_disk_gb"] == 100
    assert hostvars["c-frontend"]["idios_domain"] == "idios.test"
