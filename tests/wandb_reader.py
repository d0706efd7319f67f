"""Reads an offline W&B run's transaction log (``run-*.wandb``) into wandb's own protobuf records.

The file is W&B's 7-byte header followed by LevelDB-log framed records (32 KiB blocks, each
chunk: crc32 (4), length (2), type (1)); every record is a ``wandb_internal_pb2.Record``.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER, FILE_HEADER = 32768, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:FILE_HEADER])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, "not a W&B transaction log"
    pos, pending = FILE_HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def read_run(run_dir: Path) -> dict:
    """``{"config", "history": [{key: value}], "run": RunRecord, "artifacts": [ArtifactRecord]}`` of a run dir."""
    (log,) = Path(run_dir).glob("run-*.wandb")
    out = {"config": {}, "history": [], "run": None, "artifacts": []}
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            for item in record.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "artifact":
            out["artifacts"].append(record.artifact)
        elif kind == "history":
            out["history"].append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
    return out
