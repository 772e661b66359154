"""scripts/sample.py on a trained run."""

from helpers.runs import script


def test_sample_script(run_dir):
  args = [
    "--workdir",
    str(run_dir),
    "--prompt",
    "The king",
    "--max_new_tokens",
    "20",
    "--temperature",
    "0.8",
    "--top_k",
    "5",
    "--top_p",
    "0.95",
    "--num_samples",
    "2",
  ]
  a, b = script("sample", *args), script("sample", *args)
  assert a.returncode == 0, a.stderr[-2000:]
  assert a.stdout == b.stdout
  samples = a.stdout.rstrip("\n").split("\n---\n")
  assert len(samples) == 2 and all(s.startswith("The king") and len(s) == 28 for s in samples)
  assert "tokens/s" in a.stderr and "tokens/s" not in a.stdout
  greedy = script(
    "sample",
    "--workdir",
    str(run_dir),
    "--prompt",
    "",
    "--temperature",
    "0",
    "--max_new_tokens",
    "10",
  )
  top1 = script(
    "sample",
    "--workdir",
    str(run_dir),
    "--prompt",
    "",
    "--top_k",
    "1",
    "--max_new_tokens",
    "10",
    "--seed",
    "5",
  )
  assert greedy.stdout == top1.stdout and greedy.stdout.startswith("\n")


def test_sample_script_refuses_unknown_characters(run_dir):
  r = script("sample", "--workdir", str(run_dir), "--prompt", "Zebra ~", "--max_new_tokens", "5")
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1].startswith("error: the text holds characters")
  assert "'Z~'" in r.stderr
