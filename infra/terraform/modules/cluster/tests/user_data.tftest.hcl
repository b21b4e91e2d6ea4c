# cloud-init user data and the firewall of each role.

variables {
  ssh_public_key  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTests operator@laptop"
  operator_cidrs  = ["203.0.113.7/32", "2001:db8::/32"]
  worker_cidrs    = ["10.42.1.0/24"]
  frontend_size   = "t3.small"
  milvus_size     = "m6i.large"
  worker_size     = "c6i.xlarge"
  gpu_worker_size = "g5.xlarge"
  domain          = "idios.example.net"
  cpu_workers     = 1
  gpu_workers     = 1
}

run "every_node_gets_user_key_docker_upgrades" {
  command = plan

  assert {
    condition     = alltrue([for name, ud in output.user_data : startswith(ud, "#cloud-config\n")])
    error_message = "user data must start with #cloud-config"
  }
  assert {
    condition = alltrue([for name, ud in output.user_data : anytrue([
      for u in yamldecode(ud).users : u.name == "deploy" && u.ssh_authorized_keys == [var.ssh_public_key] && u.sudo == "ALL=(ALL) NOPASSWD:ALL" && u.lock_passwd
    ])])
    error_message = "every node creates the deploy user with the operator's key, passwordless sudo and no password"
  }
  assert {
    condition     = alltrue([for name, ud in output.user_data : length(yamldecode(ud).users) == 1 && yamldecode(ud).ssh_pwauth == false && yamldecode(ud).disable_root])
    error_message = "only the deploy user; no password SSH, no root login"
  }
  assert {
    condition = alltrue([for name, ud in output.user_data : length(setsubtract(
      ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin", "unattended-upgrades", "nftables"],
      yamldecode(ud).packages,
    )) == 0])
    error_message = "every node installs Docker engine, the compose plugin, unattended-upgrades and nftables"
  }
  assert {
    condition     = alltrue([for name, ud in output.user_data : strcontains(yamldecode(ud).apt.sources.docker.source, "https://download.docker.com/linux/ubuntu")])
    error_message = "Docker comes from Docker's apt repository for the distribution"
  }
  assert {
    condition = alltrue([for name, ud in output.user_data : anytrue([
      for f in yamldecode(ud).write_files : f.path == "/etc/apt/apt.conf.d/20auto-upgrades" && strcontains(f.content, "APT::Periodic::Unattended-Upgrade \"1\";")
    ])])
    error_message = "unattended upgrades are switched on"
  }
  assert {
    condition = alltrue([for name, ud in output.user_data : length(setsubtract(
      [["usermod", "-aG", "docker", "deploy"], ["systemctl", "enable", "--now", "idios-firewall.service"], ["systemctl", "enable", "--now", "unattended-upgrades.service"]],
      yamldecode(ud).runcmd,
    )) == 0])
    error_message = "deploy joins the docker group; firewall and unattended-upgrades are enabled"
  }
  assert {
    condition = alltrue([for n in output.nodes : anytrue([
      for f in yamldecode(output.user_data[n.name]).write_files : f.path == "/etc/idios/firewall.nft" && f.content == output.nft_rulesets[n.role]
    ])])
    error_message = "each node writes its role's nftables ruleset"
  }
  assert {
    condition     = alltrue([for role, fw in output.nft_rulesets : strcontains(fw, "chain input {\n\t\ttype filter hook input priority -10; policy drop;")])
    error_message = "the input chain drops whatever is not accepted"
  }
  assert {
    condition     = alltrue([for role, fw in output.nft_rulesets : strcontains(fw, "ct status dnat jump published") && endswith(trimspace(split("chain published {", fw)[1]), "drop\n\t}\n}")])
    error_message = "published (Docker DNAT) ports not accepted are dropped"
  }
}

run "frontend_firewall" {
  command = plan

  assert {
    condition = alltrue([for l in [
      "ip saddr 0.0.0.0/0 tcp dport 80 accept",
      "ip saddr 0.0.0.0/0 tcp dport 443 accept",
      "ip6 saddr ::/0 tcp dport 443 accept",
      "ip saddr 0.0.0.0/0 meta l4proto tcp ct original proto-dst 443 accept",
      "ip saddr 10.42.1.0/24 tcp dport 5672 accept",
      "ip saddr 10.42.1.0/24 meta l4proto tcp ct original proto-dst 5672 accept",
      "ip saddr 203.0.113.7/32 tcp dport 22 accept",
      "ip6 saddr 2001:db8::/32 tcp dport 22 accept",
    ] : strcontains(output.nft_rulesets["frontend"], l)])
    error_message = "frontend: 80/443 open to the world, 5672 to the workers, 22 to the operators"
  }
  assert {
    condition     = sort(distinct(flatten(regexall("(?:dport|proto-dst) (\\d+) accept", output.nft_rulesets["frontend"])))) == sort(["22", "443", "5672", "80"])
    error_message = "frontend opens 22, 80, 443 and 5672 only"
  }
  assert {
    condition = alltrue([for l in split("\n", output.nft_rulesets["frontend"]) :
    strcontains(l, "saddr 10.42.1.0/24 ") if length(regexall("(?:dport|proto-dst) 5672 ", l)) > 0])
    error_message = "5672 only from the worker CIDRs"
  }
  assert {
    condition = alltrue([for l in split("\n", output.nft_rulesets["frontend"]) :
    strcontains(l, "saddr 203.0.113.7/32 ") || strcontains(l, "saddr 2001:db8::/32 ") if length(regexall("(?:dport|proto-dst) 22 ", l)) > 0])
    error_message = "SSH only from the operator CIDRs"
  }
}

run "milvus_firewall" {
  command = plan

  assert {
    condition     = sort(distinct(flatten(regexall("(?:dport|proto-dst) (\\d+) accept", output.nft_rulesets["milvus"])))) == sort(["22", "19530"])
    error_message = "the Milvus node opens 22 and 19530 only"
  }
  assert {
    condition = alltrue([for l in split("\n", output.nft_rulesets["milvus"]) :
    strcontains(l, "saddr 10.42.1.0/24 ") if length(regexall("(?:dport|proto-dst) 19530 ", l)) > 0])
    error_message = "19530 only from the worker CIDRs (which hold the frontend by default)"
  }
  assert {
    condition     = !strcontains(output.nft_rulesets["milvus"], "0.0.0.0/0") && !strcontains(output.nft_rulesets["milvus"], "::/0")
    error_message = "nothing on the Milvus node is open to the world"
  }
  assert {
    condition = alltrue([for l in split("\n", output.nft_rulesets["milvus"]) :
    strcontains(l, "saddr 203.0.113.7/32 ") || strcontains(l, "saddr 2001:db8::/32 ") if length(regexall("(?:dport|proto-dst) 22 ", l)) > 0])
    error_message = "SSH only from the operator CIDRs"
  }
}

run "worker_firewalls" {
  command = plan

  assert {
    condition = alltrue([for role in ["worker", "gpu_worker"] :
    sort(distinct(flatten(regexall("(?:dport|proto-dst) (\\d+) accept", output.nft_rulesets[role])))) == tolist(["22"])])
    error_message = "workers open nothing but SSH"
  }
  assert {
    condition = alltrue([for role in ["worker", "gpu_worker"] :
    !strcontains(output.nft_rulesets[role], "0.0.0.0/0") && !strcontains(output.nft_rulesets[role], "10.42.1.0/24")])
    error_message = "workers accept nothing from the world or the private subnet"
  }
}

run "firewall_rules_data" {
  command = plan

  assert {
    condition     = sort([for r in output.firewall_rules : tostring(r.port) if r.source == "world"]) == tolist(["443", "80"]) && alltrue([for r in output.firewall_rules : r.role == "frontend" if r.source == "world"])
    error_message = "only 80 and 443 of the frontend are world-open"
  }
  assert {
    condition     = sort([for r in output.firewall_rules : r.role if r.port == 22]) == tolist(["frontend", "gpu_worker", "milvus", "worker"]) && alltrue([for r in output.firewall_rules : r.source == "operators" && tolist(r.cidrs) == tolist(var.operator_cidrs) if r.port == 22])
    error_message = "SSH on every role, from the operator CIDRs"
  }
  assert {
    condition     = [for r in output.firewall_rules : r.role if r.port == 5672] == ["frontend"] && alltrue([for r in output.firewall_rules : r.source == "workers" && r.cidrs == var.worker_cidrs if r.port == 5672])
    error_message = "5672: the frontend, from the workers"
  }
  assert {
    condition     = sort([for r in output.firewall_rules : r.source if r.port == 19530]) == tolist(["frontend", "workers"]) && alltrue([for r in output.firewall_rules : r.role == "milvus" if r.port == 19530])
    error_message = "19530: the Milvus node, from the workers and the frontend (Attu)"
  }
  assert {
    condition     = length(output.firewall_rules_by_role["worker"]) == 1 && length(output.firewall_rules_by_role["gpu_worker"]) == 1
    error_message = "workers have one rule: SSH"
  }
}

run "frontend_cidrs_separate" {
  command = plan

  variables {
    frontend_cidrs = ["10.42.0.10/32"]
  }

  assert {
    condition     = strcontains(output.nft_rulesets["milvus"], "ip saddr 10.42.0.10/32 tcp dport 19530 accept") && !strcontains(output.nft_rulesets["frontend"], "10.42.0.10/32")
    error_message = "frontend_cidrs reach Milvus only"
  }
}

run "milvus_data_volume" {
  command = plan

  variables {
    milvus_data_device = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
    distribution       = "debian"
  }

  assert {
    condition     = contains(yamldecode(output.user_data["idios-milvus"]).runcmd, ["/usr/local/sbin/idios-mount-data", var.milvus_data_device])
    error_message = "the Milvus node mounts its data volume"
  }
  assert {
    condition     = !strcontains(output.user_data["idios-frontend"], "idios-mount-data") && !strcontains(output.user_data["idios-worker-1"], "idios-mount-data")
    error_message = "only the Milvus node mounts a data volume"
  }
  assert {
    condition     = strcontains(yamldecode(output.user_data["idios-frontend"]).apt.sources.docker.source, "https://download.docker.com/linux/debian")
    error_message = "distribution = debian picks Docker's Debian repository"
  }
}
