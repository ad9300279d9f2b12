"""What starts pipelines: the git push sensor per app."""
