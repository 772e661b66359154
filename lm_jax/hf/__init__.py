"""Hugging Face models: configs (architectures), weights, and runs made from or written as them."""
