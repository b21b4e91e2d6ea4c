# Node lists for 0 workers and for 2 CPU + 1 GPU workers (plan only: this module has no provider).

variables {
  ssh_public_key  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTests operator@laptop"
  operator_cidrs  = ["203.0.113.7/32"]
  worker_cidrs    = ["10.42.1.0/24"]
  frontend_size   = "t3.small"
  milvus_size     = "m6i.large"
  worker_size     = "c6i.xlarge"
  gpu_worker_size = "g5.xlarge"
  domain          = "idios.example.net"
}

run "no_workers" {
  command = plan

  variables {
    cpu_workers = 0
    gpu_workers = 0
  }

  assert {
    condition     = length(output.nodes) == 2
    error_message = "0 workers: only the frontend and the Milvus node"
  }
  assert {
    condition     = [for n in output.nodes : n.name] == ["idios-frontend", "idios-milvus"]
    error_message = "0 workers: node names"
  }
  assert {
    condition     = [for n in output.nodes : n.role] == ["frontend", "milvus"]
    error_message = "0 workers: node roles"
  }
  assert {
    condition     = keys(output.user_data) == ["idios-frontend", "idios-milvus"]
    error_message = "one user data per node"
  }
  assert {
    condition     = output.nodes_by_name["idios-milvus"].data_disk_gb == 50 && output.nodes_by_name["idios-frontend"].data_disk_gb == 0
    error_message = "only the Milvus node has a data disk (milvus_disk_gb, default 50)"
  }
}

run "two_cpu_one_gpu" {
  command = plan

  variables {
    cpu_workers = 2
    gpu_workers = 1
  }

  assert {
    condition     = length(output.nodes) == 5
    error_message = "2 CPU + 1 GPU workers: five nodes"
  }
  assert {
    condition = [for n in output.nodes : n.name] == [
      "idios-frontend", "idios-milvus", "idios-worker-1", "idios-worker-2", "idios-gpu-worker-1",
    ]
    error_message = "node names"
  }
  assert {
    condition     = [for n in output.nodes : n.role] == ["frontend", "milvus", "worker", "worker", "gpu_worker"]
    error_message = "node roles"
  }
  assert {
    condition     = [for n in output.nodes : n.gpu] == [false, false, false, false, true]
    error_message = "only the GPU worker has gpu = true"
  }
  assert {
    condition     = [for n in output.nodes : n.size] == ["t3.small", "m6i.large", "c6i.xlarge", "c6i.xlarge", "g5.xlarge"]
    error_message = "each node gets its role's size"
  }
  assert {
    condition     = [for n in output.nodes : n.context] == ["idios-frontend", "idios-milvus", "idios-worker-1", "idios-worker-2", "idios-gpu-worker-1"]
    error_message = "docker contexts"
  }
  assert {
    condition     = length(output.user_data) == 5 && alltrue([for n in output.nodes : yamldecode(output.user_data[n.name]).hostname == n.name])
    error_message = "one user data per node, with the node's hostname"
  }
}

run "name_prefix" {
  command = plan

  variables {
    name        = "search"
    cpu_workers = 1
    gpu_workers = 2
  }

  assert {
    condition     = [for n in output.nodes : n.name] == ["search-frontend", "search-milvus", "search-worker-1", "search-gpu-worker-1", "search-gpu-worker-2"]
    error_message = "node names take the name prefix"
  }
  assert {
    condition     = [for n in output.nodes : n.context] == ["idios-frontend", "idios-milvus", "idios-worker-1", "idios-gpu-worker-1", "idios-gpu-worker-2"]
    error_message = "docker contexts keep the Makefile's idios- names whatever the prefix"
  }
}
