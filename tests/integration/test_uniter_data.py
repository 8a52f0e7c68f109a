"""txt_db / img_db byte formats, readers, writers, collate and error messages.

The format checks read and write the databases with plain lmdb/lz4/msgpack/numpy
calls written from the contract, independently of the module under test.
"""

from __future__ import annotations

import io
import json
import os

import lmdb
import lz4.frame
import msgpack
import msgpack_numpy
import numpy as np
import pytest
import torch
from . import helpers as H

from integrations.uniter.data import (CorruptRecordError, ImgDb, MissingRecordError, TxtDb, collate_pairs,
                                      item_masks, layout_tensors, write_img_db, write_txt_db)
from integrations.uniter.data.synthetic import BERT_BASE_CASED_META, random_image_record

FEAT = "feat_th0.2_max8_min2"
NBB = "nbb_th0.2_max8_min2.json"


def _raw_lmdb_items(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = {k.decode(): bytes(v) for k, v in txn.cursor()}
    env.close()
    return items


def _raw_put(path, items, map_size=1 << 26):
    env = lmdb.open(str(path), map_size=map_size)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key.encode(), value)
    env.close()


# ------------------------------------------------------------------ txt_db


def test_txt_db_bytes_follow_the_contract(tmp_path):
    examples = {"12": {"input_ids": [1037, 2158, 117], "img_fname": "a.npz", "toked": ["a", "b"]},
                "7": {"input_ids": [2000], "img_fname": "b.npz"},
                "3": {"input_ids": [150, 151], "img_fname": "a.npz"}}
    write_txt_db(tmp_path / "t.db", examples, BERT_BASE_CASED_META)
    assert {"data.mdb", "lock.mdb"} <= set(os.listdir(tmp_path / "t.db"))
    raw = _raw_lmdb_items(tmp_path / "t.db")
    assert set(raw) == {"12", "7", "3"}
    for key, buf in raw.items():
        assert msgpack.loads(lz4.frame.decompress(buf), raw=False) == examples[key]
    side = {name: json.loads((tmp_path / "t.db" / name).read_text())
            for name in ("meta.json", "id2len.json", "txt2img.json", "img2txts.json")}
    assert side["meta.json"] == BERT_BASE_CASED_META
    assert side["id2len.json"] == {"12": 3, "7": 1, "3": 2}
    assert side["txt2img.json"] == {"12": "a.npz", "7": "b.npz", "3": "a.npz"}
    assert side["img2txts.json"] == {"a.npz": ["12", "3"], "b.npz": ["7"]}


def _hand_written_txt_db(path, examples, meta=BERT_BASE_CASED_META):
    os.makedirs(path)
    _raw_put(path, {k: lz4.frame.compress(msgpack.dumps(v, use_bin_type=True)) for k, v in examples.items()})
    files = {"meta.json": meta, "id2len.json": {k: len(v["input_ids"]) for k, v in examples.items()},
             "txt2img.json": {k: v["img_fname"] for k, v in examples.items()}, "img2txts.json": {}}
    for name, content in files.items():
        with open(os.path.join(path, name), "w") as f:
            json.dump(content, f)


def test_txt_db_reader_on_hand_written_db(tmp_path):
    examples = {"1": {"input_ids": list(range(110, 170)), "img_fname": "x.npz"},
                "2": {"input_ids": list(range(110, 171)), "img_fname": "y.npz", "target": 1},
                "3": {"input_ids": [120, 121], "img_fname": "x.npz"}}
    _hand_written_txt_db(str(tmp_path / "t.db"), examples)
    db = TxtDb(tmp_path / "t.db")
    assert db.ids == ["1", "2", "3"] and (db.cls_id, db.sep_id, db.mask_id) == (101, 102, 103)
    assert db["2"]["target"] == 1
    assert db.combine_inputs(db.input_ids("3")).tolist() == [101, 120, 121, 102]
    assert db.img2txts == {"x.npz": ["1", "3"], "y.npz": ["2"]}
    train = TxtDb(tmp_path / "t.db", max_txt_len=60)  # training keeps id2len <= 60
    assert train.ids == ["1", "3"] and set(train.txt2img) == {"1", "3"}


def test_txt_db_errors_name_db_and_key(tmp_path):
    path = str(tmp_path / "t.db")
    _hand_written_txt_db(path, {"1": {"input_ids": [120], "img_fname": "x.npz"},
                                "2": {"input_ids": [121], "img_fname": "x.npz"},
                                "3": {"img_fname": "x.npz", "input_ids": [1]}})
    _raw_put(path, {"2": b"\x04\x22garbage"})  # corrupt record 2
    _raw_put(path, {"3": lz4.frame.compress(msgpack.dumps({"img_fname": "x.npz"}))})  # no input_ids
    db = TxtDb(path)
    with pytest.raises(MissingRecordError) as err:
        db["99"]
    assert path in str(err.value) and "'99'" in str(err.value)
    assert isinstance(err.value, KeyError) and err.value.db_path == path and err.value.key == "99"
    with pytest.raises(CorruptRecordError) as err:
        db["2"]
    assert path in str(err.value) and "'2'" in str(err.value)
    with pytest.raises(CorruptRecordError, match=r"'3'.*input_ids"):
        db.input_ids("3")


def test_txt_db_side_file_errors(tmp_path):
    path = str(tmp_path / "t.db")
    _hand_written_txt_db(path, {"1": {"input_ids": [120], "img_fname": "x.npz"}}, meta={"CLS": 101, "SEP": 102})
    with pytest.raises(MissingRecordError) as err:
        TxtDb(path)
    assert "meta.json" in str(err.value) and "'MASK'" in str(err.value)
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(BERT_BASE_CASED_META, f)
    with open(os.path.join(path, "txt2img.json"), "w") as f:
        json.dump({}, f)
    with pytest.raises(MissingRecordError) as err:
        TxtDb(path)
    assert "txt2img.json" in str(err.value) and "'1'" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TxtDb(tmp_path / "nowhere")


# ------------------------------------------------------------------ img_db


@pytest.mark.parametrize("compressed", [False, True])
def test_img_db_bytes_follow_the_contract(tmp_path, compressed):
    rng = np.random.default_rng(0)
    images = {"a.npz": random_image_record(rng, 6), "b.npz": random_image_record(rng, 12)}
    images["a.npz"]["conf"] = np.array([0.9, 0.5, 0.3, 0.25, 0.1, 0.05])  # 4 above 0.2
    images["b.npz"]["conf"] = np.linspace(0.99, 0.5, 12)                  # 12 above, clipped to 8
    nbb = write_img_db(tmp_path, images, 0.2, 8, 2, compressed=compressed)
    assert nbb == {"a.npz": 4, "b.npz": 8}
    assert json.loads((tmp_path / NBB).read_text()) == nbb
    feat_dir = tmp_path / (FEAT + ("_compressed" if compressed else ""))
    raw = _raw_lmdb_items(feat_dir)
    assert json.loads(raw.pop("__keys__")) == ["a.npz", "b.npz"]
    for fname, buf in raw.items():
        if compressed:
            record = dict(np.load(io.BytesIO(buf)))
        else:
            record = msgpack.loads(buf, raw=False, object_hook=msgpack_numpy.decode)
        assert set(record) == {"features", "norm_bb", "conf", "soft_labels"}
        n = len(images[fname]["features"])
        expected_shapes = {"features": (n, 2048), "norm_bb": (n, 6), "conf": (n, 1), "soft_labels": (n, 1601)}
        for key, arr in record.items():
            assert arr.dtype == np.float16 and arr.shape == expected_shapes[key]
            np.testing.assert_array_equal(arr, np.asarray(images[fname][key]).astype(np.float16).reshape(arr.shape))


def _hand_written_img_db(root, images, compressed):
    """An img_db written from the contract with plain calls (no module code)."""
    os.makedirs(root, exist_ok=True)
    name2nbb, items = {}, {}
    for fname, rec in images.items():
        rec = {k: np.asarray(v, dtype=np.float16) for k, v in rec.items()}
        name2nbb[fname] = int(np.clip((rec["conf"] > 0.2).sum(), 2, 8))
        if compressed:
            buf = io.BytesIO()
            np.savez_compressed(buf, **rec)
            items[fname] = buf.getvalue()
        else:
            items[fname] = msgpack.dumps(rec, default=msgpack_numpy.encode, use_bin_type=True)
    items["__keys__"] = json.dumps(list(images)).encode()
    _raw_put(os.path.join(root, FEAT + ("_compressed" if compressed else "")), items)
    with open(os.path.join(root, NBB), "w") as f:
        json.dump(name2nbb, f)
    return name2nbb


@pytest.mark.parametrize("compressed", [False, True])
def test_img_db_reader_on_hand_written_db(tmp_path, compressed):
    rng = np.random.default_rng(1)
    images = {f"img_{i}.npz": random_image_record(rng, int(rng.integers(3, 12))) for i in range(3)}
    name2nbb = _hand_written_img_db(str(tmp_path), images, compressed)
    db = ImgDb(tmp_path, conf_th=0.2, max_bb=8, min_bb=2)  # variant detected from disk
    assert db.compressed is compressed and db.name2nbb == name2nbb and len(db) == 3
    for fname, rec in images.items():
        feat, boxes = db[fname]
        n = name2nbb[fname]
        assert feat.dtype == torch.float32 and feat.shape == (n, 2048) and boxes.shape == (n, 7)
        bb = rec["norm_bb"].astype(np.float16).astype(np.float32)[:n]
        np.testing.assert_array_equal(feat.numpy(), rec["features"].astype(np.float16).astype(np.float32)[:n])
        np.testing.assert_array_equal(boxes[:, :6].numpy(), bb)
        np.testing.assert_allclose(boxes[:, 6].numpy(), bb[:, 4] * bb[:, 5], rtol=1e-6)


@pytest.mark.parametrize("compressed", [False, True])
def test_img_db_does_not_decode_soft_labels(tmp_path, compressed):
    """soft_labels is stored in a form that fails to decode: reading still works."""
    rng = np.random.default_rng(2)
    rec = {k: np.asarray(v, dtype=np.float16) for k, v in random_image_record(rng, 4).items()}
    if compressed:
        buf = io.BytesIO()
        # an object array needs pickle, which the reader must never be asked for
        np.savez_compressed(buf, features=rec["features"], norm_bb=rec["norm_bb"], conf=rec["conf"],
                            soft_labels=np.array([object()] * 4, dtype=object))
        value = buf.getvalue()
        with pytest.raises(ValueError):
            np.load(io.BytesIO(value), allow_pickle=False)["soft_labels"]
    else:
        poisoned = {b"nd": True, b"type": "<zz-not-a-dtype", b"kind": b"", b"shape": (4, 3), b"data": b"x"}
        value = msgpack.dumps({"features": rec["features"], "soft_labels": poisoned, "norm_bb": rec["norm_bb"],
                               "conf": rec["conf"]}, default=msgpack_numpy.encode, use_bin_type=True)
        with pytest.raises(Exception):
            msgpack.loads(value, raw=False, object_hook=msgpack_numpy.decode)
    _raw_put(tmp_path / (FEAT + ("_compressed" if compressed else "")), {"a.npz": value})
    (tmp_path / NBB).write_text(json.dumps({"a.npz": 3}))
    feat, boxes = ImgDb(tmp_path, max_bb=8, min_bb=2)["a.npz"]
    assert feat.shape == (3, 2048) and boxes.shape == (3, 7)


@pytest.mark.parametrize("compressed", [False, True])
def test_img_db_errors_name_db_and_key(tmp_path, compressed):
    rng = np.random.default_rng(3)
    _hand_written_img_db(str(tmp_path), {"a.npz": random_image_record(rng, 5),
                                         "b.npz": random_image_record(rng, 5)}, compressed)
    lmdb_path = str(tmp_path / (FEAT + ("_compressed" if compressed else "")))
    _raw_put(lmdb_path, {"b.npz": b"\x93NUMPY garbage" if compressed else b"\xc1\xc1"})
    nbb = json.loads((tmp_path / NBB).read_text())
    nbb["ghost.npz"] = 3  # listed in the nbb file but absent from the LMDB
    (tmp_path / NBB).write_text(json.dumps(nbb))
    db = ImgDb(tmp_path, max_bb=8, min_bb=2, compressed=compressed)
    with pytest.raises(MissingRecordError) as err:
        db["nope.npz"]
    assert str(tmp_path) in str(err.value) and "'nope.npz'" in str(err.value)
    with pytest.raises(MissingRecordError) as err:
        db["ghost.npz"]
    assert lmdb_path in str(err.value) and "'ghost.npz'" in str(err.value)
    with pytest.raises(CorruptRecordError) as err:
        db["b.npz"]
    assert lmdb_path in str(err.value) and "'b.npz'" in str(err.value)
    assert db["a.npz"].features.shape[1] == 2048


def test_img_db_setting_and_variant_errors(tmp_path):
    rng = np.random.default_rng(4)
    images = {"a.npz": random_image_record(rng, 5)}
    write_img_db(tmp_path, images, 0.2, 8, 2, compressed=False)
    with pytest.raises(FileNotFoundError, match=r"feat_th0\.3_max8_min2"):
        ImgDb(tmp_path, conf_th=0.3, max_bb=8, min_bb=2)
    write_img_db(tmp_path, images, 0.2, 8, 2, compressed=True)
    with pytest.raises(ValueError, match="compressed"):
        ImgDb(tmp_path, max_bb=8, min_bb=2)
    assert ImgDb(tmp_path, max_bb=8, min_bb=2, compressed=True).compressed
    with pytest.raises(ValueError, match="conf_th"):
        ImgDb(tmp_path, conf_th=-1)
    with pytest.raises(FileExistsError):
        write_img_db(tmp_path, images, 0.2, 8, 2, compressed=True)


def test_writer_validates_records(tmp_path):
    rng = np.random.default_rng(5)
    rec = random_image_record(rng, 4)
    rec["conf"] = rec["conf"][::-1]
    with pytest.raises(ValueError, match="descending"):
        write_img_db(tmp_path / "a", {"x.npz": rec}, 0.2, 8, 2)
    rec = random_image_record(rng, 2)
    with pytest.raises(ValueError, match="only 2 rows"):
        write_img_db(tmp_path / "b", {"x.npz": rec}, 0.2, 8, 3)
    with pytest.raises(ValueError, match="img_fname"):
        write_txt_db(tmp_path / "c", {"1": {"input_ids": [1]}}, BERT_BASE_CASED_META)
    with pytest.raises(ValueError, match="meta"):
        write_txt_db(tmp_path / "d", {}, {"CLS": 101})


# ------------------------------------------------------------------ collate


def _reference_gather_index(txt_lens, num_bbs, max_tl, out_size):
    """The layout rule, written as a loop: regions right after each sample's own text."""
    rows = []
    for tl, nbb in zip(txt_lens, num_bbs):
        row = list(range(out_size))
        row[tl:tl + nbb] = range(max_tl, max_tl + nbb)
        rows.append(row)
    return rows


def test_collate_layout_matches_the_loop():
    g = torch.Generator().manual_seed(0)
    txt_lens, num_bbs = [5, 3, 9, 4], [7, 2, 3, 8]
    samples = [(torch.randint(106, 200, (t,), generator=g), torch.rand(n, 2048, generator=g),
                torch.rand(n, 7, generator=g)) for t, n in zip(txt_lens, num_bbs)]
    batch = collate_pairs(samples)
    assert set(batch) == {"input_ids", "position_ids", "img_feat", "img_pos_feat", "attn_masks", "gather_index",
                          "txt_lens", "num_bbs"}
    out_size = max(t + n for t, n in zip(txt_lens, num_bbs))
    assert batch["input_ids"].shape == (4, 9) and batch["position_ids"].tolist() == [list(range(9))]
    assert batch["img_feat"].shape == (4, 8, 2048) and batch["img_pos_feat"].shape == (4, 8, 7)
    assert batch["gather_index"].tolist() == _reference_gather_index(txt_lens, num_bbs, 9, out_size)
    assert batch["attn_masks"].tolist() == [[int(j < t + n) for j in range(out_size)]
                                            for t, n in zip(txt_lens, num_bbs)]
    assert batch["txt_lens"].tolist() == txt_lens and batch["num_bbs"].tolist() == num_bbs
    assert batch["input_ids"][1, 3:].eq(0).all() and batch["img_feat"][1, 2:].eq(0).all()

    # Gathering the concatenated [text | regions] puts each sample's regions after its text.
    joint = torch.cat([batch["input_ids"].float().unsqueeze(-1), batch["img_feat"][..., :1] + 1000], 1)
    gathered = joint.gather(1, batch["gather_index"].unsqueeze(-1))[..., 0]
    for b, (t, n) in enumerate(zip(txt_lens, num_bbs)):
        assert gathered[b, :t].tolist() == samples[b][0].float().tolist()
        assert gathered[b, t:t + n].tolist() == (samples[b][1][:, 0] + 1000).tolist()

    text, image = item_masks(batch["txt_lens"], batch["num_bbs"], out_size)
    for b, (t, n) in enumerate(zip(txt_lens, num_bbs)):
        assert text[b].nonzero().flatten().tolist() == list(range(1, t - 1))
        assert image[b].nonzero().flatten().tolist() == list(range(t, t + n))


def test_layout_argument_errors():
    with pytest.raises(ValueError, match="txt_lens"):
        layout_tensors([3, 4], [2])
    with pytest.raises(ValueError, match="txt_lens"):
        layout_tensors([1], [2])
    with pytest.raises(ValueError, match="max_tl"):
        layout_tensors([5], [2], max_tl=3)
    with pytest.raises(ValueError, match="samples"):
        collate_pairs([])


def test_synthetic_dbs_read_back(dbs):
    plain, packed = dbs["plain"], dbs["compressed"]
    t = TxtDb(plain.txt_db)
    assert len(t) == 21 and all(106 <= i < H.TINY["vocab_size"] for i in t.input_ids(t.ids[0]))
    a, b = ImgDb(plain.img_db, **H.SETTING), ImgDb(packed.img_db, **H.SETTING)
    assert not a.compressed and b.compressed and a.name2nbb == b.name2nbb
    for fname in a.names:
        torch.testing.assert_close(a[fname], b[fname], rtol=0, atol=0)


def _child_reads(img_db, txt_db, queue):
    queue.put((img_db[img_db.names[-1]].features.sum().item(), txt_db.input_ids(txt_db.ids[-1])))


def test_readers_survive_fork_and_pickle(dbs):
    import multiprocessing
    import pickle

    img_db, txt_db = ImgDb(dbs["compressed"].img_db, **H.SETTING), TxtDb(dbs["compressed"].txt_db)
    expected = (img_db[img_db.names[-1]].features.sum().item(), txt_db.input_ids(txt_db.ids[-1]))  # opened here
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(img_db, txt_db, queue))  # inherited, not pickled
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and got == expected
    img2, txt2 = pickle.loads(pickle.dumps((img_db, txt_db)))
    assert (img2[img2.names[-1]].features.sum().item(), txt2.input_ids(txt2.ids[-1])) == expected
