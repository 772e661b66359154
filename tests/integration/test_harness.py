"""lm-evaluation-harness through lm_jax/harness/, against the harness's own Hugging Face backend.

A tiny random GPT-2 and a byte-level BPE are built with `transformers`, imported into lm_jax, and
evaluated on local tasks (multiple choice, rolling log-likelihood, generation with a stop
sequence) by both; then a char run trained here, in the loop and after it.
"""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT, WORDS, make_text
from helpers import hf
from helpers.trees import assert_trees_equal

from lm_jax import UserError, records, runs, train
from lm_jax.experiments import compare

INSTALL = (
  "the harness tests need lm-eval, accelerate, torch and transformers: pip install -e .[harness] "
  "torch==2.13.0 transformers==5.23.0"
)
pytest.importorskip("lm_eval", reason=INSTALL)
pytest.importorskip("accelerate", reason=INSTALL)
torch = pytest.importorskip("torch", reason=INSTALL)
transformers = pytest.importorskip("transformers", reason=INSTALL)

TASKS = "lmjax_mc,lmjax_roll,lmjax_gen"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
  """lm_jax.harness, imported with the harness's data cache in a temporary folder."""
  os.environ.setdefault("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_datasets")))
  from lm_jax import harness  # pylint: disable=g-import-not-at-top

  return harness


def write_task(folder, name, output_type, docs, **fields):
  """A task YAML on a JSON Lines file, as docs/evaluation.md shows."""
  data = os.path.join(folder, f"{name}.jsonl")
  with open(data, "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in docs)
  lines = [
    f"task: {name}",
    "dataset_path: json",
    f"dataset_kwargs: {{data_files: {{test: {data}}}}}",
    "test_split: test",
    f"output_type: {output_type}",
    *[f"{k}: {json.dumps(v)}" for k, v in fields.items()],
  ]
  with open(os.path.join(folder, f"{name}.yaml"), "w") as f:
    f.write("\n".join(lines) + "\n")


def metric(name, aggregation="mean", higher_is_better=True):
  return {"metric": name, "aggregation": aggregation, "higher_is_better": higher_is_better}


def write_tasks(folder, num_docs=12, seed=0, greedy=None):
  """Three tasks in lowercase words and spaces (any char run's vocabulary); `greedy(context)`,
  if given, adds a choice: the model's own next token."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  phrase = lambda n: " ".join(rng.choice(WORDS, n))
  mc = []
  for _ in range(100 * num_docs):  # Until num_docs questions (with the greedy choice) are found.
    if len(mc) == num_docs:
      break
    context = phrase(int(rng.integers(2, 12)))
    choices = [phrase(k) for k in (1, 1, 2, 3)]  # The harness puts a space before each.
    if greedy:
      if (extra := greedy(context)) is None:
        continue
      choices.append(extra)
    mc.append({"context": context, "choices": choices, "answer": int(rng.integers(len(choices)))})
  write_task(
    folder,
    "lmjax_mc",
    "multiple_choice",
    mc,
    doc_to_text="{{context}}",
    doc_to_choice="choices",
    doc_to_target="answer",
    metric_list=[metric("acc"), metric("acc_norm")],
  )
  roll = [{"text": make_text(8 * int(rng.integers(2, 14)), seed=i).lower()} for i in range(6)]
  write_task(
    folder,
    "lmjax_roll",
    "loglikelihood_rolling",
    roll,
    doc_to_text="",
    doc_to_target="{{text}}",
    metric_list=[
      metric("word_perplexity", "weighted_perplexity", False),
      metric("byte_perplexity", "weighted_perplexity", False),
      metric("bits_per_byte", "bits_per_byte", False),
    ],
  )
  gen = [{"prompt": phrase(int(rng.integers(1, 9))), "answer": " the"} for _ in range(8)]
  write_task(
    folder,
    "lmjax_gen",
    "generate_until",
    gen,
    doc_to_text="{{prompt}}",
    doc_to_target="{{answer}}",
    generation_kwargs={"until": ["e"], "max_gen_toks": 12, "do_sample": False},
    metric_list=[metric("exact_match")],
  )
  return str(folder)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """A tiny random GPT-2 (helpers.hf.ARCHS) with a byte-level BPE, saved as Hugging Face saves
  them; the BPE learns lowercase text, as the tasks are."""
  fast = hf.fast_tokenizer(hf.byte_level_bpe([make_text(2000, seed=5).lower()]))
  return hf.save_model("gpt2", tmp_path_factory.mktemp("gpt2"), fast, seed=0)


@pytest.fixture(scope="module")
def tasks_dir(hf_dir, tmp_path_factory):
  """The three tasks; each multiple-choice question also offers the model's greedy next token."""
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  fast = transformers.AutoTokenizer.from_pretrained(hf_dir)

  def greedy(context):
    """The argmax next token's text, where it is a space and a word that encodes back to it."""
    ids = fast.encode(context)
    with torch.no_grad():
      token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
    text = fast.decode([token])
    fits = text[:1] == " " and text.strip() and fast.encode(context + text) == ids + [token]
    return text[1:] if fits else None

  return write_tasks(tmp_path_factory.mktemp("tasks"), greedy=greedy)


def leaves(x):
  """The numbers, flags and texts of a sample's responses, in order."""
  if isinstance(x, (list, tuple)):
    return [y for item in x for y in leaves(item)]
  return [x]


def by_doc(samples):
  return sorted(samples, key=lambda s: s["doc_id"])


def test_adapter_equals_the_harness_hf_backend(harness, hf_dir, tasks_dir, tmp_path):
  from lm_eval import simple_evaluate  # pylint: disable=g-import-not-at-top
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top

  from configs import shakespeare_char_gpt_cpu  # pylint: disable=g-import-not-at-top
  from lm_jax.hf import runs as hf_runs  # pylint: disable=g-import-not-at-top

  base = shakespeare_char_gpt_cpu.get_config()
  base.train.batch_size = 8  # A row per device of the tests' 8: data-parallel (pmap).
  workdir = str(tmp_path / "run")
  hf_runs.import_hf(hf_dir, workdir, base)
  ours, path = harness.evaluate_run(workdir, TASKS, include_path=tasks_dir, log_samples=True)
  theirs = simple_evaluate(
    model="hf",
    model_args={"pretrained": hf_dir, "dtype": "float32"},
    tasks=TASKS.split(","),
    device="cpu",
    batch_size=1,
    log_samples=True,
    task_manager=TaskManager(include_path=tasks_dir, include_defaults=False),
  )
  flags, lls, texts = [], [], []
  for task in TASKS.split(","):
    a, b = by_doc(ours["samples"][task]), by_doc(theirs["samples"][task])
    assert [s["doc_id"] for s in a] == [s["doc_id"] for s in b] and a
    for x, y in zip(a, b, strict=True):
      assert x["arguments"] == y["arguments"]  # The same requests...
      for u, v in zip(leaves(x["resps"]), leaves(y["resps"]), strict=True):  # ...answered alike.
        if isinstance(v, bool):
          assert u == v
          flags.append(u)
        elif isinstance(v, float):
          assert abs(u - v) <= 1e-4, (task, u, v)
          lls.append(abs(u - v))
        else:
          assert u == v, (task, u, v)
          texts.append(u)
    for metric, value in theirs["results"][task].items():
      if isinstance(value, float):
        assert ours["results"][task][metric] == pytest.approx(value, rel=1e-5, abs=1e-9), metric
  assert True in flags and False in flags  # Both kinds of is_greedy answer were compared.
  assert any(len(t) < 12 for t in texts) and len(set(texts)) > 1  # Stopped at 'e', and varied.
  print(f"parity: {len(lls)} log-likelihoods, max |diff| {max(lls):.2e}; {len(flags)} flags")
  # A handful of programs: a score shape per padded length (<= 64: 16, 32, 64), few generates.
  assert ours["lm_jax"]["programs"] <= 6

  # The harness's own files, and the metrics at the checkpoint's step.
  assert path == os.path.join(workdir, "harness", "0.json")
  with open(path) as f:
    saved = json.load(f)
  assert saved["results"] == json.loads(json.dumps(ours["results"]))
  assert set(saved["task_hashes"]) == set(TASKS.split(","))
  for task in TASKS.split(","):
    with open(os.path.join(workdir, "harness", f"samples_{task}_0.jsonl")) as f:
      assert len(f.readlines()) == len(ours["samples"][task])
  logged = {k: v for r in records.read_metrics(workdir) for k, v in r.items() if r["step"] == 0}
  assert logged["harness/lmjax_mc/acc"] == ours["results"]["lmjax_mc"]["acc,none"]
  assert logged["harness/lmjax_gen/exact_match"] == ours["results"]["lmjax_gen"]["exact_match,none"]
  assert "harness/lmjax_roll/word_perplexity" in logged


def char_config(config, tasks_dir, **train):
  config.model.dropout = 0.1  # A resumed run must draw the same dropout masks too.
  config.train.update(
    num_steps=6, log_every=1, eval_every=3, checkpoint_every=3, eval_tasks="lmjax_mc"
  )
  config.train.update(eval_tasks_every=3, eval_tasks_include_path=tasks_dir, **train)
  return config


def mc_accuracy_by_hand(workdir, tasks_dir):
  """The multiple-choice accuracy from whole-sequence forward passes, one request at a time."""
  config, model, tokenizer, state, *_ = runs.load_run(workdir)
  forward = jax.jit(lambda t: model.apply({"params": state.params}, t))
  L = config.model.max_len
  correct = []
  with open(os.path.join(tasks_dir, "lmjax_mc.jsonl")) as f:
    for doc in map(json.loads, f):
      scores = []
      for choice in doc["choices"]:
        ids = tokenizer.encode(doc["context"] + " " + choice)[-(L + 1) :]  # Space: the harness's.
        logp = jax.nn.log_softmax(forward(ids[None, :-1])[0])
        n = len(choice) + 1
        scores.append(
          sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1 - n, len(ids) - 1))
        )
      correct.append(int(np.argmax(scores)) == doc["answer"])
  return float(np.mean(correct))


def sigterm_during_harness(monkeypatch, harness, at_step):
  """The run receives SIGTERM while the harness evaluates at `at_step`."""
  real = harness.InLoop.evaluate

  def evaluate(self, params, writer, step):
    if step == at_step:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(self, params, writer, step)

  monkeypatch.setattr(harness.InLoop, "evaluate", evaluate)


def harness_lines(workdir):
  return [r for r in records.read_metrics(workdir) if any(k.startswith("harness/") for k in r)]


@pytest.mark.slow
def test_char_run_in_the_loop_and_resumed_after_sigterm_during_it(
  harness, config, tmp_path, monkeypatch
):
  tasks_dir = write_tasks(tmp_path / "tasks", num_docs=10)
  config = char_config(config, tasks_dir)
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(config, straight)
  lines = harness_lines(straight)
  assert [(r["step"], sorted(r)) for r in lines] == [
    (s, ["harness/lmjax_mc/" + m, "step"]) for s in (3, 6) for m in ("acc", "acc_norm")
  ]
  with open(os.path.join(straight, "harness", "6.json")) as f:
    assert json.load(f)["results"]["lmjax_mc"]["acc,none"] == lines[2]["harness/lmjax_mc/acc"]
  # The harness's accuracy is the one the model's own forward passes give.
  assert lines[2]["harness/lmjax_mc/acc"] == pytest.approx(mc_accuracy_by_hand(straight, tasks_dir))
  # compare.py finds the metric at the run's final step.
  assert (
    compare.load_run(straight, "harness/lmjax_mc/acc")["value"] == lines[2]["harness/lmjax_mc/acc"]
  )

  resumed = str(tmp_path / "resumed")
  with monkeypatch.context() as m:
    sigterm_during_harness(m, harness, 3)
    with pytest.raises(train.Preempted, match="saved a checkpoint at step 3"):
      train.train_and_evaluate(config, resumed)
  train.train_and_evaluate(config, resumed)
  losses = lambda w: [
    (r["step"], r.get("train_loss"), r.get("val_loss"))
    for r in records.read_metrics(w)
    if "train_loss" in r or "val_loss" in r
  ]
  assert losses(resumed) == losses(straight)
  assert harness_lines(resumed) == lines
  a, b = runs.load_run(straight), runs.load_run(resumed)
  assert_trees_equal(a[3].params, b[3].params)


@pytest.mark.slow
def test_script_prints_the_table_and_refuses_what_it_cannot_read(harness, config, tmp_path):
  tasks_dir = write_tasks(tmp_path / "tasks", num_docs=6)
  write_task(tasks_dir, "lmjax_hub", "multiple_choice", [], dataset_path="someone/no_such_data")
  os.remove(os.path.join(tasks_dir, "lmjax_hub.jsonl"))
  with open(os.path.join(tasks_dir, "lmjax_hub.yaml")) as f:
    text = f.read().replace("dataset_path: json\n", "")
  with open(os.path.join(tasks_dir, "lmjax_hub.yaml"), "w") as f:
    f.write(text)
  config.train.num_steps = 2
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
  run = lambda *a: subprocess.run(
    [sys.executable, "scripts/eval_harness.py", "--workdir", workdir, *a],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=env,
  )
  r = run("--tasks", "lmjax_mc,lmjax_gen", "--include_path", tasks_dir, "--limit", "4")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "lmjax_mc" in r.stdout and "acc" in r.stdout and "exact_match" in r.stdout
  with open(os.path.join(workdir, "harness", "2.json")) as f:
    assert json.load(f)["config"]["limit"] == 4
  # A task on the Hub with no local copy: refused by name, with both fixes (the script prints
  # a UserError as one line, tests/integration/test_cli.py).
  with pytest.raises(UserError, match="harness task 'lmjax_hub' cannot read its data") as e:
    harness.evaluate_run(workdir, ["lmjax_hub"], include_path=tasks_dir)
  assert "--include_path" in str(e.value) and "HF_DATASETS_OFFLINE=0" in str(e.value)
  with pytest.raises(UserError, match="unknown harness task"):
    harness.Tasks("lmjax_nope", tasks_dir)
