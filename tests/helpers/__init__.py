"""What both test tiers build from (a module per concern; no test module imports another).

models, states: tiny models and train states; hf: tokenizers and Hugging Face models; data:
data configs, token caches and memory checks; runs: config files, scripts, logged losses;
experiments: run directories made without training; trees: tree equalities.
"""
