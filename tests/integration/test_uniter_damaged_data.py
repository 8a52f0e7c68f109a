"""Damaged databases never kill a process: LMDB files cut short, damaged pages and non-finite features are
errors naming the database (and the record), in one line from the commands."""

from __future__ import annotations

import os
import re
import shutil

import lmdb
import numpy as np
import pytest

from integrations.uniter import evaluate
from integrations.uniter.data import CorruptRecordError, DamagedDbError, ImgDb, TxtDb, write_img_db, write_txt_db
from integrations.uniter.data._lmdb import lmdb_extent
from integrations.uniter.data.synthetic import BERT_BASE_CASED_META, random_image_record

from . import helpers as H

FEAT = "feat_th0.2_max8_min2"
#: sizes the damaged copies are cut to, in percent of ``data.mdb``
CUTS = (95, 80, 50, 20)


def _lmdb_dir(paths, kind: str) -> str:
    """The LMDB environment of the txt_db or the img_db (plain or compressed) of ``paths``."""
    if kind == "txt":
        return paths.txt_db
    return next(os.path.join(paths.img_db, d) for d in os.listdir(paths.img_db) if d.startswith(FEAT))


def _cut_copy(paths, kind: str, percent: int, root) -> tuple[str, str, str]:
    """Copies of the ``(txt_db, img_db)`` of ``paths`` under ``root``, the ``kind`` one's ``data.mdb`` cut to
    ``percent`` of its size; and the path of that file."""
    txt, img = root / "txt.db", root / "img"
    shutil.copytree(paths.txt_db, txt)
    shutil.copytree(paths.img_db, img)
    data = os.path.join(str(txt) if kind == "txt" else os.path.join(str(img), FEAT), "data.mdb")
    os.truncate(data, os.path.getsize(data) * percent // 100)
    return str(txt), str(img), data


@pytest.mark.parametrize("kind", ["txt", "img"])
def test_the_meta_pages_read_as_lmdb_reads_them(dbs, data, kind):
    for paths in (dbs["plain"], dbs["compressed"], data["multi"]):
        path = _lmdb_dir(paths, kind)
        env = lmdb.open(path, readonly=True, lock=False)
        try:
            expected = env.stat()["psize"], env.info()["last_pgno"]
        finally:
            env.close()
        assert lmdb_extent(path) == expected
        assert os.path.getsize(os.path.join(path, "data.mdb")) >= (expected[1] + 1) * expected[0]


@pytest.mark.parametrize("kind", ["txt", "img"])
def test_a_database_cut_short_is_refused_when_opened(data, tmp_path, kind):
    for percent in CUTS:
        txt, img, cut = _cut_copy(data["multi"], kind, percent, tmp_path / str(percent))
        with pytest.raises(DamagedDbError, match="cut short") as err:
            TxtDb(txt) if kind == "txt" else ImgDb(img, **H.SETTING)
        assert str(err.value).startswith(cut) and "copy or build the database again" in str(err.value)


def test_a_damaged_page_is_an_error_naming_the_database(data, tmp_path):
    txt = str(tmp_path / "txt.db")
    shutil.copytree(data["multi"].txt_db, txt)
    psize, _ = lmdb_extent(txt)
    with open(os.path.join(txt, "data.mdb"), "r+b") as handle:  # the first page after the two meta pages
        handle.seek(2 * psize)
        handle.write(b"\xff" * 64)
    db = TxtDb(txt)
    with pytest.raises(DamagedDbError, match=rf"key '{db.ids[0]}' of LMDB {txt} \(mdb_get: MDB_CORRUPTED"):
        db.input_ids(db.ids[0])
    db.close()
    with open(os.path.join(txt, "data.mdb"), "r+b") as handle:
        handle.write(b"not an LMDB file" * 4)
    with pytest.raises(DamagedDbError, match="is not an LMDB file"):
        TxtDb(txt)


def test_commands_on_databases_cut_short_exit_2_in_one_line(data, tmp_path):
    """``evaluate`` and ``finetune`` on copies cut to 95, 80, 50 and 20 %: no SIGBUS, no traceback."""
    cases, cuts = [], []
    for kind in ("txt", "img"):
        for percent in CUTS:
            txt, img, cut = _cut_copy(data["multi"], kind, percent, tmp_path / f"{kind}{percent}")
            cases.append(("integrations.uniter.evaluate", ["--config", data["config"], "--txt-db", txt, "--img-db", img,
                                                           "--checkpoint", data["weights"], "--no-progress"]))
            cases.append(("integrations.uniter.finetune", H.train_args(
                {**data, "multi": type(data["multi"])(txt, img)}, tmp_path / f"run-{kind}{percent}", steps=1)))
            cuts += [cut, cut]
    for (module, argv), result, cut in zip(cases, H.run_commands(cases), cuts):
        lines = H.error_lines(result["stderr"])
        assert result["status"] == 2, (module, argv, result["status"], result["stderr"][-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"error: {cut} is cut short"), (module, lines)


def test_non_finite_features_are_an_error_naming_the_image(data, tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = {name: random_image_record(rng, 4, H.FT_IMG_DIM) for name in ("a.npz", "b.npz")}
    images["b.npz"]["features"][2, 5] = np.nan
    write_img_db(tmp_path / "img", images, **H.SETTING)
    db = ImgDb(tmp_path / "img", **H.SETTING)
    assert db["a.npz"].features.shape == (4, H.FT_IMG_DIM)
    message = rf"image 'b.npz' of img_db LMDB {tmp_path}/img/{FEAT}: its features hold 1 NaN/inf value"
    with pytest.raises(CorruptRecordError, match=message):
        db["b.npz"]
    db.close()
    write_txt_db(tmp_path / "txt", {"1": {"input_ids": [110], "img_fname": "a.npz"},
                                    "2": {"input_ids": [111, 112], "img_fname": "b.npz"}}, BERT_BASE_CASED_META)
    assert evaluate.main(["--config", data["config"], "--txt-db", str(tmp_path / "txt"), "--img-db",
                          str(tmp_path / "img"), "--checkpoint", data["weights"], "--no-progress"]) == 2
    assert re.search(f"^error: {message}", capsys.readouterr().err, re.MULTILINE)
