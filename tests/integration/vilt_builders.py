"""Builders of the ViLT tests' world: a tiny random ViLT saved like a hub checkpoint, a folder of drawn
shapes with a Karpathy split file and Flickr30k Entities files, and a Winoground-style set."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .builders import annotation_xml, box_object, flag_object, write

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "green", "blue", "yellow", "circle", "square",
         "triangle", "left", "right", "of", "above", "below", "on", "the", "in", "picture", "."]
COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
#: image sizes (width, height): landscape, portrait and a wider one (three patch grids after the resize)
SIZES = ((48, 32), (32, 48), (64, 40))
#: the tiny model: 16-pixel patches, images resized to a shorter side of 32
MAX_TEXT_LEN = 16
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64,
            patch_size=16, max_position_embeddings=MAX_TEXT_LEN, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, initializer_range=0.2)
SPLITS = ["train"] * 8 + ["val"] * 3 + ["test"] * 5


def save_tiny_vilt(root: Path, *, seed: int = 0) -> Path:
    """A random ``ViltForImageAndTextRetrieval`` with its ``ViltProcessor``, saved in ``root``."""
    from transformers import BertTokenizerFast, ViltConfig, ViltForImageAndTextRetrieval, ViltProcessor
    from transformers.models.vilt.image_processing_pil_vilt import ViltImageProcessorPil

    vocab = write(root / "vocab.txt", "\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True, model_max_length=MAX_TEXT_LEN)
    processor = ViltProcessor(image_processor=ViltImageProcessorPil(size={"shortest_edge": 32}, size_divisor=16),
                              tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = ViltForImageAndTextRetrieval(ViltConfig(vocab_size=len(VOCAB), **TINY))
    model.save_pretrained(root)
    processor.save_pretrained(root)
    return root


def scene(index: int) -> dict:
    """Image ``index``: its size, two coloured shapes side by side (or stacked) and their 0-based boxes."""
    width, height = SIZES[index % len(SIZES)]
    colors = list(COLORS)
    first = (colors[index % 4], SHAPES[index % 3])
    second = (colors[(index + 1 + (index // 4) % 3) % 4], SHAPES[(index + 1 + index // 3) % 3])
    if width >= height:
        boxes = [(2, 4, width // 2 - 3, height - 5), (width // 2 + 2, 3, width - 3, height - 4)]
        relation = ("left", "right")
    else:
        boxes = [(4, 2, width - 5, height // 2 - 3), (3, height // 2 + 2, width - 4, height - 3)]
        relation = ("above", "below")
    return {"size": (width, height), "objects": [first, second], "boxes": boxes, "relation": relation}


def draw(spec: dict):
    """The picture of a :func:`scene`."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", spec["size"], (245, 245, 240))
    pen = ImageDraw.Draw(image)
    for (color, shape), (x1, y1, x2, y2) in zip(spec["objects"], spec["boxes"]):
        fill = COLORS[color]
        if shape == "circle":
            pen.ellipse((x1, y1, x2, y2), fill=fill)
        elif shape == "square":
            pen.rectangle((x1, y1, x2, y2), fill=fill)
        else:
            pen.polygon([((x1 + x2) // 2, y1), (x1, y2), (x2, y2)], fill=fill)
    return image


def captions(spec: dict) -> list[tuple[str, str]]:
    """Two captions of a scene, plain and with Flickr30k Entities markup (entities 1 and 2)."""
    (c1, s1), (c2, s2) = spec["objects"]
    near, far = spec["relation"]
    a, b = f"a {c1} {s1}", f"a {c2} {s2}"
    return [(f"{a} {near} of {b}", f"[/EN#1/other {a}] {near} of [/EN#2/other {b}]"),
            (f"{b} {far} of {a} in the picture", f"[/EN#2/other {b}] {far} of [/EN#1/other {a}] in "
                                                 f"[/EN#3/scene the picture]")]


def make_shapes(root: Path) -> dict:
    """The image folder, the Karpathy file and the Entities folder of :data:`SPLITS`."""
    images, entries = root / "images", []
    ents = root / "entities"
    for index, split in enumerate(SPLITS):
        spec = scene(index)
        name = f"{1000 + index}.png"
        images.mkdir(parents=True, exist_ok=True)
        draw(spec).save(images / name)
        caps = captions(spec)
        entries.append({"filename": name, "split": split, "imgid": index,
                        "sentences": [{"raw": raw, "tokens": raw.split(), "imgid": index} for raw, _ in caps]})
        if split == "test" and index != len(SPLITS) - 1:  # the last test image has no Entities files
            write(ents / "Sentences" / f"{1000 + index}.txt", "\n".join(marked for _, marked in caps) + "\n")
            objects = [box_object([str(e + 1)], tuple(v + 1 for v in box)) for e, box in enumerate(spec["boxes"])]
            objects.append(flag_object(["3"], scene=1, nobndbox=0))
            write(ents / "Annotations" / f"{1000 + index}.xml", annotation_xml(name, *spec["size"], objects))
    karpathy = write(root / "dataset_shapes.json", json.dumps({"images": entries, "dataset": "shapes"}))
    return {"images": images, "karpathy": karpathy, "entities": ents}


def make_winoground(root: Path) -> Path:
    """Two Winoground examples in the released layout: ``examples.jsonl`` and ``images/ex_<i>_img_<j>.png``."""
    lines = []
    pairs = [(("red", "circle"), ("blue", "square")), (("green", "triangle"), ("yellow", "circle"))]
    for e, (c1, c2) in enumerate(pairs):
        for j, objects in enumerate([(c1, c2), (c2, c1)]):
            spec = {"size": (48, 32), "objects": list(objects), "boxes": [(2, 4, 21, 27), (26, 3, 45, 28)]}
            (root / "images").mkdir(parents=True, exist_ok=True)
            draw(spec).save(root / "images" / f"ex_{e}_img_{j}.png")
        a, b = " ".join(c1), " ".join(c2)
        lines.append(json.dumps({"id": e, "caption_0": f"a {a} left of a {b}", "caption_1": f"a {b} left of a {a}",
                                 "image_0": f"ex_{e}_img_0", "image_1": f"ex_{e}_img_1", "tag": "Object",
                                 "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"}))
    write(root / "examples.jsonl", "\n".join(lines) + "\n")
    return root


def hf_pair_logits(model_dir: str, pairs: list[tuple[str, str]], *, state_dict: dict | None = None,
                   max_text_len: int = MAX_TEXT_LEN) -> list[float]:
    """Match logits of ``(image file, caption)`` pairs, each scored alone by ``ViltForImageAndTextRetrieval``
    on the ``ViltProcessor``'s own output (one processor call per pair)."""
    from PIL import Image
    from transformers import ViltForImageAndTextRetrieval, ViltProcessor

    processor = ViltProcessor.from_pretrained(model_dir)
    model = ViltForImageAndTextRetrieval.from_pretrained(model_dir).eval()
    if state_dict is not None:
        model.load_state_dict({k.removeprefix("model."): v for k, v in state_dict.items()})
    out = []
    with torch.no_grad():
        for path, text in pairs:
            with Image.open(path) as image:
                inputs = processor(images=image.convert("RGB"), text=text, padding="max_length",
                                   max_length=max_text_len, truncation=True, return_tensors="pt")
            out.append(float(model(**inputs).logits[0, 0]))
    return out
