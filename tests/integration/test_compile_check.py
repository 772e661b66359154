"""scripts/compile_check.py: a run's train step compiled for a TPU slice on this CPU."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from configs import tiny
from lm_jax import UserError, compile_check
from lm_jax.data import tokenizers

needs_libtpu = pytest.mark.skipif(
  not compile_check.available(), reason=f"libtpu is not installed: {compile_check.INSTALL}"
)
SMALL = ["--config.data.dataset=synthetic", "--config.data.vocab_size=256"]


def compile_script(*args):
  return subprocess.run(
    [sys.executable, "scripts/compile_check.py", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )


@needs_libtpu
def test_a_small_config_compiles_for_a_slice_and_fits():
  r = compile_script(
    "--config", "configs/tiny.py", "--topology", "v5e:2x4", "--config.mesh.fsdp=2",
    "--config.mesh.tensor=2", *SMALL,
  )  # fmt: skip
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout)
  assert (out["topology"], out["chips"], out["device_kind"]) == ("v5e:2x4", 8, "TPU v5 lite")
  assert out["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  b = out["per_chip_bytes"]
  assert b["total"] == b["arguments"] + b["outputs"] + b["temporaries"] - b["aliased"]
  assert 0 < b["total"] <= out["hbm_bytes"] == 16 * 2**30 and out["fits"] is True
  assert out["flops_per_step"] > 0 and out["compile_seconds"] > 0
  assert out["collectives"]["all-reduce"] > 0 and out["collectives"]["all-gather"] > 0
  assert (out["vocab_size"], out["vocab_source"]) == (256, "data.vocab_size")
  assert "TPU_" not in r.stderr and "libtpu" not in r.stderr  # libtpu's start-up noise.


@needs_libtpu
def test_a_step_too_large_for_the_chip_exits_1_naming_the_shortfall():
  # 1.6B parameters, every chip holding them all with their Adam moments (data parallel).
  wide = ["--config.model.d_model=8192", "--config.model.num_heads=64"]
  r = compile_script("--config", "configs/tiny.py", "--topology", "v5e:2x4", *SMALL, *wide)
  assert r.returncode == 1, r.stderr[-3000:]
  out = json.loads(r.stdout)
  assert out["fits"] is False and out["per_chip_bytes"]["arguments"] > 16 * 2**30
  error = r.stderr.strip().splitlines()[-1]
  assert error.startswith("error: the step needs ") and "per chip and a TPU v5 lite" in error
  for key in ("mesh.fsdp", "mesh.tensor", "model.remat", "train.batch_size"):
    assert key in error


@needs_libtpu
def test_fits_compares_the_compiled_step_with_the_chips_memory(monkeypatch):
  config = tiny.get_config()
  config.data.update(dataset="synthetic", vocab_size=256)
  monkeypatch.setitem(compile_check.HBM_BYTES, "TPU v5 lite", 2**16)  # A 64 KiB chip.
  out = compile_check.compile_step(config, "v5e:2x4")
  assert out["fits"] is False and out["per_chip_bytes"]["total"] > out["hbm_bytes"] == 2**16
  assert "holds 0.00 GiB (" in compile_check.shortfall(out)


@needs_libtpu
@pytest.mark.parametrize("name", ["v9:2x2", "v5e:3x3", "v5e-8", "bogus"])
def test_an_unknown_topology_is_refused_with_the_known_forms(name):
  with pytest.raises(UserError, match=f"unknown TPU topology '{name}'.*v5e:2x4.*v5p:2x2x1"):
    compile_check.topology_devices(name)


def test_without_libtpu_the_check_names_the_install(monkeypatch):
  monkeypatch.setattr(compile_check, "available", lambda: False)
  with pytest.raises(UserError, match=r"needs libtpu: pip install -e \.\[tpu-compile\]"):
    compile_check.topology_devices("v5e:2x4")


def test_collectives_are_counted_from_the_hlo_text():
  hlo = """
  %a = f32[8,4]{1,0} all-gather(f32[4,4]{1,0} %p), replica_groups={{0,1}}, dimensions={0}
  %b = (f32[2]{0}, f32[4,4]{1,0}) all-reduce(%x, %y), to_apply=%sum
  %c = (f32[4,4]{1,0}, f32[8,4]{1,0}) all-gather-start(%q), dimensions={0}
  %d = f32[8,4]{1,0} all-gather-done(%c)
  %e = f32[4]{0} collective-permute(%z), source_target_pairs={{0,1}}
  """
  assert compile_check.collectives(hlo) == {
    "all-gather": 2,
    "all-reduce": 1,
    "collective-permute": 1,
  }
  assert compile_check.all_gather_shapes(hlo) == [(8, 4), (4, 4), (8, 4)]


def test_the_tpu_compilers_out_of_memory_report_is_read():
  message = (
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
    "temporaries (136.41G) exceeds available HBM (15.75G)."
  )
  assert compile_check._out_of_memory(message) == {
    "temporaries": int(136.41 * 2**30),
    "available": int(15.75 * 2**30),
  }
  used = "RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used 20.5G of 15.48G hbm."
  assert compile_check._out_of_memory(used)["available"] == int(15.48 * 2**30)
  assert compile_check._out_of_memory("INVALID_ARGUMENT: no") is None


def test_the_vocabulary_comes_from_the_run_or_the_config_without_a_corpus(tmp_path):
  config = tiny.get_config()  # The char tokenizer: its vocabulary needs the corpus.
  assert compile_check.vocabulary(config)[::2] == (1024, "data.vocab_size")
  config.data.tokenizer = "byte"
  assert compile_check.vocabulary(config)[::2] == (257, "the byte tokenizer")
  tokenizers.save(tokenizers.CharTokenizer("\nab"), str(tmp_path / "tokenizer.json"))
  size, tokenizer, source = compile_check.vocabulary(config, str(tmp_path))
  assert (size, tokenizer.kind, source) == (3, "char", str(tmp_path / "tokenizer.json"))
