"""The Terraform code (infra/terraform/): formatting, and the cluster module's `terraform test`.

Offline: the cluster module declares no provider, so `terraform init` downloads nothing and its
tests are plan-only runs. Terraform gets a CLI configuration whose only provider source is a
local directory, so it never reaches a registry, and its working data goes to a temporary
directory. The AWS root module is planned against a mocked provider too, but that needs the
hashicorp/aws provider binary (for its schema): it runs only where a local provider mirror holds
one (TF_PROVIDER_MIRROR, /opt/tf-plugins or ~/.terraform.d/plugins) and is skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = ROOT / "infra" / "terraform"
CLUSTER = TERRAFORM_DIR / "modules" / "cluster"
AWS_PROVIDER = Path("registry.terraform.io", "hashicorp", "aws")
TIMEOUT = 120


def _terraform() -> str | None:
    return (
        os.environ.get("TERRAFORM")
        or shutil.which("terraform")
        or ("/usr/local/bin/terraform" if os.access("/usr/local/bin/terraform", os.X_OK) else None)
    )


TERRAFORM = _terraform()
pytestmark = pytest.mark.skipif(TERRAFORM is None, reason="no terraform binary (PATH, $TERRAFORM, /usr/local/bin)")


def _mirror() -> Path | None:
    candidates = [
        os.environ.get("TF_PROVIDER_MIRROR", ""),
        "/opt/tf-plugins",
        str(Path.home() / ".terraform.d/plugins"),
    ]
    for candidate in candidates:
        if candidate and any((Path(candidate) / AWS_PROVIDER).glob("5.*/*/terraform-provider-aws*")):
            return Path(candidate)
    return None


def _env(tmp_path: Path, mirror: Path | None = None) -> dict[str, str]:
    """Terraform's environment: no checkpoint call, no registry, data under tmp_path."""
    source = mirror or tmp_path / "no-providers"
    source.mkdir(exist_ok=True)
    config = tmp_path / "terraformrc"
    config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{source}"\n  }}\n}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update(
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
        TF_INPUT="0",
        TF_CLI_CONFIG_FILE=str(config),
        TF_DATA_DIR=str(tmp_path / "data"),
    )
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM is not None
    return subprocess.run(
        [TERRAFORM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"terraform {result.args[1:]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_fmt(tmp_path: Path) -> None:
    _ok(_run(["fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)], ROOT, _env(tmp_path)))


def test_cluster_module_declares_no_provider() -> None:
    text = "\n".join(p.read_text() for p in CLUSTER.glob("*.tf"))
    assert "required_providers" not in text
    assert 'provider "' not in text
    resources = [line for line in text.splitlines() if line.startswith(("resource ", "data "))]
    assert all('"terraform_data"' in line for line in resources), resources


def test_cluster_module(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _ok(_run(["init", "-backend=false", "-input=false", "-no-color"], CLUSTER, env))
    out = _ok(_run(["test", "-no-color"], CLUSTER, env))
    assert "0 failed" in out, out
    # Every test file ran, and nothing was written into the module.
    for test_file in sorted((CLUSTER / "tests").glob("*.tftest.hcl")):
        assert f"tests/{test_file.name}... pass" in out, out
    assert not (CLUSTER / ".terraform").exists()
    assert not (CLUSTER / ".terraform.lock.hcl").exists()
    assert not list(CLUSTER.glob("*.tfstate*"))


def test_aws_root_module(tmp_path: Path) -> None:
    mirror = _mirror()
    if mirror is None:
        pytest.skip("no hashicorp/aws 5.x provider in a local mirror (TF_PROVIDER_MIRROR, /opt/tf-plugins)")
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "terraform.tfvars"))
    env = _env(tmp_path, mirror)
    aws = copy / "aws"
    _ok(_run(["init", "-backend=false", "-input=false", "-no-color"], aws, env))
    _ok(_run(["validate", "-no-color"], aws, env))
    out = _ok(_run(["test", "-no-color"], aws, env))
    assert "0 failed" in out, out
