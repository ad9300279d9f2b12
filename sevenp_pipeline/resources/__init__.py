"""One module per external system: processes, git, test services, artifacts."""
