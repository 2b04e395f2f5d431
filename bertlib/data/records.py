"""The pretraining TFRecord format (Google's feature names) and its serialization.

One record = one example of ``max_seq_length`` S and ``max_predictions_per_seq`` P:

=====================  =======  =====  ==============================================
feature                dtype    shape  meaning
=====================  =======  =====  ==============================================
input_ids              int64    [S]    ``[CLS] A [SEP] B [SEP]`` token ids, 0-padded
input_mask             int64    [S]    1 for real tokens, 0 for padding
segment_ids            int64    [S]    0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``
masked_lm_positions    int64    [P]    positions of masked tokens, 0-padded
masked_lm_ids          int64    [P]    original token ids at those positions, 0-padded
masked_lm_weights      float32  [P]    1.0 for real predictions, 0.0 for padding
next_sentence_labels   int64    [1]    0 = B follows A, 1 = B is random (Google's convention)
=====================  =======  =====  ==============================================

Packed records (``DataConfig.pack_sequences``, Krell et al. 2021, arXiv 2107.02027) hold up to
K = ``max_pairs_per_row`` pairs back to back from position 0, in pack order, with the same feature
names: ``input_mask`` holds the 1-based pair number (1..K) of every real token (0 on padding, so
K = 1 is Google's 0/1 mask), ``segment_ids`` restart at 0 for every pair, ``masked_lm_positions``
are absolute row positions (ascending) and ``next_sentence_labels`` is [K]: pair j's label at index
j-1, 0 for absent pairs. Unmasked records (``DataConfig.dynamic_masking``) leave out the three
``masked_lm_*`` features; their ``input_ids`` are the original tokens. The manifest's ``packing`` and
``masking`` keys say which layout a phase has (:func:`dataset_layout`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path

import numpy as np

from bertlib.core.errors import ConfigError, DataError
from bertlib.core.files import sha256_file, temp_path
from bertlib.core.vocab import check_vocab_compatible

INT_FEATURES = (
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "next_sentence_labels",
)
FEATURE_NAMES = (
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)
#: features that unmasked records (``masking: "dynamic"``) leave out
MASKED_LM_FEATURES = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
#: ``manifest.json["format"]`` of a prepared dataset folder (see :func:`validate_dataset`)
MANIFEST_FORMAT = "bertlib-pretraining/1"


def feature_spec(
    max_seq_length: int, max_predictions_per_seq: int, max_pairs_per_row: int = 1, masked: bool = True
) -> dict:
    """``tf.io.parse_example`` spec for records of length S=max_seq_length, P=max_predictions.

    ``max_pairs_per_row`` K > 1 = packed records (``next_sentence_labels`` [K]); ``masked=False`` =
    unmasked records of a dynamic-masking dataset (no ``masked_lm_*`` features). The defaults are
    Google's layout. :func:`dataset_layout` gives both arguments from a manifest.
    """
    import tensorflow as tf

    s, p = max_seq_length, max_predictions_per_seq
    spec = {
        "input_ids": tf.io.FixedLenFeature([s], tf.int64),
        "input_mask": tf.io.FixedLenFeature([s], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([s], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([p], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([p], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([p], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([max_pairs_per_row], tf.int64),
    }
    return {k: v for k, v in spec.items() if masked or k not in MASKED_LM_FEATURES}


def dataset_layout(manifest: dict, where: str = "manifest.json") -> dict:
    """The record layout of a prepared phase from its ``manifest.json``: ``{max_pairs_per_row: K,
    masked: bool, masked_lm_prob: float}`` (K = 1 unpacked; ``masked`` False = unmasked records for
    dynamic masking, whose masks the input pipeline draws at ``masked_lm_prob``: the manifest's
    ``settings.masked_lm_prob``, Google's 0.15 when absent).

    Manifests written before packing existed (no ``packing`` / ``masking`` keys) are unpacked and
    statically masked. An unknown ``masking`` is a DataError starting with ``where``.
    """
    packing = manifest.get("packing")
    masking = manifest.get("masking", "static")
    if masking not in ("static", "dynamic"):
        raise DataError(f"{where}: masking {masking!r} is not 'static' or 'dynamic'")
    return {
        "max_pairs_per_row": int(packing["max_pairs_per_row"]) if packing else 1,
        "masked": masking == "static",
        "masked_lm_prob": float(manifest.get("settings", {}).get("masked_lm_prob", 0.15)),
    }


def parse_pretraining_batch(
    serialized, max_seq_length: int, max_predictions_per_seq: int, max_pairs_per_row: int = 1, masked: bool = True
) -> dict:
    """Batch of serialized examples [B] → dict of int32/float32 tensors ([B, S], [B, P], [B, K]).

    Layout arguments as :func:`feature_spec` (unmasked records give no ``masked_lm_*`` tensors).
    int64 features are cast to int32 (what the model's embedding lookups and XLA prefer).
    """
    import tensorflow as tf

    parsed = tf.io.parse_example(
        serialized, feature_spec(max_seq_length, max_predictions_per_seq, max_pairs_per_row, masked)
    )
    return {k: (tf.cast(v, tf.int32) if v.dtype == tf.int64 else v) for k, v in parsed.items()}


# ---------------------------------------------------------------------------------------------------
# Writing without TensorFlow: the tf.train.Example protobuf wire format built with numpy (whole
# batches of fixed-shape examples at once) and TFRecord framing with CRC32C, so that data-prep
# worker processes never import TensorFlow. Reading stays with TensorFlow (an independent decoder).
# ---------------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _packed_varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, L] int64 → (concatenated protobuf varint bytes of each row, row byte offsets [N+1])."""
    v = np.ascontiguousarray(values).astype(np.uint64)  # two's complement, as protobuf does
    nbytes = np.ones(v.shape, np.int64)
    for k in range(1, 10):
        more = v >= np.uint64(1 << (7 * k))
        if not more.any():
            break
        nbytes += more
    groups = int(nbytes.max()) if v.size else 1
    shifts = (7 * np.arange(groups)).astype(np.uint64)
    digits = ((v[..., None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    k = np.arange(groups)
    digits |= ((k < nbytes[..., None] - 1) * 0x80).astype(np.uint8)
    flat = digits[k < nbytes[..., None]]
    offsets = np.zeros(len(v) + 1, np.int64)
    np.cumsum(nbytes.sum(axis=1), out=offsets[1:])
    return flat, offsets


def _feature_prefix(name: str, kind: int, payload_len: int) -> bytes:
    """Bytes before a packed list payload: ``Features.feature`` map entry {key, Feature{list{packed}}}.

    ``kind`` is the Feature oneof field number: 2 = float_list, 3 = int64_list.
    """
    key = name.encode()
    lst_hdr = b"\x0a" + _varint(payload_len)  # {Float,Int64}List.value, packed
    lst_len = len(lst_hdr) + payload_len
    feat_hdr = bytes([(kind << 3) | 2]) + _varint(lst_len)  # Feature.{float,int64}_list
    feat_len = len(feat_hdr) + lst_len
    entry_hdr = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(feat_len)  # map key, value
    return b"\x0a" + _varint(len(entry_hdr) + feat_len) + entry_hdr + feat_hdr + lst_hdr


def encode_examples(features: dict[str, np.ndarray]) -> list[bytes]:
    """A batch of N padded examples → N serialized ``tf.train.Example`` records.

    ``features`` maps every name of :data:`FEATURE_NAMES` (or all but :data:`MASKED_LM_FEATURES`,
    for unmasked records) to an array with N rows: ``[N, S]``, ``[N, P]`` or ``[N, K]``;
    ``masked_lm_weights`` is float (written as float32), the rest int. Features are written in
    :data:`FEATURE_NAMES` order.
    """
    n = len(features["input_ids"])
    columns = []
    prefix_cache: dict[tuple[str, int], bytes] = {}
    for name in (name for name in FEATURE_NAMES if name in features):
        arr = np.asarray(features[name]).reshape(n, -1)
        if name in INT_FEATURES:
            flat, offs = _packed_varints(arr.astype(np.int64))
            kind = 3
        else:
            flat = np.frombuffer(np.ascontiguousarray(arr, dtype="<f4").tobytes(), np.uint8)
            offs = np.arange(n + 1, dtype=np.int64) * 4 * arr.shape[1]
            kind = 2
        columns.append((name, kind, flat.tobytes(), offs.tolist()))
    records = []
    for i in range(n):
        parts = []
        for name, kind, buf, offs in columns:
            payload = buf[offs[i] : offs[i + 1]]
            key = (name, len(payload))
            if key not in prefix_cache:
                prefix_cache[key] = _feature_prefix(name, kind, len(payload))
            parts.append(prefix_cache[key])
            parts.append(payload)
        body = b"".join(parts)
        records.append(b"\x0a" + _varint(len(body)) + body)  # Example.features
    return records


def _masked_crc(data: bytes) -> int:
    import google_crc32c  # 'local' extra: a SageMaker Studio kernel reads manifests here without it

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """One record in TFRecord framing: length, CRC of length, data, CRC of data (masked CRC32C)."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc(length)) + record + struct.pack("<I", _masked_crc(record))


def write_tfrecord_file(path: str | os.PathLike, records) -> str:
    """Write an uncompressed TFRecord file atomically (temp name, then rename); return its sha256."""
    path = Path(path)
    tmp = temp_path(path)
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        for rec in records:
            framed = tfrecord_frame(rec)
            h.update(framed)
            f.write(framed)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Reading a prepared dataset folder back: manifest + validation before any training starts.
# ---------------------------------------------------------------------------------------------------


def shard_mix(shard: dict, max_seq_length: int) -> dict:
    """What one shard's examples are made of, from the counts of its ``manifest.json`` entry
    (``examples`` = records, ``pairs`` (= ``examples`` when absent, i.e. unpacked), ``random_next``,
    ``real_tokens``): ``{random_next_fraction, padding_fraction}``, the share of pairs with a random B
    and of the ``[examples, max_seq_length]`` positions that are padding."""
    n = shard["examples"]
    return {
        "random_next_fraction": shard["random_next"] / shard.get("pairs", n),
        "padding_fraction": 1 - shard["real_tokens"] / (n * max_seq_length),
    }


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """``<data_dir>/manifest.json`` as a dict; DataError (naming the file) if absent or malformed."""
    path = Path(data_dir) / "manifest.json"
    if not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: dataset folder not found")
    if not path.is_file():
        raise DataError(f"{path}: not found (not a prepared dataset; run `bertlib prepare-data`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path}: format {got!r} is not {MANIFEST_FORMAT!r}")
    for key in ("max_seq_length", "max_predictions_per_seq", "vocab", "counts", "shards"):
        if key not in manifest:
            raise DataError(f"{path}: missing key {key!r}")
    return manifest


def tf_error_reason(error) -> str:
    """The first line of a ``tf.errors.OpError`` without TF's op decoration: "corrupted record at 1020"."""
    return re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*", "", error.message.splitlines()[0])


def first_example(path: Path):
    """The first record of a TFRecord file as a ``tf.train.Example``; DataError naming the file if the
    file is unreadable, holds no records or its first record is not an Example."""
    import tensorflow as tf

    try:
        raw = next(iter(tf.data.TFRecordDataset(str(path)).take(1)), None)
    except tf.errors.OpError as e:
        raise DataError(f"{path}: not a readable TFRecord file ({tf_error_reason(e)})") from None
    if raw is None:
        raise DataError(f"{path}: holds no records")
    try:
        return tf.train.Example.FromString(raw.numpy())
    except Exception as e:  # protobuf DecodeError
        raise DataError(f"{path}: first record is not a tf.train.Example ({e})") from None


def check_example_layout(
    example,
    where: str,
    max_seq_length: int,
    max_predictions_per_seq: int,
    max_pairs_per_row: int = 1,
    masked: bool = True,
) -> None:
    """DataError (one line starting with ``where``, naming the feature) unless the ``tf.train.Example``
    has exactly the features of :func:`feature_spec` for this layout, each of its dtype and of length
    S / P / K (``max_pairs_per_row``; ``masked=False``: no ``masked_lm_*`` features)."""
    import tensorflow as tf

    spec = feature_spec(max_seq_length, max_predictions_per_seq, max_pairs_per_row, masked)
    names = list(spec)
    layout = "Google's layout" if masked else "unmasked layout (dynamic masking)"
    feats = example.features.feature
    foreign = sorted(set(feats) - set(names))
    missing = [name for name in names if name not in feats]
    if foreign or missing:
        if foreign:
            problem = f"feature {foreign[0]!r} is " + (
                "not in unmasked records" if foreign[0] in FEATURE_NAMES else "not a pretraining feature"
            )
        else:
            problem = f"feature {missing[0]!r} is missing"
        raise DataError(f"{where}: {problem} ({layout}: {', '.join(names)})")
    for name, feature in spec.items():
        (length,) = feature.shape
        kind = "float_list" if feature.dtype == tf.float32 else "int64_list"
        if feats[name].WhichOneof("kind") != kind:
            raise DataError(f"{where}: feature {name!r} is {feats[name].WhichOneof('kind')}, expected {kind}")
        got = len(getattr(feats[name], kind).value)
        if got != length:
            raise DataError(
                f"{where}: feature {name!r} has length {got}, expected {length} "
                f"(max_seq_length={max_seq_length}, max_predictions_per_seq={max_predictions_per_seq}"
                + (f", max_pairs_per_row={max_pairs_per_row})" if max_pairs_per_row > 1 else ")")
            )


def validate_dataset(
    data_dir: str | os.PathLike,
    max_seq_length: int | None = None,
    max_predictions_per_seq: int | None = None,
    vocab: dict | None = None,
    checksums: bool = True,
) -> dict:
    """Check a prepared dataset folder before training; return its manifest.

    Checks, each failure a :class:`DataError` naming the file: the manifest is readable; its
    ``max_seq_length`` / ``max_predictions_per_seq`` equal the requested ones (when given); its vocab
    matches ``vocab`` (a :func:`bertlib.core.vocab.vocab_info` dict: sha256, size, casing); every
    listed shard exists, is non-empty, has the recorded sha256 (``checksums``; off = size only) and its
    first record has exactly the pretraining features with the manifest's lengths, in the manifest's
    layout (packed / unmasked, :func:`dataset_layout`).
    """

    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    mpath = data_dir / "manifest.json"
    s, p = manifest["max_seq_length"], manifest["max_predictions_per_seq"]
    layout = dataset_layout(manifest, str(mpath))
    if max_seq_length is not None and s != max_seq_length:
        raise DataError(f"{mpath}: data has max_seq_length={s} but the run expects {max_seq_length}")
    if max_predictions_per_seq is not None and p != max_predictions_per_seq:
        raise DataError(f"{mpath}: data has max_predictions_per_seq={p} but the run expects {max_predictions_per_seq}")
    if vocab is not None:
        try:
            check_vocab_compatible(vocab, manifest["vocab"], "the model vocab", f"{mpath}: data")
        except ConfigError as e:
            raise DataError(str(e)) from None
    for split, shards in manifest["shards"].items():
        for shard in shards:
            path = data_dir / shard["file"]
            if not path.is_file():
                raise DataError(f"{path}: {split} shard listed in manifest.json is missing")
            if shard.get("examples", 1) == 0:
                raise DataError(f"{path}: {split} shard holds no examples")
            if "bytes" in shard and path.stat().st_size != shard["bytes"]:
                raise DataError(
                    f"{path}: size {path.stat().st_size} bytes, manifest.json says "
                    f"{shard['bytes']} (truncated or corrupt; rerun prepare-data)"
                )
            if checksums and sha256_file(path) != shard["sha256"]:
                raise DataError(f"{path}: sha256 does not match manifest.json (corrupt; rerun prepare-data)")
            check_example_layout(first_example(path), str(path), s, p, layout["max_pairs_per_row"], layout["masked"])
    return manifest


def read_records(
    path: str | os.PathLike,
    max_seq_length: int,
    max_predictions_per_seq: int,
    limit: int | None = None,
    max_pairs_per_row: int = 1,
    masked: bool = True,
) -> dict[str, np.ndarray]:
    """All (or the first ``limit``) records of one shard, parsed by TensorFlow → numpy arrays
    (``[N, S]`` / ``[N, P]`` / ``[N, K]``, dtypes as :func:`parse_pretraining_batch`; layout arguments
    as :func:`feature_spec`, e.g. from :func:`dataset_layout`)."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(path))
    if limit is not None:
        ds = ds.take(limit)
    parts = [
        {
            k: v.numpy()
            for k, v in parse_pretraining_batch(
                b, max_seq_length, max_predictions_per_seq, max_pairs_per_row, masked
            ).items()
        }
        for b in ds.batch(4096)
    ]
    if not parts:
        return {
            k: np.zeros((0,) + tuple(v.shape), v.dtype.as_numpy_dtype)
            for k, v in feature_spec(max_seq_length, max_predictions_per_seq, max_pairs_per_row, masked).items()
        }
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
