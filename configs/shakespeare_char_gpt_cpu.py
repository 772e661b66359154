"""nanoGPT's CPU recipe: a 4-layer character GPT on tiny-shakespeare.

  python scripts/train.py --config configs/shakespeare_char_gpt_cpu.py --workdir runs/gpt_cpu

Measured (whole validation split, 2 CPU cores, 108 s): validation loss
1.906 at seed 0 (1.882 and 1.879 at seeds 1 and 2), 2.750 bits per byte;
nanoGPT reports about 1.88 from a 20-batch estimate. Every other shipped
config starts from this one, so every key below exists everywhere and can be
set as --config.KEY=VALUE.
"""

import ml_collections

import configs


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameter init, dropout and the batch sequence.

  config.model = m = ml_collections.ConfigDict()
  m.name = "gpt"  # A registry name (gemma, gpt, llama, lstm) or 'package.module:ClassName'.
  m.num_layers = 4
  m.num_heads = 4
  m.d_model = 128
  m.max_len = 64  # Longest context the position embedding covers.
  m.dropout = 0.0
  m.use_bias = False  # Biases in Dense and LayerNorm layers (nanoGPT: off).
  m.gelu = "exact"  # The MLP's GELU: exact (erf), or tanh (GPT-2's approximation).
  m.norm_eps = 1e-5  # LayerNorm epsilon.
  m.dtype = "auto"  # Compute: float32, bfloat16, or auto (bfloat16 on GPU/TPU, float32 on CPU);
  # softmax, norms and the loss stay float32.
  m.param_dtype = "float32"  # Parameters (and the weights checkpoints hold): float32 or bfloat16.
  m.attention = "auto"  # reference (einsum), xla or cudnn (jax.nn.dot_product_attention), auto.
  m.remat = "none"  # Recompute blocks in the backward pass: none, block (save nothing), dots.
  m.scan_layers = False  # The blocks as one nn.scan: compile time stays flat as depth grows.

  config.data = d = ml_collections.ConfigDict()
  # A TFDS name; local files: 'text', 'jsonl' (.jsonl, .jsonl.gz, .jsonl.zst) or 'parquet';
  # 'hf:NAME' (a Hugging Face dataset: a Hub name, a save_to_disk folder, a builder such as
  # hf:json with data.text_files); or 'synthetic'.
  d.dataset = "tiny_shakespeare"
  d.format = "text"  # Records: 'text' (data.text_key), 'chat' (a 'messages' list; the loss
  # counts the assistant's tokens only), 'preference' (prompt, chosen, rejected: train.dpo), or
  # 'prompt' (a prompt and fields for reward functions: train.grpo).
  d.data_dir = ""  # Where TFDS or Hugging Face datasets keep prepared data ('' = their default).
  d.hf_config = ""  # hf: the dataset's configuration (subset) name, if it has several.
  d.hf_revision = ""  # hf: a Hub branch, tag or commit ('' = main).
  d.manual_dir = (
    ""  # A folder holding the raw files (tiny_shakespeare: input.txt), for offline use.
  )
  d.text_key = "text"  # The TFDS feature or record field that holds the text.
  d.train_split = "train"  # TFDS or hf split names; slicing like 'train[:1%]' works.
  d.eval_split = "validation"
  d.test_split = "test"
  d.text_files = ml_collections.ConfigDict()  # text, jsonl, parquet: paths or globs per split.
  d.text_files.train = ""
  d.text_files.validation = ""
  d.text_files.test = ""
  d.documents = (
    "file"  # Local files: a document per 'file', 'blank_line'-separated block or 'line'.
  )
  d.holdout_fraction = 0.05  # Without validation files: this end fraction of the train text.
  d.tokenizer = "char"  # char (characters of the train split), byte, sentencepiece, word or hf.
  d.hf_tokenizer = ""  # hf: a Hugging Face model directory holding tokenizer.json (or a run).
  d.vocab_size = 1024  # sentencepiece, synthetic: the vocabulary size; word: the words kept.
  d.sentencepiece_type = "bpe"  # bpe or unigram.
  d.tokenizer_train_bytes = 10_000_000  # sentencepiece: trained on up to this much train text.
  d.synthetic = "random"  # synthetic: 'random' ids, or 'pattern' (runs a model can learn).
  d.synthetic_tokens = 1_000_000  # synthetic: train tokens (validation and test: a tenth).
  d.cache_dir = ""  # Token cache ('' = $XDG_CACHE_HOME/lm_jax or ~/.cache/lm_jax).
  d.workers = 0  # Processes that tokenize (0: every core); the tokens are the same for any count.
  d.shard_tokens = 100_000_000  # Tokens per cache shard file; a resumed build keeps whole shards.
  d.cache_wait_sec = 600.0  # Waiting for another process's cache build: give up after this idle.
  # Named sources mixed by weight: data.mixture.NAME = {'weight': 0.7, 'dataset': ...} sets the
  # source keys (dataset, splits, text_files...) that NAME changes from these; empty: one source.
  d.mixture = ml_collections.ConfigDict()
  d.seq_len = 64  # Tokens of context per training example.
  # random_windows (nanoGPT), epochs (seeded permutations), or sequential: train.batch_size
  # contiguous streams read window by window (PyTorch's batchify), a recurrent model's state
  # carried from step to step (truncated backpropagation through time).
  d.order = "random_windows"
  # Attention and positions restart at each end-of-document token of a packed window (the
  # tokenizer's; with 'char', the newline): a document sees only itself. Off: windows attend
  # across the documents they cross, as GPT-2 pretraining does.
  d.document_masking = False
  d.prefetch = 2  # Batches a background thread prepares ahead of the train step.

  config.optim = o = ml_collections.ConfigDict()
  # sgd, adam, adamw (decoupled weight decay), lion, adafactor, muon (hidden matrices; AdamW on
  # embeddings, head, norms, biases), or 'package.module:function' (lm_jax/optim.py says how).
  o.name = "adamw"
  o.learning_rate = 1e-3  # Peak, reached after warmup_steps.
  o.min_learning_rate = 1e-4  # cosine, linear and wsd decay end here at train.num_steps.
  o.warmup_steps = 100  # Linear warmup from 0.
  # After warmup: cosine, linear, constant, wsd (stable, then linear decay over the last
  # decay_fraction of the steps), plateau (constant, divided by plateau_factor whenever a
  # validation loss does not beat the best so far: PyTorch's word_language_model rule).
  o.schedule = "cosine"
  o.decay_fraction = 0.2  # wsd: the share of train.num_steps spent decaying.
  o.plateau_factor = 4.0  # plateau: the divisor.
  o.momentum = 0.0  # sgd: 0 is plain SGD (W - lr * g, bit for bit).
  o.nesterov = False  # sgd: Nesterov momentum.
  o.muon_beta = 0.95  # muon: momentum of the hidden matrices (Nesterov, as modded-nanogpt).
  o.muon_ns_steps = 5  # muon: Newton-Schulz iterations.
  o.adam_learning_rate = 0.0  # muon: peak of the AdamW parameters; 0 = optim.learning_rate.
  o.z_loss = 0.0  # Coefficient of PaLM's log(Z)^2 auxiliary loss (PaLM: 1e-4); 0 = off.
  o.b1 = 0.9
  o.b2 = 0.99
  o.eps = 1e-8
  o.weight_decay = 0.1  # All but adam; matrices decay, biases and norm scales never do.
  o.decay_embeddings = False  # Decay embedding tables too (nanoGPT does; no gain measured here).
  o.grad_clip = 1.0  # Global-norm clipping; 0 turns it off.
  o.state_dtype = "float32"  # Adam's moments and the update math, whatever model.param_dtype.

  config.train = t = ml_collections.ConfigDict()
  t.batch_size = 12  # Global: split over all devices.
  t.num_steps = 2000
  # > 0: passes over the train split instead; num_steps becomes num_epochs x the steps of one
  # (data.order sequential: before the streams wrap), and eval_every or checkpoint_every of 0
  # become one epoch. The resolved values are what the run's config.json records.
  t.num_epochs = 0
  t.log_every = 50  # Steps between train-metric lines in metrics.jsonl.
  t.eval_every = 500  # Steps between evaluations of the whole validation split.
  t.eval_batch_size = 0  # 0: the training batch size (also the harness's rows per batch).
  # lm-evaluation-harness tasks on the live parameters (docs/evaluation.md; needs .[harness]):
  t.eval_tasks = ""  # Task names, comma-separated ('' off), e.g. 'hellaswag,arc_easy'.
  t.eval_tasks_every = 500  # Steps between task evaluations; the last step is evaluated too.
  t.eval_tasks_limit = 0  # Documents per task (0: all).
  t.eval_tasks_include_path = ""  # A folder of task YAMLs (local data), besides the harness's own.
  t.checkpoint_every = 500  # Also saved at the end, and on SIGTERM/SIGINT.
  t.keep_checkpoints = 2  # The newest this many are kept...
  t.keep_best = False  # ...plus the best by validation loss (checkpoint steps then evaluate).
  t.grad_accum_steps = 1  # Microbatches per step (same update as the whole batch at once).
  # jit (one device), pmap, sharded (config.mesh), or auto: pmap on several devices, except on a
  # CPU for steps of 6 GFLOP per core or more, where one jit is faster (parallel.resolve_mode).
  t.parallel = "auto"
  t.init_from = ""  # A new run starts from this run's (or Hugging Face model dir's) parameters.
  # LoRA (lm_jax/lora.py): rank > 0 freezes the model's parameters and trains low-rank adapters
  # on the kernels `targets` names (regexes over parameter paths such as block_0/attn/qkv/kernel,
  # blocks/... when scanned); they add (alpha / rank) * dropout(x) A B to each layer's output.
  t.lora = ml_collections.ConfigDict()
  t.lora.rank = 0  # 0: every parameter trains.
  t.lora.alpha = 16.0
  t.lora.targets = [r".*attn/[^/]+/kernel", r".*mlp/[^/]+/kernel"]  # Attention and MLP kernels.
  t.lora.dropout = 0.0  # On the adapters' inputs, while training.
  t.profile_steps = []  # [first, last]: a jax.profiler trace of those steps in WORKDIR/profile/.
  t.compilation_cache = True  # JAX's persistent compilation cache in data.cache_dir/jax_cache.
  # What the run trains for (lm_jax/objectives): 'lm' next-token prediction; 'dpo' preference
  # pairs (data.format='preference', configs/dpo.py); 'grpo' rewards (configs/grpo.py).
  t.objective = "lm"
  t.dpo = ml_collections.ConfigDict()
  t.dpo.loss = "sigmoid"  # sigmoid (DPO), ipo (IPO, per token) or simpo (SimPO: no reference).
  t.dpo.beta = 0.1  # How far the policy may move from the reference (SimPO's reward scale).
  t.dpo.simpo_gamma = 0.5  # simpo: the target margin between the two rewards.
  # 'grpo': prompts (data.format='prompt'), completions sampled each step and scored
  # (configs/grpo.py); train.batch_size counts completions, whole groups of group_size.
  t.grpo = ml_collections.ConfigDict()
  t.grpo.reward = ""  # 'package.module:function', comma-separated for several.
  t.grpo.reward_weights = []  # One weight per function ([]: all 1).
  t.grpo.group_size = 8  # Completions per prompt; advantages are normalised within a group.
  t.grpo.max_new_tokens = 64  # Longest completion; data.seq_len holds prompt and completion.
  t.grpo.temperature = 1.0  # Sampling temperature of the completions (evaluation: greedy).
  t.grpo.kl = 0.04  # Coefficient of the KL penalty to the starting model (0: no reference).
  t.grpo.clip = 0.2  # The policy ratio's clip range, 1 +- clip.
  # Weights & Biases (docs/training.md; needs .[wandb]): metrics.jsonl's rows, this config and
  # run.json in a W&B run whose files lie in WORKDIR/wandb; a resumed run continues it.
  t.wandb = ml_collections.ConfigDict()
  t.wandb.project = ""  # '' off.
  t.wandb.entity = ""  # A team or user ('' = the logged-in user's default).
  t.wandb.name = ""  # '' = the workdir's folder name.
  t.wandb.group = ""  # Runs shown together ('' none; a sweep sets its root's folder name).
  t.wandb.tags = []  # Strings, e.g. ['baseline', 'cpu'].
  # online, offline (files only; upload later with `wandb sync`) or disabled. Online falls back
  # to offline, with a warning, when W&B's server takes no connection.
  t.wandb.mode = "online"

  # Evaluation protocol (every one scores each next-token prediction once, from exact sums).
  config.eval = e = ml_collections.ConfigDict()
  e.carry = False  # Recurrent models: eval_batch_size contiguous streams, state carried across
  # windows (PyTorch's word_language_model); false: each window starts from zeros.
  e.stride = 0  # > 0: windows every `stride` tokens, each scoring its last `stride` (Hugging
  # Face's perplexity guide: more context per token); 0: consecutive windows.

  config.mesh = ml_collections.ConfigDict()  # train.parallel='sharded': device mesh axes.
  config.mesh.data = -1  # Batch split; -1 takes the devices the other axes leave.
  config.mesh.fsdp = 1  # Batch split too, and each parameter split along its largest dim.
  # Tensor parallelism: attention split by heads, the MLP by width, embeddings and head by
  # vocabulary, over groups of this many devices (lm_jax/placement.py); rows are not split.
  config.mesh.tensor = 1
  return configs.preset(config, arg)
