"""The README's curl lines, run in order against `make run` as a new reader would: none gets a server
error, and the demo still runs its examples after all of them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from machinery.serving import free_port
from tests.conftest import ROOT

# What the README writes in place of a value a reader copies from an earlier answer: such a line is skipped.
PLACEHOLDER = re.compile(r"<[A-Za-z][A-Za-z_ -]*>|…")
SERVER_ERROR = re.compile(r'"code": ?5\d\d')


def _open(lines: list[str]) -> bool:
    """Whether a command goes on to the next line: a trailing backslash, or a quote left open."""
    text = "\n".join(line.split("  #")[0] for line in lines)
    return text.rstrip().endswith("\\") or text.count("'") % 2 == 1


def readme_commands(text: str) -> list[tuple[int, list[str]]]:
    """The curl commands of each console block, in order, as (line number, commands)."""
    lines, blocks, number = text.split("\n"), [], 0
    while number < len(lines):
        if lines[number].startswith("```console"):
            start, commands = number + 1, []
            number += 1
            while not lines[number].startswith("```"):
                line = lines[number]
                if line.startswith("$ "):
                    command = [line[2:]]
                    heredoc = re.search(r"<<'?(\w+)'?", line)
                    if heredoc:
                        while lines[number].strip() != heredoc.group(1):
                            number += 1
                            command.append(lines[number])
                    while not heredoc and _open(command) and not lines[number + 1].startswith(("$ ", "```")):
                        number += 1
                        command.append(lines[number])
                    joined = "\n".join(command)
                    if "curl" in joined and not PLACEHOLDER.search(joined) and "big.json" not in joined:
                        commands.append(joined)
                number += 1
            if commands:
                blocks.append((start, commands))
        number += 1
    return blocks


def test_the_readme_is_read_as_the_blocks_a_reader_runs():
    blocks = readme_commands((ROOT / "README.md").read_text())
    commands = [command for _, block in blocks for command in block]
    assert len(commands) > 60
    # A body spread over lines is one command, and a heredoc keeps its document.
    assert any(command.count("\n") >= 2 and '"name": "shout-for"' in command for command in commands)
    assert any("<<'YAML'" in command and command.rstrip().endswith("YAML") for command in commands)
    assert not any(PLACEHOLDER.search(command) for command in commands)


def _demo(port: int, log) -> subprocess.Popen:
    """`make run`'s demo, its output to `log`: a pipe nobody reads would stall it once full."""
    env = {**os.environ}
    env.pop("MACHINERY_MONGO_URI", None)
    env.pop("MACHINERY_API_KEYS", None)
    return subprocess.Popen([sys.executable, "-m", "machinery.cli", "demo", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_demo(process: subprocess.Popen, log: Path, deadline_s: float = 120) -> None:
    """Until the demo says it has registered and run its examples; bounded, and not past its exit."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and process.poll() is None:
        if "Ctrl-C stops everything" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the demo did not come up (exit {process.poll()}): {log.read_text(errors='replace')[-2000:]}")


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_curl_line_of_the_readme_works_against_make_run_and_leaves_the_demo_running(tmp_path):
    # GIVEN `make run`'s demo, and the README's curl lines block by block, as a reader pastes them
    port = free_port()
    log_path = tmp_path / "demo.log"
    log = log_path.open("w")
    demo = _demo(port, log)
    try:
        _wait_for_demo(demo, log_path)
        base = f"localhost:{port}"
        ran = 0
        for start, commands in readme_commands((ROOT / "README.md").read_text()):
            script = "\n".join(f"echo '@@@ {number}'\n{command.replace('localhost:5000', base)}"
                               for number, command in enumerate(commands))
            # WHEN each block runs in a shell of its own (its variables are its own)
            done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
            answers = done.stdout.split("@@@ ")[1:]
            assert len(answers) == len(commands), f"README line {start}: {done.stderr[-2000:]}"
            for answer, command in zip(answers, commands, strict=True):
                # THEN no line gets a server error (a failed step's 502 is an event, not an error body)
                assert not SERVER_ERROR.search(answer), f"README line {start}: {command}\n{answer[:2000]}"
                ran += 1
        assert ran > 60
        # AND the demo's examples still run as `make run` showed them: nothing above broke a service,
        # a secret or a workflow of theirs
        text = json.loads((ROOT / "examples" / "definitions" / "event-text.json").read_text())
        reply = requests.post(f"http://{base}/e/process-text", json=text, timeout=30)
        assert reply.status_code == 201, reply.text
        assert reply.json()["status"] == "completed"
        order = requests.post(f"http://{base}/e/order-fulfil", json={"order_id": "A-1001"}, timeout=60)
        assert order.status_code == 201, order.text
        assert order.json()["outputs"]["reservations"]
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.communicate(timeout=10)
        log.close()
