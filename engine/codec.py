"""Value validation, object encoding and order-preserving key encoding.

Object record (see _PrefixCodec): one struct holding the property count and,
per property in stored schema order, either the value (non-optional
int/float/bool) or the byte length of its encoding in the variable part that
follows (NULL_LENGTH = None).  Variable encodings: str UTF-8, bytes raw,
int/float i64/f64, datetime i64 microseconds since the epoch + a 'was
UTC-aware' byte, lists u32 count + elements.  Records written before a
property was added are shorter; missing trailing values read as defaults.

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
_U16 = struct.Struct("<H")
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


def _encode_scalar(out: list, type_name: str, value):
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
        out.append(_U32.pack(len(data)))
        out.append(data)


def _decode_scalar(buf: bytes, pos: int, type_name: str):
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
    (length,) = _U32.unpack_from(buf, pos)
    data = buf[pos + 4:pos + 4 + length]
    return (data.decode() if type_name == "str" else bytes(data)), pos + 4 + length


def _var_codec(prop):
    """(encode(value) -> bytes, decode(bytes) -> value) for a variable-part field."""
    if prop.is_list:
        def encode(value, t=prop.type):
            out = [_U32.pack(len(value))]
            for item in value:
                _encode_scalar(out, t, item)
            return b"".join(out)

        def decode(data, t=prop.type):
            items, pos = [], 4
            for _ in range(_U32.unpack_from(data, 0)[0]):
                item, pos = _decode_scalar(data, pos, t)
                items.append(item)
            return items
        return encode, decode
    if prop.type == "str":
        return str.encode, bytes.decode
    if prop.type == "bytes":
        return bytes, bytes

    def encode(value, t=prop.type):
        out = []
        _encode_scalar(out, t, value)
        return b"".join(out)
    return encode, lambda data, t=prop.type: _decode_scalar(data, 0, t)[0]


_FIXED_FORMATS = {"int": "q", "float": "d", "bool": "?"}
NULL_LENGTH = 0xFFFFFFFF


class _PrefixCodec:
    """Record layout for the first `count` properties of a class:
    u16 count, struct(one slot per property: the value itself for non-optional
    int/float/bool, else the u32 length of its bytes in the variable part or
    NULL_LENGTH for None) followed by the variable part."""

    def __init__(self, props):
        fmt = "<"               # the u16 count is packed separately
        self.encoders = []      # (position, encode) for variable-part fields
        self.decoders = []      # (position, decode)
        for i, prop in enumerate(props):
            if not prop.optional and not prop.is_list and prop.type in _FIXED_FORMATS:
                fmt += _FIXED_FORMATS[prop.type]
            else:
                fmt += "I"
                encode, decode = _var_codec(prop)
                self.encoders.append((i, encode))
                self.decoders.append((i, decode))
        self.struct = struct.Struct(fmt)
        self.unpack_from = self.struct.unpack_from
        self.start = 2 + self.struct.size
        self.count = len(props)
        self.count_bytes = _U16.pack(self.count)

    def encode(self, values) -> bytes:
        fields = list(values)
        blobs = [self.count_bytes, b""]
        for i, encode in self.encoders:
            value = values[i]
            if value is None:
                fields[i] = NULL_LENGTH
            else:
                blob = encode(value)
                fields[i] = len(blob)
                blobs.append(blob)
        blobs[1] = self.struct.pack(*fields)
        return b"".join(blobs)

    def decode(self, buf) -> list:
        values = list(self.unpack_from(buf, 2))
        pos = self.start
        for i, decode in self.decoders:
            length = values[i]
            if length == NULL_LENGTH:
                values[i] = None
            else:
                end = pos + length
                values[i] = decode(buf[pos:end])
                pos = end
        return values


class RecordCodec:
    """Encodes records with all properties; decodes records written when the
    class had fewer (trailing properties added later read as defaults)."""

    _shared = {}

    def __init__(self, props):
        self.props = list(props)
        self.full = _PrefixCodec(self.props)
        self.prefixes = {len(self.props): self.full}

    @classmethod
    def for_props(cls, props) -> "RecordCodec":
        shape = tuple((p.type, p.optional, p.is_list) for p in props)
        codec = cls._shared.get(shape)
        if codec is None:
            codec = cls._shared[shape] = cls(props)
        return codec

    def encode(self, values) -> bytes:
        return self.full.encode(values)

    def decode(self, buf) -> list:
        count = _U16.unpack_from(buf, 0)[0]
        if count == self.full.count:
            return self.full.decode(buf)
        codec = self.prefixes.get(count)
        if codec is None:
            if count > len(self.props):
                raise ValueError(f"record has {count} fields, class has {len(self.props)}")
            codec = self.prefixes[count] = _PrefixCodec(self.props[:count])
        values = codec.decode(buf)
        if count < len(self.props):
            values.extend(default_value(p) for p in self.props[count:])
        return values


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
