"""Model registry: champion/challenger records and seen-video bookkeeping on any fsspec URL.

Layout under a registry URL (a local path, a PVC path, ``gs://``, ``s3://`` or ``minio://``)::

    <registry>/champion.json                          pointer to the current champion
    <registry>/history/promotion-<seq>.json           promotion number <seq> (1, 2, ...): the chain
    <registry>/history/<utc-time>-<run_id>-rejected-<rand>.json   a challenger that did not win
    <registry>/champion.lock                          lease lock (local/PVC registries only)
    <registry>/datasets/<name>/versions/<version>.json    video ids processed into that version

Promotions are a compare-and-swap. Promotion number ``n`` is the object
``history/promotion-<n>.json``, created with the store's own atomic create-if-absent
(:func:`sam2_core.storage.create_exclusive`: ``link``/``O_EXCL`` on local and PVC paths, a
generation precondition ``ifGenerationMatch=0`` on GCS, ``If-None-Match`` on S3). A promoter
reads the chain's last promotion ``n-1``, decides, and tries to create ``n``: of any number of
concurrent promoters exactly one creates it; the others re-read the new champion and decide
again. So there are never two promotions from one predecessor, only the winner writes a
promotion event, and each event names its predecessor (``previous_event_id``).
On local/PVC paths promoters also queue on a lease lock (an exclusive lock file with an expiry
time, broken when its holder died), so they rarely even collide.

``champion.json`` is a pointer for readers outside this library, written after the
promotion event; the chain is authoritative: :meth:`Registry.champion` follows promotions
newer than the pointer (a promoter killed between the two writes leaves nothing lost), and
every promoter re-checks after writing the pointer, so it converges to the last promotion.

Seen videos: a scheduled run lists the raw videos, subtracts every video id recorded by *other*
versions of the same dataset and extracts/shards only the rest. Its own version is excluded so that
a retried step of the same run redoes the same set instead of finding nothing to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sam2_core import storage

CHAMPION_FILE = "champion.json"
HISTORY_DIR = "history"
DATASETS_DIR = "datasets"
LOCK_FILE = "champion.lock"
PROMOTION_PREFIX = "promotion-"

#: Outcomes of :meth:`Registry.promote` and the exit status a command should report for each.
PROMOTED = "promoted"
KEPT = "kept"
LOST_RACE = "lost_race"
EXIT_STATUS = {PROMOTED: 0, KEPT: 3, LOST_RACE: 4}
#: Exit status for a rejected input (bad J&F, missing model file).
EXIT_BAD_INPUT = 2

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RegistryError(RuntimeError):
    """The registry content is unusable (corrupt record, concurrent update, bad arguments)."""


class RegistryInputError(RegistryError, ValueError):
    """A promotion input is invalid (non-finite or out-of-range J&F, missing model file)."""


class PromotionRaceLost(RegistryError):
    """Another promotion won and this challenger cannot be re-decided (or kept losing)."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _safe(text: str) -> str:
    """A file-name-safe form of a run id or version (they may contain ``/`` or spaces)."""
    return _SAFE.sub("_", text).strip("_") or "none"


def validate_jf(value: float, *, name: str = "J&F") -> float:
    """``value`` as a float when it is a finite J&F in 0..100, else :class:`RegistryInputError`.

    A NaN champion would make every later comparison fail, and an out-of-range value means the
    number is not a J&F percentage at all (e.g. a 0..1 fraction or a parse error).
    """
    try:
        jf = float(value)
    except (TypeError, ValueError):
        raise RegistryInputError(f"{name} {value!r} is not a number (expected 0..100)") from None
    if not math.isfinite(jf) or not 0.0 <= jf <= 100.0:
        raise RegistryInputError(f"{name} {value!r} must be a finite number in 0..100")
    return jf


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
        if not isinstance(obj, dict):
            raise RegistryError(f"{source}: record is not a JSON object")
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
    """Outcome of a champion/challenger comparison.

    ``outcome`` is :data:`PROMOTED` or :data:`KEPT`; ``event_id`` names the history event that
    recorded it, ``previous_event_id`` the promotion that made the compared champion (``None``
    before the first promotion); ``attempts`` counts reads after lost races (1 = no race).
    """

    promote: bool
    reason: str
    challenger_jf: float
    champion_jf: float | None
    margin: float
    outcome: str = ""
    event_id: str = ""
    previous_event_id: str | None = None
    attempts: int = 1

    @property
    def exit_status(self) -> int:
        """Exit status for a command: 0 promoted, 3 champion kept (see :data:`EXIT_STATUS`)."""
        return EXIT_STATUS[PROMOTED if self.promote else KEPT]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decide(*, challenger_jf: float, champion_jf: float | None, margin: float) -> Decision:
    """Promote when there is no champion, or the challenger beats it by at least ``margin``.

    Both J&F values (0..100) must come from the same split; :meth:`Registry.promote` checks that.
    """
    if champion_jf is None:
        return Decision(
            True,
            "no champion yet: the first model is promoted",
            challenger_jf,
            None,
            margin,
            outcome=PROMOTED,
        )
    gain = challenger_jf - champion_jf
    if gain >= margin:
        reason = f"challenger J&F {challenger_jf:.3f} beats champion {champion_jf:.3f} by {gain:+.3f} >= {margin}"
        return Decision(True, reason, challenger_jf, champion_jf, margin, outcome=PROMOTED)
    reason = f"challenger J&F {challenger_jf:.3f} vs champion {champion_jf:.3f}: gain {gain:+.3f} < margin {margin}"
    return Decision(False, reason, challenger_jf, champion_jf, margin, outcome=KEPT)


@dataclass(frozen=True)
class _Tip:
    """The chain's last promotion as read now: its number, event and champion record."""

    seq: int
    event: dict[str, Any] | None
    record: ModelRecord | None
    pointer_seq: int

    @property
    def event_id(self) -> str | None:
        return str(self.event["id"]) if self.event else None


class Registry:
    """Champion record, promotion chain, history and dataset manifests under one fsspec URL."""

    def __init__(self, url: str) -> None:
        if not url:
            raise RegistryError("registry URL is empty")
        self.url = url.rstrip("/") or url

    # ---------------------------------------------------------------- champion and history
    @property
    def champion_url(self) -> str:
        return storage.join(self.url, CHAMPION_FILE)

    def _promotion_url(self, seq: int) -> str:
        return storage.join(self.url, HISTORY_DIR, f"{PROMOTION_PREFIX}{seq:06d}.json")

    def _read_json(self, url: str) -> dict[str, Any] | None:
        raw = storage.read_bytes_fresh(url)
        if raw is None:
            return None
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{url}: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise RegistryError(f"{url}: not a JSON object")
        return obj

    def _tip(self) -> _Tip:
        """The pointer's champion, advanced along any promotions newer than the pointer."""
        pointer = self._read_json(self.champion_url)
        record, event, seq = None, None, 0
        if pointer is not None:
            if "champion" not in pointer:
                raise RegistryError(f"{self.champion_url}: lacks 'champion'")
            record = ModelRecord.from_dict(pointer["champion"], source=self.champion_url)
            try:
                seq = int(pointer.get("seq", 0))  # 0: written before promotions were numbered
            except (TypeError, ValueError):
                raise RegistryError(f"{self.champion_url}: 'seq' is not a number") from None
            event = pointer.get("event") if seq else None
            if seq and not (isinstance(event, dict) and "id" in event):
                event = self._read_json(self._promotion_url(seq))  # pointer without its event
        pointer_seq = seq
        while True:
            url = self._promotion_url(seq + 1)
            nxt = self._read_json(url)
            if nxt is None:
                break
            if "challenger" not in nxt or "id" not in nxt:
                raise RegistryError(f"{url}: not a promotion event")
            record = ModelRecord.from_dict(nxt["challenger"], source=url)
            event, seq = nxt, seq + 1
        return _Tip(seq=seq, event=event, record=record, pointer_seq=pointer_seq)

    def champion(self) -> ModelRecord | None:
        """The current champion, or ``None`` before the first promotion."""
        return self._tip().record

    def history(self) -> list[dict[str, Any]]:
        """Every event ever recorded (promotions and rejections), oldest first."""
        hist = storage.join(self.url, HISTORY_DIR)
        storage.invalidate(hist)
        events = []
        for name in storage.listdir(hist):
            if name.endswith(".json"):
                obj = self._read_json(storage.join(hist, name))
                if obj is not None:
                    events.append((str(obj.get("time", "")), name, obj))
        return [obj for _, _, obj in sorted(events, key=lambda e: (e[0], e[1]))]

    def chain(self) -> list[dict[str, Any]]:
        """The promotion events in order, checked: numbers 1..n, each naming its predecessor."""
        out: list[dict[str, Any]] = []
        while True:
            url = self._promotion_url(len(out) + 1)
            event = self._read_json(url)
            if event is None:
                return out
            expected = out[-1]["id"] if out else None
            if event.get("seq") != len(out) + 1 or event.get("previous_event_id") != expected:
                raise RegistryError(
                    f"{url}: broken promotion chain (names predecessor "
                    f"{event.get('previous_event_id')!r}, expected {expected!r})"
                )
            out.append(event)

    def _append(self, event: dict[str, Any]) -> str:
        """Write a non-promotion event under a new unique name; returns its id (the name stem)."""
        stamp = event["time"].replace(":", "").replace("-", "")
        event_id = f"{stamp}-{_safe(event['run_id'])}-{event['event']}-{uuid.uuid4().hex[:6]}"
        event["id"] = event_id
        storage.write_json_atomic(storage.join(self.url, HISTORY_DIR, f"{event_id}.json"), event)
        return event_id

    def _check_model(self, model_uri: str) -> None:
        if not model_uri:
            raise RegistryInputError("challenger model URI is empty")
        storage.invalidate(model_uri)
        if not storage.exists(model_uri):
            raise RegistryInputError(
                f"challenger model {model_uri} does not exist: pass the URI of the trained model"
            )

    def _compared_jf(
        self,
        current: ModelRecord | None,
        challenger: ModelRecord,
        *,
        measured: float | None,
        raced: bool,
    ) -> float | None:
        """The champion J&F to compare with: ``measured`` if it is this champion's, else stored.

        ``measured`` is ``None`` when there is no re-measured value for ``current`` (none was
        given, it belongs to another model, or ``current`` replaced it in a race).
        """
        if current is None:
            return None
        if measured is not None:
            return measured
        if current.split_key != challenger.split_key:
            msg = (
                f"champion J&F was measured on {current.split_key!r}, challenger on "
                f"{challenger.split_key!r}: evaluate the champion on the same split and pass "
                "champion_jf (--champion-jf)"
            )
            if raced:  # the champion the caller evaluated was replaced meanwhile
                raise PromotionRaceLost(
                    f"the champion changed to run {current.run_id!r} during this promotion; {msg}"
                )
            raise RegistryError(msg)
        if not math.isfinite(current.jf) or not 0.0 <= current.jf <= 100.0:
            raise RegistryError(
                f"{self.champion_url}: champion J&F {current.jf} is not a finite 0..100 value "
                "(recorded by an older version): re-evaluate the champion and pass champion_jf "
                "(--champion-jf)"
            )
        return current.jf

    def promote(
        self,
        challenger: ModelRecord,
        *,
        margin: float = 0.0,
        champion_jf: float | None = None,
        champion_model_uri: str | None = None,
        attempts: int = 30,
        lease_s: float = storage.DEFAULT_LEASE_S,
        wait_s: float = 120.0,
    ) -> Decision:
        """Compare ``challenger`` with the champion and make it champion when it wins.

        ``champion_jf`` is the champion's J&F re-measured on the challenger's split (the pipeline
        evaluates both models on the same data); ``champion_model_uri`` names the model it was
        measured for (default: the champion found at the first read). Without it, the stored
        champion J&F is used only when it was measured on the same split; otherwise the
        comparison is refused.

        Concurrent promotions: if another promotion wins first, the new champion is read and
        the decision made again, against its stored J&F (the re-measured value belongs to the
        old champion). :class:`PromotionRaceLost` when that is impossible (the new champion was
        measured on another split) or ``attempts`` reads all lost; nothing was written then.
        :class:`RegistryInputError`: non-finite or out-of-range J&F or margin, missing model.
        """
        validate_jf(challenger.jf, name="challenger J&F")
        if champion_jf is not None:
            champion_jf = validate_jf(champion_jf, name="champion J&F")
        if not math.isfinite(margin) or margin < 0:
            raise RegistryInputError(f"margin {margin!r} must be a finite number >= 0")
        self._check_model(challenger.model_uri)
        lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if storage.is_local(self.url):
            # Queue the promoters of one PVC so they rarely collide; exclusivity itself comes
            # from create_exclusive below, which also holds if a lease ran out mid-promotion.
            lock = storage.lease_lock(
                storage.join(self.url, LOCK_FILE), lease_s=lease_s, wait_s=wait_s
            )
        try:
            with lock:
                return self._promote(
                    challenger,
                    margin=margin,
                    measured=champion_jf,
                    measured_uri=champion_model_uri,
                    attempts=attempts,
                )
        except storage.LockBusyError as exc:
            raise PromotionRaceLost(str(exc)) from None

    def _promote(
        self,
        challenger: ModelRecord,
        *,
        margin: float,
        measured: float | None,
        measured_uri: str | None,
        attempts: int,
    ) -> Decision:
        measured_seq: int | None = None  # promotion number of the champion `measured` is for
        for attempt in range(1, max(attempts, 1) + 1):
            tip = self._tip()
            current = tip.record
            if attempt == 1:
                if measured_uri is not None and (
                    current is None or current.model_uri != measured_uri
                ):
                    # Measured on a model that is no longer (or not yet) champion.
                    raced_before = current is not None
                    measured, measured_seq = None, None
                else:
                    raced_before = False
                    measured_seq = tip.seq
            decision = decide(
                challenger_jf=challenger.jf,
                champion_jf=self._compared_jf(
                    current,
                    challenger,
                    measured=measured if tip.seq == measured_seq else None,
                    raced=attempt > 1 or raced_before,
                ),
                margin=margin,
            )
            event: dict[str, Any] = {
                "event": "promoted" if decision.promote else "rejected",
                "time": _now(),
                "run_id": challenger.run_id,
                "challenger": challenger.to_dict(),
                "previous_champion": current.to_dict() if current else None,
                "previous_event_id": tip.event_id,
                "decision": decision.to_dict(),
                "attempts": attempt,
                "writer": uuid.uuid4().hex,
            }
            if not decision.promote:
                event_id = self._append(event)
                return dataclasses.replace(
                    decision, event_id=event_id, previous_event_id=tip.event_id, attempts=attempt
                )
            seq = tip.seq + 1
            event.update(id=f"{PROMOTION_PREFIX}{seq:06d}", seq=seq)
            data = (json.dumps(event, indent=2, default=str) + "\n").encode("utf-8")
            if storage.create_exclusive(self._promotion_url(seq), data):
                self._publish(dataclasses.replace(tip, seq=seq, event=event, record=challenger))
                return dataclasses.replace(
                    decision,
                    event_id=str(event["id"]),
                    previous_event_id=tip.event_id,
                    attempts=attempt,
                )
            # Another promoter created promotion `seq` first: re-read and decide again.
            time.sleep(random.uniform(0.0, min(0.02 * attempt, 0.2)))
        raise PromotionRaceLost(
            f"{self.url}: lost {attempts} promotion races in a row (run {challenger.run_id!r}); "
            "nothing was recorded, re-run the promotion"
        )

    def _pointer_bytes(self, tip: _Tip) -> bytes:
        event = tip.event or {}
        obj = {
            "champion": tip.record.to_dict() if tip.record else None,
            "previous": event.get("previous_champion"),
            "since": event.get("time"),
            "seq": tip.seq,
            "event_id": tip.event_id,
            "previous_event_id": event.get("previous_event_id"),
            "event": event,
        }
        return (json.dumps(obj, indent=2, default=str) + "\n").encode("utf-8")

    @staticmethod
    def _pointer_seq(raw: bytes | None) -> int:
        try:
            seq = json.loads(raw)["seq"] if raw else 0
        except (ValueError, KeyError, TypeError):
            return 0  # unreadable or from an older version: any promotion is newer
        return seq if isinstance(seq, int) else 0

    def _publish(self, tip: _Tip) -> None:
        """Point ``champion.json`` at promotion ``tip`` unless it already names a newer one.

        On GCS the pointer is replaced with a generation precondition, so it only ever moves
        forward. On local/PVC paths the lease lock orders the promoters. Elsewhere (S3) two
        promoters that win in quick succession may write their pointers out of order; each
        re-reads the chain after writing, so the last writer leaves the newest one.
        """
        if storage.has_generations(self.champion_url):
            for _ in range(1000):
                raw, generation = storage.read_with_generation(self.champion_url)
                if self._pointer_seq(raw) >= tip.seq:
                    return
                if storage.write_if_generation(
                    self.champion_url, self._pointer_bytes(tip), generation=generation
                ):
                    return
            raise RegistryError(f"{self.champion_url}: could not be updated (kept changing)")
        for _ in range(1000):
            if self._pointer_seq(storage.read_bytes_fresh(self.champion_url)) >= tip.seq:
                return  # a newer (or this) promotion was published; its writer re-checks
            storage.write_bytes_atomic(self.champion_url, self._pointer_bytes(tip))
            newer = self._tip()
            if newer.seq == tip.seq:
                return
            tip = newer

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
