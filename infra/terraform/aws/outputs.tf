output "frontend_ip" {
  description = "The frontend's Elastic IP: point domain (and rabbitmq., attu., traefik.) at it when Route 53 does not."
  value       = aws_eip.frontend.public_ip
}

output "inventory_yaml" {
  description = "Ansible inventory with the real addresses: terraform output -raw inventory_yaml > inventory.yml"
  value       = module.cluster.inventory_yaml
}

output "docker_context_script" {
  description = "Shell commands that create or update the docker contexts (idios-frontend, idios-milvus, idios-worker-<n>, idios-gpu-worker-<n>)."
  value       = module.cluster.docker_context_script
}

output "nodes" {
  description = "Node name -> role, instance id, public and private address."
  value = {
    for name, n in module.cluster.nodes_by_name : name => {
      role        = n.role
      instance_id = aws_instance.node[name].id
      public_ip   = local.public_addresses[name]
      private_ip  = aws_instance.node[name].private_ip
    }
  }
}

output "worker_endpoints" {
  description = "What docker/worker.env points at (private addresses): IDIOS_AMQP_URL's host and IDIOS_MILVUS_URI; MILVUS_ADDRESS of docker/frontend.env."
  value = {
    amqp_host      = local.frontend.private_ip
    milvus_uri     = "http://${local.milvus.private_ip}:19530"
    milvus_address = "${local.milvus.private_ip}:19530"
  }
}

output "nft_rulesets" {
  description = "Role -> the hosts' nftables ruleset (/etc/idios/firewall.nft), for Ansible to re-apply after a variable change."
  value       = module.cluster.nft_rulesets
}

output "milvus_volume_id" {
  description = "The Milvus data volume (snapshot it for backups)."
  value       = aws_ebs_volume.milvus_data.id
}

output "dns_names" {
  description = "Names that must resolve to frontend_ip."
  value       = module.cluster.dns_names
}
