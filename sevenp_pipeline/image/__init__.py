"""The image stage: container_image (``assets.py``), the spec's image tags (``tags.py``); promoted_image
lives in ``sevenp_pipeline/promotion/``.

The builder and registry roles they use live in ``sevenp_pipeline/resources/builders/``,
``resources/registries/`` and ``resources/base_image.py``.
"""
