"""UNITER integration: the paper's model as a plug-in of the retrieval engine, reading the original files.

Modules, in the order data flows through them:

- :mod:`~integrations.uniter.config`: the original JSON configs (model sizes,
  and the data keys of the training config);
- :mod:`~integrations.uniter.data`: txt_db / img_db readers and writers, collate;
- :mod:`~integrations.uniter.model`: UNITER with the original state-dict names,
  whose last layer can return its attention scores;
- :mod:`~integrations.uniter.plugin`: the splits, the model and the batches
  for :mod:`integrations.retrieval`;
- the commands: :mod:`~.finetune`, :mod:`~.evaluate`, :mod:`~.isda`,
  :mod:`~.visualize` (``python -m integrations.uniter.<command>``), and the
  built-in :mod:`~.demo`.

The format contract these modules implement is described in ``docs/uniter.md``.
"""
