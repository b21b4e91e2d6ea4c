#!/usr/bin/env python3
"""Dynamic inventory from Terraform's `inventory` output (infra/terraform/modules/cluster).

The cluster module outputs the inventory as an object (`inventory`) and as YAML (`inventory_yaml`):
groups frontend, milvus, workers, gpu_workers, worker_nodes; host vars ansible_host, ansible_user,
docker_context (idios-frontend, idios-milvus, idios-worker-<n>, idios-gpu-worker-<n>), private_address.

Either write it to a static file once (no script needed):

    terraform -chdir=infra/terraform/aws output -raw inventory_yaml > infra/ansible/inventory/terraform.yml
    ansible-playbook -i inventory/terraform.yml playbooks/site.yml

or use this script, which runs `terraform output -json inventory` in IDIOS_TF_DIR (default
infra/terraform/aws) on every ansible run:

    ansible-playbook -i inventory/terraform.py playbooks/site.yml

IDIOS_TF_OUTPUT_JSON=<file> reads a saved `terraform output -json inventory` instead (no terraform).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def terraform_inventory() -> dict:
    saved = os.environ.get("IDIOS_TF_OUTPUT_JSON")
    if saved:
        return json.loads(Path(saved).read_text())
    tf_dir = os.environ.get("IDIOS_TF_DIR", str(REPO / "infra" / "terraform" / "aws"))
    out = subprocess.run(
        ["terraform", f"-chdir={tf_dir}", "output", "-json", "inventory"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def to_ansible(inventory: dict) -> dict:
    """The YAML inventory structure -> Ansible's dynamic inventory JSON (--list)."""
    result: dict = {"_meta": {"hostvars": {}}}

    def walk(name: str, group: dict | None) -> None:
        group = group or {}
        entry = result.setdefault(name, {"hosts": [], "vars": {}, "children": []})
        for host, hostvars in (group.get("hosts") or {}).items():
            entry["hosts"].append(host)
            result["_meta"]["hostvars"].setdefault(host, {}).update(hostvars or {})
        entry["vars"].update(group.get("vars") or {})
        for child, sub in (group.get("children") or {}).items():
            if child not in entry["children"]:
                entry["children"].append(child)
            walk(child, sub)

    for name, group in inventory.items():
        walk(name, group)
    return result


def main(argv: list[str]) -> int:
    data = to_ansible(terraform_inventory())
    if len(argv) > 2 and argv[1] == "--host":
        print(json.dumps(data["_meta"]["hostvars"].get(argv[2], {})))
    else:
        print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
