"""Conversations as training text: a record's `messages`, rendered, with the assistant's turns
marked as the only text the loss counts.

A Hugging Face tokenizer with a chat template (tokenizer_config.json's `chat_template`, or
chat_template.jinja beside it) renders conversations as transformers' `apply_chat_template`
does; every other tokenizer gets BUILT_IN, a plain template of role headers. An assistant turn
is what the template adds for it: the conversation up to that turn rendered with the generation
prompt, then through it; the difference (the reply and the template's end of turn) is the text
that carries weight 1.
"""

import dataclasses
import datetime
import functools
import json
import os

from lm_jax import UserError

MESSAGES = "messages"  # The field of a record that holds its conversation.
ROLES = ("system", "user", "assistant")
BUILT_IN = "<|{role}|>\n"  # A turn's header; a turn ends with END (and a newline).
END = "<|end|>"
TEMPLATE_FILE = "chat_template.jinja"


@functools.cache
def _compiled(source: str):
  import jinja2.ext  # pylint: disable=g-import-not-at-top  (only chat templates need it)
  import jinja2.sandbox  # pylint: disable=g-import-not-at-top

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  # As transformers renders templates: blocks trimmed, loop controls, JSON without escaping.
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
  )
  env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(
    x, ensure_ascii=False, indent=indent, **kw
  )
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(source), jinja2.exceptions.TemplateError


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A Jinja chat template and the special-token texts it may name (bos_token, eos_token...)."""

  source: str
  tokens: tuple[tuple[str, str], ...] = ()

  def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
    template, template_error = _compiled(self.source)
    try:
      return template.render(
        messages=messages, add_generation_prompt=add_generation_prompt, **dict(self.tokens)
      )
    except template_error as e:
      raise UserError(
        f"the chat template refused a conversation ({e}): give the messages in the roles "
        "and order the model expects."
      ) from e

  def to_dict(self) -> dict:
    return {"source": self.source, "tokens": dict(self.tokens)}


def read_template(directory: str) -> ChatTemplate | None:
  """The chat template of a Hugging Face tokenizer directory (or of the one a run was imported
  from); None where there is none."""
  read = lambda name: json.load(open(os.path.join(directory, name)))  # noqa: SIM115
  config = read("tokenizer_config.json") if _has(directory, "tokenizer_config.json") else {}
  source = config.get("chat_template")
  if isinstance(source, list):  # Named templates: the default one.
    source = {t.get("name"): t.get("template") for t in source}.get("default")
  if not source and _has(directory, TEMPLATE_FILE):
    with open(os.path.join(directory, TEMPLATE_FILE)) as f:
      source = f.read()
  if not source:
    run = read("config.json").get("data", {}) if _has(directory, "config.json") else {}
    origin = run.get("hf_tokenizer") if isinstance(run, dict) else None
    if origin and os.path.abspath(origin) != os.path.abspath(directory):
      return read_template(origin)
    return None
  text = lambda t: t.get("content") if isinstance(t, dict) else t
  tokens = {k: text(v) for k, v in config.items() if k.endswith("_token") and text(v)}
  return ChatTemplate(source, tuple(sorted(tokens.items())))


def _has(directory: str, name: str) -> bool:
  return os.path.isfile(os.path.join(directory, name))


def template_for(data_config) -> ChatTemplate | None:
  """The template conversations are rendered with: data.hf_tokenizer's, else BUILT_IN (None)."""
  c = data_config
  return read_template(c.hf_tokenizer) if c.tokenizer == "hf" and c.hf_tokenizer else None


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


def render(tokenizer, turns: list[dict]) -> list[tuple[str, int]]:
  """The conversation as `tokenizer`'s model reads it, in pieces `(text, weight)`: its chat
  template where it has one (`chat_template`), else the built-in template."""
  return pieces(getattr(tokenizer, "chat_template", None), turns)
