"""Kubernetes: Helm values, the Kubernetes rollout target, Prometheus analysis."""
