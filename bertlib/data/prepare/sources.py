"""Stage 0 of ``prepare-data``: everything that can be checked before heavy work — folders, phases,
this host's share and the disk, the sources (fetched, sniffed), the vocab file — gathered into a
:class:`Plan` that the later stages read. Also the phase settings that name a phase folder's
content, and the refusal to mix settings in one folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertlib.core.config import DataConfig
from bertlib.core.errors import ConfigError
from bertlib.core.vocab import check_vocab_casing, read_vocab, vocab_info
from bertlib.data.corpus import resolve_source, source_format
from bertlib.data.hosts import HostShare, host_share
from bertlib.data.preflight import check_disk
from bertlib.data.prepare.common import EXTRACT_VERSION, read_json, settings_key


@dataclass(frozen=True)
class Plan:
    """A validated run: the config, its folders, the resolved sources and what identifies them."""

    cfg: DataConfig
    out: Path  # output_dir: the dataset
    work: Path  # scratch (work_dir, else output_dir): never part of the dataset
    sources: tuple[Path, ...]
    share: HostShare  # this host's shards
    vocab_spec: dict  # {"sha256": ...} of a given vocab, or {"trained": vocab_size}
    extract_key: str  # what stage 1's sentences.txt is made from

    @property
    def corpus_dir(self) -> Path:
        return self.work / ".corpus"


def validate(cfg: DataConfig) -> Plan:
    """Check ``cfg`` and its inputs; raise ConfigError/FileNotFoundError before any heavy work."""
    out = Path(cfg.output_dir)
    work = Path(cfg.work_dir or cfg.output_dir)
    for key, folder in (("output_dir", out), ("work_dir", work)):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder}: {key} exists and is not a directory")
    names = [p.name for p in cfg.phases]
    if len(set(names)) != len(names):
        raise ConfigError(f"phases: duplicate phase names {names}")
    for p in cfg.phases:
        if p.max_predictions_per_seq > p.max_seq_length - 3:
            raise ConfigError(
                f"phases.{p.name}: max_predictions_per_seq={p.max_predictions_per_seq} "
                f"exceeds max_seq_length - 3 = {p.max_seq_length - 3}"
            )
    share = host_share(cfg.num_hosts, cfg.host_index)
    check_disk(cfg, share.count)  # before any download or extraction: prints the estimate, stops if short
    sources = []
    for s in cfg.sources:
        path = resolve_source(s, cfg.source_sha256.get(s), cfg.cache_dir)
        if not path.is_file():
            raise ConfigError(f"{path}: source is not a file")
        if path.stat().st_size == 0:
            raise ConfigError(f"{path}: source file is empty")
        try:
            sniffed = source_format(path)
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read source ({e})") from None
        if cfg.source_format == "wikipedia" and sniffed != "wikipedia":
            raise ConfigError(f"{path}: not a MediaWiki XML dump (source_format: wikipedia)")
        sources.append(path)
    if cfg.vocab_file:
        vocab = Path(cfg.vocab_file)
        if not vocab.is_file():
            raise FileNotFoundError(f"{vocab}: vocab file not found")
        info = vocab_info(vocab, cfg.do_lower_case, cfg.strip_accents)
        if cfg.vocab_sha256 and info["sha256"] != cfg.vocab_sha256:
            raise ConfigError(f"{vocab}: sha256 {info['sha256']} does not match vocab_sha256 {cfg.vocab_sha256}")
        missing = {"[UNK]", "[CLS]", "[SEP]", "[MASK]"} - set(read_vocab(vocab))
        if missing:
            raise ConfigError(f"{vocab}: vocab lacks the special tokens {sorted(missing)}")
        check_vocab_casing(vocab, cfg.do_lower_case)
        vocab_spec = {"sha256": info["sha256"]}
    else:
        vocab_spec = {"trained": cfg.vocab_size}
    extract_key = settings_key(
        {
            "v": EXTRACT_VERSION,
            "sources": [(str(p.resolve()), p.stat().st_size) for p in sources],
            "format": cfg.source_format,
            "doc_mode": cfg.text_doc_mode,
            "max_documents": cfg.max_documents,
        }
    )
    if cfg.max_documents is not None and cfg.max_documents < cfg.num_shards + cfg.validation_shards:
        raise ConfigError(
            f"max_documents={cfg.max_documents} is fewer than num_shards + validation_shards = "
            f"{cfg.num_shards + cfg.validation_shards} (every shard needs a document)"
        )
    plan = Plan(cfg, out, work, tuple(sources), share, vocab_spec, extract_key)
    for phase in cfg.phases:
        check_phase_dir(plan, phase)
    return plan


def phase_settings(plan: Plan, phase) -> dict:
    """The settings a phase folder is made with (in its manifest and every shard marker)."""
    cfg = plan.cfg
    return {
        "phase": phase.name,
        "max_seq_length": phase.max_seq_length,
        "max_predictions_per_seq": phase.max_predictions_per_seq,
        "sources": list(cfg.sources),
        "source_format": cfg.source_format,
        "text_doc_mode": cfg.text_doc_mode,
        "max_documents": cfg.max_documents,
        "vocab": plan.vocab_spec,
        "do_lower_case": cfg.do_lower_case,
        "strip_accents": cfg.strip_accents,
        "num_shards": cfg.num_shards,
        "validation_shards": cfg.validation_shards,
        "validation_fraction": cfg.validation_fraction,
        "dupe_factor": cfg.dupe_factor,
        "short_seq_prob": cfg.short_seq_prob,
        "masked_lm_prob": cfg.masked_lm_prob,
        "whole_word_masking": cfg.whole_word_masking,
        "seed": cfg.seed,
        # only when on, so that the settings (and shard keys) of unpacked, static data stay as before
        **({"pack_sequences": True, "max_pairs_per_row": cfg.pairs_per_row(phase)} if cfg.pack_sequences else {}),
        **({"dynamic_masking": True} if cfg.dynamic_masking else {}),
    }


def check_phase_dir(plan: Plan, phase) -> None:
    """Refuse to mix: an existing phase folder must have been made with the same settings."""
    pdir = plan.out / phase.name
    new = phase_settings(plan, phase)
    old, where = None, None
    manifest = read_json(pdir / "manifest.json")
    if manifest is not None:
        old, where = manifest.get("settings"), pdir / "manifest.json"
    else:
        for marker in sorted((pdir / ".progress").glob("*.json")) if (pdir / ".progress").is_dir() else []:
            m = read_json(marker)
            if m and m.get("settings") is not None:
                old, where = m["settings"], marker
                break
    if old is not None and old != new:
        changed = ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in {**new, **old} if old.get(k) != new.get(k))
        raise ConfigError(
            f"{where}: {pdir} was prepared with other settings ({changed}); use a new output_dir or delete {pdir}"
        )
