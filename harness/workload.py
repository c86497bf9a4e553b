"""Prompts for the configured workloads.

A workload becomes either text (tokenised inside the timed window, so TTFT includes tokenisation)
or a fixed token sequence (`random_tokens`, mirroring llama-bench's pp tests). The tokenizer is
passed in (engine.LoadedModel satisfies the protocol), so this module never touches llama_cpp.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from .config import WorkloadConfig


class Tokenizer(Protocol):
    n_vocab: int
    bos_token: int
    bos_text: str
    eog_tokens: tuple[int, ...]

    def tokenize(self, text: str, add_bos: bool) -> list[int]: ...

    def apply_chat_template(self, messages: list[dict]) -> str | None: ...


@dataclass(frozen=True)
class Prompt:
    text: str | None
    tokens: tuple[int, ...] | None
    add_bos: bool
    n_tokens: int  # prompt length as the engine will see it
    chat_template_applied: bool
    note: str = ""

    def summary(self) -> dict:
        return {"n_tokens": self.n_tokens, "chat_template_applied": self.chat_template_applied,
                "kind": "tokens" if self.tokens is not None else "text", "note": self.note,
                "text_head": (self.text or "")[:200]}


def _messages(w: WorkloadConfig, user: str) -> list[dict]:
    msgs = []
    if w.system:
        msgs.append({"role": "system", "content": w.system})
    msgs.append({"role": "user", "content": user})
    return msgs


def _text_prompt(w: WorkloadConfig, tok: Tokenizer, user: str) -> Prompt:
    note = ""
    if w.chat_template:
        text = tok.apply_chat_template(_messages(w, user))
        if text is not None:
            # The template writes the BOS token itself; adding another would double it.
            add_bos = not (tok.bos_text and text.startswith(tok.bos_text))
            return Prompt(text=text, tokens=None, add_bos=add_bos,
                          n_tokens=len(tok.tokenize(text, add_bos)), chat_template_applied=True)
        note = "model has no chat template: plain prompt used"
    text = (w.system + "\n\n" + user) if w.system else user
    return Prompt(text=text, tokens=None, add_bos=True, n_tokens=len(tok.tokenize(text, True)),
                  chat_template_applied=False, note=note)


def build_prompt(w: WorkloadConfig, tok: Tokenizer, seed: int) -> Prompt:
    """The prompt for workload `w`; deterministic for a given seed and model."""
    if w.kind == "random_tokens":
        assert w.prompt_tokens is not None
        rng = random.Random(seed)
        banned = set(tok.eog_tokens) | {tok.bos_token}
        ids = [tok.bos_token] if tok.bos_token >= 0 else []
        while len(ids) < w.prompt_tokens:
            t = rng.randrange(tok.n_vocab)
            if t not in banned:
                ids.append(t)
        return Prompt(text=None, tokens=tuple(ids), add_bos=False, n_tokens=len(ids),
                      chat_template_applied=False, note=f"{w.prompt_tokens} random tokens (seed {seed})")
    if w.kind == "fill_to_length":
        assert w.prompt_tokens is not None
        return _fill_to_length(w, tok)
    return _text_prompt(w, tok, w.prompt)


def _fill_to_length(w: WorkloadConfig, tok: Tokenizer) -> Prompt:
    """Repeat the workload's passage (then ask a question about it) until the prompt is as close
    to `prompt_tokens` as whole paragraphs allow without exceeding it."""
    target = w.prompt_tokens or 0
    passage = w.prompt.strip()
    question = "\n\nSummarise the text above in three sentences."
    per = max(1, len(tok.tokenize(passage + "\n\n", False)))
    reps = max(1, target // per)
    while True:
        p = _text_prompt(w, tok, "\n\n".join([passage] * reps) + question)
        if p.n_tokens <= target or reps == 1:
            break
        reps -= 1
    # Grow back while it still fits: templates add a fixed overhead we only see after formatting.
    while True:
        nxt = _text_prompt(w, tok, "\n\n".join([passage] * (reps + 1)) + question)
        if nxt.n_tokens > target:
            break
        p, reps = nxt, reps + 1
    return Prompt(text=p.text, tokens=None, add_bos=p.add_bos, n_tokens=p.n_tokens,
                  chat_template_applied=p.chat_template_applied,
                  note=f"passage x{reps}, {p.n_tokens} of {target} target tokens")
