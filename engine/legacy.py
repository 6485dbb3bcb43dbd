"""Reading files of older format versions, for `python -m engine upgrade` only.

Version 2 (the last released before 3): page 0 had a selector byte at offset 32
naming the current one of two root slots at offsets 64 and 128, each
(txnid u64, npages u64, catalog pgno u64, catalog length u32, freelist pgno
u64, freelist length u32, crc32 u32); it committed with two fsyncs.  Its tree
and chain pages, catalog, keys and records are what version 3 still uses.

OldFile reads the committed snapshot of such a file without locks or writes:
upgrade a copy that no process is writing.  Nothing here is used on the normal
open path.
"""

import json
import mmap
import os
import struct

from . import layout
from .codec import RecordCodec
from .errors import CorruptFileError, UnsupportedVersionError
from .layout import PAGE_SIZE, RootSlot
from .pagestore import NodeCache, PageView
from .schema import schema_from_json

V2_SELECTOR_OFFSET = 32
V2_SLOT_OFFSETS = (64, 128)
V2_SLOT = struct.Struct("<QQQIQI")


def _v2_slot(page0, index: int):
    fields = layout.slot_fields(page0, V2_SLOT_OFFSETS[index], V2_SLOT)
    return RootSlot(*fields) if fields else None


class OldFile:
    """One committed snapshot of a version-2 file: its schema and its objects."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < PAGE_SIZE or size % PAGE_SIZE:
                raise CorruptFileError(f"{path}: size {size} is not a whole number of {PAGE_SIZE}-byte pages")
            self.map = mmap.mmap(f.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ)
        page0 = self.map[:PAGE_SIZE]
        if page0[:len(layout.MAGIC)] != layout.MAGIC:
            raise CorruptFileError(f"{path}: not an engine database (bad magic)")
        self.version = layout.header_version(page0)
        if self.version != 2:
            raise UnsupportedVersionError(
                f"{path}: format version {self.version} cannot be upgraded (upgrade reads version 2; "
                f"version {layout.FORMAT_VERSION} files need no upgrade)")
        selected = page0[V2_SELECTOR_OFFSET] & 1
        slot = _v2_slot(page0, selected) or _v2_slot(page0, 1 - selected)
        if slot is None or slot.npages * PAGE_SIZE > size:
            raise CorruptFileError(f"{path}: no intact root slot")
        self.view = PageView(self.map, slot.npages, NodeCache(), path)
        try:
            doc = json.loads(self.view.read_blob(slot.catalog_pgno, slot.catalog_len).decode())
            self.classes = schema_from_json(doc["schema"].encode())
            self.tables = doc["tables"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptFileError(f"{path}: catalog is unreadable ({exc})") from None

    def objects(self, name: str):
        """(object key, property values in stored order) of every object of a class."""
        from .btree import Tree
        entry = self.tables.get(name)
        if not entry:
            return
        codec = RecordCodec.for_props(self.classes[name].properties)
        for key, record in Tree(self.view, entry["root"]).items():
            yield key, codec.decode(record)

    def next_id(self, name: str) -> int:
        return (self.tables.get(name) or {}).get("next_id", 1)

    def close(self):
        self.view = None
        self.map.close()
