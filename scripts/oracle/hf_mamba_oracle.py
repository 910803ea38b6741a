#!/usr/bin/env python3
"""Writes the Hugging Face oracle for magellan's Mamba path: tests/fixtures/hf_mamba_oracle.h5.

HF transformers' MambaForCausalLM (its plain PyTorch path, on the CPU, in float64) on random
weights gives the reference that tests/model/test_hf_mamba_oracle.cpp checks magellan against:

  /hf/<name>               every parameter under HF's own name (backbone.layers.0.mixer.A_log...)
  /inputs/tokens           int32 (B, T)
  /inputs/targets          int32 (B, T), -1 = ignored
  /outputs/logits          float64 (B, T, V)
  /outputs/loss            float64 [] mean cross-entropy over the counted targets
  /grads/<name>            float64, d loss / d parameter (HF names; the tied lm_head folded in)
  /generate/prompt         int32 (1, P)
  /generate/tokens         int32 (1, P + G): greedy decoding through HF's recurrent cache path
  /generate/scores         float64 (G, V): the logits each generated token was chosen from
  attributes on /: the config (vocab_size, hidden_size, ...), torch and transformers versions

With --hf-dir the same model is also saved by HF's save_pretrained (config.json and float32
model.safetensors: what `magellan import-hf` reads, tests/fixtures/hf_mamba_tiny/), and with
--dtypes a safetensors file of every float dtype is written by the safetensors library.

Run where torch, transformers, safetensors and h5py are installed (magellan used the lent
device machine; transformers 5.17, torch 2.11):
  python3 scripts/oracle/hf_mamba_oracle.py tests/fixtures/hf_mamba_oracle.h5 \
      --hf-dir tests/fixtures/hf_mamba_tiny --dtypes tests/fixtures/safetensors_dtypes.safetensors

Precision: HF's slow path computes RMSNorm, A = -exp(A_log) and the B used in the scan in
float32 even in a float64 model, so the reference is good to about 1e-6 relative, not 1e-15.
The residual is kept in the model's dtype (residual_in_fp32=False) so it is not rounded too.
"""
import argparse
import sys

import numpy as np


CONFIG = dict(
    vocab_size=37,
    hidden_size=16,
    state_size=4,
    num_hidden_layers=3,
    expand=2,
    conv_kernel=4,
    time_step_rank=3,
    layer_norm_epsilon=1e-5,
    use_bias=False,
    use_conv_bias=True,
    residual_in_fp32=False,
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)
BATCH, SEQ, PROMPT, GENERATED = 2, 11, 5, 9


def plain_logits(model, ids):
    """design.md's Mamba math as a slow float64 loop over HF's parameters: the referee when
    HF's two paths (forward, cached generation) disagree. ids (B, T) -> logits (B, T, V)."""
    import torch
    import torch.nn.functional as F

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + CONFIG["layer_norm_epsilon"]) * w

    emb = model.backbone.embeddings.weight
    x = emb[ids]  # (B, T, C)
    T = ids.shape[1]
    for layer in model.backbone.layers:
        mx = layer.mixer
        xs, z = (rms(x, layer.norm.weight) @ mx.in_proj.weight.T).chunk(2, -1)  # (B, T, D) x2
        K = mx.conv1d.weight.shape[-1]
        padded = F.pad(xs.transpose(1, 2), (K - 1, 0))  # (B, D, T + K - 1)
        conv = sum(mx.conv1d.weight[:, 0, k, None] * padded[:, :, k:k + T] for k in range(K))
        u = F.silu(conv + mx.conv1d.bias[:, None]).transpose(1, 2)  # (B, T, D)
        R, N = CONFIG["time_step_rank"], CONFIG["state_size"]
        dt, Bm, Cm = torch.split(u @ mx.x_proj.weight.T, [R, N, N], dim=-1)
        delta = F.softplus(dt @ mx.dt_proj.weight.T + mx.dt_proj.bias)  # (B, T, D)
        A = -torch.exp(mx.A_log)  # (D, N)
        state = torch.zeros(ids.shape[0], A.shape[0], N, dtype=x.dtype)  # (B, D, N)
        ys = []
        for t in range(T):
            d = delta[:, t, :, None]
            state = torch.exp(d * A) * state + d * Bm[:, t, None, :] * u[:, t, :, None]
            ys.append((state * Cm[:, t, None, :]).sum(-1) + mx.D * u[:, t])
        x = x + (torch.stack(ys, 1) * F.silu(z)) @ mx.out_proj.weight.T
    return rms(x, model.backbone.norm_f.weight) @ emb.T


def build_arrays(seed):
    import torch
    import transformers
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    model = MambaForCausalLM(MambaConfig(**CONFIG)).double().eval()
    with torch.no_grad():
        # HF's init leaves small logits (embedding std 0.02) and tidy A_log / D: move every
        # parameter off its init so each one matters, keeping A_log's and dt's structure.
        for name, p in model.named_parameters():
            if name.endswith("embeddings.weight"):
                p.normal_(0.0, 0.3)
            elif name.endswith("out_proj.weight"):
                p.add_(0.6 * torch.randn_like(p))  # mixers must matter against the tied head
            elif name.endswith("A_log") or name.endswith("dt_proj.bias"):
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.add_(0.2 * torch.randn_like(p))

    vocab = CONFIG["vocab_size"]
    tokens = torch.randint(0, vocab, (BATCH, SEQ))
    targets = torch.randint(0, vocab, (BATCH, SEQ))
    targets[0, 3] = -1
    targets[1, 0] = -1
    targets[1, 7] = -1

    model.zero_grad()
    logits = model(input_ids=tokens, use_cache=False).logits  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-1)
    loss.backward()

    arrays = {
        "inputs/tokens": tokens.numpy().astype(np.int32),
        "inputs/targets": targets.numpy().astype(np.int32),
        "outputs/logits": logits.detach().numpy(),
        "outputs/loss": np.array(loss.item()),
    }
    for name, p in model.named_parameters():  # tied: lm_head.weight is the embedding
        arrays["hf/" + name] = p.detach().numpy().copy()
        arrays["grads/" + name] = p.grad.numpy().copy()

    prompt = torch.randint(0, vocab, (1, PROMPT))
    with torch.no_grad():
        # No end-of-sequence token, so exactly GENERATED tokens; raw logits, not processed scores.
        # attention_mask given: generate would otherwise mask prompt tokens equal to pad (0).
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                             max_new_tokens=GENERATED, do_sample=False, use_cache=True,
                             eos_token_id=None, pad_token_id=0, output_logits=True,
                             output_scores=True, return_dict_in_generate=True)
        step_logits = getattr(out, "logits", None) or out.scores
        assert out.sequences.shape == (1, PROMPT + GENERATED), out.sequences.shape
        # The cache path against a full forward of the whole generated sequence.
        full = model(input_ids=out.sequences, use_cache=False).logits[0, PROMPT - 1:-1]
        cached = torch.cat(step_logits, 0)
        plain = plain_logits(model, out.sequences)[0, PROMPT - 1:-1]
        gap_cached = (cached - plain).abs().max().item()
        gap_forward = (full - plain).abs().max().item()
        print(f"seed {seed}: max |HF logit - plain loop| forward {gap_forward:.3g}, "
              f"cached generation {gap_cached:.3g} (max |logit| {plain.abs().max().item():.3g})",
              file=sys.stderr)
        assert (logits - plain_logits(model, tokens)).abs().max().item() < 1e-5
    arrays["generate/prompt"] = prompt.numpy().astype(np.int32)
    arrays["generate/tokens"] = out.sequences.numpy().astype(np.int32)
    arrays["generate/scores"] = cached.numpy()  # (G, V)
    attrs_extra = {"cached_generation_gap": gap_cached, "forward_gap": gap_forward}

    attrs = dict(CONFIG)
    attrs["seed"] = seed
    attrs.update(attrs_extra)
    attrs["torch_version"] = str(torch.__version__)  # TorchVersion is a str subclass h5py refuses
    attrs["transformers_version"] = str(transformers.__version__)
    attrs["path"] = "MambaForCausalLM, float64, CPU (torch reference path), random weights"
    return arrays, attrs, model


def write_h5(path, arrays, attrs):
    import h5py

    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in attrs.items():
            if isinstance(value, (bool, np.bool_)):
                value = int(value)  # h5py writes bools as an HDF5 enum; plain readers want ints
            f.attrs[key] = np.bytes_(value) if isinstance(value, str) else value


def write_dtype_samples(path):
    """Values exactly representable in every dtype (so each reads back as `ref`), written by
    the safetensors library: the independent writer for magellan's safetensors reader."""
    import torch
    from safetensors.torch import save_file

    ref = torch.tensor([0.0, -0.0, 1.5, -2.25, 0.125, 1024.0, -3.0e-3, 6.103515625e-05,
                        float("inf"), float("-inf"), 7.0, -0.5], dtype=torch.float64)
    ref[6] = ref[6].to(torch.bfloat16).to(torch.float16).double()  # exact in bf16 and f16
    ref = ref.reshape(3, 4)
    save_file({
        "ref": ref,
        "as_f32": ref.float(),
        "as_f16": ref.half(),
        "as_bf16": ref.bfloat16(),
        "ids_i64": torch.arange(6, dtype=torch.int64).reshape(2, 3),  # not a float: refused
        "empty": torch.zeros(0, 4, dtype=torch.float32),
    }, path, metadata={"format": "pt", "writer": "scripts/oracle/hf_mamba_oracle.py"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output .h5")
    ap.add_argument("--hf-dir", help="also save the chosen model with save_pretrained (float32 "
                    "safetensors + config.json) into this directory")
    ap.add_argument("--dtypes", metavar="FILE", help="also write a safetensors file of every "
                    "float dtype (tests/fixtures/safetensors_dtypes.safetensors)")
    args = ap.parse_args()

    # The first seed whose greedy continuation is not one token repeated (random weights with a
    # tied head like to repeat), so the decoding check sees the state carry information.
    for seed in range(1234, 1334):
        arrays, attrs, model = build_arrays(seed)
        generated = arrays["generate/tokens"][0, PROMPT:].tolist()
        if (len(set(generated)) >= 5 and attrs["cached_generation_gap"] < 1e-5
                and attrs["forward_gap"] < 1e-5):
            break
    else:
        raise SystemExit("no seed in 1234..1333 gave a varied continuation with HF's paths agreeing")
    write_h5(args.out, arrays, attrs)
    if args.hf_dir:
        import torch
        model.to(torch.float32).save_pretrained(args.hf_dir, safe_serialization=True)
    if args.dtypes:
        write_dtype_samples(args.dtypes)
    print(f"wrote {args.out}: seed {attrs['seed']}, loss {arrays['outputs/loss'].item():.6f}, "
          f"generated {generated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
