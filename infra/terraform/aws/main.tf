# Idios on AWS: one VPC and public subnet, one security group per role built from the cluster
# module's firewall data, one instance per node with the module's cloud-init, an EBS volume for
# Milvus, an Elastic IP for the frontend and optional Route 53 records.

module "cluster" {
  source = "../modules/cluster"

  name               = var.name
  ssh_public_key     = var.ssh_public_key
  operator_cidrs     = var.operator_cidrs
  worker_cidrs       = [var.subnet_cidr]
  frontend_size      = var.frontend_size
  milvus_size        = var.milvus_size
  worker_size        = var.worker_size
  gpu_worker_size    = var.gpu_worker_size
  cpu_workers        = var.cpu_workers
  gpu_workers        = var.gpu_workers
  milvus_disk_gb     = var.milvus_disk_gb
  milvus_data_device = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${replace(aws_ebs_volume.milvus_data.id, "-", "")}"
  domain             = var.domain
  deploy_user        = var.deploy_user
  distribution       = var.distribution

  # Known after apply: only the inventory and docker context outputs depend on them.
  addresses         = local.public_addresses
  private_addresses = { for name, i in aws_instance.node : name => i.private_ip }
}

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  availability_zone = var.availability_zone != "" ? var.availability_zone : data.aws_availability_zones.available.names[0]

  ami_filters = {
    ubuntu = {
      owner = "099720109477" # Canonical
      name  = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${var.architecture}-server-*"
    }
    debian = {
      owner = "136693071363" # Debian
      name  = "debian-12-${var.architecture}-*"
    }
  }

  # One security group per role; CPU and GPU workers share the workers' group.
  security_group_of_role   = { frontend = "frontend", milvus = "milvus", worker = "workers", gpu_worker = "workers" }
  security_group_of_source = { workers = "workers", frontend = "frontend" }

  # World and operator sources: one rule per CIDR block. Worker and frontend sources: a reference
  # to that security group (stricter than the subnet block the hosts' own firewalls use).
  cidr_ingress = {
    for key, same in {
      for x in flatten([
        for r in module.cluster.firewall_rules : [
          for c in r.cidrs : {
            group       = local.security_group_of_role[r.role]
            port        = r.port
            protocol    = r.protocol
            cidr        = c
            description = r.description
          }
        ] if contains(["world", "operators"], r.source)
      ]) : "${x.group}-${x.protocol}-${x.port}-${x.cidr}" => x...
    } : key => same[0]
  }
  group_ingress = {
    for key, same in {
      for r in module.cluster.firewall_rules : "${local.security_group_of_role[r.role]}-${r.protocol}-${r.port}-from-${r.source}" => {
        group       = local.security_group_of_role[r.role]
        port        = r.port
        protocol    = r.protocol
        from_group  = local.security_group_of_source[r.source]
        description = r.description
      }... if contains(["workers", "frontend"], r.source)
    } : key => same[0]
  }

  public_addresses = {
    for name, i in aws_instance.node : name => (name == "${var.name}-frontend" ? aws_eip.frontend.public_ip : i.public_ip)
  }
  frontend = aws_instance.node["${var.name}-frontend"]
  milvus   = aws_instance.node["${var.name}-milvus"]
}

data "aws_ami" "os" {
  most_recent = true
  owners      = [local.ami_filters[var.distribution].owner]

  filter {
    name   = "name"
    values = [local.ami_filters[var.distribution].name]
  }
  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
  filter {
    name   = "architecture"
    values = [var.architecture == "amd64" ? "x86_64" : "arm64"]
  }
}

# --- Network -------------------------------------------------------------------------------------

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = var.name }
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id

  tags = { Name = var.name }
}

# Public addresses for every node (outbound: apt, Docker Hub, model downloads at image build); the
# security groups keep everything but 80/443 on the frontend closed to the world.
resource "aws_subnet" "nodes" {
  vpc_id                  = aws_vpc.main.id
  cidr_block              = var.subnet_cidr
  availability_zone       = local.availability_zone
  map_public_ip_on_launch = true

  tags = { Name = "${var.name}-nodes" }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }

  tags = { Name = "${var.name}-public" }
}

resource "aws_route_table_association" "nodes" {
  subnet_id      = aws_subnet.nodes.id
  route_table_id = aws_route_table.public.id
}

# --- Security groups, from module.cluster.firewall_rules ---------------------------------------

resource "aws_security_group" "role" {
  for_each = toset(["frontend", "milvus", "workers"])

  name        = "${var.name}-${each.key}"
  description = "Idios ${each.key} nodes (rules from infra/terraform/modules/cluster)"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-${each.key}" }
}

resource "aws_vpc_security_group_ingress_rule" "cidr" {
  for_each = local.cidr_ingress

  security_group_id = aws_security_group.role[each.value.group].id
  description       = each.value.description
  ip_protocol       = each.value.protocol
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = strcontains(each.value.cidr, ":") ? null : each.value.cidr
  cidr_ipv6         = strcontains(each.value.cidr, ":") ? each.value.cidr : null
}

resource "aws_vpc_security_group_ingress_rule" "group" {
  for_each = local.group_ingress

  security_group_id            = aws_security_group.role[each.value.group].id
  description                  = each.value.description
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.role[each.value.from_group].id
}

resource "aws_vpc_security_group_egress_rule" "all" {
  for_each = aws_security_group.role

  security_group_id = each.value.id
  description       = "Outbound: apt, registries, the workers' image URLs"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# --- Nodes -------------------------------------------------------------------------------------

resource "aws_instance" "node" {
  for_each = module.cluster.nodes_by_name

  ami                    = each.value.gpu && var.gpu_ami_id != "" ? var.gpu_ami_id : data.aws_ami.os.id
  instance_type          = each.value.size
  subnet_id              = aws_subnet.nodes.id
  vpc_security_group_ids = [aws_security_group.role[local.security_group_of_role[each.value.role]].id]
  user_data              = module.cluster.user_data[each.key]

  metadata_options {
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1          # containers cannot reach the instance metadata
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_disk_gb
    encrypted             = true
    delete_on_termination = true
  }

  tags = { Name = each.key, Role = each.value.role }

  lifecycle {
    # cloud-init runs once, at first boot: a new AMI or changed user data (operator CIDRs, SSH key)
    # must not replace running nodes. Change them on the hosts with Ansible (output nft_rulesets);
    # the security groups follow the variables at once.
    ignore_changes = [ami, user_data]
  }
}

resource "aws_ebs_volume" "milvus_data" {
  availability_zone = local.availability_zone
  size              = var.milvus_disk_gb
  type              = "gp3"
  encrypted         = true

  tags = { Name = "${var.name}-milvus-data" }
}

resource "aws_volume_attachment" "milvus_data" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.milvus_data.id
  instance_id = local.milvus.id
}

resource "aws_eip" "frontend" {
  domain   = "vpc"
  instance = local.frontend.id

  tags = { Name = "${var.name}-frontend" }

  depends_on = [aws_internet_gateway.main]
}

# --- DNS (optional) ------------------------------------------------------------------------------

resource "aws_route53_record" "api" {
  count = var.route53_zone_id == "" ? 0 : 1

  zone_id = var.route53_zone_id
  name    = var.domain
  type    = "A"
  ttl     = 300
  records = [aws_eip.frontend.public_ip]
}

resource "aws_route53_record" "admin" {
  count = var.route53_zone_id == "" ? 0 : length(module.cluster.dns_names) - 1

  zone_id = var.route53_zone_id
  name    = module.cluster.dns_names[count.index + 1] # rabbitmq., attu., traefik.<domain>
  type    = "A"
  ttl     = 300
  records = [aws_eip.frontend.public_ip]
}
