"""The cutoff-weighted attention (softmax over logits + log f) against its definition (softmax,
times f, renormalised), with first and second derivatives, and finite gradients for keys whose
cutoff weight underflows."""

import torch

from pet import PET, PETHypers
from pet.compute import compute
from pet.neighbors import build_graph
from pet.transformer import CutoffAttention, definition_attention


def attention_inputs():
    torch.manual_seed(3)
    module = CutoffAttention(8, 2).double()
    tokens = torch.randn(4, 5, 8, dtype=torch.float64, requires_grad=True)
    key_weights = torch.rand(4, 5, dtype=torch.float64)
    key_weights[:, 0] = 1.0  # the central token
    key_weights[1, 3:] = 0.0  # padding
    key_weights[2, 2] = 1e-5  # a key close to the cutoff
    return module, tokens, key_weights.requires_grad_(True)


def test_attention_equals_its_definition_with_first_and_second_derivatives():
    module, tokens, key_weights = attention_inputs()
    results = []
    for function in (module, lambda t, w: definition_attention(module, t, w)):
        output = function(tokens, key_weights)
        first = torch.autograd.grad((output**2).sum(), [tokens, key_weights], create_graph=True)
        # what training on forces needs: the parameters' gradient of a loss on first derivatives
        second = torch.autograd.grad(sum((g**2).sum() for g in first), list(module.parameters()))
        results.append([output, *first, *second])
    for new, reference in zip(*results):
        torch.testing.assert_close(new, reference, rtol=1e-10, atol=1e-12)


def test_padding_keys_have_no_influence():
    module, tokens, key_weights = attention_inputs()
    changed = tokens.detach().clone()
    changed[1, 3:] += 100.0  # padding tokens of sequence 1 (queries there change, keys must not act)
    before, after = module(tokens, key_weights), module(changed, key_weights)
    torch.testing.assert_close(before[1, :3], after[1, :3], rtol=0, atol=1e-12)


def test_force_training_gradients_stay_finite_when_a_cutoff_weight_underflows():
    """A pair 1e-7 Å inside the cutoff (f ~ 1e-12 in float64; 0 in float32) and padding keys: energy,
    forces and the parameter gradient of a force loss are finite, in float32 and float64."""
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = PET(PETHypers(n_gnn=2, d_pet=16, n_tl=1, n_heads=2, d_feedforward=32, d_head=16),
                    species=[1, 8]).to(dtype)
        positions = [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 5.0 - 1e-7], [0.0, 0.0, 2.5]]
        graph = build_graph([[8, 1, 1, 8]], [positions], [[[0.0] * 3] * 3], [False], 4.0)
        result = compute(model, graph.to(dtype=dtype), create_graph=True)
        loss = (result.forces**2).sum() + result.energy.sum()
        gradients = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        assert torch.isfinite(result.forces).all()
        assert all(torch.isfinite(g).all() for g in gradients if g is not None)
