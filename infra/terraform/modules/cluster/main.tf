# The cluster as data: nodes, firewall rules, cloud-init user data and the Ansible inventory.
# A provider root module (../../aws, ../../hetzner, ...) turns `nodes` into servers, `firewall_rules`
# into security groups / cloud firewalls, and feeds `user_data` to each server.

locals {
  roles = ["frontend", "milvus", "worker", "gpu_worker"]

  # Whoever reaches Milvus besides the workers: Attu on the frontend (MILVUS_ADDRESS in frontend.env).
  frontend_cidrs = var.frontend_cidrs == null ? var.worker_cidrs : var.frontend_cidrs
  world_cidrs    = ["0.0.0.0/0", "::/0"]

  nodes = concat(
    [{
      name         = "${var.name}-frontend"
      role         = "frontend"
      size         = var.frontend_size
      gpu          = false
      index        = 1
      context      = "idios-frontend"
      data_disk_gb = 0
    }],
    [{
      name         = "${var.name}-milvus"
      role         = "milvus"
      size         = var.milvus_size
      gpu          = false
      index        = 1
      context      = "idios-milvus"
      data_disk_gb = var.milvus_disk_gb
    }],
    [for i in range(var.cpu_workers) : {
      name         = "${var.name}-worker-${i + 1}"
      role         = "worker"
      size         = var.worker_size
      gpu          = false
      index        = i + 1
      context      = "idios-worker-${i + 1}"
      data_disk_gb = 0
    }],
    [for i in range(var.gpu_workers) : {
      name         = "${var.name}-gpu-worker-${i + 1}"
      role         = "gpu_worker"
      size         = var.gpu_worker_size
      gpu          = true
      index        = i + 1
      context      = "idios-gpu-worker-${i + 1}"
      data_disk_gb = 0
    }],
  )
  nodes_by_name = { for n in local.nodes : n.name => n }

  # Inbound rules, one per (role, port, kind of source). `source` says what a cloud firewall should
  # reference: "world" and "operators" are CIDR blocks, "workers" and "frontend" are better expressed
  # as the workers' / frontend's security group where the cloud has them; `cidrs` is the same set as
  # CIDR blocks (what the hosts' own nftables firewall uses). Everything else is dropped.
  firewall_rules = concat(
    [for role in local.roles : {
      role        = role
      port        = 22
      protocol    = "tcp"
      source      = "operators"
      cidrs       = var.operator_cidrs
      description = "SSH from the operators"
    }],
    [
      {
        role        = "frontend"
        port        = 80
        protocol    = "tcp"
        source      = "world"
        cidrs       = local.world_cidrs
        description = "HTTP (redirect to HTTPS, ACME challenge)"
      },
      {
        role        = "frontend"
        port        = 443
        protocol    = "tcp"
        source      = "world"
        cidrs       = local.world_cidrs
        description = "HTTPS: the API and the admin UIs"
      },
      {
        role        = "frontend"
        port        = 5672
        protocol    = "tcp"
        source      = "workers"
        cidrs       = var.worker_cidrs
        description = "RabbitMQ (AMQP) for the workers"
      },
      {
        role        = "milvus"
        port        = 19530
        protocol    = "tcp"
        source      = "workers"
        cidrs       = var.worker_cidrs
        description = "Milvus for the workers"
      },
      {
        role        = "milvus"
        port        = 19530
        protocol    = "tcp"
        source      = "frontend"
        cidrs       = local.frontend_cidrs
        description = "Milvus for Attu on the frontend"
      },
    ],
  )
  firewall_rules_by_role = { for role in local.roles : role => [for r in local.firewall_rules : r if r.role == role] }

  # nftables, one table of its own ("inet idios"): loading it never touches Docker's iptables rules,
  # and its drops are final whatever Docker accepts. Docker publishes ports with DNAT, so published
  # ports are filtered in the forward hook ("ct status dnat"), host ports in the input hook.
  # One accept per (protocol, port, CIDR block); rules that share one (workers' and frontend's blocks
  # when frontend_cidrs is null) share its comment.
  nft_accepts = {
    for role in local.roles : role => [
      for key, same in {
        for a in flatten([
          for r in local.firewall_rules_by_role[role] : [
            for c in r.cidrs : { protocol = r.protocol, port = r.port, cidr = c, description = r.description }
          ]
        ]) : format("%s %05d %s", a.protocol, a.port, a.cidr) => a...
        } : {
        family      = strcontains(same[0].cidr, ":") ? "ip6" : "ip"
        cidr        = same[0].cidr
        protocol    = same[0].protocol
        port        = same[0].port
        description = join("; ", distinct([for a in same : a.description]))
      }
    ]
  }
  nft_rulesets = {
    for role in local.roles : role => templatefile("${path.module}/templates/firewall.nft.tftpl", {
      role    = role
      accepts = local.nft_accepts[role]
    })
  }

  firewall_unit = <<-EOT
    [Unit]
    Description=Idios firewall (nftables table inet idios, /etc/idios/firewall.nft)
    Documentation=man:nft(8)
    Wants=network-pre.target
    Before=network-pre.target shutdown.target docker.service
    Conflicts=shutdown.target
    DefaultDependencies=no

    [Service]
    Type=oneshot
    RemainAfterExit=yes
    ExecStart=/usr/sbin/nft -f /etc/idios/firewall.nft
    ExecReload=/usr/sbin/nft -f /etc/idios/firewall.nft
    ExecStop=/usr/sbin/nft delete table inet idios

    [Install]
    WantedBy=multi-user.target
  EOT

  # Security updates only (the distributions' default 50unattended-upgrades origins), daily.
  auto_upgrades = <<-EOT
    APT::Periodic::Update-Package-Lists "1";
    APT::Periodic::Download-Upgradeable-Packages "1";
    APT::Periodic::Unattended-Upgrade "1";
    APT::Periodic::AutocleanInterval "7";
  EOT

  docker_daemon = jsonencode({
    "log-driver"   = "local"
    "log-opts"     = { "max-size" = "20m", "max-file" = "5" }
    "live-restore" = true
  })

  # Milvus data: format the volume when blank, mount it where Docker keeps its named volumes.
  mount_data_script = <<-EOT
    #!/bin/sh
    # Usage: idios-mount-data DEVICE. Waits for DEVICE (attached after boot), formats it when it has
    # no filesystem, and mounts it on /var/lib/docker/volumes (Milvus, etcd and MinIO data).
    set -eu
    device="$1"
    target=/var/lib/docker/volumes
    for _ in $(seq 1 120); do [ -b "$device" ] && break; sleep 5; done
    [ -b "$device" ] || { echo "idios-mount-data: $device never appeared" >&2; exit 1; }
    device=$(readlink -f "$device")
    blkid "$device" >/dev/null 2>&1 || mkfs.ext4 -q -L idios-data "$device"
    mountpoint -q "$target" && exit 0
    systemctl stop docker.socket docker.service
    mkdir -p "$target"
    uuid=$(blkid -s UUID -o value "$device")
    grep -q "$uuid" /etc/fstab || echo "UUID=$uuid $target ext4 defaults,nofail,x-systemd.before=docker.service 0 2" >> /etc/fstab
    systemctl daemon-reload
    mount "$target"
    systemctl start docker.service
  EOT

  docker_repo = "deb [signed-by=$KEY_FILE] https://download.docker.com/linux/${var.distribution} $RELEASE stable"
  # Docker's release key (https://docs.docker.com/engine/install/: "9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88").
  docker_key_id = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"

  cloud_config = {
    for n in local.nodes : n.name => {
      hostname          = n.name
      preserve_hostname = false
      disable_root      = true
      ssh_pwauth        = false
      users = [{
        name                = var.deploy_user
        gecos               = "Idios deployment"
        shell               = "/bin/bash"
        groups              = ["sudo"]
        sudo                = "ALL=(ALL) NOPASSWD:ALL"
        lock_passwd         = true
        ssh_authorized_keys = [trimspace(var.ssh_public_key)]
      }]
      apt = {
        sources = {
          docker = {
            source = local.docker_repo
            keyid  = local.docker_key_id
          }
        }
      }
      package_update             = true
      package_upgrade            = true
      package_reboot_if_required = true
      packages = [
        "ca-certificates",
        "nftables",
        "unattended-upgrades",
        "docker-ce",
        "docker-ce-cli",
        "containerd.io",
        "docker-buildx-plugin",
        "docker-compose-plugin",
      ]
      write_files = concat(
        [
          { path = "/etc/idios/firewall.nft", owner = "root:root", permissions = "0600", content = local.nft_rulesets[n.role] },
          { path = "/etc/systemd/system/idios-firewall.service", owner = "root:root", permissions = "0644", content = local.firewall_unit },
          { path = "/etc/apt/apt.conf.d/20auto-upgrades", owner = "root:root", permissions = "0644", content = local.auto_upgrades },
          { path = "/etc/docker/daemon.json", owner = "root:root", permissions = "0644", content = "${local.docker_daemon}\n" },
        ],
        n.role == "milvus" && var.milvus_data_device != "" ? [
          { path = "/usr/local/sbin/idios-mount-data", owner = "root:root", permissions = "0755", content = local.mount_data_script },
        ] : [],
      )
      runcmd = concat(
        [
          ["systemctl", "daemon-reload"],
          ["systemctl", "enable", "--now", "idios-firewall.service"],
          ["systemctl", "enable", "--now", "unattended-upgrades.service"],
          ["usermod", "-aG", "docker", var.deploy_user],
          ["systemctl", "enable", "--now", "docker.service"],
        ],
        n.role == "milvus" && var.milvus_data_device != "" ? [
          ["/usr/local/sbin/idios-mount-data", var.milvus_data_device],
        ] : [],
      )
    }
  }
  user_data = { for name, cfg in local.cloud_config : name => "#cloud-config\n${yamlencode(cfg)}" }

  # Ansible inventory (YAML). Groups: frontend, milvus, workers (CPU), gpu_workers, and worker_nodes
  # (both kinds of workers). Unknown addresses are `<node>.invalid` placeholders (RFC 6761: never resolve).
  address = { for n in local.nodes : n.name => lookup(var.addresses, n.name, "${n.name}.invalid") }
  hostvars = {
    for n in local.nodes : n.name => merge(
      {
        ansible_host   = local.address[n.name]
        ansible_user   = var.deploy_user
        docker_context = n.context
        idios_role     = n.role
        idios_size     = n.size
      },
      contains(keys(var.private_addresses), n.name) ? { private_address = var.private_addresses[n.name] } : {},
    )
  }
  frontend_name = "${var.name}-frontend"
  milvus_name   = "${var.name}-milvus"
  group_hosts = {
    for role in local.roles : role => { for n in local.nodes : n.name => local.hostvars[n.name] if n.role == role }
  }
  inventory = {
    all = {
      vars = {
        ansible_user       = var.deploy_user
        idios_domain       = var.domain
        idios_distribution = var.distribution
        # What the workers' worker.env points at (IDIOS_AMQP_URL host, IDIOS_MILVUS_URI).
        idios_rabbitmq_host = lookup(var.private_addresses, local.frontend_name, local.address[local.frontend_name])
        idios_milvus_uri    = "http://${lookup(var.private_addresses, local.milvus_name, local.address[local.milvus_name])}:19530"
      }
      children = {
        frontend = { hosts = local.group_hosts["frontend"] }
        milvus = {
          hosts = local.group_hosts["milvus"]
          vars  = { data_disk_gb = var.milvus_disk_gb, data_device = var.milvus_data_device }
        }
        workers     = { hosts = local.group_hosts["worker"] }
        gpu_workers = { hosts = local.group_hosts["gpu_worker"] }
        worker_nodes = {
          children = { workers = {}, gpu_workers = {} }
        }
      }
    }
  }
  inventory_yaml = yamlencode(local.inventory)

  docker_contexts = {
    for n in local.nodes : n.context => "ssh://${var.deploy_user}@${local.address[n.name]}"
  }
  docker_context_script = join("", [
    for ctx, host in local.docker_contexts :
    "docker context inspect ${ctx} >/dev/null 2>&1 && docker context update ${ctx} --docker host=${host} >/dev/null || docker context create ${ctx} --docker host=${host}\n"
  ])

  dns_names = [var.domain, "rabbitmq.${var.domain}", "attu.${var.domain}", "traefik.${var.domain}"]
}
