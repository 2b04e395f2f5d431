"""``bertlib prepare-data``: sources → sentences → WordPiece → sharded pretraining TFRecords.

One module per stage, in the order they run (each stage is skipped on a rerun when its output
exists for the same settings):

0. :mod:`.sources`    everything that can be checked before heavy work (folders, phases, disk,
                      sources, vocab file) → a :class:`~.sources.Plan`; the phase settings.
1. :mod:`.extract`    raw documents (dump pages / text blocks) are cleaned and sentence-split by
                      worker processes, in order, into ``<work_dir>/.corpus/sentences.txt``.
2. :mod:`.vocab`      the given ``vocab_file`` or one trained on stage 1.
3. :mod:`.tokens`     workers WordPiece-encode documents into one flat token array with
                      sentence/document offsets (``.corpus/*.int64``).
4. :mod:`.instances`  documents split (seeded) into train/validation and one group per shard; a
                      worker per group makes, shuffles and deals its instances (``*-instances-*.npy``).
   :mod:`.shards`     a worker per shard takes its share of every group, shuffles, masks, packs and
                      writes ``<phase>/<split>-0000k-of-0000n.tfrecord``, then its done-marker.
5. :mod:`.manifest`   ``<phase>/vocab.txt`` and, last, ``<phase>/manifest.json``.

:mod:`.run` runs them in one pool of spawned worker processes (:func:`prepare`) and holds the
command line (:func:`main`); :mod:`.common` has what the stages share. Worker tasks are frozen
dataclasses (picklable, typed), their functions module-level.

A shard is only skipped when its marker has the same settings key and the file's sha256 matches,
so an interrupted run (a killed worker, Ctrl-C) resumes and ends with the same bytes. Changed
settings on an existing phase folder are refused (one line naming the folder and the changed keys).
"""

from bertlib.data.prepare.common import EXTRACT_VERSION, SHARD_LAYOUT, worker_init
from bertlib.data.prepare.run import RATE_KEYS, RATE_UNITS, main, prepare, stage_rates

__all__ = [
    "EXTRACT_VERSION",
    "RATE_KEYS",
    "RATE_UNITS",
    "SHARD_LAYOUT",
    "main",
    "prepare",
    "stage_rates",
    "worker_init",
]
