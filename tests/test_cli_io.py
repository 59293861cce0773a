"""The command line's input and output: where -o writes (stdout, files, links, FIFOs, devices),
what it refuses (folders, the input spec itself), a closed or full stdout, the decay command's
numeric options, and cells with an unused input, state or parameter."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from derive_cells.cli import main, write_output
from derive_cells.spec import builtin_cells

DERIVE_CELLS = Path(sys.executable).with_name("derive-cells")
SPECS = Path(__file__).parent / "specs"
UNUSED = [str(SPECS / f"unused_{kind}.toml") for kind in ("input", "state", "param")]

NO_RECURRENCE = """\
name = "no_recurrence"
title = "A state whose next value does not read its previous one"
input = "x"
state = ["h"]
output = "h"

[equations]
h = "tanh(W @ x + b)"
"""


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def real(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    if not DERIVE_CELLS.exists():
        pytest.skip(f"{DERIVE_CELLS} is not installed")
    if "stdout" not in kw and "stderr" not in kw:
        kw["capture_output"] = True
    return subprocess.run([str(DERIVE_CELLS), *args], cwd=cwd, text=True, timeout=300, **kw)


def assert_usage_error(stderr: str, command: str, *fragments: str) -> None:
    """Exit status 2 comes with one line 'COMMAND: error: ...' and no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{command}: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def lstm_numpy() -> str:
    result = cli("lstm", "--emit", "numpy")
    assert result.exit_code == 0
    assert result.stdout.startswith('"""lstm: ')
    return result.stdout


@pytest.fixture
def guard_dev(monkeypatch):
    """Tests that name /dev paths run in this process with renames into /dev refused, so that
    a regression (replacing /dev/null by a file, as root) fails the test instead of the
    machine."""
    real_replace, real_rename = os.replace, os.rename

    def guarded(real):
        def move(src, dst, *args, **kwargs):
            if os.path.abspath(dst).startswith("/dev/"):
                raise PermissionError(errno.EPERM, f"test guard: no rename onto {dst}")
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "replace", guarded(real_replace))
    monkeypatch.setattr(os, "rename", guarded(real_rename))


@pytest.fixture
def spec(tmp_path) -> Path:
    """A user's spec file in the current folder, as spec.toml."""
    path = tmp_path / "spec.toml"
    path.write_bytes((SPECS / "unused_input.toml").read_bytes())
    return path


# ----------------------------------------------------------------------------- -o: where to


def test_dash_is_stdout(lstm_numpy):
    result = cli("lstm", "--emit", "numpy", "-o", "-")
    assert result.exit_code == 0
    assert result.stdout == lstm_numpy
    assert "wrote" not in result.stderr


def test_binary_data_to_stdout_goes_to_the_byte_stream(capsysbinary):
    data = b"%PDF-1.5\n\x00\xff\xfe binary\n"
    write_output("-", data, "derive-cells report")
    assert capsysbinary.readouterr().out == data


def test_new_file_gets_the_usual_permissions(tmp_path, lstm_numpy):
    out = tmp_path / "lstm_bptt.py"
    result = cli("lstm", "--emit", "numpy", "-o", str(out))
    assert result.exit_code == 0
    assert out.read_text() == lstm_numpy
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lstm_bptt.py"]  # no temp file left
    assert f"wrote {out}" in result.stderr


def test_existing_file_is_replaced_and_keeps_its_permissions(tmp_path, lstm_numpy):
    out = tmp_path / "lstm_bptt.py"
    out.write_text("old content\n")
    out.chmod(0o640)
    assert cli("lstm", "--emit", "numpy", "-o", str(out)).exit_code == 0
    assert out.read_text() == lstm_numpy
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-link", "relative-link"])
def test_symlink_is_written_through_and_stays_a_link(tmp_path, lstm_numpy, relative):
    target = tmp_path / "kept" / "lstm_bptt.py"
    target.parent.mkdir()
    target.write_text("old content\n")
    link = tmp_path / "link.py"
    link.symlink_to(Path("kept/lstm_bptt.py") if relative else target)
    before = os.readlink(link)
    result = cli("lstm", "--emit", "numpy", "-o", str(link))
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == before
    assert target.read_text() == lstm_numpy
    assert sorted(p.name for p in target.parent.iterdir()) == ["lstm_bptt.py"]


def test_dangling_symlink_creates_its_target(tmp_path, lstm_numpy):
    link = tmp_path / "link.py"
    link.symlink_to(tmp_path / "new.py")
    assert cli("lstm", "--emit", "numpy", "-o", str(link)).exit_code == 0
    assert link.is_symlink()
    assert (tmp_path / "new.py").read_text() == lstm_numpy


def test_fifo_is_written_in_place(tmp_path, lstm_numpy):
    fifo = tmp_path / "module.py"
    os.mkfifo(fifo)
    got: dict[str, str] = {}

    def reader():
        with open(fifo, encoding="utf-8") as fh:
            got["text"] = fh.read()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    proc = real("lstm", "--emit", "numpy", "-o", str(fifo))
    thread.join(60)
    if thread.is_alive():  # the command never opened the FIFO: release the reader
        with open(fifo, "w"):
            pass
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO, not replaced by a file
    assert got.get("text") == lstm_numpy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module.py"]


def test_dev_null_stays_a_character_device(guard_dev):
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    result = cli("lstm", "--emit", "numpy", "-o", os.devnull)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert result.stdout == ""


@pytest.mark.skipif(not Path("/dev/stdout").exists(), reason="no /dev/stdout")
def test_dev_stdout_writes_to_the_process_stdout(guard_dev, capfd, lstm_numpy):
    """Here the process's stdout (descriptor 1) is pytest's capture file: a regular file that
    /dev/stdout leads to and that must be written, not replaced."""
    capfd.readouterr()
    result = cli("lstm", "--emit", "numpy", "-o", "/dev/stdout")
    assert result.exit_code == 0, result.stderr
    assert capfd.readouterr().out == lstm_numpy
    assert result.stdout == ""


@pytest.mark.parametrize("through_link", [False, True], ids=["folder", "link-to-folder"])
def test_folder_is_an_error(tmp_path, through_link):
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder
    if through_link:
        path = tmp_path / "link"
        path.symlink_to(folder)
    result = cli("lstm", "--emit", "numpy", "-o", str(path))
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells", f"cannot write {path}", "Is a directory")
    assert list(folder.iterdir()) == []


def test_missing_folder_is_an_error(tmp_path):
    path = tmp_path / "no" / "such" / "out.py"
    result = cli("lstm", "--emit", "numpy", "-o", str(path))
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells", f"cannot write {path}",
                       "No such file or directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_folder_is_an_error_and_leaves_nothing(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = cli("lstm", "--emit", "numpy", "-o", str(folder / "out.py"))
        assert result.exit_code == 2
        assert_usage_error(result.stderr, "derive-cells", "cannot write", "Permission denied")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_folder_refusing_new_files_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    """As an unwritable folder looks to the temporary file beside the output (also as root)."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = cli("lstm", "--emit", "numpy", "-o", str(tmp_path / "out.py"))
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells", "cannot write", "Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_failed_replace_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "lstm_bptt.py"
    out.write_text("old content\n")

    def replace(src, dst):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "replace", replace)
    result = cli("lstm", "--emit", "numpy", "-o", str(out))
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells", f"cannot write {out}")
    assert out.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lstm_bptt.py"]


def test_full_device_as_output_file_is_a_one_line_error(guard_dev):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    result = cli("lstm", "--emit", "numpy", "-o", "/dev/full")
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells", "cannot write /dev/full",
                       "No space left on device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


# ------------------------------------------------------------- -o must not name an input


def _spellings(spec: Path) -> dict[str, str]:
    """The spec file as the same path, a relative detour, a symbolic link and a hard link."""
    folder = spec.parent
    (folder / "sub").mkdir(exist_ok=True)
    link = folder / "link.toml"
    link.symlink_to(spec.name)
    hard = folder / "hard.toml"
    os.link(spec, hard)
    return {"same": str(spec), "detour": "sub/../spec.toml", "symlink": str(link),
            "hardlink": str(hard)}


COMMANDS = {  # how each command is given the spec and an output
    "emit": lambda spec, out: [spec, "--emit", "numpy", "-o", out],
    "derivation": lambda spec, out: [spec, "-o", out],
    "verify": lambda spec, out: ["verify", spec, "-o", out],
    "decay": lambda spec, out: ["decay", spec, "--steps", "5", "-o", out],
    "report": lambda spec, out: ["report", spec, "--format", "html", "-o", out],
}
PROGRESS = {"verify": "verify: ", "decay": "decay: ", "report": "report: "}


@pytest.mark.parametrize("spelling", ["same", "detour", "symlink", "hardlink"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_output_naming_the_spec_is_refused_before_anything_runs(tmp_path, monkeypatch, spec,
                                                                command, spelling):
    monkeypatch.chdir(tmp_path)
    out = _spellings(spec)[spelling]
    before = spec.read_bytes()
    result = cli(*COMMANDS[command]("spec.toml", out))
    assert result.exit_code == 2, result.output
    name = "derive-cells" if command in ("emit", "derivation") else f"derive-cells {command}"
    assert_usage_error(result.stderr, name, f"-o {out} is the input spec.toml")
    assert spec.read_bytes() == before
    assert Path(out).exists() and Path(out).read_bytes() == before
    assert (tmp_path / "link.toml").is_symlink()
    if command in PROGRESS:  # refused before any cell was run
        assert not any(line.startswith(PROGRESS[command]) for line in result.stderr.splitlines())


@pytest.mark.parametrize("problem", ["folder", "missing-folder"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_unwritable_output_is_refused_before_anything_runs(tmp_path, monkeypatch, spec, command,
                                                           problem):
    monkeypatch.chdir(tmp_path)
    out = {"folder": str(tmp_path), "missing-folder": str(tmp_path / "no" / "out.txt")}[problem]
    reason = {"folder": "Is a directory", "missing-folder": "No such file or directory"}[problem]
    result = cli(*COMMANDS[command]("spec.toml", out))
    assert result.exit_code == 2, result.output
    name = "derive-cells" if command in ("emit", "derivation") else f"derive-cells {command}"
    assert_usage_error(result.stderr, name, f"cannot write {out}: {reason}")
    assert not (tmp_path / "no").exists()


def test_decay_plot_naming_the_spec_is_refused(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plot.svg").symlink_to("spec.toml")
    before = spec.read_bytes()
    result = cli("decay", "spec.toml", "--steps", "5", "--plot", "plot.svg")
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells decay", "--plot plot.svg is the input")
    assert spec.read_bytes() == before and (tmp_path / "plot.svg").is_symlink()


def test_decay_plot_and_output_on_one_file_are_refused(tmp_path):
    out = str(tmp_path / "decay.svg")
    result = cli("decay", "rnn", "--steps", "5", "--plot", out, "-o", out)
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells decay", "--plot and -o both name")
    assert not Path(out).exists()


def test_output_naming_a_builtin_spec_is_refused():
    path = builtin_cells()["rnn"]
    before = path.read_bytes()
    try:
        result = cli("rnn", "--emit", "numpy", "-o", str(path))
        assert result.exit_code == 2
        assert_usage_error(result.stderr, "derive-cells", f"is the input rnn ({path})")
    finally:
        if path.read_bytes() != before:
            path.write_bytes(before)
    assert path.read_bytes() == before


def test_verify_output_naming_the_module_file_is_refused(tmp_path, lstm_numpy):
    module = tmp_path / "lstm_bptt.py"
    module.write_text(lstm_numpy)
    result = cli("verify", "--module", str(module), "--cell", "lstm", "-o", str(module))
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells verify", f"-o {module} is the input")
    assert module.read_text() == lstm_numpy


def test_report_to_stdout_needs_a_format_and_refuses_tex():
    result = cli("report", "rnn", "-o", "-")
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells report", "cannot tell the format")
    result = cli("report", "rnn", "-o", "-", "--format", "tex")
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells report", "figures", "FILE.tex")


# ---------------------------------------------------------- a closed or full stdout


@pytest.mark.parametrize("args", [["lstm", "--emit", "numpy"], ["list"]], ids=["emit", "list"])
def test_closed_pipe_ends_quietly(args):
    if not DERIVE_CELLS.exists():
        pytest.skip(f"{DERIVE_CELLS} is not installed")
    proc = subprocess.Popen([str(DERIVE_CELLS), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first byte is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=300) == 1
    assert err == ""  # no traceback, no "Exception ignored ... BrokenPipeError"


def test_pipe_into_head_prints_no_error(lstm_numpy):
    if not DERIVE_CELLS.exists() or shutil.which("head") is None:
        pytest.skip("needs derive-cells and head")
    proc = subprocess.run(f"'{DERIVE_CELLS}' lstm --emit numpy | head -1", shell=True,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert proc.stdout == lstm_numpy.splitlines(keepends=True)[0]
    assert proc.stderr == ""


@pytest.mark.parametrize("args", [["lstm", "--emit", "numpy"], ["list"]], ids=["emit", "list"])
def test_full_stdout_is_a_one_line_error(args):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        proc = real(*args, stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 2
    assert_usage_error(proc.stderr, "derive-cells", "cannot write to stdout",
                       "No space left on device")
    assert "Exception ignored" not in proc.stderr


# ------------------------------------------------------------ decay's numeric options


@pytest.mark.parametrize("args, option", [
    (["--gain", "nan"], "--gain"),
    (["--gain", "inf"], "--gain"),
    (["--gain", "-1"], "--gain"),
    (["--gain", "1e9"], "--gain"),
    (["--input-scale", "nan"], "--input-scale"),
    (["--input-scale", "-0.5"], "--input-scale"),
    (["--input-scale", "-inf"], "--input-scale"),
    (["--bias", "nan"], "--bias"),
    (["--bias", "inf"], "--bias"),
    (["--forget-bias", "nan"], "--forget-bias"),
    (["--forget-bias", "-inf"], "--forget-bias"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--hidden", str(10**9)], "--hidden"),
    (["--hidden", "0"], "--hidden"),
    (["--steps", str(10**9)], "--steps"),
    (["--steps", "0"], "--steps"),
    (["--steps", "1"], "--steps"),
    (["--batch", "0"], "--batch"),
    (["--batch", str(10**9)], "--batch"),
    (["--input-size", "0"], "--input-size"),
    (["--input-size", str(10**9)], "--input-size"),
])
def test_decay_rejects_numeric_options_out_of_range(args, option):
    result = cli("decay", "lstm", *args)
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.stderr
    assert "not a finite number" in result.stderr or "not in the range" in result.stderr
    assert "Traceback" not in result.output
    assert "decay: lstm" not in result.stderr  # nothing ran


@pytest.mark.parametrize("args, fragment", [
    (["--hidden", "1024"], "step Jacobians of 2048 x 2048"),
    (["--steps", "100000", "--batch", "1024"], "GiB of forward values"),
])
def test_decay_refuses_runs_beyond_its_budget_before_they_start(args, fragment):
    result = cli("decay", "lstm", *args)
    assert result.exit_code == 2
    assert_usage_error(result.stderr, "derive-cells decay", fragment)
    assert "decay: lstm T=" not in result.stderr


def test_decay_accepts_the_edges_of_its_ranges():
    result = cli("decay", "rnn", "--steps", "2", "--batch", "1", "--hidden", "1",
                 "--input-size", "1", "--seed", str(2**32 - 1), "--gain", "0",
                 "--input-scale", "0", "--bias", "-1000", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["steps"] == 2 and data["cell"] == "rnn"


def test_decay_help_documents_the_ranges():
    text = " ".join(cli("decay", "--help").stdout.split())
    for fragment in ("2 to 100000", "1 to 1024", "0 to 2**32-1", "8 GiB"):
        assert fragment in text


def test_verify_help_says_that_module_runs_the_file():
    text = " ".join(cli("verify", "--help").stdout.split())
    assert "RUNS, as `python FILE` would" in text
    assert "only pass files you trust" in text


# ------------------------------------------ cells with an unused input, state or parameter


def test_verify_treats_zero_gradients_of_unused_names_as_correct():
    result = cli("verify", *UNUSED, "--format", "json")
    assert result.exit_code == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert rows and all(r["passed"] for r in rows)
    zero = {("unused_input", "d_x"), ("unused_state", "d_state0[m]"),
            ("unused_param", "d_params[b]"), ("unused_param", "d_params[a]")}
    seen = set()
    for r in rows:
        if (r["cell"], r["array"]) in zero and r["check"] == "vs autograd gradients":
            seen.add((r["cell"], r["array"]))
            assert r["expected"] == 0.0 and r["actual"] == 0.0 and r["max_rel_error"] == 0.0
    assert seen == zero


def test_decay_runs_on_unused_names_and_says_what_it_cannot_measure():
    result = cli("decay", *UNUSED, "--steps", "30", "--format", "json")
    assert result.exit_code == 0, result.output
    unused_input, unused_state, unused_param = json.loads(result.stdout)
    for m in (unused_input, unused_state, unused_param):
        assert 0 < m["rate_per_step"]["h"] < 1 and "h" not in m["notes"]
    assert unused_state["rate_per_step"]["m"] is None
    assert all(v is None for v in unused_state["log10_norm"]["m"])
    assert "never reaches m" in unused_state["notes"]["m"]


def test_decay_notes_a_state_that_does_not_read_its_previous_value(tmp_path):
    spec = tmp_path / "no_recurrence.toml"
    spec.write_text(NO_RECURRENCE)
    result = cli("decay", str(spec), "--steps", "20", "--format", "json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["rate_per_step"]["h"] is None
    assert m["log10_norm"]["h"][0] is not None and m["log10_norm"]["h"][1] is None
    assert "no step reads its previous value" in m["notes"]["h"]
    table = cli("decay", str(spec), "--steps", "20").stdout
    assert "notes:\n  no_recurrence h: exactly zero beyond distance 0" in table


def test_report_runs_on_unused_names_to_stdout():
    result = cli("report", *UNUSED, "--format", "html", "-o", "-")
    assert result.exit_code == 0, result.stderr[-2000:]
    html = result.stdout
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    for name in ("unused_input", "unused_state", "unused_param"):
        assert name in html
    assert "Note on m: the gradient never reaches m" in html
    assert "FAIL" not in html
