"""Reading files of older format versions, for `python -m engine upgrade` only.

Version 2: page 0 had a selector byte at offset 32 naming the current one of
two root slots at offsets 64 and 128, each (txnid u64, npages u64, catalog
pgno u64, catalog length u32, freelist pgno u64, freelist length u32, crc32
u32); it committed with two fsyncs.
Version 3: today's header and root slots (layout.py).
Both: records are `count u16`, then one struct with, per property in schema
order (the primary key included), the value of a non-optional int/float/bool
or the u32 length of the property's bytes in the variable part (0xFFFFFFFF =
null), then the variable part; lists are a u32 count + elements, str/bytes
elements a u32 length + bytes.  Index entries of classes with a str primary
key store the object key as their value.  Tree and chain pages, the catalog
and key encodings are what version 4 still uses.

OldFile reads the committed snapshot of such a file without locks or writes:
upgrade a copy that no process is writing.  Nothing here is used on the normal
open path.
"""

import json
import mmap
import os
import struct

from . import layout
from .btree import Tree
from .codec import FIXED_FORMATS, U32_LENGTHS, default_value, is_fixed, var_codec
from .commitcheck import commit_is_whole
from .errors import CorruptFileError, UnsupportedVersionError
from .layout import PAGE_SIZE, RootSlot
from .pagestore import NodeCache, PageView
from .schema import schema_from_json

V2_SELECTOR_OFFSET = 32
V2_SLOT_OFFSETS = (64, 128)
V2_SLOT = struct.Struct("<QQQIQI")
UPGRADABLE = (2, 3)
_U16 = struct.Struct("<H")
_NULL = 0xFFFFFFFF


def _v2_slot(page0, index: int):
    fields = layout.slot_fields(page0, V2_SLOT_OFFSETS[index], V2_SLOT)
    return RootSlot(*fields) if fields else None


class OldRecords:
    """Decodes records of format versions 2 and 3 (see the top of this module)."""

    def __init__(self, props):
        self.props = list(props)
        self.layouts = {}

    def _layout(self, count: int):
        found = self.layouts.get(count)
        if found is None:
            if count > len(self.props):
                raise ValueError(f"record has {count} fields, class has {len(self.props)}")
            fmt, decoders = "<", []
            for i, prop in enumerate(self.props[:count]):
                if is_fixed(prop):
                    fmt += FIXED_FORMATS[prop.type]
                else:
                    fmt += "I"
                    decoders.append((i, var_codec(prop, U32_LENGTHS)[1]))
            found = self.layouts[count] = (struct.Struct(fmt), decoders)
        return found

    def decode(self, buf) -> list:
        count = _U16.unpack_from(buf, 0)[0]
        fields, decoders = self._layout(count)
        values = list(fields.unpack_from(buf, 2))
        pos = 2 + fields.size
        for i, decode in decoders:
            length = values[i]
            if length == _NULL:
                values[i] = None
            else:
                values[i] = decode(buf[pos:pos + length])
                pos += length
        values.extend(default_value(p) for p in self.props[count:])
        return values


class OldFile:
    """One committed snapshot of a version-2 or -3 file: its schema and its objects."""

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
        if self.version not in UPGRADABLE:
            raise UnsupportedVersionError(
                f"{path}: format version {self.version} cannot be upgraded (upgrade reads versions "
                f"{', '.join(map(str, UPGRADABLE))}; version {layout.FORMAT_VERSION} files need no upgrade)")
        if self.version == 2:
            selected = page0[V2_SELECTOR_OFFSET] & 1
            slot = _v2_slot(page0, selected) or _v2_slot(page0, 1 - selected)
        else:
            slot = next((s for _, s in layout.slots_newest_first(page0)
                         if s.npages * PAGE_SIZE <= size and commit_is_whole(self.map, size // PAGE_SIZE, s)),
                        None)
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
        entry = self.tables.get(name)
        if not entry:
            return
        codec = OldRecords(self.classes[name].properties)
        for key, record in Tree(self.view, entry["root"]).items():
            yield key, codec.decode(record)

    def next_id(self, name: str) -> int:
        return (self.tables.get(name) or {}).get("next_id", 1)

    def close(self):
        self.view = None
        self.map.close()
