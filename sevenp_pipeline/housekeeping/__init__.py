"""Keeping the home's size in check: workspace retention (a daily schedule and `make prune`)."""
