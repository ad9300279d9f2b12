"""Where a release runs: one deployer role (role.py), a local podman + nginx target and an ECS target."""
