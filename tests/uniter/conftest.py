"""Fixtures of the UNITER integration tests: tiny databases and checkpoints in the original formats."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import uniter_helpers as H  # noqa: E402

from integrations.uniter.data.synthetic import make_retrieval_dbs  # noqa: E402

N_IMAGES, CAPTIONS_PER_IMAGE = 7, 3


@pytest.fixture(scope="session")
def dbs(tmp_path_factory):
    """``{"plain": SyntheticDbs, "compressed": SyntheticDbs}`` holding the same content."""
    out = {}
    for variant in ("plain", "compressed"):
        root = tmp_path_factory.mktemp(f"dbs_{variant}")
        out[variant] = make_retrieval_dbs(
            root, n_images=N_IMAGES, captions_per_image=CAPTIONS_PER_IMAGE, vocab_size=H.TINY["vocab_size"],
            min_words=2, max_words=9, boxes=(3, 9), compressed=variant == "compressed", seed=3, **H.SETTING)
    return out


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """Paths of the tiny model config JSON and of checkpoints in the original layout.

    ``finetuned.pt``: float16, gamma/beta names, pre-training heads, rank_output present;
    ``pretrained.pt``: the same without rank_output; ``finetuned.safetensors``.
    """
    root = tmp_path_factory.mktemp("model")
    model = H.random_model(seed=0)
    config = root / "uniter-tiny.json"
    config.write_text(json.dumps(H.TINY))
    state = H.to_original_format(model.state_dict())
    torch.save(state, root / "finetuned.pt")
    torch.save(H.to_original_format(model.state_dict(), rank_output=False), root / "pretrained.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "finetuned.safetensors"))
    return {"config": str(config), "finetuned": str(root / "finetuned.pt"),
            "pretrained": str(root / "pretrained.pt"), "safetensors": str(root / "finetuned.safetensors"),
            "model": model}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and oversubscribed cores slow them a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
