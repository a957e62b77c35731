"""TensorBoard event files (scalars and text), written without TensorFlow or tensorboardX.

The format is TensorFlow's record file: per record, the length (uint64), its masked CRC-32C,
the bytes, their masked CRC-32C; each record a serialized `Event` protobuf
(tensorflow/core/util/event.proto, summary.proto), encoded here by hand for the few fields
used. (tensorboardX would import torch whenever it is installed, about 8 s per run.)
"""

from __future__ import annotations

import pathlib
import socket
import struct
import time

# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78.
_CRC_TABLE = []
for _n in range(256):
  _c = _n
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
  _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# Protobuf wire format: a key is (field number << 3 | wire type).
def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    bits, n = n & 0x7F, n >> 7
    out.append(bits | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
  return _varint(number << 3) + _varint(value)


def _event(step: int, summary: bytes | None = None, file_version: str | None = None) -> bytes:
  out = _varint(1 << 3 | 1) + struct.pack("<d", time.time())  # wall_time
  out += _field_varint(2, step)
  if file_version is not None:
    out += _field_bytes(3, file_version.encode())
  if summary is not None:
    out += _field_bytes(5, summary)
  return out


def _scalar_value(tag: str, value: float) -> bytes:
  return _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)


def _text_value(tag: str, text: str) -> bytes:
  plugin = _field_bytes(1, _field_bytes(1, b"text"))  # SummaryMetadata.plugin_data.plugin_name
  shape = _field_bytes(2, _field_varint(1, 1))  # TensorShapeProto.dim { size: 1 }
  tensor = _field_varint(1, 7) + _field_bytes(2, shape) + _field_bytes(8, text.encode())  # DT_STRING
  return _field_bytes(1, tag.encode()) + _field_bytes(9, plugin) + _field_bytes(8, tensor)


class EventWriter:
  """Appends scalar and text summaries to one `events.out.tfevents.*` file in `directory`."""

  def __init__(self, directory: str | pathlib.Path):
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    self.path = directory / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
    self._file = self.path.open("ab")
    self._write(_event(0, file_version="brain.Event:2"))

  def _write(self, record: bytes) -> None:
    length = struct.pack("<Q", len(record))
    self._file.write(length + struct.pack("<I", masked_crc(length)) + record
                     + struct.pack("<I", masked_crc(record)))

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._write(_event(step, summary=_field_bytes(1, _scalar_value(tag, float(value)))))

  def text(self, tag: str, text: str, step: int) -> None:
    self._write(_event(step, summary=_field_bytes(1, _text_value(tag, text))))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def read_records(path: str | pathlib.Path) -> list[bytes]:
  """The records of an event file, checking both CRCs of each."""
  data = pathlib.Path(path).read_bytes()
  records, pos = [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc(header):
      raise ValueError(f"{path}: corrupt length at byte {pos}")
    record = data[pos + 12:pos + 12 + length]
    if struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] != masked_crc(record):
      raise ValueError(f"{path}: corrupt record at byte {pos}")
    records.append(record)
    pos += 16 + length
  return records
