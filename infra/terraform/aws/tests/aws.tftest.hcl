# Plan the AWS root module against a mocked provider (no credentials, no AWS API calls). Needs the
# hashicorp/aws provider binary for its schema: tests/deploy/test_terraform.py runs it only where a local
# provider mirror has one.

mock_provider "aws" {
  override_data {
    target = data.aws_availability_zones.available
    values = { names = ["eu-central-1a", "eu-central-1b"] }
  }
  override_data {
    target = data.aws_ami.os
    values = { id = "ami-0123456789abcdef0" }
  }
}

variables {
  region         = "eu-central-1"
  domain         = "idios.example.net"
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTests operator@laptop"
  operator_cidrs = ["203.0.113.7/32"]
  cpu_workers    = 2
  gpu_workers    = 1
}

run "security_groups_from_firewall_data" {
  command = plan

  assert {
    condition     = sort(keys(aws_instance.node)) == tolist(["idios-frontend", "idios-gpu-worker-1", "idios-milvus", "idios-worker-1", "idios-worker-2"])
    error_message = "one instance per node"
  }
  assert {
    condition     = aws_instance.node["idios-gpu-worker-1"].instance_type == "g5.xlarge" && aws_instance.node["idios-worker-1"].instance_type == "c6i.xlarge"
    error_message = "instance types from the sizes"
  }
  assert {
    condition     = sort([for k, r in aws_vpc_security_group_ingress_rule.cidr : "${r.from_port}" if r.cidr_ipv4 == "0.0.0.0/0" || r.cidr_ipv6 == "::/0"]) == tolist(["443", "443", "80", "80"])
    error_message = "only 80 and 443 are world-open"
  }
  assert {
    condition     = alltrue([for k, r in aws_vpc_security_group_ingress_rule.cidr : startswith(k, "frontend-") if r.cidr_ipv4 == "0.0.0.0/0" || r.cidr_ipv6 == "::/0"])
    error_message = "world-open rules belong to the frontend's group"
  }
  assert {
    condition     = alltrue([for k, r in aws_vpc_security_group_ingress_rule.cidr : r.cidr_ipv4 == "203.0.113.7/32" if r.from_port == 22]) && length([for k, r in aws_vpc_security_group_ingress_rule.cidr : k if r.from_port == 22]) == 3
    error_message = "SSH from the operators on each of the three groups"
  }
  assert {
    condition     = sort(keys(aws_vpc_security_group_ingress_rule.group)) == tolist(["frontend-tcp-5672-from-workers", "milvus-tcp-19530-from-frontend", "milvus-tcp-19530-from-workers"])
    error_message = "5672 and 19530 only from security groups"
  }
  assert {
    condition     = length([for k, r in aws_vpc_security_group_ingress_rule.cidr : k if contains([5672, 19530], r.from_port)]) == 0
    error_message = "5672 and 19530 are never opened to a CIDR block"
  }
  assert {
    condition     = length(aws_route53_record.api) == 0 && length(aws_route53_record.admin) == 0
    error_message = "no Route 53 records without route53_zone_id"
  }
  assert {
    condition     = aws_ebs_volume.milvus_data.size == 50 && aws_ebs_volume.milvus_data.availability_zone == "eu-central-1a"
    error_message = "Milvus data volume in the subnet's zone"
  }
}

run "route53_records" {
  command = plan

  variables {
    route53_zone_id = "Z0123456789ABCDEFGHIJ"
  }

  assert {
    condition     = length(aws_route53_record.api) == 1 && aws_route53_record.api[0].name == "idios.example.net"
    error_message = "the API record"
  }
  assert {
    condition     = [for r in aws_route53_record.admin : r.name] == ["rabbitmq.idios.example.net", "attu.idios.example.net", "traefik.idios.example.net"]
    error_message = "the admin UIs' records"
  }
}
