import torch

from quant_hooks.quantizers.workspace import release_workspace, workspace


def test_buffers_are_reused_grown_and_released():
    release_workspace()
    a = workspace('t', 10, torch.float32)
    assert a.shape == (10, ) and a.dtype == torch.float32
    b = workspace('t', 4, torch.float32)
    assert b.data_ptr() == a.data_ptr() and b.numel() == 4  # a smaller request reuses the buffer
    c = workspace('t', 20, torch.float32)
    assert c.numel() == 20 and c.data_ptr() != a.data_ptr()  # a larger one replaces it
    d = workspace('t', 5, torch.int32)
    assert d.dtype == torch.int32  # another dtype replaces it too
    ones = workspace('ones', 6, torch.float64, fill=1.0)
    assert torch.equal(ones, torch.ones(6, dtype=torch.float64))
    workspace('f', 3, torch.float32).fill_(7.0)
    release_workspace()
    assert torch.equal(workspace('f', 3, torch.float32, fill=2.0), torch.full((3, ), 2.0))  # made anew
    release_workspace()
