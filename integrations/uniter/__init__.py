"""UNITER integration: the paper's retrieval recipe, reading the original files.

Modules, in the order data flows through them:

- :mod:`~integrations.uniter.config`: the original JSON configs as typed settings;
- :mod:`~integrations.uniter.data`: txt_db / img_db readers and writers, collate;
- :mod:`~integrations.uniter.model`: UNITER with the original state-dict names,
  whose last layer can return its attention scores;
- :mod:`~integrations.uniter.evaluate`: full-ranking retrieval evaluation
  (``python -m integrations.uniter.evaluate``).

The format contract these modules implement is described in ``docs/uniter.md``.
"""
