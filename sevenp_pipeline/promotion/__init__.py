"""The promotion family: ``promoted_image``, the spec's tags on the commit's image once the app's
gates (``sevenp_pipeline/verdict.py``) all passed. It runs after security, before deploy."""
