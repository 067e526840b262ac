"""Readers and writers for the file formats of other tools (SentencePiece, checkpoints)."""
