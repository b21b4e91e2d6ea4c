output "nodes" {
  description = "Every node, frontend first: name, role (frontend, milvus, worker, gpu_worker), size, gpu, index, docker context and data_disk_gb (Milvus only)."
  value       = local.nodes
}

output "nodes_by_name" {
  description = "The same nodes keyed by name, for for_each."
  value       = local.nodes_by_name
}

output "user_data" {
  description = "Node name -> cloud-init user data (#cloud-config): deploy user and key, Docker engine + compose plugin, unattended security upgrades, the nftables firewall."
  value       = local.user_data
}

output "firewall_rules" {
  description = "Inbound rules as data, one per (role, port, source): {role, port, protocol, source (world, operators, workers, frontend), cidrs, description}. Everything not listed is dropped."
  value       = local.firewall_rules
}

output "firewall_rules_by_role" {
  description = "The same rules grouped by role."
  value       = local.firewall_rules_by_role
}

output "nft_rulesets" {
  description = "Role -> the nftables ruleset written to /etc/idios/firewall.nft."
  value       = local.nft_rulesets
}

output "inventory" {
  description = "The Ansible inventory as an object."
  value       = local.inventory
}

output "inventory_yaml" {
  description = "The Ansible inventory (YAML): groups frontend, milvus, workers, gpu_workers, worker_nodes; host vars ansible_host, ansible_user, docker_context."
  value       = local.inventory_yaml
}

output "docker_contexts" {
  description = "Docker context name -> docker host URL (ssh://deploy@address)."
  value       = local.docker_contexts
}

output "docker_context_script" {
  description = "Shell commands that create or update every docker context."
  value       = local.docker_context_script
}

output "dns_names" {
  description = "Names to point at the frontend: the API domain and the admin UIs' subdomains."
  value       = local.dns_names
}
