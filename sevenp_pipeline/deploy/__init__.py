"""Deployments (spec: Deploy to Staging / Production, deploy-environment.sh): environments as data,
deployment assets per commit, blue-green on the local target, ECS through boto3."""
