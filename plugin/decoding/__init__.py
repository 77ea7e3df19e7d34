"""The decoding layer: the seq2seq backend and its docid output head, the trie forest, constrained beam search."""
