# Bad inputs fail at plan time, before anything is created.

variables {
  ssh_public_key  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTests operator@laptop"
  operator_cidrs  = ["203.0.113.7/32"]
  worker_cidrs    = ["10.42.1.0/24"]
  frontend_size   = "t3.small"
  milvus_size     = "m6i.large"
  worker_size     = "c6i.xlarge"
  gpu_worker_size = "g5.xlarge"
  domain          = "idios.example.net"
  cpu_workers     = 1
  gpu_workers     = 0
}

run "valid_inputs_plan" {
  command = plan

  variables {
    operator_cidrs = ["203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32"]
    ssh_public_key = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= ci"
  }

  assert {
    condition     = length(output.nodes) == 3
    error_message = "valid inputs plan"
  }
}

run "negative_cpu_workers" {
  command = plan
  variables {
    cpu_workers = -1
  }
  expect_failures = [var.cpu_workers]
}

run "negative_gpu_workers" {
  command = plan
  variables {
    gpu_workers = -2
  }
  expect_failures = [var.gpu_workers]
}

run "fractional_workers" {
  command = plan
  variables {
    cpu_workers = 1.5
  }
  expect_failures = [var.cpu_workers]
}

run "operator_cidr_not_a_cidr" {
  command = plan
  variables {
    operator_cidrs = ["203.0.113.7"]
  }
  expect_failures = [var.operator_cidrs]
}

run "operator_cidr_bad_prefix" {
  command = plan
  variables {
    operator_cidrs = ["203.0.113.0/33"]
  }
  expect_failures = [var.operator_cidrs]
}

run "operator_cidr_host_bits" {
  command = plan
  variables {
    operator_cidrs = ["203.0.113.7/24"]
  }
  expect_failures = [var.operator_cidrs]
}

run "operator_cidrs_empty" {
  command = plan
  variables {
    operator_cidrs = []
  }
  expect_failures = [var.operator_cidrs]
}

run "worker_cidr_garbage" {
  command = plan
  variables {
    worker_cidrs = ["workers"]
  }
  expect_failures = [var.worker_cidrs]
}

run "worker_cidr_world" {
  command = plan
  variables {
    worker_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.worker_cidrs]
}

run "frontend_cidr_bad" {
  command = plan
  variables {
    frontend_cidrs = ["10.42.1.300/32"]
  }
  expect_failures = [var.frontend_cidrs]
}

run "empty_ssh_key" {
  command = plan
  variables {
    ssh_public_key = ""
  }
  expect_failures = [var.ssh_public_key]
}

run "blank_ssh_key" {
  command = plan
  variables {
    ssh_public_key = "   \n"
  }
  expect_failures = [var.ssh_public_key]
}

run "private_key_instead_of_public" {
  command = plan
  variables {
    ssh_public_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
  }
  expect_failures = [var.ssh_public_key]
}

run "two_keys_in_one" {
  command = plan
  variables {
    ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB b"
  }
  expect_failures = [var.ssh_public_key]
}

run "bad_domain" {
  command = plan
  variables {
    domain = "https://idios.example.net/"
  }
  expect_failures = [var.domain]
}

run "root_deploy_user" {
  command = plan
  variables {
    deploy_user = "root"
  }
  expect_failures = [var.deploy_user]
}

run "empty_size" {
  command = plan
  variables {
    worker_size = ""
  }
  expect_failures = [var.worker_size]
}

run "tiny_milvus_disk" {
  command = plan
  variables {
    milvus_disk_gb = 2
  }
  expect_failures = [var.milvus_disk_gb]
}

run "unknown_distribution" {
  command = plan
  variables {
    distribution = "centos"
  }
  expect_failures = [var.distribution]
}
