"""ViLT integration: a Hugging Face ``ViltForImageAndTextRetrieval`` as a plug-in of the retrieval engine.

Modules, in the order data flows through them:

- :mod:`~integrations.vilt.config`: the settings (model, processor, sequence
  limits, the Karpathy split file and the image folder);
- :mod:`~integrations.vilt.data`: Karpathy split files, images read with
  Pillow, the splits (:class:`~.data.ViltPairs`) and the batches built by the
  ``ViltProcessor``;
- :mod:`~integrations.vilt.model`: the model with its last-layer scores and the
  IAIS item masks on ViLT's sequence;
- :mod:`~integrations.vilt.plugin`: the splits, the model and the batches for
  :mod:`integrations.retrieval`;
- the commands (``python -m integrations.vilt.<command>``): :mod:`~.finetune`,
  :mod:`~.evaluate`, :mod:`~.isda`, :mod:`~.winoground`; :mod:`~.cli` holds
  what the scoring ones share.

See ``docs/vilt.md``.
"""
