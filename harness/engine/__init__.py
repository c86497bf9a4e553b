"""The engine package: the only code that touches llama_cpp.

- `llama`: loading models (`Engine`), the Python timing path, extra contexts on a loaded model;
- `native`: the native timing path (libharness_native through ctypes);
- `backend`: what the measurement code talks to: `InProcess` (this process) and the request loop
  of the worker process;
- `supervisor`: `WorkerEngine`, the sweep process's handle on a supervised worker process that
  runs an `InProcess` backend; a worker that dies or hangs fails the request, never the caller.
"""

from .llama import (Engine, EngineError, ExtraContext, LoadedModel, PromptTooLong, RawRep, context_view,
                    engine_info, free_context, generate, gpu_offload_supported, new_context, perf_fields,
                    prompt_tokens, releases_gil, reset, set_threads)

__all__ = ["Engine", "EngineError", "ExtraContext", "LoadedModel", "PromptTooLong", "RawRep", "context_view",
           "engine_info", "free_context", "generate", "gpu_offload_supported", "new_context", "perf_fields",
           "prompt_tokens", "releases_gil", "reset", "set_threads"]
