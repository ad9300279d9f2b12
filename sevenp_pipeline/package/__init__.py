"""Container packaging: image tag naming (``tags.py``) following the spec's "Extract Metadata" step.

The builder and registry resources live in ``sevenp_pipeline/resources/builder.py``,
``registry.py`` and ``base_image.py``.
"""
