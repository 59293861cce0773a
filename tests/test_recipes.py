"""The recipes for a user's repository and the README's first steps, run as they are written:
the pre-commit hooks of .pre-commit-hooks.yaml (each entry on emitted modules, sound and with a
planted fault), the GitHub Actions workflow in docs/ci/ (its steps in a git repository), every
derive-cells command of the README's Set-up, short tour and "In your repository" sections (a
valid invocation of a command that exists, on cells that exist; the quick ones run), and the
short tour's Python snippets in the folder the Set-up command writes to."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from derive_cells.cli import main as cli_main
from derive_cells.spec import builtin_cells

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HOOKS = ROOT / ".pre-commit-hooks.yaml"
WORKFLOW = ROOT / "docs" / "ci" / "github-actions.yml"
DERIVE_CELLS = Path(sys.executable).with_name("derive-cells")
HOOK_IDS = {"derive-cells-verify", "derive-cells-regenerate-check"}
# what pre-commit needs of a hook in a repository's manifest (pre_commit.clientlib)
HOOK_REQUIRED = {"id", "name", "entry", "language"}

try:
    import yaml
except ImportError:  # the fallback readers below cover the subset these files use
    yaml = None


# --- reading the YAML files -------------------------------------------------------------------

def _scalar(text: str):
    text = text.strip()
    if text.startswith(("[", '"')):
        return json.loads(text)
    return {"true": True, "false": False}.get(text, text)


def _read_hooks_plain(text: str) -> list[dict]:
    """.pre-commit-hooks.yaml without a YAML library: a list of flat mappings whose values are
    plain scalars, booleans, or double-quoted strings and lists written as JSON."""
    hooks: list[dict] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        item = re.fullmatch(r"(- |  )([A-Za-z_]+): (.+)", line)
        assert item, f".pre-commit-hooks.yaml:{n}: not a '- key: value' or '  key: value' line"
        if item.group(1) == "- ":
            hooks.append({})
        assert hooks, f".pre-commit-hooks.yaml:{n}: a key before the first hook"
        hooks[-1][item.group(2)] = _scalar(item.group(3))
    return hooks


def _hooks() -> list[dict]:
    text = HOOKS.read_text(encoding="utf-8")
    return yaml.safe_load(text) if yaml else _read_hooks_plain(text)


def _run_blocks_plain(text: str) -> list[str]:
    """The `run: |` block scalars of a workflow, without a YAML library."""
    lines, blocks = text.splitlines(), []
    for i, line in enumerate(lines):
        found = re.fullmatch(r"(\s*)(?:- )?run: \|", line)
        if not found:
            continue
        body = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= len(found.group(1)):
                break
            body.append(nxt)
        indent = min(len(b) - len(b.lstrip()) for b in body if b.strip())
        blocks.append("\n".join(b[indent:] for b in body).strip("\n") + "\n")
    return blocks


def _workflow() -> tuple[dict, list[dict]]:
    """(env, steps) of the workflow's one job; steps as {name, run} at least."""
    text = WORKFLOW.read_text(encoding="utf-8")
    if yaml:
        flow = yaml.safe_load(text)
        assert flow.get("on", flow.get(True)), "the workflow has no trigger"
        (job,) = flow["jobs"].values()
        return flow.get("env", {}), job["steps"]
    env = dict(re.findall(r'^  ([A-Z_]+): "(.*)"$', text, re.M))
    return env, [{"run": r} for r in _run_blocks_plain(text)]


def _step(steps: list[dict], needle: str) -> str:
    found = [s["run"] for s in steps if needle in s.get("run", "")]
    assert len(found) == 1, f"docs/ci/github-actions.yml: one step should run {needle!r}"
    return found[0]


# --- running commands -------------------------------------------------------------------------

def _argv(words: list[str]) -> list[str]:
    """A command line as pre-commit or a shell runs it, with this environment's derive-cells."""
    if words[0] == "derive-cells" and DERIVE_CELLS.exists():
        return [str(DERIVE_CELLS), *words[1:]]
    return words


def _env() -> dict:
    path = f"{DERIVE_CELLS.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path}


def run(words: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(words), cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def emit(cell: str, target: str, out: str, cwd: Path) -> Path:
    result = run(["derive-cells", cell, "--emit", target, "-o", out], cwd)
    assert result.returncode == 0, result.stderr
    return cwd / out


def plant_fault(module: Path, out: Path) -> Path:
    """A copy of an emitted module with one sign flipped in the backward: the first adjoint line
    `d_... = a + b` becomes `a - b`."""
    lines = module.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.match(r"\s+d_\w+ = .* \+ ", line):
            lines[i] = line.replace(" + ", " - ", 1)
            break
    else:
        raise AssertionError(f"{module}: no adjoint line with a sum to flip")
    out.write_text("".join(lines), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A user's repository: kept modules emitted from its root (a built-in cell in each library
    and a spec of its own), and a copy of one with a fault planted."""
    root = tmp_path_factory.mktemp("repo")
    (root / "cells").mkdir()
    (root / "src").mkdir()
    shutil.copy(ROOT / "tests" / "specs" / "peephole_lstm.toml", root / "cells" / "my_cell.toml")
    emit("lstm", "numpy", "src/lstm_bptt.py", root)
    emit("gru", "torch", "src/gru_bptt.py", root)
    emit("cells/my_cell.toml", "numpy", "src/my_cell_bptt.py", root)
    (root / "faulty").mkdir()
    plant_fault(root / "src" / "lstm_bptt.py", root / "faulty" / "lstm_bptt.py")
    return root


GOOD = ["src/lstm_bptt.py", "src/gru_bptt.py", "src/my_cell_bptt.py"]


# --- the pre-commit hooks ---------------------------------------------------------------------

def test_hooks_manifest_is_valid():
    hooks = _hooks()
    assert isinstance(hooks, list) and {h.get("id") for h in hooks} == HOOK_IDS
    for hook in hooks:
        assert HOOK_REQUIRED <= set(hook), f"{hook.get('id')}: missing {HOOK_REQUIRED - set(hook)}"
        assert hook["language"] == "python"  # pre-commit installs this repository for it
        assert shlex.split(hook["entry"])[0] == "derive-cells"
        assert hook.get("pass_filenames", True) is True
        files = re.compile(hook["files"])
        assert files.search("src/cells/lstm_bptt.py") and not files.search("src/model.py")
        assert all(isinstance(v, str) for v in hook.get("additional_dependencies", []))
    verify = next(h for h in hooks if h["id"] == "derive-cells-verify")
    assert "torch" in verify["additional_dependencies"]  # verify's references need it
    assert "--extra-index-url=https://download.pytorch.org/whl/cpu" in \
        verify["additional_dependencies"]


@pytest.mark.skipif(yaml is None, reason="PyYAML is not installed")
def test_plain_readers_agree_with_yaml():
    """The fallback readers read these files as a YAML parser does."""
    assert _read_hooks_plain(HOOKS.read_text(encoding="utf-8")) == _hooks()
    runs = [s["run"] for s in _workflow()[1] if "run" in s]
    assert _run_blocks_plain(WORKFLOW.read_text(encoding="utf-8")) == runs


@pytest.mark.parametrize("hook_id", sorted(HOOK_IDS))
def test_hook_passes_sound_modules(repo, hook_id):
    """The entry as pre-commit runs it: its words, then the files (several at once)."""
    hook = next(h for h in _hooks() if h["id"] == hook_id)
    assert all(re.search(hook["files"], f) for f in GOOD)
    result = run([*shlex.split(hook["entry"]), *hook.get("args", []), *GOOD], repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("hook_id", sorted(HOOK_IDS))
def test_hook_fails_on_a_planted_fault(repo, hook_id):
    hook = next(h for h in _hooks() if h["id"] == hook_id)
    files = ["src/gru_bptt.py", "faulty/lstm_bptt.py"]
    result = run([*shlex.split(hook["entry"]), *hook.get("args", []), *files], repo)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    if hook_id == "derive-cells-verify":
        assert "FAIL" in result.stdout
    else:
        assert "faulty/lstm_bptt.py" in result.stderr


def test_regenerate_check_fails_after_the_spec_changes(repo, tmp_path):
    """A module emitted from a spec that has changed since is stale."""
    shutil.copytree(repo / "cells", tmp_path / "cells")
    shutil.copytree(repo / "src", tmp_path / "src")
    hook = next(h for h in _hooks() if h["id"] == "derive-cells-regenerate-check")
    command = [*shlex.split(hook["entry"]), "src/my_cell_bptt.py"]
    assert run(command, tmp_path).returncode == 0
    spec = tmp_path / "cells" / "my_cell.toml"
    spec.write_text(re.sub(r'(?m)^title = ".*"$', 'title = "renamed"', spec.read_text()))
    result = run(command, tmp_path)
    assert result.returncode == 1 and "src/my_cell_bptt.py" in result.stderr, result.stderr


# --- the GitHub Actions workflow --------------------------------------------------------------

def test_workflow_installs_the_cpu_build_and_verifies():
    env, steps = _workflow()
    install = _step(steps, "pip install torch")
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    # torch first, so that derive-cells' [torch] extra finds the CPU build in place
    assert install.index("pip install torch") < install.index("$DERIVE_CELLS")
    assert "derive-cells" in env["DERIVE_CELLS"] and env["MODULES"] == "*_bptt.py"
    assert "derive-cells verify --module" in _step(steps, "derive-cells verify")


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None,
                    reason="needs git and bash")
def test_workflow_steps_fail_the_build_on_a_wrong_gradient(repo, tmp_path):
    """The verify and up-to-date steps, run as GitHub runs a bash step, in a checkout that
    tracks the sound modules (exit 0), then also a faulty one (exit 1)."""
    env, steps = _workflow()
    shutil.copytree(repo / "cells", tmp_path / "cells")
    shutil.copytree(repo / "src", tmp_path / "src")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)

    def step(needle: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               _step(steps, needle)], cwd=tmp_path, env={**_env(), **env},
                              capture_output=True, text=True, timeout=300)

    for needle in ("derive-cells verify", "derive-cells emit --check"):
        result = step(needle)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.copy(repo / "faulty" / "lstm_bptt.py", tmp_path / "src" / "faulty_lstm_bptt.py")
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    for needle in ("derive-cells verify", "derive-cells emit --check"):
        result = step(needle)
        assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]


# --- the README's commands and snippets -------------------------------------------------------

def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


FIRST_STEPS = ("Set-up", "A short tour")


def _commands(title: str, lang: str = "sh") -> list[str]:
    """The commands of a section's code blocks, one per line (`a && b` gives a and b), with the
    comments dropped."""
    out = []
    for block in re.findall(rf"```{lang}\n(.*?)```", _section(title), re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            out += [c.strip() for c in line.split("&&") if c.strip() and line[0] != "#"]
    return out


def _cli_commands(title: str) -> list[list[str]]:
    return [shlex.split(c) for c in _commands(title) if c.startswith("derive-cells")]


def _parse(words: list[str]) -> tuple[str, dict]:
    """The subcommand and its parameters, as derive-cells parses the command line: unknown
    commands, options and choices are click errors; nothing is run."""
    args = words[1:]
    ctx = click.Context(cli_main, info_name="derive-cells")
    commands = cli_main.list_commands(ctx)
    if args and args[0] not in commands and not args[0].startswith("-"):
        args = ["emit", *args]
    if args[0] in ("-h", "--help", "--version"):
        return "", {}
    command = cli_main.get_command(ctx, args[0])
    assert command is not None, f"{shlex.join(words)}: no command {args[0]}"
    sub = command.make_context(args[0], args[1:], parent=ctx)
    return args[0], sub.params


def _cells_of(name: str, params: dict) -> list[str]:
    """The cells or spec files a parsed command names (a --module file's cell is in its
    header)."""
    if name == "verify" and params.get("module_file"):
        return [params["module_cell"]] if params.get("module_cell") else []
    value = params.get("cell", params.get("cells", ()))
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.parametrize("title", [*FIRST_STEPS, "In your repository"])
def test_readme_commands_are_valid_invocations(title):
    commands = _cli_commands(title)
    assert commands, f"README section {title!r} has no derive-cells command"
    for words in commands:
        name, params = _parse(words)
        if name == "emit" and params.get("check"):
            continue  # its arguments are module files
        for cell in _cells_of(name, params):
            assert cell in builtin_cells() or cell.endswith(".toml"), \
                f"{shlex.join(words)}: {cell} is no built-in cell or spec file"
            if title in FIRST_STEPS and cell.endswith(".toml"):
                assert (ROOT / cell).is_file(), f"{shlex.join(words)}: no {cell} here"


def test_readme_first_steps_write_only_where_git_ignores():
    """Every file the Set-up and the tour write goes to a folder .gitignore lists."""
    ignored = {line.strip().rstrip("/") for line in
               (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()}
    outputs = []
    for title in FIRST_STEPS:
        for words in _cli_commands(title):
            outputs += [words[i + 1] for i, w in enumerate(words[:-1])
                        if w in ("-o", "--output", "--plot")]
    assert outputs
    for out in outputs:
        assert out.split("/")[0] in ignored and "/" in out, f"{out}: not in an ignored folder"


@pytest.fixture(scope="module")
def first_steps(tmp_path_factory) -> Path:
    """A checkout after the Set-up command (less its pip install) and the tour's quick
    commands, run in order from its root: list, the derivation, emitting, verifying a module
    file and --help. The rest (every built-in verified, decay, training, reports) take longer
    and are only parsed, above."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    for title in FIRST_STEPS:
        for command in _commands(title):
            words = shlex.split(command)
            if words[0] == "mkdir":
                assert subprocess.run(words, cwd=root).returncode == 0
                continue
            if words[0] != "derive-cells":
                continue  # installing (done) and make test (this suite)
            name, params = _parse(words)
            quick = name in ("list", "emit", "") or (name == "verify"
                                                      and params.get("module_file"))
            if not quick:
                continue
            result = run(words, root)
            assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    return root


def test_readme_first_steps_run(first_steps):
    written = sorted(p.name for p in (first_steps / "generated").iterdir())
    assert written == ["lstm_bptt.py", "lstm_torch_bptt.py", "peephole_lstm_bptt.py"]


def test_readme_snippets_run_where_the_set_up_wrote(first_steps):
    """Each tour snippet that imports an emitted module runs, as written, in generated/."""
    blocks = re.findall(r"```python\n(.*?)```", _section("A short tour"), re.S)
    snippets = [b for b in blocks if re.search(r"^import lstm_\w+ as cell$", b, re.M)]
    assert len(snippets) >= 3  # using a module, two bidirectional layers, the Torch layer
    for snippet in snippets:
        result = subprocess.run([sys.executable, "-c", snippet], cwd=first_steps / "generated",
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{snippet[:200]}...\n{result.stderr[-3000:]}"
