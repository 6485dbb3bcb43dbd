"""Free-page tracking.

Every page that a commit stops using is recorded with the txnid of that commit
("freed at V").  Such a page is still part of every snapshot older than V, so it
may only be handed out again once every live snapshot has txnid >= V, and also
V <= current - 1 so that the previous commit (the other root slot) stays intact
until the next commit replaces it.

The free list is persisted at each commit as a blob of (pgno, freed_at) u64
pairs stored in chain pages referenced from the root slot.
"""

from array import array
from itertools import chain
import sys


class FreeList:
    def __init__(self, pairs=()):
        self.pages = {}                  # pgno -> freed_at txnid
        for pgno, freed_at in pairs:
            self.pages[pgno] = freed_at
        self._pool = []                  # reusable pgnos (descending, pop() = lowest)

    @classmethod
    def decode(cls, data: bytes) -> "FreeList":
        words = array("Q")
        words.frombytes(data)
        if sys.byteorder != "little":
            words.byteswap()
        return cls(zip(words[0::2], words[1::2]))

    def encode(self) -> bytes:
        words = array("Q", chain.from_iterable(sorted(self.pages.items())))
        if sys.byteorder != "little":
            words.byteswap()
        return words.tobytes()

    def prepare(self, reuse_limit: int):
        """Make pages freed at txnid <= reuse_limit available to take()."""
        self._pool = sorted((p for p, v in self.pages.items() if v <= reuse_limit), reverse=True)

    def take(self) -> int | None:
        """Lowest reusable page, removed from the list; None when none is reusable."""
        if not self._pool:
            return None
        pgno = self._pool.pop()
        del self.pages[pgno]
        return pgno

    def free(self, pgno: int, txnid: int):
        if pgno in self.pages:
            raise AssertionError(f"page {pgno} freed twice")
        self.pages[pgno] = txnid

    def __len__(self):
        return len(self.pages)

    def reusable_count(self, reuse_limit: int) -> int:
        return sum(1 for v in self.pages.values() if v <= reuse_limit)
