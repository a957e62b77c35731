import struct

import pytest

from research.train import tensorboard as tb


def test_crc32c_check_value():
  assert tb.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value


def test_events_decode_with_the_tensorboard_protos(tmp_path):
  writer = tb.EventWriter(tmp_path)
  writer.scalar("loss", 2.5, step=7)
  writer.text("sample", "To be, or not", step=9)
  writer.close()
  records = tb.read_records(writer.path)
  assert len(records) == 3
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  events = [event_pb2.Event.FromString(r) for r in records]
  assert events[0].file_version == "brain.Event:2"
  assert events[1].step == 7 and events[1].summary.value[0].tag == "loss"
  assert events[1].summary.value[0].simple_value == 2.5
  text = events[2].summary.value[0]
  assert text.metadata.plugin_data.plugin_name == "text"
  assert text.tensor.string_val == [b"To be, or not"] and events[2].step == 9


def test_corruption_is_detected(tmp_path):
  writer = tb.EventWriter(tmp_path)
  writer.scalar("loss", 1.0, step=1)
  writer.close()
  data = bytearray(writer.path.read_bytes())
  data[-6] ^= 0xFF
  writer.path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="corrupt record"):
    tb.read_records(writer.path)
