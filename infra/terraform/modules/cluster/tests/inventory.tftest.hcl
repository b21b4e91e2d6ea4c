# The Ansible inventory and the docker contexts.

variables {
  ssh_public_key  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTests operator@laptop"
  operator_cidrs  = ["203.0.113.7/32"]
  worker_cidrs    = ["10.42.1.0/24"]
  frontend_size   = "t3.small"
  milvus_size     = "m6i.large"
  worker_size     = "c6i.xlarge"
  gpu_worker_size = "g5.xlarge"
  domain          = "idios.example.net"
  cpu_workers     = 2
  gpu_workers     = 1
}

run "placeholders_without_addresses" {
  command = plan

  assert {
    condition     = sort(keys(yamldecode(output.inventory_yaml).all.children)) == tolist(["frontend", "gpu_workers", "milvus", "worker_nodes", "workers"])
    error_message = "groups: frontend, milvus, workers, gpu_workers (and worker_nodes)"
  }
  assert {
    condition     = keys(yamldecode(output.inventory_yaml).all.children.frontend.hosts) == ["idios-frontend"]
    error_message = "frontend group"
  }
  assert {
    condition     = keys(yamldecode(output.inventory_yaml).all.children.milvus.hosts) == ["idios-milvus"]
    error_message = "milvus group"
  }
  assert {
    condition     = keys(yamldecode(output.inventory_yaml).all.children.workers.hosts) == ["idios-worker-1", "idios-worker-2"]
    error_message = "workers group: the CPU workers"
  }
  assert {
    condition     = keys(yamldecode(output.inventory_yaml).all.children.gpu_workers.hosts) == ["idios-gpu-worker-1"]
    error_message = "gpu_workers group"
  }
  assert {
    condition     = sort(keys(yamldecode(output.inventory_yaml).all.children.worker_nodes.children)) == tolist(["gpu_workers", "workers"])
    error_message = "worker_nodes holds both kinds of workers"
  }
  assert {
    condition = {
      for g, v in yamldecode(output.inventory_yaml).all.children : g => { for h, hv in v.hosts : h => hv.docker_context } if g != "worker_nodes"
      } == {
      frontend    = { "idios-frontend" = "idios-frontend" }
      milvus      = { "idios-milvus" = "idios-milvus" }
      workers     = { "idios-worker-1" = "idios-worker-1", "idios-worker-2" = "idios-worker-2" }
      gpu_workers = { "idios-gpu-worker-1" = "idios-gpu-worker-1" }
    }
    error_message = "docker_context host vars"
  }
  assert {
    condition = alltrue(flatten([for g, v in yamldecode(output.inventory_yaml).all.children : [
      for h, hv in try(v.hosts, {}) : hv.ansible_user == "deploy" && hv.ansible_host == "${h}.invalid"
    ]]))
    error_message = "ansible_user is the deploy user; unknown addresses are .invalid placeholders"
  }
  assert {
    condition     = yamldecode(output.inventory_yaml).all.vars.ansible_user == "deploy" && yamldecode(output.inventory_yaml).all.vars.idios_domain == "idios.example.net"
    error_message = "group vars of all"
  }
  assert {
    condition     = yamldecode(output.inventory_yaml).all.children.milvus.vars.data_disk_gb == 50
    error_message = "the Milvus group knows its data disk size"
  }
  assert {
    condition     = output.docker_contexts["idios-worker-2"] == "ssh://deploy@idios-worker-2.invalid"
    error_message = "docker contexts point at the placeholders"
  }
}

run "real_addresses" {
  command = plan

  variables {
    deploy_user = "ops"
    addresses = {
      "idios-frontend"     = "198.51.100.10"
      "idios-milvus"       = "198.51.100.11"
      "idios-worker-1"     = "198.51.100.12"
      "idios-worker-2"     = "198.51.100.13"
      "idios-gpu-worker-1" = "198.51.100.14"
    }
    private_addresses = {
      "idios-frontend" = "10.42.1.10"
      "idios-milvus"   = "10.42.1.11"
    }
  }

  assert {
    condition     = yamldecode(output.inventory_yaml).all.children.gpu_workers.hosts["idios-gpu-worker-1"].ansible_host == "198.51.100.14"
    error_message = "addresses become ansible_host"
  }
  assert {
    condition     = yamldecode(output.inventory_yaml).all.children.frontend.hosts["idios-frontend"].ansible_user == "ops"
    error_message = "ansible_user follows deploy_user"
  }
  assert {
    condition     = !strcontains(output.inventory_yaml, ".invalid")
    error_message = "no placeholder left once every address is known"
  }
  assert {
    condition     = yamldecode(output.inventory_yaml).all.children.milvus.hosts["idios-milvus"].private_address == "10.42.1.11"
    error_message = "private_address host var"
  }
  assert {
    condition     = yamldecode(output.inventory_yaml).all.vars.idios_rabbitmq_host == "10.42.1.10" && yamldecode(output.inventory_yaml).all.vars.idios_milvus_uri == "http://10.42.1.11:19530"
    error_message = "the workers' broker host and Milvus URI use private addresses"
  }
  assert {
    condition = output.docker_contexts == {
      "idios-frontend"     = "ssh://ops@198.51.100.10"
      "idios-milvus"       = "ssh://ops@198.51.100.11"
      "idios-worker-1"     = "ssh://ops@198.51.100.12"
      "idios-worker-2"     = "ssh://ops@198.51.100.13"
      "idios-gpu-worker-1" = "ssh://ops@198.51.100.14"
    }
    error_message = "docker contexts"
  }
  assert {
    condition     = strcontains(output.docker_context_script, "docker context create idios-milvus --docker host=ssh://ops@198.51.100.11\n")
    error_message = "the context script creates the contexts"
  }
}

run "no_workers_inventory" {
  command = plan

  variables {
    cpu_workers = 0
    gpu_workers = 0
  }

  assert {
    condition     = length(yamldecode(output.inventory_yaml).all.children.workers.hosts) == 0 && length(yamldecode(output.inventory_yaml).all.children.gpu_workers.hosts) == 0
    error_message = "empty worker groups"
  }
}
