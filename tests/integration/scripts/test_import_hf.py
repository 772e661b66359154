"""scripts/import_hf.py reports its errors in one line."""

import os
import subprocess
import sys

from conftest import ROOT


def test_import_script_reports_errors_in_one_line(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "scripts/import_hf.py",
      "--hf_dir",
      str(tmp_path / "nowhere"),
      "--workdir",
      str(tmp_path / "run"),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: no directory at")
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run")
