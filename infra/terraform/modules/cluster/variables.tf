variable "name" {
  description = "Prefix of every node name (`<name>-frontend`, `<name>-milvus`, `<name>-worker-<n>`, `<name>-gpu-worker-<n>`) and cloud resource name."
  type        = string
  default     = "idios"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "name must be 2-32 characters of lowercase letters, digits and '-', starting with a letter and not ending with '-' (it becomes part of hostnames)."
  }
}

variable "ssh_public_key" {
  description = "The operator's SSH public key (one OpenSSH line, e.g. the content of ~/.ssh/id_ed25519.pub), authorized for the deploy user on every node."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) [A-Za-z0-9+/]+={0,3}( [^\\n\\r]*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be one OpenSSH public key line (ssh-ed25519, ssh-rsa, ecdsa-sha2-* or sk-*), not empty and not a private key."
  }
}

variable "operator_cidrs" {
  description = "CIDR blocks allowed to reach SSH (22) on every node: the operator's and the CI's addresses (e.g. [\"203.0.113.7/32\"])."
  type        = list(string)

  validation {
    condition     = length(var.operator_cidrs) > 0
    error_message = "operator_cidrs must name at least one CIDR block, or nobody can reach SSH."
  }
  validation {
    condition     = alltrue([for c in var.operator_cidrs : can(cidrsubnet(c, 0, 0)) && try(cidrsubnet(c, 0, 0) == c, false)])
    error_message = "Every operator_cidrs entry must be a CIDR block in canonical form, with no host bits set (\"203.0.113.7/32\", \"10.0.0.0/8\", \"2001:db8::/32\")."
  }
}

variable "worker_cidrs" {
  description = "CIDR blocks the worker nodes' addresses come from (the private subnet): the only sources allowed to reach RabbitMQ (5672, frontend) and Milvus (19530, Milvus node). Worker addresses are known only after provisioning, hence blocks."
  type        = list(string)

  validation {
    condition     = length(var.worker_cidrs) > 0
    error_message = "worker_cidrs must name at least one CIDR block (the workers' private subnet)."
  }
  validation {
    condition     = alltrue([for c in var.worker_cidrs : can(cidrsubnet(c, 0, 0)) && try(cidrsubnet(c, 0, 0) == c, false)])
    error_message = "Every worker_cidrs entry must be a CIDR block in canonical form, with no host bits set (\"10.42.1.0/24\")."
  }
  validation {
    condition     = alltrue([for c in var.worker_cidrs : try(tonumber(split("/", c)[1]) >= 8, false)])
    error_message = "worker_cidrs must be private blocks of /8 or narrower: 5672 and 19530 are never opened to the world."
  }
}

variable "frontend_cidrs" {
  description = "CIDR blocks of the frontend's private address, allowed to reach Milvus (19530) for Attu. null: the frontend shares the workers' subnet and worker_cidrs covers it."
  type        = list(string)
  default     = null

  validation {
    condition     = var.frontend_cidrs == null || alltrue([for c in coalesce(var.frontend_cidrs, []) : can(cidrsubnet(c, 0, 0)) && try(cidrsubnet(c, 0, 0) == c, false) && try(tonumber(split("/", c)[1]) >= 8, false)])
    error_message = "Every frontend_cidrs entry must be a canonical private CIDR block of /8 or narrower."
  }
}

variable "frontend_size" {
  description = "Instance type / server type of the frontend node (Traefik, API, RabbitMQ, Attu), e.g. \"t3.small\" (AWS) or \"cx22\" (Hetzner)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.frontend_size))
    error_message = "frontend_size must be a non-empty instance type name."
  }
}

variable "milvus_size" {
  description = "Instance type of the Milvus node (Milvus, etcd, MinIO): Milvus wants 2-3 GB of memory for 0.2-0.5 M vectors, e.g. \"m6i.large\"."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.milvus_size))
    error_message = "milvus_size must be a non-empty instance type name."
  }
}

variable "worker_size" {
  description = "Instance type of each CPU worker node (about 1.5 GB of memory per vit_b32 worker process), e.g. \"c6i.xlarge\"."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.worker_size))
    error_message = "worker_size must be a non-empty instance type name."
  }
}

variable "gpu_worker_size" {
  description = "Instance type of each GPU worker node (NVIDIA GPU), e.g. \"g5.xlarge\". Unused while gpu_workers is 0."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.gpu_worker_size))
    error_message = "gpu_worker_size must be a non-empty instance type name."
  }
}

variable "cpu_workers" {
  description = "Number of CPU worker nodes (0 or more)."
  type        = number
  default     = 1

  validation {
    condition     = var.cpu_workers >= 0 && var.cpu_workers <= 100 && floor(var.cpu_workers) == var.cpu_workers
    error_message = "cpu_workers must be a whole number from 0 to 100."
  }
}

variable "gpu_workers" {
  description = "Number of GPU worker nodes (0 or more)."
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_workers >= 0 && var.gpu_workers <= 100 && floor(var.gpu_workers) == var.gpu_workers
    error_message = "gpu_workers must be a whole number from 0 to 100."
  }
}

variable "milvus_disk_gb" {
  description = "Size in GB of the Milvus node's data volume (Docker volumes of Milvus, etcd and MinIO: 0.7-2.5 GB for Milvus and 1.6-1.8 GB for MinIO per 0.2-0.5 M vectors)."
  type        = number
  default     = 50

  validation {
    condition     = var.milvus_disk_gb >= 10 && var.milvus_disk_gb <= 16384 && floor(var.milvus_disk_gb) == var.milvus_disk_gb
    error_message = "milvus_disk_gb must be a whole number of GB from 10 to 16384."
  }
}

variable "milvus_data_device" {
  description = "Block device of the Milvus data volume as the Milvus node sees it (e.g. /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123...): cloud-init formats it (ext4, only when blank) and mounts it on /var/lib/docker/volumes. Empty: no separate volume."
  type        = string
  default     = ""

  validation {
    condition     = var.milvus_data_device == "" || can(regex("^/dev/[A-Za-z0-9/_.:-]+$", var.milvus_data_device))
    error_message = "milvus_data_device must be empty or a /dev/... path."
  }
}

variable "domain" {
  description = "The API's public DNS name (IDIOS_DOMAIN); the admin UIs are rabbitmq.<domain>, attu.<domain> and traefik.<domain>."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain)) && length(var.domain) <= 253
    error_message = "domain must be a lowercase fully qualified DNS name such as \"idios.example.net\"."
  }
}

variable "deploy_user" {
  description = "Login created on every node for SSH, Ansible and the docker contexts (member of the docker group, passwordless sudo)."
  type        = string
  default     = "deploy"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.deploy_user)) && !contains(["root", "admin", "ubuntu", "debian", "docker"], var.deploy_user)
    error_message = "deploy_user must be a valid POSIX login (lowercase, at most 32 characters) other than root, admin, ubuntu, debian or docker."
  }
}

variable "distribution" {
  description = "Operating system of the nodes' image, which selects Docker's apt repository: \"ubuntu\" (24.04) or \"debian\" (12)."
  type        = string
  default     = "ubuntu"

  validation {
    condition     = contains(["ubuntu", "debian"], var.distribution)
    error_message = "distribution must be \"ubuntu\" or \"debian\"."
  }
}

variable "addresses" {
  description = "Node name -> address Ansible and the docker contexts connect to (public IP or DNS name), known after provisioning. Missing nodes get a `<node>.invalid` placeholder in the inventory."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for a in values(var.addresses) : can(regex("^[A-Za-z0-9.:-]+$", a))])
    error_message = "Every address must be an IP address or a DNS name."
  }
}

variable "private_addresses" {
  description = "Node name -> private address (what workers use for IDIOS_AMQP_URL and IDIOS_MILVUS_URI), written as the host var `private_address`. Optional."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for a in values(var.private_addresses) : can(regex("^[A-Za-z0-9.:-]+$", a))])
    error_message = "Every private address must be an IP address or a DNS name."
  }
}
