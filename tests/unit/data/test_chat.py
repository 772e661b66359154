"""Chat templates: rendered as transformers renders them, turn ends found, kept by a run's copy."""

import json
import os

import pytest
from conftest import make_text
from helpers import hf

from lm_jax import UserError
from lm_jax.data import chat, hf_tokenizer, tokenizers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>"]
CHATML = (  # Qwen's shape: a default system message, <|im_end|> after every turn.
  "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
  "<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
  "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (  # Llama 3's shape: bos_token, headers, <|eot_id|>; tojson and raise_exception.
  "{{ bos_token }}{% for m in messages %}"
  "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
  "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
  "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
  "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
  "{% endif %}{% if tools %}{{ tools | tojson }}{% endif %}"
)
GEMMA = (  # Gemma's shape: 'model' for the assistant, <end_of_turn> and a newline.
  "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' "
  "else m['role'] %}<start_of_turn>{{ role }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
  "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
PLAIN = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
CONVERSATIONS = [
  [{"role": "user", "content": "Hello « there »"}],
  [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "  Hello!  "},
    {"role": "user", "content": "How are you?"},
  ],
]


def tokenizer_dir(path, template=None, as_file=False):
  """A byte-level BPE with chat special tokens, saved as a Hugging Face tokenizer directory."""
  tok = hf.byte_level_bpe([make_text(500, seed=1)], SPECIALS)
  added = {"content": "<|endoftext|>", "special": True, "normalized": False}  # As older saves.
  config = {"eos_token": "<|endoftext|>", "bos_token": {"__type": "AddedToken", **added}}
  if template and as_file:
    hf.write(path, chat.TEMPLATE_FILE, template)
  elif template:
    config["chat_template"] = template
  return hf.save_tokenizer(tok, path, **config)


@pytest.mark.parametrize("template", [CHATML, LLAMA3, GEMMA, PLAIN])
def test_rendering_equals_transformers(template, tmp_path):
  transformers = pytest.importorskip("transformers")
  path = tokenizer_dir(tmp_path / "tok", template)
  ours = hf_tokenizer.load_tokenizer(path)
  theirs = transformers.AutoTokenizer.from_pretrained(path)
  for messages in CONVERSATIONS:
    for prompt in (False, True):
      text = ours.chat_template.render(messages, add_generation_prompt=prompt)
      assert text == theirs.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt
      )
      assert ours.encode(text).tolist() == theirs(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
  "template, end", [(CHATML, "<|im_end|>"), (LLAMA3, "<|eot_id|>"), (GEMMA, "<end_of_turn>")]
)
def test_the_turn_ends_at_the_special_token_after_a_reply_and_at_eos(template, end, tmp_path):
  tokenizer = hf_tokenizer.load_tokenizer(tokenizer_dir(tmp_path / "tok", template))
  eot = tokenizer.encode(end).tolist()
  assert len(eot) == 1 and tokenizer.end_of_turn_ids() == [eot[0], tokenizer.eos_id]
  plain = hf_tokenizer.load_tokenizer(tokenizer_dir(tmp_path / "plain", PLAIN))
  assert plain.end_of_turn_ids() == [plain.eos_id]  # Nothing special after a reply: eos alone.
  ids, stop = chat.prompt(tokenizer, CONVERSATIONS[0])
  assert tokenizer.decode(ids) == tokenizer.chat_template.render(CONVERSATIONS[0], True)
  assert stop == tokenizer.end_of_turn_ids()


def test_a_runs_copy_and_an_export_keep_the_template(tmp_path):
  tokenizer = hf_tokenizer.load_tokenizer(tokenizer_dir(tmp_path / "tok", CHATML, as_file=True))
  assert tokenizer.chat_template.source == CHATML  # transformers 5 saves chat_template.jinja.
  tokenizers.save(tokenizer, str(tmp_path / "run_tokenizer.json"))  # As a run keeps it.
  copy = tokenizers.load(str(tmp_path / "run_tokenizer.json"))
  assert copy.chat_template == tokenizer.chat_template
  assert dict(copy.chat_template.tokens)["bos_token"] == "<|endoftext|>"
  os.makedirs(tmp_path / "export")
  assert hf_tokenizer.save_tokenizer(copy, str(tmp_path / "export"), 64) is None
  again = hf_tokenizer.load_tokenizer(str(tmp_path / "export"))
  assert again.chat_template.source == CHATML and again.eos_id == tokenizer.eos_id
  # A tokenizer without a template describes itself as before (its fingerprint is unchanged).
  plain = hf_tokenizer.load_tokenizer(tokenizer_dir(tmp_path / "none"))
  assert plain.chat_template is None and "chat_template" not in plain.to_dict()


def test_without_a_template_chat_is_refused_in_one_sentence(tmp_path):
  for tokenizer in (
    hf_tokenizer.load_tokenizer(tokenizer_dir(tmp_path / "none")),
    tokenizers.ByteTokenizer(),
  ):
    with pytest.raises(UserError, match=r"has no chat template .* leave out --chat") as e:
      chat.prompt(tokenizer, CONVERSATIONS[0])
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_bad_conversations_are_refused(tmp_path):
  tokenizer = hf_tokenizer.load_tokenizer(tokenizer_dir(tmp_path / "tok", LLAMA3))
  with pytest.raises(UserError, match="chat template refused the conversation .*unknown role"):
    chat.prompt(tokenizer, [{"role": "robot", "content": "beep"}])
  path = tmp_path / "messages.json"
  path.write_text(json.dumps({"role": "user"}))
  with pytest.raises(UserError, match="holds no conversation: give a JSON list"):
    chat.read_messages(str(path))
  path.write_text(json.dumps(CONVERSATIONS[1]))
  assert chat.read_messages(str(path)) == CONVERSATIONS[1]
