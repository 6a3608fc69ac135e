"""The README is a manual that works: every command in its bash blocks runs as written (what takes minutes or runs
until stopped: its `--help` here, for real in the slow tests), its Python blocks run against the quick start's node,
its results table is what `vlkd demo` prints, and every relative link in it and in docs/ resolves.

The commands are read from the README itself, so a command added there is covered without touching this file;
`fast_form` says how each kind is run in the fast tests."""
from __future__ import annotations

import os
import random
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vlkd_ros.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250
# `vlkd` subcommands that take minutes or run until stopped: `--help` in the fast tests, run in the slow ones.
LONG = {"demo", "reproduce", "distill", "collect", "train-grasp", "build-grasp-model", "eval-grasp", "add-object",
        "pretrain-teacher", "serve", "sim-camera", "ask"}
QUICK_START = {"serve", "sim-camera", "ask"}  # run together by test_the_ros_quick_start_runs_as_written
TIMEOUT_S = 600


def code_blocks(path: Path, lang: str) -> list[str]:
    """The bodies of the ```lang fenced blocks of a Markdown file, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), flags=re.M | re.S)


def commands(block: str) -> list[str]:
    """The command lines of a bash block: continuation lines joined, comment-only and empty lines dropped."""
    lines, current = [], ""
    for line in block.splitlines():
        current += line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        if shlex.split(current, comments=True):
            lines.append(current)
        current = ""
    return lines


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks."""
    return [cmd for block in code_blocks(README, "bash") for cmd in commands(block)]


def pieces(cmd: str) -> tuple[list[list[str]], bool]:
    """A command line as its `&&`-joined commands (token lists, comment dropped), and whether it is in a subshell."""
    tokens = shlex.split(cmd, comments=True)
    subshell = tokens[0].startswith("(") and tokens[-1].endswith(")")
    if subshell:
        tokens[0], tokens[-1] = tokens[0][1:], tokens[-1][:-1]
    out: list[list[str]] = [[]]
    for token in tokens:
        if token == "&&":
            out.append([])
        elif token:
            out[-1].append(token)
    return out, subshell


def vlkd_subcommand(piece: list[str]) -> list[str] | None:
    """`vlkd SUB` (or `vlkd collect KIND`) of a `vlkd` command, else None."""
    if not piece or piece[0] != "vlkd":
        return None
    return piece[:3] if len(piece) > 2 and piece[1] == "collect" else piece[:2]


def fast_form(piece: list[str]) -> list[str]:
    """What the fast test runs for one command: `./install.sh --help` (the install itself is .ci/run's on a fresh
    machine), pytest with `--collect-only` (the suite is not run from inside itself), `vlkd SUB --help` for a
    long `vlkd` command, anything else as written."""
    if piece[0] == "./install.sh":
        return ["./install.sh", "--help"]
    if piece[:3] == ["python", "-m", "pytest"]:
        return [*piece, "--collect-only", "-p", "no:cacheprovider"]
    sub = vlkd_subcommand(piece)
    if sub is not None and sub[1] in LONG:
        return [*sub, "--help"]
    return piece


def as_line(parts: list[list[str]], subshell: bool) -> str:
    """Token lists back to one shell line."""
    line = " && ".join(shlex.join(p) for p in parts)
    return f"({line})" if subshell else line


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that looks like the checkout (a link to each top-level entry) but has its own data/ and runs/: what
    a command writes under the current directory lands here."""
    return make_mirror(tmp_path_factory.mktemp("checkout"))


def make_mirror(folder: Path) -> Path:
    """Link every top-level entry of the checkout into `folder`, except data/ and runs/."""
    for entry in ROOT.iterdir():
        if entry.name not in ("data", "runs"):
            (folder / entry.name).symlink_to(entry)
    return folder


def fresh_env() -> dict:
    """The environment of a new terminal: none of this test's venv, ROS or bootstrap variables (a line that
    sources another distro's environment must not inherit this one's); PYTHONPATH stays (env.sh drops the other
    distro's builds from it)."""
    keep = ("HOME", "USER", "LANG", "TMPDIR", "TERM", "PYTHONPATH")
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            **{k: os.environ[k] for k in keep if k in os.environ}}


def shell_line(line: str) -> str:
    """A README line as typed in a new terminal: after `source scripts/env.sh`, unless it sources an env itself."""
    return line if "source scripts/env.sh" in line else f"source scripts/env.sh >/dev/null && {line}"


def run_line(line: str, cwd: Path, timeout: float = TIMEOUT_S, env: dict | None = None
             ) -> subprocess.CompletedProcess:
    """Run one README line with bash in `cwd`, in a new terminal's environment (or `env`)."""
    return subprocess.run(["bash", "-c", shell_line(line)], cwd=cwd, env=env or fresh_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_the_readme_starts_with_the_two_commands_ci_runs():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES, "the README is a manual: move details to docs/"
    assert [line for line in text.splitlines()[1:] if line][0] == "```bash", "the two commands come first"
    install, test = commands(code_blocks(README, "bash")[0])
    assert [p[0] for p in pieces(install)[0]] == ["./install.sh", "source", "vlkd"]
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = test.split("#")[0].strip()
    assert f"({test_command})" in ci, f"{test_command!r} is not what .ci/run runs"
    for cmd in readme_commands():  # the Jazzy line too
        if "VLKD_ROS_DISTRO=jazzy" in cmd and "pytest" in cmd:
            assert cmd.split("#")[0].strip() in ci


def test_every_readme_command_runs(mirror):
    cmds, failed = readme_commands(), []
    assert cmds, "no bash blocks found in the README"
    for cmd in cmds:
        parts, subshell = pieces(cmd)
        if any(p[:1] == ["VLKD_ROS_DISTRO=jazzy"] for p in parts) and not (ROOT / ".venv-jazzy").is_dir():
            continue  # the Jazzy environment is installed by `./install.sh --ros jazzy` (.ci/run does)
        for piece in parts:  # flags and their values as the CLI parses them, without running the command
            if vlkd_subcommand(piece) is not None:
                build_parser().parse_args(piece[1:])
        line = as_line([fast_form(p) for p in parts], subshell)
        proc = run_line(line, mirror)
        if proc.returncode != 0:
            failed.append(f"README: {cmd}\nran: {line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    assert not failed, "\n\n".join(failed)


def test_every_readme_python_block_compiles():
    blocks = code_blocks(README, "python")
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (fenced code skipped)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {github_anchor(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link {target} -> {dest} does not exist"
        assert dest.is_relative_to(ROOT), f"{page.name}: link {target} leaves the repository"
        if anchor:
            assert anchor in anchors(dest), f"{page.name}: link {target}: no heading #{anchor} in {dest.name}"


def results_table() -> list[str]:
    """The rows of the README's results table (between its results-table markers)."""
    text = README.read_text()
    body = text.split("<!-- results-table")[1].split("<!-- end results-table -->")[0]
    return [line for line in body.splitlines() if line.startswith("|")]


def test_the_results_table_is_the_demos_layout():
    from training.evaluate import markdown_report

    rows = results_table()
    numbers = {"id": 0.5, "ood_0shot": 0.5, "ood_kshot": 0.5, "ood_kshot_retrieval": 0.5}
    printed = markdown_report({"student": numbers, "teacher": numbers, "k_shot": 5, "metrics": {},
                               "text_space": {"singular_values": [], "mean_pairwise_cosine": 0.0}}).splitlines()
    assert rows[:2] == printed[:2], "not the header the demo prints"
    assert [r.split("|")[1] for r in rows[2:]] == [r.split("|")[1] for r in printed[2:4]]


@pytest.mark.slow
@pytest.mark.sim
def test_the_demo_prints_the_readme_results_table(tmp_path):
    """The first command as written, minus the install (.ci/run's), in a fresh directory: its table is the README's."""
    parts, _ = pieces(commands(code_blocks(README, "bash")[0])[0])
    line = as_line([p for p in parts if p[0] != "./install.sh"], False)
    proc = run_line(line, make_mirror(tmp_path), timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout.splitlines()
    for row in results_table():
        assert row in printed, f"README row {row!r} is not what `vlkd demo` printed:\n{proc.stdout[:1500]}"


def ros_env() -> dict:
    """A new terminal's environment with a ROS domain of its own on loopback (the quick start runs with the default
    names)."""
    env = fresh_env()
    env.update(ROS_DOMAIN_ID=str(random.randint(1, 100)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_STATIC_PEERS="", PYTHONUNBUFFERED="1")
    return env


@pytest.mark.slow
@pytest.mark.ros
@pytest.mark.sim
def test_the_ros_quick_start_runs_as_written(tmp_path):
    """The quick start's camera and node started as written, then its `vlkd ask` and the README's Python blocks
    answer every name they ask about."""
    cwd, env, before = make_mirror(tmp_path), ros_env(), shipped_models_status()
    quick = [c for c in readme_commands() if (s := vlkd_subcommand(pieces(c)[0][0])) and s[1] in QUICK_START]
    servers = [c for c in quick if vlkd_subcommand(pieces(c)[0][0])[1] != "ask"]
    asks = [c for c in quick if c not in servers]
    assert servers and asks
    started = [subprocess.Popen(["bash", "-c", shell_line(f"exec {c}")], cwd=cwd, env=env,
                                stdout=open(tmp_path / f"server{i}.log", "w"), stderr=subprocess.STDOUT,
                                start_new_session=True) for i, c in enumerate(servers)]
    try:
        for cmd in asks:
            end = time.monotonic() + 300  # the camera's first rendered frame takes a while on 2 cores
            while (proc := run_line(cmd, cwd, timeout=180, env=env)).returncode != 0 and time.monotonic() < end \
                    and "no camera frame received yet" in proc.stdout + proc.stderr:
                time.sleep(2)
            logs = "\n".join((tmp_path / f"server{i}.log").read_text()[-2000:] for i in range(len(servers)))
            assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr[-2000:]}\n{logs}"
            for name in pieces(cmd)[0][0][2:]:
                assert name in proc.stdout, (cmd, proc.stdout)
        for block in code_blocks(README, "python"):
            proc = subprocess.run(["bash", "-c", 'source scripts/env.sh >/dev/null && python -c "$0"', block],
                                  cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0, f"{block}\n{proc.stdout}\n{proc.stderr[-2000:]}"
            for name in re.findall(r'object_names=\[([^\]]*)\]', block)[0].replace('"', "").split(", "):
                assert f"{name}:" in proc.stdout, proc.stdout
        assert all(p.poll() is None for p in started), "a quick-start server ended early"
        assert shipped_models_status() == before, "the quick start wrote into the shipped model dir"
    finally:
        for p in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in started:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.mark.slow
@pytest.mark.sim
def test_the_readme_long_commands_run_as_written(tmp_path):
    """Every other long `vlkd` command, as written and in README order in one directory (each one's prerequisites
    come before it there)."""
    cwd, before = make_mirror(tmp_path), shipped_models_status()
    for cmd in readme_commands():
        parts, _ = pieces(cmd)
        subs = [s[1] for p in parts if (s := vlkd_subcommand(p)) is not None]
        if not subs or not set(subs) <= LONG or set(subs) & (QUICK_START | {"demo"}):
            continue  # fast commands: test_every_readme_command_runs; the demo and quick start: their own tests
        proc = run_line(cmd, cwd, timeout=3 * 3600)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert shipped_models_status() == before, "a README command wrote into the shipped model dir"


def shipped_models_status() -> str:
    """`git status` of the shipped model dirs (untracked files included): what a README command must leave alone."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "vlkd_ros/models"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
