"""Stage family 'quality' (spec stage 1): lint, security lint, formatting, type check."""
