"""Fixtures of the fine-tuning tests: tiny databases in the original formats and a tiny model config."""

from __future__ import annotations

import gc
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ft_helpers as H  # noqa: E402

from integrations.uniter.data.synthetic import make_retrieval_dbs  # noqa: E402


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Two training sets and a model config.

    ``small``: 5 images x 1 caption (a fixed set a tiny model can fit in a
    few dozen steps); ``multi``: 12 images x 3 captions (3-8 regions, 2-8
    word pieces), also used as the val/test split.
    """
    root = tmp_path_factory.mktemp("ft_data")
    small = make_retrieval_dbs(root / "small", n_images=5, captions_per_image=1, vocab_size=H.VOCAB,
                               min_words=3, max_words=6, img_dim=H.IMG_DIM, boxes=(2, 4), seed=0, **H.SETTING)
    multi = make_retrieval_dbs(root / "multi", n_images=12, captions_per_image=3, vocab_size=H.VOCAB,
                               min_words=2, max_words=8, img_dim=H.IMG_DIM, boxes=(3, 8), seed=1, **H.SETTING)
    config = root / "uniter-tiny.json"
    config.write_text(json.dumps(H.MODEL))
    return {"small": small, "multi": multi, "model_config": str(config)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and oversubscribed cores slow them a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _collect_garbage():
    """Finalise this test's leftovers (database readers in reference cycles) at a safe point.

    ``data._lmdb`` opens environments under a non-reentrant lock; a reader
    finalised by a garbage collection that happens inside that lock (in a
    later test of the same worker) would deadlock.
    """
    yield
    gc.collect()
