"""Stage family 'build' (spec stage 3, first half): the dist artifact and the docs."""
