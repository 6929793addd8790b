"""An intent and a reviewer's decision are on disk before the store says they are recorded.

SQLite in WAL mode with synchronous=NORMAL survives a crash of the process but not of the
machine: its commits reach the disk at the next checkpoint. A power loss could then erase the
intent written before an external effect (and the effect would be sent again) or a decision
(and the reviewer asked again). So the store fsyncs exactly those commits. Shown by counting,
under strace, the fsyncs each kind of append makes in a real process; the control (a store
opened with synchronous=FULL) shows the probe sees an fsync wherever one happens.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

# Appends each kind of event to a fresh store, with a getppid() between them that strace shows,
# so the fsyncs can be told apart.
APPENDS = """
import os, sys
from pathlib import Path
from agent.events import ApprovalDecided, IntentRecorded, Limits, PlanProposed, TaskCreated
from agent.store import Store

with Store.open(Path(sys.argv[1]), synchronous=sys.argv[2]) as store:
    task = store.create_task(TaskCreated(task="t", model="scripted:x", limits=Limits()))
    for name, event in [
        ("plain", PlanProposed(steps=("a",))),
        ("intent", IntentRecorded(ref="1.0", call_hash="h", idempotency_key="k")),
        ("decision", ApprovalDecided(approval_id="a", approved=True)),
        ("plain again", PlanProposed(steps=("b",))),
    ]:
        os.getppid()
        store.append(task, [event])
        print(name, flush=True)
    os.getppid()
"""


def fsyncs_per_append(tmp_path: Path, synchronous: str) -> dict[str, int]:
    """How many fsync/fdatasync calls each append made, by the kind of event appended."""
    script = tmp_path / "appends.py"
    script.write_text(APPENDS)
    trace = tmp_path / f"trace-{synchronous}.txt"
    strace = [shutil.which("strace") or "strace", "-f", "-o", str(trace)]
    database = str(tmp_path / f"events-{synchronous}.db")
    traced = ["-e", "trace=fsync,fdatasync,getppid"]
    done = subprocess.run(
        [*strace, *traced, sys.executable, str(script), database, synchronous],
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names = done.stdout.split("\n")[:4]
    counts: list[int] = []
    for line in trace.read_text().splitlines():
        if "getppid(" in line:
            counts.append(0)
        elif counts and ("fsync(" in line or "fdatasync(" in line):
            counts[-1] += 1
    return dict(zip(names, counts, strict=False))


def test_an_intent_and_a_decision_are_fsynced_and_nothing_else(tmp_path: Path) -> None:
    normal = fsyncs_per_append(tmp_path, "normal")
    full = fsyncs_per_append(tmp_path, "full")
    print(json.dumps({"normal": normal, "full": full}))
    # The control: with synchronous=FULL every commit is fsynced, and the probe counts them.
    assert all(n >= 1 for n in full.values()), full
    assert normal["intent"] >= 1, normal
    assert normal["decision"] >= 1, normal
    assert normal["plain"] == normal["plain again"] == 0, normal
