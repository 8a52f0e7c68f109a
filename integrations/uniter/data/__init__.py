"""Original UNITER data formats: readers, writers and collate.

See :mod:`.txt_db`, :mod:`.img_db`, :mod:`.writer` and :mod:`.collate`.
"""

from .collate import (BATCH_KEYS, PairSample, collate, collate_original_from_image, collate_pairs, item_masks,
                      layout_tensors)
from .errors import CorruptRecordError, DamagedDbError, DbError, MissingRecordError
from .img_db import (ImgDb, RegionFeatures, box_features, compute_num_bb, feat_db_name,
                     nbb_file_name)
from .txt_db import TxtDb, TxtLmdb
from .writer import write_img_db, write_txt_db

__all__ = [
    "TxtLmdb", "TxtDb", "ImgDb", "RegionFeatures", "box_features", "compute_num_bb",
    "feat_db_name", "nbb_file_name", "write_txt_db", "write_img_db", "PairSample",
    "collate", "collate_pairs", "collate_original_from_image", "layout_tensors", "item_masks", "BATCH_KEYS", "DbError",
    "MissingRecordError", "CorruptRecordError", "DamagedDbError",
]
