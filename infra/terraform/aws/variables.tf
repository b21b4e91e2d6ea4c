variable "region" {
  description = "AWS region, e.g. \"eu-central-1\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as \"eu-central-1\"."
  }
}

variable "availability_zone" {
  description = "Availability zone of the subnet (and of the Milvus data volume). Empty: the region's first available zone."
  type        = string
  default     = ""
}

variable "name" {
  description = "Prefix of every node and AWS resource name."
  type        = string
  default     = "idios"
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

variable "ssh_public_key" {
  description = "The operator's SSH public key (one OpenSSH line), authorized for deploy_user on every node."
  type        = string
}

variable "operator_cidrs" {
  description = "CIDR blocks allowed to reach SSH (22) on every node, e.g. [\"203.0.113.7/32\"]."
  type        = list(string)
}

variable "vpc_cidr" {
  description = "The VPC's IPv4 block."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr, 0, 0)) && try(cidrsubnet(var.vpc_cidr, 0, 0) == var.vpc_cidr, false)
    error_message = "vpc_cidr must be a canonical IPv4 CIDR block such as \"10.42.0.0/16\"."
  }
}

variable "subnet_cidr" {
  description = "The nodes' subnet, inside vpc_cidr. Every node lives here, so it is also the block the nodes' own firewalls let reach 5672 and 19530 (the security groups are stricter: the workers' group only)."
  type        = string
  default     = "10.42.1.0/24"

  validation {
    condition     = can(cidrsubnet(var.subnet_cidr, 0, 0)) && try(cidrsubnet(var.subnet_cidr, 0, 0) == var.subnet_cidr, false)
    error_message = "subnet_cidr must be a canonical IPv4 CIDR block such as \"10.42.1.0/24\"."
  }
}

variable "distribution" {
  description = "Image of every node: \"ubuntu\" (24.04 LTS, Canonical's AMI) or \"debian\" (12, Debian's AMI)."
  type        = string
  default     = "ubuntu"

  validation {
    condition     = contains(["ubuntu", "debian"], var.distribution)
    error_message = "distribution must be \"ubuntu\" or \"debian\"."
  }
}

variable "architecture" {
  description = "CPU architecture of the AMI: \"amd64\" (x86_64 instance types) or \"arm64\" (Graviton). GPU instance types are x86_64."
  type        = string
  default     = "amd64"

  validation {
    condition     = contains(["amd64", "arm64"], var.architecture)
    error_message = "architecture must be \"amd64\" or \"arm64\"."
  }
}

variable "gpu_ami_id" {
  description = "AMI of the GPU workers, e.g. one with the NVIDIA driver and Container Toolkit (it must be the same distribution, for the user data). Empty: the same AMI as the other nodes (install the driver with Ansible)."
  type        = string
  default     = ""

  validation {
    condition     = var.gpu_ami_id == "" || can(regex("^ami-[0-9a-f]{8,17}$", var.gpu_ami_id))
    error_message = "gpu_ami_id must be empty or an AMI id (ami-...)."
  }
}

variable "frontend_size" {
  description = "Instance type of the frontend (Traefik, API, RabbitMQ, Attu)."
  type        = string
  default     = "t3.small"
}

variable "milvus_size" {
  description = "Instance type of the Milvus node (Milvus, etcd, MinIO): 2-3 GB of memory for Milvus at 0.2-0.5 M vectors."
  type        = string
  default     = "m6i.large"
}

variable "worker_size" {
  description = "Instance type of each CPU worker (about 1.5 GB of memory per vit_b32 worker process)."
  type        = string
  default     = "c6i.xlarge"
}

variable "gpu_worker_size" {
  description = "Instance type of each GPU worker."
  type        = string
  default     = "g5.xlarge"
}

variable "cpu_workers" {
  description = "Number of CPU worker nodes."
  type        = number
  default     = 1
}

variable "gpu_workers" {
  description = "Number of GPU worker nodes."
  type        = number
  default     = 0
}

variable "root_disk_gb" {
  description = "Root volume size (GB) of every node: the OS, Docker images (a worker image holds torch and the model weights) and logs."
  type        = number
  default     = 40

  validation {
    condition     = var.root_disk_gb >= 20 && var.root_disk_gb <= 1024 && floor(var.root_disk_gb) == var.root_disk_gb
    error_message = "root_disk_gb must be a whole number from 20 to 1024."
  }
}

variable "milvus_disk_gb" {
  description = "Size (GB) of the Milvus node's EBS data volume, mounted on /var/lib/docker/volumes (Milvus, etcd, MinIO data)."
  type        = number
  default     = 50
}

variable "domain" {
  description = "The API's public DNS name (IDIOS_DOMAIN in docker/frontend.env)."
  type        = string
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone that holds domain: when set, A records for domain and its rabbitmq., attu. and traefik. names point at the frontend's Elastic IP. Empty: manage DNS elsewhere."
  type        = string
  default     = ""

  validation {
    condition     = var.route53_zone_id == "" || can(regex("^Z[A-Z0-9]{1,31}$", var.route53_zone_id))
    error_message = "route53_zone_id must be empty or a hosted zone id (Z...)."
  }
}

variable "deploy_user" {
  description = "Login created on every node for SSH, Ansible and the docker contexts."
  type        = string
  default     = "deploy"
}
