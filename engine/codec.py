"""Value validation, object encoding and order-preserving key encoding.

Object record: u16 property count, then each property in stored schema order.
Optional values carry a presence byte; int/datetime are i64 (datetime as
microseconds since the epoch plus a 'was UTC-aware' byte), float f64, bool u8,
str/bytes u32 length + bytes, lists u32 count + elements.  Records written
before a property was added are shorter; missing trailing values read as the
property's default.

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
INDEX_PREFIX = 200
EPOCH = dt.datetime(1970, 1, 1)

_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_KEY_U64 = struct.Struct(">Q")

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


def encode_record(props, values) -> bytes:
    """values: list in property order, already validated."""
    out = [_U16.pack(len(props))]
    for prop, value in zip(props, values):
        if prop.optional:
            if value is None:
                out.append(b"\x00")
                continue
            out.append(b"\x01")
        if prop.is_list:
            out.append(_U32.pack(len(value)))
            for item in value:
                _encode_scalar(out, prop.type, item)
        else:
            _encode_scalar(out, prop.type, value)
    return b"".join(out)


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


def decode_record(props, buf: bytes) -> list:
    (count,) = _U16.unpack_from(buf, 0)
    pos = 2
    values = []
    for i, prop in enumerate(props):
        if i >= count:
            values.append(default_value(prop))
            continue
        if prop.optional:
            present = buf[pos]
            pos += 1
            if not present:
                values.append(None)
                continue
        if prop.is_list:
            (n,) = _U32.unpack_from(buf, pos)
            pos += 4
            items = []
            for _ in range(n):
                item, pos = _decode_scalar(buf, pos, prop.type)
                items.append(item)
            values.append(items)
        else:
            value, pos = _decode_scalar(buf, pos, prop.type)
            values.append(value)
    return values


# -- keys -------------------------------------------------------------------

def _escape(data: bytes) -> bytes:
    return data.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def encode_key_scalar(type_name: str, value, truncate: bool = False) -> bytes:
    if type_name == "int":
        return _KEY_U64.pack(value - INT64_MIN)
    if type_name == "float":
        if value == 0:
            value = 0.0       # -0.0 == 0.0 must share a key
        (bits,) = _KEY_U64.unpack(struct.pack(">d", value))
        bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
        return _KEY_U64.pack(bits)
    if type_name == "bool":
        return b"\x01" if value else b"\x00"
    if type_name == "datetime":
        return _KEY_U64.pack(_datetime_micros(value)[0] - INT64_MIN)
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
    return _KEY_U64.pack(object_id)


def decode_object_id(key: bytes) -> int:
    return _KEY_U64.unpack(key)[0]


def encode_primary_key(prop, value) -> bytes:
    return encode_key_scalar(prop.type, value)


def decode_primary_key(prop, key: bytes):
    if prop.type == "int":
        return _KEY_U64.unpack(key)[0] + INT64_MIN
    return key[:-2].replace(b"\x00\xff", b"\x00").decode()
