"""Constrained decoding replayed from a CUDA graph: the whole loop of one batch shape in one launch.

On a GPU, a decoding step of a small model is a few hundred kernel launches that each take the host
longer to issue than the device to run, so at small batches the host sets the pace. Captured once as a
CUDA graph (the loop runs every step with no host sync: ``run_beams(until_done=False)``, which decodes
the same docids), the loop is replayed by one call. A graph holds fixed shapes and addresses: one is built
per (queries, beams, query tokens, tries), and each replay first copies the encoder's output into the
graph's input buffers. Results are copies, so a later replay does not change them. Every tensor the
graph reads that was made before the capture (start beams, tries, step state) is held as long as the
graph: the replay reads those addresses, whatever the allocator has since given them to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from genret.decoding.beam import BeamResult, Trie, run_beams, start_beams, trie_step_fn
from genret.decoding.model import EncodedQueries, Seq2SeqBackend


class GraphedDecode:
    def __init__(self, backend: Seq2SeqBackend, example: EncodedQueries, tries: Sequence[Trie], beams: int,
                 kernel_backend: str = "auto", scoring: str = "vocab", warmup: int = 2) -> None:
        device = backend.device
        if device.type != "cuda":
            raise ValueError(f"a CUDA graph needs a CUDA device, not {device}")
        if len(tries) != example.hidden.shape[0]:
            raise ValueError(f"{example.hidden.shape[0]} queries but {len(tries)} tries")
        with torch.inference_mode():
            self._hidden, self._mask = example.hidden.clone(), example.mask.clone()
            step = trie_step_fn(backend, tries, beams, kernel_backend, scoring)
            nodes, scores = start_beams([t.roots for t in tries], beams, device)
            steps = max(t.forest.max_depth for t in tries)
            enc = EncodedQueries(self._hidden, self._mask)

            def loop() -> BeamResult:
                return run_beams(backend, enc, nodes, scores, beams, steps, step, until_done=False)

            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # compiles kernels and settles the allocator before capture
                for _ in range(warmup):
                    loop()
            torch.cuda.current_stream(device).wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._out = loop()
        self._held = (nodes, scores, step, tuple(tries))

    def __call__(self, enc: EncodedQueries) -> BeamResult:
        if enc.hidden.shape != self._hidden.shape or enc.mask.shape != self._mask.shape:
            raise ValueError(f"this graph decodes encoder states of shape {tuple(self._hidden.shape)}, "
                             f"got {tuple(enc.hidden.shape)}")
        with torch.inference_mode():
            self._hidden.copy_(enc.hidden)
            self._mask.copy_(enc.mask)
            self._graph.replay()
            return BeamResult(self._out.leaves.clone(), self._out.scores.clone(), self._out.steps)
