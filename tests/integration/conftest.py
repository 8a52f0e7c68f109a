"""Fixtures of the integration tests: tiny databases, model configs and checkpoints in the original formats."""

from __future__ import annotations

import gc
import json

import pytest
import torch

from integrations.uniter.config import UniterModelConfig
from integrations.uniter.data.synthetic import make_retrieval_dbs
from integrations.uniter.model import UniterForRetrieval

from . import helpers as H

N_IMAGES, CAPTIONS_PER_IMAGE = 7, 3


@pytest.fixture(scope="session")
def dbs(tmp_path_factory):
    """``{"plain": SyntheticDbs, "compressed": SyntheticDbs}`` holding the same content (2048-d features)."""
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


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Training sets of the fine-tuning tests (16-d features), their model config and weights.

    ``small``: 5 images x 1 caption (a fixed set a tiny model can fit in a
    few dozen steps); ``multi``: 12 images x 3 captions (3-8 regions, 2-8
    word pieces), also used as the val/test split; ``weights``: random
    weights of the model; ``config``: a training config with the databases'
    detector setting, the model config and ``inf_minibatch_size`` 16 (no
    databases).
    """
    root = tmp_path_factory.mktemp("ft_data")
    common = dict(vocab_size=H.FT_VOCAB, img_dim=H.FT_IMG_DIM, **H.SETTING)
    small = make_retrieval_dbs(root / "small", n_images=5, captions_per_image=1, min_words=3, max_words=6,
                               boxes=(2, 4), seed=0, **common)
    multi = make_retrieval_dbs(root / "multi", n_images=12, captions_per_image=3, min_words=2, max_words=8,
                               boxes=(3, 8), seed=1, **common)
    config = root / "uniter-tiny.json"
    config.write_text(json.dumps(H.FT_MODEL))
    torch.manual_seed(0)
    weights = root / "weights.pt"
    model = UniterForRetrieval(UniterModelConfig.from_dict(H.FT_MODEL), img_dim=H.FT_IMG_DIM)
    torch.save(model.state_dict(), weights)
    setting = root / "setting.json"
    setting.write_text(json.dumps({**H.SETTING, "model_config": str(config), "inf_minibatch_size": 16}))
    return {"small": small, "multi": multi, "model_config": str(config), "weights": str(weights),
            "config": str(setting)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and oversubscribed cores slow them a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _collect_garbage():
    """Close the database readers a test left in reference cycles now, rather than in a later test."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def vilt_world(tmp_path_factory):
    """A tiny random ViLT saved locally, drawn shapes with a Karpathy file and Entities files, a Winoground set."""
    from . import vilt_builders as V

    root = tmp_path_factory.mktemp("vilt")
    model = V.save_tiny_vilt(root / "model")
    shapes = V.make_shapes(root / "shapes")
    winoground = V.make_winoground(root / "winoground")
    return {"root": root, "model": str(model), "winoground": str(winoground),
            **{k: str(v) for k, v in shapes.items()}}
