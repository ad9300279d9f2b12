"""Where a release runs: one deployer role (role.py), the implementations by target name (registry.py), a
local podman + nginx target and an ECS target."""
