"""Every command answers a bad input with one line ``error: ...`` naming the culprit, and exit status 2.

A table of bad inputs per command (UNITER's ``finetune``, ``evaluate``, ``isda``, ``visualize``; ViLT's
``finetune``, ``evaluate``, ``isda``, ``winoground``), each run as a process of its own
(:func:`helpers.run_commands`): status 2, no traceback, exactly one line that is not a log record, and in it
every expected string (the flag, the file, the key). A string starting with ``!`` must not appear: a flag's
bad value is named by the flag, not by the config key it maps to.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from . import helpers as H
from .vilt_builders import MAX_TEXT_LEN

U, V = "integrations.uniter.", "integrations.vilt."
_SPLIT = {"--config": "{config}", "--txt-db": "{txt}", "--img-db": "{img}", "--checkpoint": "{weights}"}
_ENTITIES = {"--entities": "{entities}", "--vocab": "{vocab}"}
_RUN = {"--output-dir": "{run}", "--num-train-steps": 1, "--train-batch-size": 1, "--negative-size": 3,
        "--hard-neg-size": 1, "--inf-minibatch-size": 4, "--n-workers": 0, "--threads": 1, "--no-progress": True,
        "--no-tensorboard": True, "--quiet": True, "--no-final-eval": True}
_VILT = {"--model": "{vilt}", "--karpathy-json": "{karpathy}", "--image-root": "{images}",
         "--max-text-len": MAX_TEXT_LEN}
#: each command's valid command line, as {flag: value} (True: a switch)
BASE = {
    U + "evaluate": {**_SPLIT, "--no-progress": True},
    U + "isda": {**_SPLIT, **_ENTITIES, "--no-progress": True},
    U + "visualize": {**_SPLIT, **_ENTITIES},
    U + "finetune": {"--config": "{config}", "--txt-db": "{txt}", "--img-db": "{img}", **_RUN},
    V + "evaluate": {**_VILT, "--no-progress": True},
    V + "isda": {**_VILT, "--entities": "{vilt_entities}", "--no-progress": True},
    V + "winoground": {"--model": "{vilt}", "--data": "{winoground}", "--max-text-len": MAX_TEXT_LEN},
    V + "finetune": {**_VILT, **_RUN},
}
#: (command, flags changed (None: dropped), strings the error line must hold)
CASES = [
    (U + "evaluate", {"--config": "{bad}/none.json"}, ["config file not found", "{bad}/none.json"]),
    (U + "evaluate", {"--config": "{bad}/corrupt.json"}, ["{bad}/corrupt.json: not valid JSON"]),
    (U + "evaluate", {"--config": "{bad}/zero_batch.json"}, ["{bad}/zero_batch.json: key 'inf_minibatch_size'"]),
    (U + "evaluate", {"--checkpoint": "{bad}/empty.pt"}, ["cannot read checkpoint {bad}/empty.pt"]),
    (U + "evaluate", {"--checkpoint": "{bad}/cut.pt"}, ["cannot read checkpoint {bad}/cut.pt"]),
    (U + "evaluate", {"--output": "{bad}/a_file/results.json"}, ["--output", "{bad}/a_file is a file"]),
    (U + "evaluate", {"--output": "{bad}"}, ["--output {bad} is a directory"]),
    (U + "evaluate", {"--img-db": "{bad}/no_db"}, ["img_db directory not found: {bad}/no_db"]),
    (U + "evaluate", {"--device": "gpu0"}, ["--device 'gpu0' is not a torch device"]),
    (U + "evaluate", {"--batch-size": 0}, ["--batch-size must be >= 1"]),
    (U + "isda", {"--model-config": "{bad}/none.json"}, ["model config not found: {bad}/none.json"]),
    (U + "isda", {"--checkpoint": "{bad}/list.pt"}, ["{bad}/list.pt: expected a state dict"]),
    (U + "isda", {"--vocab": "{bad}/none.txt"}, ["vocabulary file not found: {bad}/none.txt"]),
    (U + "isda", {"--limit": 0}, ["--limit must be >= 1"]),
    (U + "isda", {"--output": "{bad}/a_file/isda.json"}, ["--output", "{bad}/a_file is a file"]),
    (U + "visualize", {"--label": ["one", "two"]}, ["give one --label per --checkpoint"]),
    (U + "visualize", {"--txt-db": "{bad}/no_db"}, ["txt_db directory not found: {bad}/no_db"]),
    (U + "visualize", {"--output": "{bad}/a_file/fig.png"}, ["--output", "{bad}/a_file is a file"]),
    (U + "finetune", {"--learning-rate": "nan"}, ["--learning-rate must be a finite number", "!learning_rate"]),
    (U + "finetune", {"--iais-gamma": 0}, ["--iais-gamma must be > 0", "!iais_gamma"]),
    (U + "finetune", {"--image-cache": -1}, ["--image-cache must be >= 0"]),
    (U + "finetune", {"--threads": 0}, ["--threads must be >= 1"]),
    (U + "finetune", {"--img-dim": 32}, ["--img-dim", "16-d region features", "{img}"]),
    (U + "finetune", {"--output-dir": "{bad}/a_file"}, ["--output-dir {bad}/a_file is a file"]),
    (U + "finetune", {"--output-dir": "{bad}/a_file/run"}, ["--output-dir {bad}/a_file/run"]),
    (U + "finetune", {"--checkpoint": "{bad}/cut.pt"}, ["cannot read checkpoint {bad}/cut.pt"]),
    (U + "finetune", {"--resume": "{bad}/empty.pt"}, ["cannot read training checkpoint {bad}/empty.pt"]),
    (U + "finetune", {"--config": "{bad}/nan_rate.json"}, ["{bad}/nan_rate.json: key 'learning_rate' must be "
                                                           "a finite number"]),
    (U + "finetune", {"--set": "learning_rate=-1"}, ["--set", "'learning_rate' must be > 0"]),
    (U + "finetune", {"--img-db": "{bad}/cut_img"}, ["{bad}/cut_img/feat_th0.2_max8_min2/data.mdb is cut short"]),
    (V + "evaluate", {"--checkpoint": "{bad}/cut.pt"}, ["cannot read checkpoint {bad}/cut.pt"]),
    (V + "evaluate", {"--output": "{bad}"}, ["--output {bad} is a directory"]),
    (V + "evaluate", {"--model": "{bad}/no_model"}, ["--model", "{bad}/no_model"]),
    (V + "evaluate", {"--karpathy-json": "{bad}/corrupt.json"}, ["{bad}/corrupt.json: not valid JSON"]),
    (V + "isda", {"--batch-size": 0}, ["--batch-size must be >= 1", "!batch_size"]),
    (V + "isda", {"--entities": "{bad}/none"}, ["no Sentences/ folder", "{bad}/none"]),
    (V + "winoground", {"--data": "{bad}/none"}, ["no examples.jsonl in {bad}/none"]),
    (V + "winoground", {"--checkpoint": "{bad}/empty.pt"}, ["cannot read checkpoint {bad}/empty.pt"]),
    (V + "finetune", {"--learning-rate": "inf"}, ["--learning-rate must be a finite number", "!learning_rate"]),
    (V + "finetune", {"--max-image-length": 0}, ["--max-image-length must be >= 1 or -1"]),
    (V + "finetune", {"--output-dir": "{bad}/a_file/run"}, ["--output-dir {bad}/a_file/run"]),
    (V + "finetune", {"--device": "cuda:99"}, ["--device 'cuda:99'"]),
]


def _argv(flags: dict, paths: dict) -> list[str]:
    out = []
    for flag, value in flags.items():
        for v in value if isinstance(value, list) else [value]:
            if v is None:
                continue
            out += [flag] if v is True else [flag, str(v).format(**paths)]
    return out


@pytest.fixture(scope="module")
def paths(data, vilt_world, tmp_path_factory):
    """Every path the table names: the valid inputs, and ``bad/`` with the bad ones."""
    bad = tmp_path_factory.mktemp("bad")
    (bad / "corrupt.json").write_text("{not json")
    setting = json.loads(open(data["config"]).read())
    (bad / "zero_batch.json").write_text(json.dumps({**setting, "inf_minibatch_size": 0}))
    (bad / "nan_rate.json").write_text(json.dumps(setting)[:-1] + ', "learning_rate": NaN}')
    (bad / "empty.pt").write_bytes(b"")
    weights = open(data["weights"], "rb").read()
    (bad / "cut.pt").write_bytes(weights[: len(weights) // 2])
    torch.save([1, 2], bad / "list.pt")
    (bad / "a_file").write_text("not a directory")
    shutil.copytree(data["multi"].img_db, bad / "cut_img")
    mdb = bad / "cut_img" / "feat_th0.2_max8_min2" / "data.mdb"
    os.truncate(mdb, os.path.getsize(mdb) // 2)
    (bad / "entities" / "Sentences").mkdir(parents=True)
    (bad / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    return {"bad": str(bad), "config": data["config"], "txt": data["multi"].txt_db, "img": data["multi"].img_db,
            "weights": data["weights"], "entities": str(bad / "entities"), "vocab": str(bad / "vocab.txt"),
            "vilt": vilt_world["model"], "karpathy": vilt_world["karpathy"], "images": vilt_world["images"],
            "vilt_entities": vilt_world["entities"], "winoground": vilt_world["winoground"],
            "run": str(tmp_path_factory.mktemp("runs") / "run")}


@pytest.fixture(scope="module")
def results(paths):
    cases = [(module, _argv({**BASE[module], **flags}, {**paths, "run": f"{paths['run']}{i}"}))
             for i, (module, flags, _) in enumerate(CASES)]
    return H.run_commands(cases)


@pytest.mark.parametrize("case", range(len(CASES)),
                         ids=[f"{m.split('.', 1)[1]}:{','.join(f)}" for m, f, _ in CASES])
def test_a_bad_input_is_one_line_naming_it_with_exit_status_2(paths, results, case):
    module, flags, expected = CASES[case]
    result = results[case]
    lines = H.error_lines(result["stderr"])
    assert result["status"] == 2 and "Traceback" not in result["stderr"], result["stderr"][-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for text in expected:
        text = text.format(**paths)
        assert (text[1:] not in lines[0]) if text.startswith("!") else (text in lines[0]), (text, lines[0])
