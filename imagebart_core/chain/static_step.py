"""Static-shape token steps: every token step of a transition has the same tensor shapes.

The eager step (``net.step``) attends to the keys written so far (a growing slice of the KV cache) and is driven
by Python integers. A static step (``net.step_at``) writes its position of the cache, allocated once at the
transition's final length, at an index held in a tensor, and attends to the whole cache under an additive mask
(-inf after the index); its inputs and outputs have the same shapes and memory at every token. That is what
``torch.compile`` needs to compile one step for the whole transition, and what CUDA graphs need to replay it.

Step modes (``ImageBART.step_mode``, ``run_transition(step_mode=...)``):

* ``"eager"`` (default): ``net.step`` on the fast kernels of :mod:`imagebart_core.fast_decode`.
* ``"static"``: ``net.step_at`` run eagerly (the same numbers; a check of the static path, no speed gain).
* ``"compiled"``: ``net.step_at`` compiled once per scale with ``torch.compile`` (on CUDA with
  ``mode="reduce-overhead"``, which captures CUDA graphs); the first transition of each scale pays the
  compilation (tens of seconds on a CPU; Inductor's disk cache makes it a few seconds in later processes), later
  ones reuse it. Needs a C++ compiler on CPU. On CPU the compiled step runs on
  :class:`~imagebart_core.fast_decode.RowReductionKernels` and only one-row steps (batch 1 without guidance) are
  compiled: a token step then reads its weights at close to the memory's speed (full-size ffhq, two threads, one
  run: scale 1 19.3 -> 8.8 ms, the top scale 46.5 -> 29.1 ms in float32, 11.5 -> 3.8 and 27.1 -> 15.7 ms in
  bfloat16; docs/performance.md). With several rows the eager packed kernels are faster than any compiled variant
  measured, so such steps run eagerly. After a transition's first step, Dynamo checks only the guards that tell
  its compiled graphs apart (:meth:`StaticStepper._unchecked_step`).

Tokens equal the eager step's; logits agree to float rounding (the masked keys get exactly zero weight).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

import torch

from ..fast_decode import COMPILE_OPTIONS
from ..transformer import SOS_TOKEN, DecodeState

STEP_MODES = ("eager", "static", "compiled")

#: A scale's static step: (state, index int64 [1], prev int64 [B]) -> logits [B, K].
StaticStep = Callable[[DecodeState, torch.Tensor, torch.Tensor], torch.Tensor]


def runs_compiled(mode: str, device_type: str, rows: int) -> bool:
    """Whether token steps of ``rows`` rows (batch x condition sets, x2 with guidance) on ``device_type`` run
    compiled in step mode ``mode``: on CPU only one-row steps do; several rows run on the eager packed kernels,
    faster there than any compiled step measured (see the module docstring)."""
    return check_step_mode(mode) == "compiled" and (device_type != "cpu" or rows == 1)


def cpu_compiler() -> str | None:
    """The C++ compiler ``torch.compile`` uses for CPU code (Inductor's own search: the one ``CXX`` names, else
    g++, clang++ on macOS), or None where none works."""
    from torch._inductor import cpp_builder  # in every torch that has compiler.set_stance, which compiled steps use

    try:
        return cpp_builder.get_cpp_compiler()
    except Exception:  # Inductor raises its InvalidCxxCompiler (or a platform check's error) when none works
        return None


def require_compiler(device_type: str) -> None:
    """Raise a clear error where compiled steps on ``device_type`` cannot be built: on the CPU ``torch.compile``
    needs a C++ compiler. Called before anything is compiled or any weight is re-laid out."""
    if device_type == "cpu" and cpu_compiler() is None:
        raise RuntimeError(
            "compiled token steps on the CPU need a C++ compiler for torch.compile, and none was found (torch "
            "uses the one the CXX environment variable names, else g++; clang++ on macOS). Install one "
            "(Debian/Ubuntu: apt install g++; Fedora: dnf install gcc-c++; macOS: xcode-select --install; "
            "Windows: the Visual Studio Build Tools) or use the eager step mode")


def check_step_mode(mode: str) -> str:
    if mode not in STEP_MODES:
        raise ValueError(f"step_mode must be one of {', '.join(STEP_MODES)}; got {mode!r}")
    return mode


class StaticStepper:
    """Runs one transition's token steps through a scale's ``step_at`` (eagerly, or compiled once and kept in
    ``compiled``, a mapping the caller owns, e.g. one per model, keyed by the scale network)."""

    def __init__(self, net: torch.nn.Module, mode: str, compiled: MutableMapping[int, StaticStep] | None = None):
        self.net = net
        self.step: StaticStep = net.step_at
        self.compiled = check_step_mode(mode) == "compiled"
        self.checked: DecodeState | None = None  # the state whose steps already ran with all of Dynamo's guards
        if self.compiled:
            cache = compiled if compiled is not None else {}
            step = cache.get(id(net))
            if step is None:
                device = next(net.parameters()).device.type
                if device == "cuda":
                    step = torch.compile(net.step_at, dynamic=False, mode="reduce-overhead")
                elif device == "cpu":
                    step = torch.compile(net.step_at, dynamic=False, options=COMPILE_OPTIONS)
                else:
                    step = torch.compile(net.step_at, dynamic=False)
                cache[id(net)] = step
            self.step = step

    def __call__(self, state: DecodeState, m: int, prev: torch.Tensor | None) -> torch.Tensor:
        """Logits [B, K] for local token ``m`` of the current window (as ``net.step(state, m, prev, scale)``)."""
        if state.prefix_logits is not None and m == 0:  # decoder-only: token 0 comes from the prefix pass
            return state.prefix_logits
        position = state.caches[0].length
        if prev is None:
            b = state.caches[0].k.shape[0]
            prev = torch.full((b,), SOS_TOKEN, dtype=torch.long, device=state.caches[0].k.device)
        index = torch.tensor([position], dtype=torch.long, device=prev.device)
        logits = self._unchecked_step(state, index, prev) if state is self.checked else None
        if logits is None:
            logits = self.step(state, index, prev)
            self.checked = state if self.compiled else None
        for cache in state.caches:
            cache.length = position + 1
        return logits

    def _unchecked_step(self, state: DecodeState, index: torch.Tensor, prev: torch.Tensor) -> torch.Tensor | None:
        """The compiled step with only the guards that tell its compiled graphs apart (the state and shapes are
        those of a step that passed all guards; full-size ffhq: 0.1-0.3 ms of about 4-11 ms per step). None where
        the inputs need a graph not compiled yet (e.g. another stride of ``prev``): Dynamo refuses before running
        anything, and the caller runs the fully guarded step."""
        try:
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                return self.step(state, index, prev)
        except RuntimeError as err:
            if "skip_guard_eval_unsafe" not in str(err):
                raise
            return None
