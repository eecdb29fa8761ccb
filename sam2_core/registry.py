"""Model registry: champion/challenger records and seen-video bookkeeping on any fsspec URL.

Layout under a registry URL (a local path, a PVC path, ``gs://``, ``s3://`` or ``minio://``)::

    <registry>/champion.json                          current champion (replaced atomically)
    <registry>/history/<utc-time>-<run_id>-<event>.json   append-only log, one object per event
    <registry>/datasets/<name>/versions/<version>.json    video ids processed into that version

Why this shape: object stores have no append and no rename, but writing a *new* object is atomic
(it becomes visible only when its upload completes) and replacing one object is atomic too. So the
history is append-only by construction (every event is a new, uniquely named object that is
never rewritten) and the champion pointer is a single object. A promotion first appends the
event to the history (which names the previous champion), then replaces ``champion.json``; if the
process dies in between, the history still holds both records and nothing is lost.

Seen videos: a scheduled run lists the raw videos, subtracts every video id recorded by *other*
versions of the same dataset and extracts/shards only the rest. Its own version is excluded so that
a retried step of the same run redoes the same set instead of finding nothing to do.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sam2_core import storage

CHAMPION_FILE = "champion.json"
HISTORY_DIR = "history"
DATASETS_DIR = "datasets"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RegistryError(RuntimeError):
    """The registry content is unusable (corrupt record, concurrent update, bad arguments)."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _safe(text: str) -> str:
    """A file-name-safe form of a run id or version (they may contain ``/`` or spaces)."""
    return _SAFE.sub("_", text).strip("_") or "none"


@dataclass(frozen=True)
class ModelRecord:
    """One evaluated model: where it is, how good it is, and on which data it was measured."""

    model_uri: str
    jf: float
    dataset_name: str
    dataset_version: str
    run_id: str
    split: str = "val"
    model_name: str = ""
    created_at: str = field(default_factory=_now)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def split_key(self) -> str:
        """Identity of the evaluation split: J&F values are only comparable on equal keys."""
        return f"{self.dataset_name}/{self.dataset_version}/{self.split}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any], *, source: str = "<dict>") -> ModelRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"model_uri", "jf", "dataset_name", "dataset_version", "run_id"} - set(obj)
        if missing:
            raise RegistryError(f"{source}: record lacks {sorted(missing)}")
        try:
            kwargs = {k: v for k, v in obj.items() if k in names}
            kwargs["jf"] = float(kwargs["jf"])
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"{source}: malformed record: {exc}") from exc


@dataclass(frozen=True)
class Decision:
    """Outcome of a champion/challenger comparison."""

    promote: bool
    reason: str
    challenger_jf: float
    champion_jf: float | None
    margin: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decide(*, challenger_jf: float, champion_jf: float | None, margin: float) -> Decision:
    """Promote when there is no champion, or the challenger beats it by at least ``margin``.

    Both J&F values (0..100) must come from the same split; :meth:`Registry.promote` checks that.
    """
    if champion_jf is None:
        return Decision(
            True, "no champion yet: the first model is promoted", challenger_jf, None, margin
        )
    gain = challenger_jf - champion_jf
    if gain >= margin:
        reason = f"challenger J&F {challenger_jf:.3f} beats champion {champion_jf:.3f} by {gain:+.3f} >= {margin}"
        return Decision(True, reason, challenger_jf, champion_jf, margin)
    reason = f"challenger J&F {challenger_jf:.3f} vs champion {champion_jf:.3f}: gain {gain:+.3f} < margin {margin}"
    return Decision(False, reason, challenger_jf, champion_jf, margin)


class Registry:
    """Champion record, append-only history and dataset manifests under one fsspec URL."""

    def __init__(self, url: str) -> None:
        if not url:
            raise RegistryError("registry URL is empty")
        self.url = url.rstrip("/") or url

    # ---------------------------------------------------------------- champion and history
    @property
    def champion_url(self) -> str:
        return storage.join(self.url, CHAMPION_FILE)

    def champion(self) -> ModelRecord | None:
        """The current champion, or ``None`` before the first promotion."""
        if not storage.exists(self.champion_url):
            return None
        try:
            obj = storage.read_json(self.champion_url)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.champion_url}: not valid JSON ({exc})") from exc
        return ModelRecord.from_dict(obj["champion"], source=self.champion_url)

    def history(self) -> list[dict[str, Any]]:
        """Every event ever recorded, oldest first (names sort by UTC time)."""
        hist = storage.join(self.url, HISTORY_DIR)
        return [
            storage.read_json(storage.join(hist, n))
            for n in storage.listdir(hist)
            if n.endswith(".json")
        ]

    def _append(self, event: dict[str, Any]) -> str:
        stamp = event["time"].replace(":", "").replace("-", "")
        name = f"{stamp}-{_safe(event['run_id'])}-{event['event']}-{uuid.uuid4().hex[:6]}.json"
        url = storage.join(self.url, HISTORY_DIR, name)
        storage.write_json_atomic(url, event)
        return url

    def promote(
        self,
        challenger: ModelRecord,
        *,
        margin: float = 0.0,
        champion_jf: float | None = None,
    ) -> Decision:
        """Compare ``challenger`` with the champion and make it champion when it wins.

        ``champion_jf`` is the champion's J&F re-measured on the challenger's split (the pipeline
        evaluates both models on the same data). Without it, the stored champion J&F is used only
        when it was measured on the same split; otherwise the comparison is refused.
        """
        current = self.champion()
        if current is not None and champion_jf is None:
            if current.split_key != challenger.split_key:
                raise RegistryError(
                    f"champion J&F was measured on {current.split_key!r}, challenger on "
                    f"{challenger.split_key!r}: evaluate the champion on the same split and pass "
                    "champion_jf (--champion-jf)"
                )
            champion_jf = current.jf
        decision = decide(
            challenger_jf=challenger.jf,
            champion_jf=champion_jf if current is not None else None,
            margin=margin,
        )
        event = {
            "event": "promoted" if decision.promote else "rejected",
            "time": _now(),
            "run_id": challenger.run_id,
            "challenger": challenger.to_dict(),
            "previous_champion": current.to_dict() if current else None,
            "decision": decision.to_dict(),
        }
        # History first: if we die before the pointer moves, both records are still on disk.
        self._append(event)
        if decision.promote:
            self._replace_champion(challenger, expected=current, event=event)
        return decision

    def _replace_champion(
        self, record: ModelRecord, *, expected: ModelRecord | None, event: dict[str, Any]
    ) -> None:
        # Optimistic check against a concurrent promotion (schedules run with max concurrency 1,
        # but a manual run may overlap): the pointer must still be what we compared against.
        now = self.champion()
        if (now.to_dict() if now else None) != (expected.to_dict() if expected else None):
            raise RegistryError(
                f"{self.champion_url} changed during promotion (now {now.run_id if now else None!r}); "
                "re-run the promotion"
            )
        storage.write_json_atomic(
            self.champion_url,
            {
                "champion": record.to_dict(),
                "previous": event["previous_champion"],
                "since": event["time"],
            },
        )

    # ---------------------------------------------------------------- seen videos
    def _versions_url(self, dataset_name: str) -> str:
        return storage.join(self.url, DATASETS_DIR, _safe(dataset_name), "versions")

    def record_dataset_version(
        self,
        *,
        dataset_name: str,
        dataset_version: str,
        video_ids: list[str],
        shards_url: str = "",
        source_url: str = "",
    ) -> str:
        """Record which videos ``dataset_version`` processed (rewrites that version's manifest)."""
        url = storage.join(self._versions_url(dataset_name), f"{_safe(dataset_version)}.json")
        storage.write_json_atomic(
            url,
            {
                "dataset_name": dataset_name,
                "dataset_version": dataset_version,
                "video_ids": sorted(set(video_ids)),
                "shards_url": shards_url,
                "source_url": source_url,
                "time": _now(),
            },
        )
        return url

    def dataset_versions(self, dataset_name: str) -> dict[str, dict[str, Any]]:
        """All recorded versions of a dataset: version -> manifest."""
        base = self._versions_url(dataset_name)
        out: dict[str, dict[str, Any]] = {}
        for name in storage.listdir(base):
            if name.endswith(".json"):
                obj = storage.read_json(storage.join(base, name))
                out[str(obj["dataset_version"])] = obj
        return out

    def seen_videos(self, dataset_name: str, *, exclude_version: str | None = None) -> set[str]:
        """Video ids already processed by any version other than ``exclude_version``."""
        seen: set[str] = set()
        for version, manifest in self.dataset_versions(dataset_name).items():
            if version != exclude_version:
                seen.update(manifest.get("video_ids", []))
        return seen
