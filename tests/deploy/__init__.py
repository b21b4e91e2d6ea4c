"""Deployment tests: the compose files, Traefik, Ansible, Terraform and the machine setup script."""
