"""The image stage: container_image and promoted_image (``assets.py``), the spec's image tags (``tags.py``).

The builder and registry roles they use live in ``sevenp_pipeline/resources/builders/``,
``resources/registries/`` and ``resources/base_image.py``.
"""
