"""Chat templates: a conversation as the text a chat model was trained on, and where turns end.

A Hugging Face chat model's tokenizer carries a Jinja template (tokenizer_config.json's
`chat_template`, or chat_template.jinja beside it, as transformers 5 saves it). A conversation
is a list of messages {'role': 'system' | 'user' | 'assistant', 'content': text}.
`ChatTemplate.render` writes it as transformers' `apply_chat_template` does (the same Jinja
settings, in a sandbox); `end_of_turn_ids` gives the tokens that close the assistant's turn,
where a reply ends. The tokenizer's encode turns the rendered text, special tokens included,
into ids.

Conversations are training text too (data.format='chat'): `pieces` renders a record's
`messages` with the tokenizer's template, or with BUILT_IN (plain role headers) for tokenizers
without one, and marks each assistant turn (what the template adds for it: the conversation up
to that turn rendered with the generation prompt, then through it; the reply and the template's
end of turn) as the only text the loss counts.
"""

import dataclasses
import datetime
import json
import os

from lm_jax import UserError

MESSAGES = "messages"  # The field of a record that holds its conversation.
ROLES = ("system", "user", "assistant")
BUILT_IN = "<|{role}|>\n"  # A turn's header; a turn ends with END (and a newline).
END = "<|end|>"
TEMPLATE_FILE = "chat_template.jinja"
# An assistant message's stand-in content: what the template writes after it ends the turn.
_SENTINEL = "lm_jax-end-of-turn-probe"


def _environment():
  import jinja2.ext  # pylint: disable=g-import-not-at-top  (only chat needs it)
  import jinja2.sandbox  # pylint: disable=g-import-not-at-top

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  # As transformers renders templates: blocks trimmed, loop controls, JSON without escaping.
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
  )

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(
      x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )

  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env, jinja2.exceptions.TemplateError


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A chat template and the special-token texts it may name (bos_token, eos_token, ...)."""

  source: str
  tokens: tuple[tuple[str, str], ...] = ()  # (name, text) pairs, e.g. ('bos_token', '<s>').

  def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as the model reads it; with `add_generation_prompt`, followed by what
    opens the assistant's reply."""
    env, template_error = _environment()
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    try:
      template = env.from_string(self.source)
      return template.render(
        messages=messages,
        tools=None,
        documents=None,
        add_generation_prompt=add_generation_prompt,
        **dict(self.tokens),
      )
    except template_error as e:
      raise UserError(
        f"the model's chat template refused the conversation ({type(e).__name__}: {e}): "
        "give the messages in the roles and order the model expects."
      ) from e

  def turn_end(self) -> str:
    """The text the template writes right after an assistant message ('' if it fails)."""
    probe = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL}]
    try:
      text = self.render(probe)
    except UserError:
      return ""
    return text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""

  def to_dict(self) -> dict:
    return {"source": self.source, "tokens": dict(self.tokens)}

  @classmethod
  def from_dict(cls, d: dict) -> "ChatTemplate":
    return cls(d["source"], tuple(sorted(d.get("tokens", {}).items())))


def _text(token) -> str | None:
  """A special token as tokenizer_config.json gives it: text, or {'content': text}."""
  return token.get("content") if isinstance(token, dict) else token


def read_template(directory: str, tokenizer_config: dict) -> ChatTemplate | None:
  """The chat template of a Hugging Face tokenizer directory; None when it has none."""
  source = tokenizer_config.get("chat_template")
  if isinstance(source, list):  # Named templates: the default one.
    named = {t.get("name"): t.get("template") for t in source}
    source = named.get("default")
  path = os.path.join(directory, TEMPLATE_FILE)
  if not source and os.path.exists(path):
    with open(path) as f:
      source = f.read()
  if not source:
    return None
  tokens = {k: _text(v) for k, v in tokenizer_config.items() if k.endswith("_token")}
  return ChatTemplate(source, tuple(sorted((k, v) for k, v in tokens.items() if v)))


def end_of_turn_ids(template: ChatTemplate, added_tokens: dict[str, int], eos_id) -> list[int]:
  """The ids that end an assistant turn: the added (special) token the template writes right
  after a reply (ChatML's <|im_end|>, Llama 3's <|eot_id|>, Gemma's <end_of_turn>), and eos."""
  ids = []
  end = template.turn_end().lstrip()
  starts = [t for t in added_tokens if t and end.startswith(t)]
  if starts:
    ids.append(added_tokens[max(starts, key=len)])
  if eos_id is not None and eos_id not in ids:
    ids.append(eos_id)
  return ids


def read_messages(path: str) -> list[dict]:
  """A conversation from a JSON file: a list of {'role': ..., 'content': ...} messages."""
  try:
    with open(path) as f:
      messages = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"cannot read the conversation in {path} ({e}): give a JSON file.") from e
  if not (
    isinstance(messages, list)
    and messages
    and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)
  ):
    raise UserError(
      f"{path} holds no conversation: give a JSON list of messages such as "
      '[{"role": "user", "content": "Hello"}].'
    )
  return messages


def prompt(tokenizer, messages: list[dict]) -> tuple:
  """(the ids that ask `tokenizer`'s chat model to answer `messages`, the ids ending its reply).

  Refuses a tokenizer without a chat template.
  """
  template = getattr(tokenizer, "chat_template", None)
  if template is None:
    raise UserError(
      f"this run's {tokenizer.kind} tokenizer has no chat template (a Hugging Face chat "
      "model's tokenizer_config.json chat_template), so --chat cannot format a conversation: "
      "sample a chat model's run, or leave out --chat to continue plain text."
    )
  ids = tokenizer.encode(template.render(messages, add_generation_prompt=True))
  return ids, tokenizer.end_of_turn_ids()


def template_for(data_config) -> ChatTemplate | None:
  """The template conversations are rendered with: data.hf_tokenizer's (a Hugging Face
  directory, or a run whose hf tokenizer kept one), else BUILT_IN (None)."""
  c = data_config
  if c.tokenizer != "hf" or not c.hf_tokenizer:
    return None
  read = lambda name: _read_json(os.path.join(c.hf_tokenizer, name))
  run_copy = read("tokenizer.json")
  if run_copy.get("kind") == "hf":
    saved = run_copy.get("chat_template")
    return ChatTemplate.from_dict(saved) if saved else None
  return read_template(c.hf_tokenizer, read("tokenizer_config.json"))


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def messages(record: dict, where) -> list[dict]:
  """A record's conversation, checked; `where()` names the record in a refusal."""
  turns = record.get(MESSAGES)
  if not isinstance(turns, list) or not turns:
    raise UserError(
      f"{where()} has no {MESSAGES!r} list (its fields: {sorted(record)}): data.format='chat' "
      "reads records with a list of {'role', 'content'} messages; use data.format='text' for text."
    )
  for turn in turns:
    role = turn.get("role") if isinstance(turn, dict) else None
    if role not in ROLES or not isinstance(turn.get("content"), str):
      raise UserError(
        f"{where()} has a message {str(turn)[:80]!r}: give each message a role in {list(ROLES)} "
        "and a text content."
      )
  return [{"role": t["role"], "content": t["content"]} for t in turns]


def _built_in(turns: list[dict]) -> list[tuple[str, int]]:
  out = []
  for t in turns:
    header = BUILT_IN.format(role=t["role"])
    if t["role"] == "assistant":
      out += [(header, 0), (t["content"] + END, 1), ("\n", 0)]
    else:
      out.append((header + t["content"] + END + "\n", 0))
  return out


def pieces(template: ChatTemplate | None, turns: list[dict]) -> list[tuple[str, int]]:
  """The conversation's text in pieces `(text, weight)`: weight 1 on the assistant's turns."""
  if template is None:
    out = _built_in(turns)
  else:
    full, out, at = template.render(turns), [], 0
    for i, t in enumerate(turns):
      if t["role"] != "assistant":
        continue
      before = template.render(turns[:i], add_generation_prompt=True)
      through = template.render(turns[: i + 1])
      if not (len(before) >= at and through.startswith(before) and full.startswith(through)):
        raise UserError(
          "the chat template does not render a conversation as its turns one after another "
          "(a turn's text changes with the turns after it), so the assistant's tokens cannot "
          "be found: use a template without that, or the built-in one (data.tokenizer other "
          "than 'hf')."
        )
      out += [(full[at : len(before)], 0), (through[len(before) :], 1)]
      at = len(through)
    out.append((full[at:], 0))
  merged = []
  for text, weight in out:
    if merged and merged[-1][1] == weight:
      merged[-1] = (merged[-1][0] + text, weight)
    elif text:
      merged.append((text, weight))
  return merged


def render_text(template: ChatTemplate | None, turns: list[dict], add_generation_prompt=False):
  """The conversation's text by `template` (None: the built-in one), with the header that asks
  for the assistant's reply when `add_generation_prompt`."""
  if template is not None:
    return template.render(turns, add_generation_prompt=add_generation_prompt)
  text = "".join(t for t, _ in _built_in(turns))
  return text + (BUILT_IN.format(role="assistant") if add_generation_prompt else "")


def render(tokenizer, turns: list[dict]) -> list[tuple[str, int]]:
  """The conversation as `tokenizer`'s model reads it, in pieces `(text, weight)`: its chat
  template where it has one (`chat_template`), else the built-in template."""
  return pieces(getattr(tokenizer, "chat_template", None), turns)
