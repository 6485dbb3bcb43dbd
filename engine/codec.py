"""Value validation, object encoding and order-preserving key encoding.

Object record (see _PrefixCodec): a varint head (count of stored properties
and the width of the lengths), then one struct holding, per property in
stored schema order except the primary key (the tree key holds it), either the
value (non-optional int/float/bool) or the byte length of its encoding in the
variable part that follows, in the narrowest of u8/u16/u32 that holds every
length of the record (its largest value = None).  Variable encodings: str
UTF-8, bytes raw, int/float i64/f64, datetime i64 microseconds since the epoch
+ a 'was UTC-aware' byte, lists varint count + elements (str/bytes elements
varint length + bytes).  Records written before a property was added are
shorter; missing trailing values read as defaults.

Key encoding preserves order under bytewise comparison (memcmp), so B+tree
order equals value order: ints offset-binary big endian, floats sign-folded,
str/bytes with 0x00 escaped as 00 FF and terminated by 00 00 (prefix-free),
optionals prefixed 00 (null, sorts first) / 01.  Index keys truncate long
strings to INDEX_PREFIX bytes; queries re-check every candidate, so the
truncation only costs precision, never correctness.
"""

import datetime as dt
import struct

from .errors import ValidationError

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
INDEX_PREFIX = 100      # raw bytes of a str/bytes value kept in index keys
EPOCH = dt.datetime(1970, 1, 1)

_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")
KEY_U64 = struct.Struct(">Q")

DEFAULTS = {"int": 0, "float": 0.0, "bool": False, "str": "", "bytes": b"",
            "datetime": EPOCH}


def default_value(prop):
    if prop.optional:
        return None
    if prop.is_list:
        return []
    return DEFAULTS[prop.type]


# -- validation -------------------------------------------------------------

def _check_scalar(where: str, type_name: str, value):
    if type_name == "int":
        if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
            return value
    elif type_name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif type_name == "bool":
        if isinstance(value, bool):
            return value
    elif type_name == "str":
        if isinstance(value, str):
            try:
                value.encode()          # UTF-8, as stored: a lone surrogate cannot be
            except UnicodeEncodeError:
                raise ValidationError(f"{where}: the string is not valid Unicode (a lone surrogate?)") from None
            return value
    elif type_name == "bytes":
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
    elif type_name == "datetime":
        if isinstance(value, dt.datetime):
            return value
    raise ValidationError(f"{where}: expected {type_name}, got {type(value).__name__} {value!r:.60}")


def check_value(where: str, prop, value):
    """Validate and normalise a value for `prop` (raises ValidationError)."""
    if value is None:
        if prop.optional:
            return None
        raise ValidationError(f"{where}: property is not optional, got None")
    if prop.is_list:
        if not isinstance(value, (list, tuple)):
            raise ValidationError(f"{where}: expected a list, got {type(value).__name__}")
        return [_check_scalar(where, prop.type, v) for v in value]
    return _check_scalar(where, prop.type, value)


# -- records ----------------------------------------------------------------

def _datetime_micros(value: dt.datetime):
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        aware = 1
    else:
        aware = 0
    delta = value - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds, aware


def put_varint(out: list, n: int):
    """Append n >= 0 as LEB128 (7 bits a byte, low first, high bit = more follow)."""
    while n >= 0x80:
        out.append(bytes((n & 0x7F | 0x80,)))
        n >>= 7
    out.append(bytes((n,)))


def get_varint(buf, pos: int):
    """-> (value, position after it) of a LEB128 number at buf[pos]."""
    n = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7


def _put_u32(out: list, n: int):
    out.append(_U32.pack(n))


def _get_u32(buf, pos: int):
    return _U32.unpack_from(buf, pos)[0], pos + 4


VARINT_LENGTHS = (put_varint, get_varint)
U32_LENGTHS = (_put_u32, _get_u32)        # format versions 2 and 3 (engine/legacy.py)


def _encode_scalar(out: list, type_name: str, value, put_length):
    if type_name == "int":
        out.append(_I64.pack(value))
    elif type_name == "float":
        out.append(_F64.pack(value))
    elif type_name == "bool":
        out.append(b"\x01" if value else b"\x00")
    elif type_name == "datetime":
        micros, aware = _datetime_micros(value)
        out.append(_I64.pack(micros) + bytes((aware,)))
    else:
        data = value.encode() if type_name == "str" else value
        put_length(out, len(data))
        out.append(data)


def _decode_scalar(buf: bytes, pos: int, type_name: str, get_length):
    if type_name == "int":
        return _I64.unpack_from(buf, pos)[0], pos + 8
    if type_name == "float":
        return _F64.unpack_from(buf, pos)[0], pos + 8
    if type_name == "bool":
        return buf[pos] == 1, pos + 1
    if type_name == "datetime":
        micros = _I64.unpack_from(buf, pos)[0]
        value = EPOCH + dt.timedelta(microseconds=micros)
        if buf[pos + 8]:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value, pos + 9
    length, pos = get_length(buf, pos)
    data = buf[pos:pos + length]
    return (data.decode() if type_name == "str" else bytes(data)), pos + length


def var_codec(prop, lengths=VARINT_LENGTHS):
    """(encode(value) -> bytes, decode(bytes) -> value) for a variable-part field;
    `lengths` encodes list counts and list element lengths."""
    put_length, get_length = lengths
    if prop.is_list:
        def encode(value, t=prop.type):
            out = []
            put_length(out, len(value))
            for item in value:
                _encode_scalar(out, t, item, put_length)
            return b"".join(out)

        def decode(data, t=prop.type):
            items = []
            count, pos = get_length(data, 0)
            for _ in range(count):
                item, pos = _decode_scalar(data, pos, t, get_length)
                items.append(item)
            return items
        return encode, decode
    if prop.type == "str":
        return str.encode, bytes.decode
    if prop.type == "bytes":
        return bytes, bytes

    def encode(value, t=prop.type):
        out = []
        _encode_scalar(out, t, value, put_length)
        return b"".join(out)
    return encode, lambda data, t=prop.type: _decode_scalar(data, 0, t, get_length)[0]


FIXED_FORMATS = {"int": "q", "float": "d", "bool": "?"}


def is_fixed(prop) -> bool:
    """Stored in the record's struct itself (else as a length + bytes in the variable part)."""
    return not prop.optional and not prop.is_list and prop.type in FIXED_FORMATS


# Length widths a record may use: (struct code, null marker); the head's low 2 bits pick one.
_WIDTHS = (("B", 0xFF), ("H", 0xFFFF), ("I", 0xFFFFFFFF))


class _PrefixCodec:
    """Record layout for a class's first `count` stored properties:
    head = varint(count * 4 + w), then one struct holding, per property, the
    value itself (non-optional int/float/bool) or the length of its bytes in
    the variable part, in the width w picks (u8, u16 or u32: the narrowest
    that holds every length of this record; its largest value means null),
    then the variable part."""

    def __init__(self, props):
        formats = ["<"] * len(_WIDTHS)
        self.encoders = []      # (position, encode) for variable-part fields
        self.decoders = []      # (position, decode)
        for i, prop in enumerate(props):
            if is_fixed(prop):
                formats = [f + FIXED_FORMATS[prop.type] for f in formats]
            else:
                formats = [f + code for f, (code, _) in zip(formats, _WIDTHS)]
                encode, decode = var_codec(prop)
                self.encoders.append((i, encode))
                self.decoders.append((i, decode))
        self.structs = [struct.Struct(f) for f in formats]
        self.count = len(props)
        self.heads = []
        for w in range(len(_WIDTHS)):
            out = []
            put_varint(out, self.count * 4 + w)
            self.heads.append(b"".join(out))

    def encode(self, values) -> bytes:
        fields = list(values)
        blobs = [b"", b""]
        longest, nulls = 0, False
        for i, encode in self.encoders:
            value = values[i]
            if value is None:
                nulls = True
            else:
                blob = encode(value)
                size = fields[i] = len(blob)
                if size > longest:
                    longest = size
                blobs.append(blob)
        w = 0 if longest < 0xFF else 1 if longest < 0xFFFF else 2
        if nulls:
            null = _WIDTHS[w][1]
            for i, _ in self.encoders:
                if values[i] is None:
                    fields[i] = null
        blobs[0] = self.heads[w]
        blobs[1] = self.structs[w].pack(*fields)
        return b"".join(blobs)

    def decode(self, buf, w: int, pos: int) -> list:
        layout = self.structs[w]
        values = list(layout.unpack_from(buf, pos))
        pos += layout.size
        null = _WIDTHS[w][1]
        for i, decode in self.decoders:
            length = values[i]
            if length == null:
                values[i] = None
            else:
                end = pos + length
                values[i] = decode(buf[pos:end])
                pos = end
        return values


class RecordCodec:
    """Encodes records with all properties but the primary key (the object
    tree's key holds it: decode() takes it back from the caller); decodes
    records written when the class had fewer (later properties read as
    defaults)."""

    _shared = {}

    def __init__(self, props, pk_pos=None):
        self.props = list(props)
        self.pk_pos = pk_pos
        self.stored = [p for i, p in enumerate(self.props) if i != pk_pos]
        self.full = _PrefixCodec(self.stored)
        self.prefixes = {len(self.stored): self.full}

    @classmethod
    def for_props(cls, props, pk_pos=None) -> "RecordCodec":
        shape = (tuple((p.type, p.optional, p.is_list) for p in props), pk_pos)
        codec = cls._shared.get(shape)
        if codec is None:
            codec = cls._shared[shape] = cls(props, pk_pos)
        return codec

    def encode(self, values) -> bytes:
        pk = self.pk_pos
        return self.full.encode(values if pk is None else values[:pk] + values[pk + 1:])

    def decode(self, buf, pk_value=None) -> list:
        """Property values in schema order; `pk_value` is the primary key's."""
        head = buf[0]
        if head < 0x80:
            pos = 1
        else:
            head, pos = get_varint(buf, 0)
        count = head >> 2
        codec = self.full if count == self.full.count else self._prefix(count)
        values = codec.decode(buf, head & 3, pos)
        if count < len(self.stored):
            values.extend(default_value(p) for p in self.stored[count:])
        if self.pk_pos is not None:
            values.insert(self.pk_pos, pk_value)
        return values

    def _prefix(self, count: int) -> _PrefixCodec:
        codec = self.prefixes.get(count)
        if codec is None:
            if count > len(self.stored):
                raise ValueError(f"record has {count} fields, class has {len(self.stored)}")
            codec = self.prefixes[count] = _PrefixCodec(self.stored[:count])
        return codec


# -- keys -------------------------------------------------------------------

def _escape(data: bytes) -> bytes:
    return data.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def encode_key_scalar(type_name: str, value, truncate: bool = False) -> bytes:
    if type_name == "int":
        return KEY_U64.pack(value - INT64_MIN)
    if type_name == "float":
        if value == 0:
            value = 0.0       # -0.0 == 0.0 must share a key
        (bits,) = KEY_U64.unpack(struct.pack(">d", value))
        bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
        return KEY_U64.pack(bits)
    if type_name == "bool":
        return b"\x01" if value else b"\x00"
    if type_name == "datetime":
        return KEY_U64.pack(_datetime_micros(value)[0] - INT64_MIN)
    data = value.encode() if type_name == "str" else bytes(value)
    if truncate:
        data = data[:INDEX_PREFIX]
    return _escape(data)


def encode_index_value(prop, value) -> bytes:
    """Order-preserving, prefix-free encoding of a (possibly null) indexed value."""
    if prop.optional:
        if value is None:
            return b"\x00"
        return b"\x01" + encode_key_scalar(prop.type, value, True)
    return encode_key_scalar(prop.type, value, True)


def index_value_length(prop, index_key: bytes) -> int:
    """Length of the encode_index_value() part at the start of an index key (the
    encodings are prefix-free: fixed widths, or escaped bytes ending 00 00)."""
    pos = 0
    if prop.optional:
        if index_key[0] == 0:
            return 1
        pos = 1
    if prop.type in ("int", "float", "datetime"):
        return pos + 8
    if prop.type == "bool":
        return pos + 1
    return index_key.index(b"\x00\x00", pos) + 2     # an escaped 00 is always followed by FF


def encode_object_id(object_id: int) -> bytes:
    return KEY_U64.pack(object_id)


def decode_object_id(key: bytes) -> int:
    return KEY_U64.unpack(key)[0]


def encode_primary_key(prop, value) -> bytes:
    return encode_key_scalar(prop.type, value)


def decode_primary_key(prop, key: bytes):
    if prop.type == "int":
        return KEY_U64.unpack(key)[0] + INT64_MIN
    return key[:-2].replace(b"\x00\xff", b"\x00").decode()
