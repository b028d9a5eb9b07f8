"""lightning-rnn: fast, drop-in recurrent networks with Triton kernels and Lightning recipes."""
__version__ = "0.1.0"
