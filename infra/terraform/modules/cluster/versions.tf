# Provider-free: this module only computes data (node list, cloud-init, firewall rules, Ansible
# inventory) from its variables, so `terraform init` and `terraform test` run offline.
terraform {
  required_version = ">= 1.6.0"
}
