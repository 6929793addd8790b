"""A store that cannot be written can still be read; one that is damaged is named as such.

The read-only store is a real read-only mount of the agent's home, made in a mount namespace of
the test's own (root, as CI has), so nothing outside the test sees it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.events import Limits, TaskCreated
from agent.store import Store
from frontends.cli import main

from .conftest import REPO, write_script

SCRIPT = [{"plan": ["Answer"]}, {"answer": "42"}]


def agent_on_read_only_home(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`agent ARGV...` with `home` mounted read-only for it alone."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "needs unshare, as CI has"
    assert os.geteuid() == 0, "needs root to mount, as CI has"
    mount = f"mount --bind {home} {home} && mount -o remount,ro,bind {home} {home}"
    command = " ".join([sys.executable, "-m", "frontends.cli", *argv])
    return subprocess.run(
        [
            unshare,
            "--mount",
            "--",
            "sh",
            "-c",
            f"{mount} && touch {home}/probe 2>/dev/null; "
            f"test -e {home}/probe && echo WRITABLE; exec {command}",
        ],
        env={**os.environ, "AGENT_HOME": str(home), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_read_only_store_is_listed_and_shown_and_a_run_says_read_only(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = f"scripted:{write_script(tmp_path / 's.json', SCRIPT)}"
    assert main(["run", "answer", "--model", model, "--json"]) == 0
    task_id = json.loads(capsys.readouterr().out)["task_id"]

    listed = agent_on_read_only_home(home, "tasks", "--json")
    assert "WRITABLE" not in listed.stdout, "the probe could write: the mount is not read-only"
    assert listed.returncode == 0, listed.stderr
    assert [row["task_id"] for row in json.loads(listed.stdout)] == [task_id]
    shown = agent_on_read_only_home(home, "show", task_id)
    assert shown.returncode == 0, shown.stderr
    assert "done: 42" in shown.stdout

    ran = agent_on_read_only_home(home, "run", "again", "--model", model)
    assert ran.returncode == 2
    said = " ".join(ran.stderr.split())
    assert "is read-only" in said, said
    assert "`agent tasks` and `agent show` can read it" in said, said

    doctor = agent_on_read_only_home(home, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert not checks["store"]["ok"]
    assert "is read-only: its 1 tasks can be listed and shown" in checks["store"]["detail"]
    assert f"make {home} writable" in checks["store"]["fix"]
    # The rest of the doctor works on a read-only home: the model worker's socket goes elsewhere.
    assert checks["self-test"]["ok"], checks["self-test"]


def test_the_doctor_names_a_damaged_store_and_how_to_recover_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home.mkdir(parents=True)
    (home / "events.db").write_bytes(b"this is not a database, whatever its name says" * 100)
    assert main(["doctor", "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    store = checks["store"]
    assert not store["ok"]
    assert "file is not a database" in store["detail"]
    assert ".recover" in store["fix"]
    assert "backup" in store["fix"]
    assert "writable" not in store["fix"]


def _damage(path: Path, marker: bytes) -> int:
    """Zero the page of the store that holds each copy of `marker`; return how many."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the page size, in the file's header
    found, at = 0, data.find(marker)
    while at != -1:
        start = at - at % page
        data[start : start + page] = bytes(page)
        found += 1
        at = data.find(marker, start + page)
    path.write_bytes(bytes(data))
    return found


def test_a_damaged_store_still_lists_and_shows_the_tasks_it_can_read(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home.mkdir(parents=True)
    path = home / "events.db"
    # A task whose text spans several overflow pages: the page that holds the middle of it is
    # damaged (in the task list, and in its first event), and nothing else is.
    long_text = "".join(f"victim-{i:05d} " for i in range(1500))
    with Store.open(path) as store:
        ids = [
            store.create_task(TaskCreated(task=f"task {n}", model="scripted:x", limits=Limits()))
            for n in range(40)
        ]
        victim = store.create_task(TaskCreated(task=long_text, model="scripted:x", limits=Limits()))
    assert _damage(path, b"victim-00800 ") == 2

    assert main(["tasks", "--json", "--limit", "100"]) == 1
    captured = capsys.readouterr()
    listed = {row["task_id"] for row in json.loads(captured.out)}
    assert listed == set(ids)  # every task but the damaged one
    said = " ".join(captured.err.split())
    assert "is damaged" in said
    assert ".recover" in said

    # A lookup in the log compares keys with the rows it passes, and a row's key there is its
    # whole record: a task whose lookup passes the damaged row (a neighbour of it in the log's
    # order, 2 or 3 of the 40; all of them when the damaged row is a divider of an interior
    # page, about one store in 30) cannot be read either, and says so like the damaged one.
    # Which tasks those are depends on their random ids: each shows whole, or says why not.
    shown = 0
    for n, task_id in enumerate(ids):
        if main(["show", task_id, "--json"]) == 0:
            assert json.loads(capsys.readouterr().out)[0]["task"] == f"task {n}"
            shown += 1
        else:
            said = " ".join(capsys.readouterr().err.split())
            assert f"task {task_id}: its log is on a damaged part of the event store" in said
    assert main(["show", victim]) != 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"task {victim}: its log is on a damaged part of the event store" in said
    assert ".recover" in said

    assert main(["doctor", "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert "is damaged" in checks["store"]["detail"]
    assert ".recover" in checks["store"]["fix"]
