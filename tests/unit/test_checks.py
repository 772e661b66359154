"""Every config key a new user can get wrong is refused before anything is read or compiled,
in one sentence that names the key, what it takes and how to change it."""

import re

import ml_collections
import pytest

from configs import shakespeare_char_llama, shakespeare_char_lstm, tiny
from lm_jax import UserError, checks, models, parallel, train
from lm_jax import config as config_lib
from lm_jax.models.decoder import Decoder

FIX = r"change it in the config or with --config\.{key}=VALUE\.$"

# (override, value, what the message says the key takes)
OUT_OF_RANGE = [
  ("seed", "-1", "an integer in \\[0, 9223372036854775807\\]"),
  ("train.batch_size", "0", "an integer >= 1"),
  ("train.num_steps", "0", "an integer >= 1"),
  ("train.log_every", "0", "an integer >= 1"),
  ("train.eval_every", "-1", "an integer >= 1"),
  ("train.checkpoint_every", "0", "an integer >= 1"),
  ("train.keep_checkpoints", "0", "an integer >= 1"),
  ("train.grad_accum_steps", "0", "an integer >= 1"),
  ("train.eval_batch_size", "-1", "an integer >= 0"),
  ("train.eval_tasks_every", "0", "an integer >= 1"),
  ("train.eval_tasks_limit", "-1", "an integer >= 0"),
  ("train.parallel", "tpu", "one of \\['auto', 'jit', 'pmap', 'sharded'\\]"),
  ("data.seq_len", "0", "an integer >= 1"),
  ("data.prefetch", "0", "an integer >= 1"),
  ("data.order", "shuffle", "one of \\['random_windows', 'epochs', 'sequential'\\]"),
  ("data.tokenizer", "bpe", "one of \\[.*'sentencepiece', 'word'\\]"),
  ("data.vocab_size", "0", "an integer >= 1"),
  ("data.documents", "paragraph", "one of \\['file', 'blank_line', 'line'\\]"),
  ("data.holdout_fraction", "1", "a number in \\[0, 1\\)"),
  ("data.workers", "-1", "an integer >= 0"),
  ("data.shard_tokens", "0", "an integer >= 1"),
  ("data.cache_wait_sec", "0", "a number > 0"),
  ("data.synthetic", "zipf", "one of \\['random', 'pattern'\\]"),
  ("data.synthetic_tokens", "0", "an integer >= 1"),
  ("data.sentencepiece_type", "wordpiece", "one of \\['bpe', 'unigram'\\]"),
  ("data.tokenizer_train_bytes", "0", "an integer >= 1"),
  ("optim.schedule", "step", "one of \\['cosine', 'linear', 'constant', 'wsd', 'plateau'\\]"),
  ("optim.learning_rate", "-1", "a number >= 0"),
  ("optim.learning_rate", "nan", "a number >= 0"),
  ("optim.min_learning_rate", "1", "a number in \\[0, 0.001\\]"),
  ("optim.warmup_steps", "-1", "an integer >= 0"),
  ("optim.b1", "1", "a number in \\[0, 1\\)"),
  ("optim.b2", "-0.5", "a number in \\[0, 1\\)"),
  ("optim.eps", "0", "a number > 0"),
  ("optim.weight_decay", "-0.1", "a number >= 0"),
  ("optim.grad_clip", "-1", "a number >= 0"),
  ("model.num_layers", "0", "an integer >= 1"),
  ("model.num_heads", "0", "an integer >= 1"),
  ("model.d_model", "0", "an integer >= 1"),
  ("model.max_len", "0", "an integer >= 1"),
  ("model.dropout", "1", "a number in \\[0, 1\\)"),
  ("model.dropout", "-0.1", "a number in \\[0, 1\\)"),
  ("model.norm_eps", "0", "a number > 0"),
  ("model.dtype", "float16", "one of \\['auto', 'float32', 'bfloat16'\\]"),
  ("model.attention", "flash", "one of \\['auto', 'reference', 'xla', 'cudnn'\\]"),
  ("model.remat", "all", "one of \\['none', 'block', 'dots'\\]"),
  ("model.gelu", "relu", "one of \\['exact', 'tanh'\\]"),
]


@pytest.mark.parametrize("key, value, rule", OUT_OF_RANGE)
def test_a_value_out_of_range_is_refused_naming_the_key_and_the_fix(key, value, rule):
  config = config_lib.override(tiny.get_config(), {key: value})
  shown = re.escape(repr(config_lib.get(config, key)))
  with pytest.raises(UserError, match=rf"^{key}={shown} is not {rule}: " + FIX.format(key=key)):
    checks.check_config(config)


@pytest.mark.parametrize(
  "key, value, rule",
  [
    ("train.batch_size", "8", "an integer >= 1"),
    ("train.batch_size", 8.0, "an integer >= 1"),
    ("optim.learning_rate", "1e-3", "a number >= 0"),
    ("train.keep_best", "yes", "true or false"),
    ("model.num_layers", 2.0, "an integer"),  # The model's field says int.
    ("model.use_bias", 0, "true or false"),
    ("data.text_files.train", 3, "a string"),
    ("train.init_from", None, "a string"),
  ],
)
def test_a_value_of_the_wrong_type_is_refused(key, value, rule):
  """As a JSON config or a hand-written get_config() can give them, past override's parsing."""
  config = tiny.get_config()
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(UserError, match=rf"^{key}={value!r} is not {rule}: "):
    checks.check_config(config)


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"model.d_model": "31"}, r"model.d_model=31 is not divisible by model.num_heads=2"),
    ({"train.profile_steps": "[5, 1]"}, r"train.profile_steps=\[5, 1\] must be \[first, last\]"),
    ({"mesh.fsdp": "-2"}, r"mesh.fsdp=-2 is not an integer >= -1"),
  ],
)
def test_settings_that_do_not_fit_together_are_refused(overrides, message):
  with pytest.raises(UserError, match=message):
    checks.check_config(config_lib.override(tiny.get_config(), overrides))


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"train.parallel": "pmap", "train.batch_size": "12"}, r"batch_size=12 is not divisible by"),
    ({"train.parallel": "sharded", "mesh.data": "3", "mesh.fsdp": "3"}, r"does not cover the 8"),
    (
      {"train.parallel": "sharded", "mesh.data": "0"},
      r"mesh.data=0 x mesh.fsdp=1 x mesh.tensor=1 is invalid: give positive sizes",
    ),
  ],
)
def test_a_layout_the_devices_cannot_take_is_refused_before_data(overrides, message):
  config = config_lib.override(tiny.get_config(), overrides)
  checks.check_config(config)
  with pytest.raises(UserError, match=message):
    parallel.training_plan(config)


def test_model_checks_are_each_models_own():
  llama = shakespeare_char_llama.get_config()
  for key, value, message in [
    ("model.num_kv_heads", "0", r"model.num_kv_heads=0 is not an integer >= 1"),
    ("model.num_kv_heads", "3", r"model.num_kv_heads=3 must divide num_heads=4"),
    ("model.rope_base", "0", r"model.rope_base=0.0 is not a number > 0"),
    ("model.mlp_dim", "-1", r"model.mlp_dim=-1 is not an integer >= 0"),
  ]:
    with pytest.raises(UserError, match=message):
      checks.check_config(config_lib.override(llama, {key: value}))
  lstm = shakespeare_char_lstm.get_config()
  for key, value, message in [
    ("model.hidden_size", "0", r"model.hidden_size=0 is not an integer >= 1"),
    ("model.tie_weights", "true", r"model.tie_weights needs model.embed_size \(128\) =="),
  ]:
    with pytest.raises(UserError, match=message):
      checks.check_config(config_lib.override(lstm, {key: value}))


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_every_registered_model_checks_its_own_settings(name):
  assert callable(getattr(models.get_model_class(name), "check", None))


DECODERS = [n for n in sorted(models.REGISTRY) if issubclass(models.get_model_class(n), Decoder)]


@pytest.mark.parametrize("key", ["num_heads", "num_layers"])
@pytest.mark.parametrize("name", DECODERS)
def test_a_decoder_without_heads_or_layers_is_refused_before_data(name, key, tmp_path):
  config = tiny.get_config()
  config.model = ml_collections.ConfigDict({"name": name, key: 0})
  config.data.update(dataset="text", text_files={"train": str(tmp_path / "absent.txt")})
  with pytest.raises(UserError, match=rf"^model.{key}=0 is not an integer >= 1: "):
    train.train_and_evaluate(config, str(tmp_path / "run"))  # Refused before the text is read.
  assert not (tmp_path / "run").exists()


def test_a_mixture_sources_own_keys_are_checked_under_its_name():
  config = tiny.get_config()
  config.data.mixture = {"a": {"weight": 1.0, "documents": "para"}, "b": {"weight": 0}}
  with pytest.raises(UserError, match=r"data.mixture.a.documents='para' is not one of"):
    checks.check_config(config)
  config.data.mixture = {"a": {"weight": "heavy"}}
  with pytest.raises(UserError, match=r"data.mixture.a.weight='heavy' is not a number > 0"):
    checks.check_config(config)


def test_a_config_missing_a_key_names_it_and_the_base_to_start_from():
  config = tiny.get_config()
  del config.train["keep_best"]
  with pytest.raises(UserError, match=r"no key 'keep_best' .* configs/shakespeare_char_gpt_cpu"):
    checks.check_config(config)


def test_init_from_must_be_a_run_or_a_hugging_face_directory(tmp_path):
  config = tiny.get_config()
  for path, message in [
    (tmp_path / "none", r"is neither a training run \(a checkpoints/ folder\) nor a Hugging Face"),
    (tmp_path, r"is neither a training run"),
  ]:
    config.train.init_from = str(path)
    with pytest.raises(UserError, match=message):
      checks.check_config(config)
  (tmp_path / "config.json").write_text(tiny.get_config().to_json())
  with pytest.raises(UserError, match=r"is a run with no checkpoint yet: train it first"):
    checks.check_config(config)
  (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
  checks.check_config(config)  # A Hugging Face directory: its weights are checked when read.


def test_every_shipped_config_passes():
  for module in (tiny, shakespeare_char_llama, shakespeare_char_lstm):
    checks.check_config(module.get_config())


def test_an_unknown_optimizer_is_refused_with_the_registry_and_the_plugin_form():
  config = config_lib.override(tiny.get_config(), {"optim.name": "sgdd"})
  with pytest.raises(UserError, match=r"unknown optimizer 'sgdd': set optim.name to one of \['ada"):
    checks.check_config(config)
  checks.check_config(config_lib.override(tiny.get_config(), {"optim.name": "lion"}))
