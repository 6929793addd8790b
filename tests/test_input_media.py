"""Audio and video given with a task: speech (made by espeak-ng) transcribed on this machine by
Whisper base with its times, the real-time factor printed; a video's key frames (made by ffmpeg)
sent as pictures with its sound's transcript; a silent video said to be so; a file that is not
sound refused. Nothing is fetched: the model is the audio extra's, joined and checked here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from agent.config import load_config
from agent.events import Limits
from agent.runner import Runner
from agent.store import Store
from base.errors import ConfigError, StoreError
from documents import media
from frontends.inputs import attachments
from policies import Gate
from tools import Registry

from .test_http_conformance import NO_WAIT, OpenAIWire
from .wire_server import WireServer

SAID = "The quarterly review moves to Thursday at ten. Bring the signed budget."


def _speech(path: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), SAID], check=True)
    return path


def _video(path: Path, sound: Path | None) -> Path:
    picture = ["-f", "lavfi", "-i", "testsrc2=duration=6:size=640x360:rate=25"]
    heard = ["-i", str(sound), "-c:a", "aac", "-shortest"] if sound is not None else []
    encoded = ["-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p"]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *picture, *heard, *encoded, str(path)], check=True
    )
    return path


def test_speech_is_transcribed_with_its_times(home: Path, tmp_path: Path) -> None:
    transcript = media.transcribe(_speech(tmp_path / "memo.wav"), home / "models")
    print(
        f"\n{transcript.duration:.1f} s of speech in {transcript.seconds:.2f} s: real-time factor "
        f"{transcript.real_time_factor:.2f}"
    )
    text = transcript.text()
    assert transcript.language == "en"
    assert "Thursday" in text
    assert "budget" in text
    assert re.match(r"\[00:00\.\d-00:0\d\.\d\] ", text)
    assert (
        home / "models" / media.MODEL_NAME / ".checked"
    ).read_text().strip() == media.MODEL_SHA256
    [given] = attachments([str(tmp_path / "memo.wav")])
    assert (given.kind, given.images) == ("audio", ())
    assert "transcribed on this machine" in given.content
    assert "Thursday" in given.content


async def test_a_video_reaches_a_model_as_frames_and_a_transcript(
    store: Store, home: Path, tmp_path: Path
) -> None:
    clip = _video(tmp_path / "standup.mp4", _speech(tmp_path / "memo.wav"))
    [given] = attachments([str(clip)])
    assert given.kind == "video"
    assert len(given.images) == 3  # a key frame every 2 s of the 6
    # When each frame is, so that the model can tie it to what is said then.
    assert "its 3 key frames are the pictures given, in order, at 0.0, 2.0, 4.0 s;" in given.content
    assert all(i.media_type == "image/jpeg" for i in given.images)
    assert "budget" in given.content
    wire = OpenAIWire()
    with WireServer() as server:
        server.reply(wire.tool_call("call_1", "finish", json.dumps({"answer": "Thursday"})))
        model = wire.backend(server.url, retry=NO_WAIT)
        model.vision = True
        runner = Runner(store, Registry(), Gate.default(), planner=model)
        task_id = runner.create("When is the review?", Limits(), files=(given,), plan=False)
        try:
            assert (await runner.run(task_id)).status == "done"
        finally:
            await model.aclose()
        first = next(m for m in server.requests[0].json["messages"] if m["role"] == "user")
    pictures = [p for p in first["content"] if p["type"] == "image_url"]
    assert len(pictures) == len(given.images)
    assert pictures[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert "budget" in first["content"][0]["text"]


def test_a_silent_video_and_a_file_that_is_not_sound(home: Path, tmp_path: Path) -> None:
    [silent] = attachments([str(_video(tmp_path / "silent.mp4", None))])
    assert "it has no sound" in silent.content
    assert silent.images
    (tmp_path / "fake.wav").write_bytes(b"RIFF not really a wave")
    with pytest.raises(
        ConfigError, match=r"^--file .*fake\.wav: its sound cannot be read"
    ) as caught:
        attachments([str(tmp_path / "fake.wav")])
    assert "Errno" not in str(caught.value)


def test_a_transcription_api_when_one_is_configured(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "language": "english",
                "duration": 4.2,
                "text": "The review moves to Thursday.",
                "segments": [{"start": 0.0, "end": 2.5, "text": " The review moves to Thursday."}],
            },
        )

    memo = _speech(tmp_path / "memo.wav")
    uri = "openai-compatible:http://speech.test/v1#whisper-1"
    transcript = media.transcribe_with(uri, memo, transport=httpx.MockTransport(answer))
    assert transcript.text() == "[00:00.0-00:02.5] The review moves to Thursday."
    [request] = seen
    assert request.url.path == "/v1/audio/transcriptions"
    sent = request.content
    assert b'name="model"\r\n\r\nwhisper-1' in sent
    assert b'name="response_format"\r\n\r\nverbose_json' in sent
    assert b'filename="memo.wav"' in sent
    failing = httpx.MockTransport(lambda _: httpx.Response(500, text="down"))
    with pytest.raises(StoreError) as failed:
        media.transcribe_with(uri, memo, transport=failing)
    assert failed.value.retryable
    bad = tmp_path / "agent.toml"
    bad.write_text('[documents]\ntranscriber = "whisper"\n')
    with pytest.raises(ConfigError, match="transcriber"):
        load_config(bad)
