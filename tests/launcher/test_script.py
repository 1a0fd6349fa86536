"""Running the user's script as Python would: argv, __main__, exit status, traceback."""

from __future__ import annotations

import pytest

from launcher.script import run_script


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("pass", 0),
        ("import sys; sys.exit(4)", 4),
        ("import sys; sys.exit()", 0),
        ("raise SystemExit('bad input')", 1),
        ("raise RuntimeError('boom')", 1),
        ("raise KeyboardInterrupt", 130),
    ],
)
def test_exit_status_is_what_python_would_return(tmp_path, body, status):
    script = tmp_path / "s.py"
    script.write_text(body + "\n")
    assert run_script(str(script), ()) == status


def test_script_sees_argv_and_runs_as_main(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("import sys\nif __name__ == '__main__':\n    print('argv', sys.argv)\n")
    assert run_script(str(script), ("--rows", "5")) == 0
    assert f"argv ['{script}', '--rows', '5']" in capsys.readouterr().out


def test_traceback_starts_at_the_script(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("x = 1\nraise ValueError('bad value')\n")
    assert run_script(str(script), ()) == 1
    err = capsys.readouterr().err
    assert err.count("ValueError: bad value") == 1
    assert "launcher/script.py" not in err
    assert f'File "{script}", line 2, in <module>' in err


def test_missing_script_exits_two_like_python(tmp_path, capsys):
    assert run_script(str(tmp_path / "nope.py"), ()) == 2
    assert "can't open file" in capsys.readouterr().err
