"""Nothing is fetched at run time: indexing documents (the embedder), searching them, and
transcribing speech (Whisper) work in a process whose network is cut off (a network namespace
of its own, `unshare -n`, with no way out, not even to this machine's loopback). The positive
control shows the cut is real: from inside, a server listening on the host's loopback cannot be
reached."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from .conftest import REPO
from .pdf import write_pdf
from .test_documents import RST, _write
from .test_input_media import _speech

CUT_OFF = ["unshare", "--net", "--"]


def _offline(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HTTP", "http"))}
    env.update({"AGENT_HOME": str(home), "PYTHONPATH": str(REPO)})
    return subprocess.run(
        [*CUT_OFF, sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_indexing_searching_and_transcribing_need_no_network(home: Path, tmp_path: Path) -> None:
    assert shutil.which("unshare"), "util-linux's unshare is needed to cut the network off"
    docs = tmp_path / "docs"
    _write(docs / "tides.rst", RST)
    write_pdf(docs / "lease.pdf", ["Lease\nRent is paid monthly.", "Deposit\nTwo months."])
    _speech(tmp_path / "memo.wav")
    fresh = tmp_path / "fresh-home"  # nothing joined or cached from an earlier test
    code = f"""
from pathlib import Path
from frontends.cli import main
from frontends.inputs import attachments
from documents.index import Index
assert main(["index", {str(docs)!r}]) == 0
with Index.open(Path({str(fresh)!r}) / "index") as index:
    [hit] = index.search("when do boats leave the harbour", 1)
    print("FOUND", "Boats leave the harbour" in hit.text)
[memo] = attachments([{str(tmp_path / "memo.wav")!r}])
print("HEARD", "Thursday" in memo.content)
"""
    done = _offline(code, fresh)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FOUND True" in done.stdout
    assert "HEARD True" in done.stdout


def test_the_cut_is_real(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        reach = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
        assert subprocess.run([sys.executable, "-c", reach], check=False).returncode == 0
        cut = subprocess.run(
            [*CUT_OFF, sys.executable, "-c", reach], capture_output=True, text=True, check=False
        )
    assert cut.returncode != 0
    assert "Network is unreachable" in cut.stderr or "Connection refused" in cut.stderr
