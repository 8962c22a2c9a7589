"""Our training loss projects only real target tokens; it must equal the models' own loss exactly."""

import pytest
import torch
from transformers import (BertConfig, EncoderDecoderConfig, EncoderDecoderModel, LlamaConfig, LlamaForCausalLM,
                          T5Config, T5ForConditionalGeneration)

from distill_step_by_step.modeling import token_loss

VOCAB = 97


def padded_batch(lengths_src: list[int], lengths_tgt: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids, right-padded; padding in the labels is -100 as in our collate."""
    g = torch.Generator().manual_seed(seed)
    n, s, t = len(lengths_src), max(lengths_src), max(lengths_tgt)
    ids, mask = torch.zeros(n, s, dtype=torch.long), torch.zeros(n, s, dtype=torch.long)
    labels = torch.full((n, t), -100, dtype=torch.long)
    for i, (ls, lt) in enumerate(zip(lengths_src, lengths_tgt)):
        ids[i, :ls] = torch.randint(3, VOCAB, (ls,), generator=g)
        mask[i, :ls] = 1
        labels[i, :lt] = torch.randint(3, VOCAB, (lt,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def seq2seq_models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1,
                                             num_heads=2, d_kv=16, decoder_start_token_id=0, pad_token_id=0))
    bert = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**bert), BertConfig(**bert))
    cfg.decoder_start_token_id, cfg.pad_token_id = 1, 0
    return [t5, EncoderDecoderModel(config=cfg)]


@pytest.mark.parametrize("index", [0, 1], ids=["t5", "bert2bert"])
def test_seq2seq_loss_equals_the_models_own_loss(index):
    model = seq2seq_models()[index].eval()
    batch = padded_batch([7, 3, 5], [2, 6, 4])
    projected = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: projected.append(out.shape[:-1]))
    with torch.no_grad():
        ours = token_loss(model, batch, causal=False)
    hook.remove()
    with torch.no_grad():
        theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert projected == [torch.Size([2 + 6 + 4])]  # only the real target tokens went through the head
    # the selection is only active inside the loss: a plain forward still returns every position's logits
    assert model(**batch).logits.shape[:2] == batch["labels"].shape


def test_causal_loss_equals_the_models_own_loss():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    batch = padded_batch([9, 6], [9, 6])
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    batch["labels"][:, :3] = -100  # the prompt is not a target
    with torch.no_grad():
        ours = token_loss(model, batch, causal=True)
        theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_gradients_match_the_full_projection():
    model = seq2seq_models()[1].eval()  # no dropout: both backward passes see the same forward
    batch = padded_batch([7, 3, 5], [2, 6, 4], seed=1)
    token_loss(model, batch, causal=False).backward()
    ours = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model(**batch).loss.backward()
    theirs = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(ours) == len(theirs) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs))
