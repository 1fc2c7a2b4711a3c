"""The reverse chain: turning logits into tokens, one transition, sliding windows, and the whole chain."""
