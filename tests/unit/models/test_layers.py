"""Document starts (the segment ids of packed windows) and where attention may look."""

import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax import UserError, models
from lm_jax.data import tokenizers
from lm_jax.models import layers

EOD = 0


def test_an_end_of_document_token_opens_the_next_document():
  tokens = jnp.array([[5, EOD, 3, 4, EOD, 7], [EOD, 1, 2, 3, 4, 5]])
  starts = layers.document_starts(tokens, (EOD,))
  np.testing.assert_array_equal(starts, [[0, 1, 1, 1, 4, 4], [0, 0, 0, 0, 0, 0]])
  # Several end-of-document ids; a window continued from a cache keeps its open document.
  np.testing.assert_array_equal(layers.document_starts(jnp.array([[2, 9, 3]]), (9, 3)), [[0, 1, 2]])
  more = layers.document_starts(tokens[:, 3:], (EOD,), pos=3, start_B=starts[:, 2])
  np.testing.assert_array_equal(more, starts[:, 3:])


def test_a_query_sees_its_own_document_up_to_itself():
  starts = layers.document_starts(jnp.array([[5, EOD, 3, 4]]), (EOD,))
  seen = np.asarray(layers.visible(4, 4, 0, starts))[0]
  np.testing.assert_array_equal(seen, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]])
  # Decoding one query at position 3 over a cache of 6 positions.
  one = np.asarray(layers.visible(1, 6, 3, starts[:, 3:]))[0]
  np.testing.assert_array_equal(one, [[0, 1, 1, 1, 0, 0]])


def test_cudnn_is_refused_with_document_masking_and_auto_avoids_it():
  with pytest.raises(UserError, match="passes cuDNN no segments"):
    layers.resolve_attention("cudnn", jnp.bfloat16, 0.0, 64, documents=True)
  choice, _ = layers.resolve_attention("auto", jnp.float32, 0.0, 64, documents=True)
  assert choice in ("xla", "reference")
  assert layers.resolve_attention("xla", jnp.float32, 0.0, 64, documents=True)[0] == "xla"


def test_document_masking_needs_an_end_of_document_token_and_a_model_that_masks():
  on = {"document_masking": True}
  assert models.document_ids({}, tokenizers.ByteTokenizer()) == ()
  assert models.document_ids(on, tokenizers.ByteTokenizer()) == (256,)
  with pytest.raises(UserError, match="the 'ids' tokenizer has none"):
    models.document_ids(on, tokenizers.IdsTokenizer(10))
  with pytest.raises(UserError, match="LSTM cannot keep attention inside documents"):
    models.build_model({"name": "lstm"}, 10, (0,))
  assert models.build_model({"name": "llama"}, 10, (0,)).eod_ids == (0,)
