"""The indexing layer: docid assignment, training pairs, generated queries, training, the index build."""
