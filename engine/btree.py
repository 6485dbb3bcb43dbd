"""Copy-on-write B+tree mapping byte-string keys to byte-string values.

A Tree is rooted at a committed page (int pgno), a dirty in-memory Node, or
nothing (0).  Committed nodes come from the shared PageView cache and are never
mutated: the first change to one copies it ("dirty") and reports the old page
to the transaction as freed.  Dirty nodes live only in memory until flush(),
which allocates pages bottom-up, so an aborted transaction never touches the
file.

Invariants (checked by tools.verify):
- keys strictly ascending inside a node; branch child i holds keys k with
  keys[i-1] <= k < keys[i];
- all leaves at the same depth; only the root may be empty;
- every encoded node fits one page: keys <= MAX_KEY_SIZE bytes, values larger
  than INLINE_VALUE_MAX live in chain pages (Overflow refs).
"""

from bisect import bisect_left, bisect_right

from .layout import (BRANCH_BASE_SIZE, INLINE_VALUE_MAX, MAX_KEY_SIZE, NODE_CAPACITY,
                     FIXED_HEAD, Overflow, branch_entry_size, chain_page_count, encode_branch,
                     encode_chain, encode_leaf, fixed_dims, leaf_entry_size)
from .pagestore import CACHE_LIMIT, Node

MERGE_THRESHOLD = NODE_CAPACITY // 4


def node_size(node: Node) -> int:
    if node.leaf:
        return sum(leaf_entry_size(k, v) for k, v in zip(node.keys, node.vals))
    return BRANCH_BASE_SIZE + sum(branch_entry_size(k) for k in node.keys)


def _too_big(node: Node) -> bool:
    """Whether the node cannot be encoded into one page (either leaf layout)."""
    if node.size <= NODE_CAPACITY:
        return False
    fixed = node.fixed
    return fixed is None or FIXED_HEAD.size + len(node.keys) * (fixed[0] + fixed[1]) > NODE_CAPACITY


def _entry_sizes(node: Node) -> list:
    if node.leaf:
        return [leaf_entry_size(k, v) for k, v in zip(node.keys, node.vals)]
    return [branch_entry_size(k) for k in node.keys]


class Tree:
    def __init__(self, view, root, txn=None):
        self.view = view          # PageView of the snapshot the tree starts from
        self.root = root          # 0, pgno or dirty Node
        self.txn = txn            # write transaction (free_page/free_blob/txnid) or None
        # The tree's rightmost leaf when it is a dirty node that the last put
        # appended to (None otherwise): ascending inserts then skip the descent.
        # Any other change to the tree resets it.
        self.tail = None

    # -- reading ------------------------------------------------------------

    def _node(self, ref) -> Node:
        return ref if isinstance(ref, Node) else self.view.load(ref)

    def resolve(self, value) -> bytes:
        if isinstance(value, Overflow):
            return self.view.read_blob(value.pgno, value.length)
        return value

    def get(self, key: bytes):
        # Hot path of point reads: PageView.load's memo lookup is inlined.
        ref = self.root
        if not ref:
            return None
        view = self.view
        memo = view.memo
        while True:
            if type(ref) is int:
                node = memo.get(ref)
                if node is None:
                    node = view.load(ref)
            else:
                node = ref
            if node.leaf:
                break
            ref = node.vals[bisect_right(node.keys, key)]
        keys = node.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            value = node.vals[i]
            return self.resolve(value) if type(value) is Overflow else value
        return None

    def items(self, start: bytes | None = None, raw: bool = False):
        """(key, value) pairs with key >= start, ascending.  Not safe across writes.
        raw=True leaves values stored in chains as Overflow refs (resolve() reads
        them), so a caller that stops at a key reads no value it does not want."""
        if not self.root:
            return
        # An explicit stack of (node, next index): no generator per tree level.
        stack = [(self._node(self.root), None)]
        resolve = self.resolve
        while stack:
            node, i = stack.pop()
            if node.leaf:
                keys, vals = node.keys, node.vals
                first = 0 if start is None else bisect_left(keys, start)
                start = None
                if raw or not node.spill:
                    yield from zip(keys[first:], vals[first:])
                else:
                    for j in range(first, len(keys)):
                        value = vals[j]
                        yield keys[j], resolve(value) if type(value) is Overflow else value
                continue
            if i is None:
                i = 0 if start is None else bisect_right(node.keys, start)
            if i + 1 < len(node.vals):
                stack.append((node, i + 1))
            stack.append((self._node(node.vals[i]), None))

    # -- copy-on-write ------------------------------------------------------

    def _writable(self, ref) -> Node:
        if isinstance(ref, Node):
            return ref
        node = self.view.load(ref)
        self.txn.free_page(ref)
        return Node(node.leaf, list(node.keys), list(node.vals), node.size, node.spill, node.fixed)

    def _drop_value(self, value):
        if isinstance(value, Overflow):
            self.txn.free_blob(value)

    def beyond_tail(self, key: bytes) -> bool:
        """True when key is known to be larger than every key in the tree."""
        tail = self.tail
        return tail is not None and key > tail.keys[-1]

    def put(self, key: bytes, value: bytes):
        if len(key) > MAX_KEY_SIZE:
            raise ValueError(f"key of {len(key)} bytes exceeds {MAX_KEY_SIZE}")
        tail = self.tail
        if tail is not None and key > tail.keys[-1] and len(value) <= INLINE_VALUE_MAX:
            # Append to the rightmost leaf if it needs no split (else the
            # normal path below splits it, keeping the left part full).
            size = tail.size + 4 + len(key) + len(value)
            fixed = tail.fixed
            if fixed is not None and (len(key) != fixed[0] or len(value) != fixed[1]):
                fixed = None
            if size <= NODE_CAPACITY or (fixed is not None and FIXED_HEAD.size + (len(tail.keys) + 1)
                                         * (fixed[0] + fixed[1]) <= NODE_CAPACITY):
                tail.keys.append(key)
                tail.vals.append(value)
                tail.size = size
                tail.fixed = fixed
                return
        self.tail = None
        root = self.root
        if not root:
            root = Node(True, [], [], 0, False)
        elif type(root) is not Node:
            root = self._writable(root)
        # Descend without recursion, copying committed nodes on the way; `path`
        # keeps (branch, child index, whether the descent so far took only last
        # children) for the splits to climb back up.
        path = []
        node = root
        rightmost = True
        while not node.leaf:
            keys = node.keys
            i = bisect_right(keys, key)
            child = node.vals[i]
            if type(child) is not Node:
                child = node.vals[i] = self._writable(child)
            rightmost = rightmost and i == len(keys)
            path.append((node, i, rightmost))
            node = child
        splits = self._leaf_put(node, key, value, rightmost)
        while splits is not None and path:
            parent, i, appending = path.pop()
            for j, (sep, right) in enumerate(splits):
                parent.keys.insert(i + j, sep)
                parent.vals.insert(i + j + 1, right)
                parent.size += branch_entry_size(sep)
            splits = self._split(parent, appending) if parent.size > NODE_CAPACITY else None
        if splits is not None:
            seps = [sep for sep, _ in splits]
            root = Node(False, seps, [root] + [right for _, right in splits],
                        BRANCH_BASE_SIZE + sum(map(branch_entry_size, seps)), False)
        self.root = root

    def _leaf_put(self, node: Node, key: bytes, value: bytes, rightmost: bool):
        """Put into a writable leaf; -> None, or the splits when it overflows."""
        i = bisect_left(node.keys, key)
        if i < len(node.keys) and node.keys[i] == key:
            self._drop_value(node.vals[i])
            node.size -= leaf_entry_size(key, node.vals[i])
            node.vals[i] = value
        else:
            node.keys.insert(i, key)
            node.vals.insert(i, value)
        if len(value) > INLINE_VALUE_MAX:
            node.spill = True
            node.size += leaf_entry_size(key, value)
        else:
            node.size += 4 + len(key) + len(value)   # leaf_entry_size, inlined
        fixed = node.fixed
        if fixed is not None:
            if len(key) != fixed[0] or len(value) != fixed[1]:
                node.fixed = None
        elif len(node.keys) == 1:
            node.fixed = fixed_dims(node.keys, node.vals)
        if node.size <= NODE_CAPACITY or not _too_big(node):
            if rightmost and i == len(node.keys) - 1:
                self.tail = node
            return None
        return self._split(node, rightmost and i >= len(node.keys) - 1)

    def _split(self, node: Node, appending: bool) -> list:
        """Split an over-full node into [(separator, new right node), ...] (ascending).

        Appends at the right edge keep the left node full.  Usually one split;
        more only when a leaf that was over-full in the variable layout (allowed
        while it qualified for the fixed one) stops qualifying.  A fixed leaf's
        entries all have one size, so it is cut in the middle without measuring
        them (and both halves stay fixed with the same dimensions)."""
        n = len(node.keys)
        fixed = node.fixed if node.leaf else None
        if fixed is not None:
            cut = n - 1 if appending and n >= 2 else n // 2
            entry = 4 + fixed[0] + fixed[1]
            right = Node(True, node.keys[cut:], node.vals[cut:], (n - cut) * entry, False, fixed)
            del node.keys[cut:], node.vals[cut:]
            node.size = cut * entry
            splits = [(right.keys[0], right)]
            if _too_big(right):
                splits += self._split(right, False)
            if _too_big(node):
                splits = self._split(node, False) + splits
            return splits
        if appending and n >= 2:
            cut = n - 1
        else:
            sizes = _entry_sizes(node)
            total = sum(sizes)
            best, cut, acc = None, 1, 0
            for j in range(1, n):
                acc += sizes[j - 1]
                worst = max(acc, total - acc)
                if best is None or worst < best:
                    best, cut = worst, j
        if node.leaf:
            right = Node(True, node.keys[cut:], node.vals[cut:], 0, node.spill)
            del node.keys[cut:], node.vals[cut:]
            sep = right.keys[0]
        else:
            sep = node.keys[cut]
            right = Node(False, node.keys[cut + 1:], node.vals[cut + 1:], 0, False)
            del node.keys[cut:], node.vals[cut + 1:]
        node.size = node_size(node)
        right.size = node_size(right)
        if node.leaf:
            node.fixed = fixed_dims(node.keys, node.vals) if not node.spill else None
            right.fixed = fixed_dims(right.keys, right.vals) if not right.spill else None
        splits = [(sep, right)]
        if _too_big(right):
            splits += self._split(right, False)
        if _too_big(node):
            splits = self._split(node, False) + splits
        return splits

    def delete(self, key: bytes) -> bool:
        if self.get(key) is None:
            return False
        self.tail = None
        root = self._writable(self.root)
        self._delete(root, key)
        while isinstance(root, Node) and not root.leaf and len(root.vals) == 1:
            root = root.vals[0]
        if isinstance(root, Node) and not (root.keys if root.leaf else root.vals):
            root = 0
        self.root = root
        return True

    def _delete(self, node: Node, key: bytes):
        if node.leaf:
            i = bisect_left(node.keys, key)
            node.size -= leaf_entry_size(key, node.vals[i])
            self._drop_value(node.vals[i])
            del node.keys[i], node.vals[i]
            return
        i = bisect_right(node.keys, key)
        child = self._writable(node.vals[i])
        node.vals[i] = child
        self._delete(child, key)
        if not (child.keys if child.leaf else child.vals):
            self._remove_child(node, i)
        elif child.size < MERGE_THRESHOLD and len(node.vals) > 1:
            self._try_merge(node, i - 1 if i > 0 else i)

    def _remove_child(self, node: Node, i: int):
        key_index = i - 1 if i > 0 else 0
        if node.keys:
            node.size -= branch_entry_size(node.keys[key_index])
            del node.keys[key_index]
        del node.vals[i]

    def _try_merge(self, parent: Node, left_index: int):
        """Merge children left_index and left_index+1 of parent if they fit one page."""
        sep = parent.keys[left_index]
        left_ref, right_ref = parent.vals[left_index], parent.vals[left_index + 1]
        left_peek, right_peek = self._node(left_ref), self._node(right_ref)
        extra = 0 if left_peek.leaf else branch_entry_size(sep) - BRANCH_BASE_SIZE
        if left_peek.size + right_peek.size + extra > NODE_CAPACITY:
            return
        left, right = self._writable(left_ref), self._writable(right_ref)
        if left.leaf:
            left.keys.extend(right.keys)
        else:
            left.keys.append(sep)
            left.keys.extend(right.keys)
        left.vals.extend(right.vals)
        left.spill = left.spill or right.spill
        left.fixed = left.fixed if left.fixed == right.fixed else None
        left.size = node_size(left)
        parent.vals[left_index] = left
        parent.size -= branch_entry_size(sep)
        del parent.keys[left_index], parent.vals[left_index + 1]

    # -- commit -------------------------------------------------------------

    def flush(self, alloc, out: dict, txnid: int) -> int:
        """Write dirty nodes into `out` {pgno: page}; returns the root pgno (0 if empty)."""
        self.tail = None          # flushed nodes become shared cache entries
        if not self.root:
            return 0
        self.root = self._flush(self.root, alloc, out, txnid)
        return self.root

    def _flush(self, ref, alloc, out, txnid) -> int:
        if not isinstance(ref, Node):
            return ref
        node = ref
        if node.leaf:
            if node.spill:
                node.vals = [write_blob(v, alloc, out, txnid) if type(v) is not Overflow
                             and len(v) > INLINE_VALUE_MAX else v for v in node.vals]
            pgno = alloc()
            # node.fixed is exact when set; None may miss a uniform leaf, whose
            # variable layout then fits anyway (only fixed leaves exceed it).
            out[pgno] = encode_leaf(node.keys, node.vals, txnid, node.spill, node.fixed)
        else:
            node.vals = [self._flush(c, alloc, out, txnid) for c in node.vals]
            pgno = alloc()
            out[pgno] = encode_branch(node.keys, node.vals, txnid)
        # The node now mirrors its page exactly: cache it so the next
        # transaction need not decode it again (commit failure clears the cache).
        cache = self.view.cache
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[pgno] = (txnid, node)
        return pgno


def write_blob(data: bytes, alloc, out: dict, txnid: int) -> Overflow:
    pgnos = [alloc() for _ in range(chain_page_count(len(data)))]
    for pgno, page in encode_chain(data, pgnos, txnid):
        out[pgno] = page
    return Overflow(pgnos[0], len(data))
