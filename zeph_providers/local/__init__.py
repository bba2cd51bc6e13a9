"""The local backend (type "local"; zeph-llm's "candle"): a model on one dedicated worker thread.

Nothing heavy is imported here: torch, transformers and huggingface_hub load only when
`zeph_providers.local.provider.build()` runs (i.e. when a registry builds a local provider).
"""
