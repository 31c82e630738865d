"""Attention kernels on packed rows (tasks.attention): the document mask they share, and the
encoder's proof on every kernel (the decoder's is in tests/stages/test_pretrain.py)."""

import pytest
import torch

from schemas.training import ModelConfig
from tasks import attention, mlm

TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


def test_documents_follow_position_resets_and_padding_is_its_own_segment():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1]])  # docs of 3 and 2, then 2 padding slots
    assert attention.document_ids(positions).tolist() == [[0, 0, 0, 1, 1, 2, 2]]
    causal = attention.dense_mask(positions, causal=True)[0, 0]
    assert causal[4].tolist() == [False, False, False, True, True, False, False]
    assert attention.dense_mask(positions, causal=False)[0, 0, 3].tolist() == [0, 0, 0, 1, 1, 0, 0]
    additive = attention.additive_mask(positions, causal=True)[0, 0]
    assert torch.equal(additive == 0, causal)


def test_auto_is_flex_on_cuda_and_sdpa_on_cpu_where_flex_cannot_train():
    assert attention.resolve("auto", torch.device("cuda", 0)) == "flex"
    assert attention.resolve("auto", torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="flex cannot train on CPU"):
        attention.check_trainable("flex", torch.device("cpu"))


@pytest.mark.parametrize("kernel", attention.KERNELS)
def test_encoder_documents_attend_only_within_themselves(kernel):
    torch.manual_seed(0)
    model = attention.use(mlm.new_encoder(TINY, 100, 64), kernel, causal=False).eval()
    docs = [[1, 20, 21, 22, 2], [1, 30, 31, 2]]
    ids = torch.tensor([docs[0] + docs[1] + [0, 0]])
    with torch.no_grad():
        packed = model(ids, position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1]])).logits[0]
        alone = model(torch.tensor([docs[1]])).logits[0]
        leaky = model(ids, position_ids=torch.arange(11)[None]).logits[0]  # no reset: one document
    assert (packed[5:9] - alone).abs().max() <= 1e-5
    assert (leaky[5:9] - alone).abs().max() > 1e-4  # the check can fail
