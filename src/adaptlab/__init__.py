"""adaptlab: tune one pretrained language model into a specialist, or prompt it as a
generalist, and measure every choice on the same task side by side."""

__version__ = "0.1.0"
