"""The forge in the loop: commit statuses on GitHub or GitLab for every stage, group and run."""
