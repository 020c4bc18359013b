"""Loading a model from files that a user points predict at: tensors only, never code."""

import os

import pytest
import torch

from osteo.checkpoints import UnsafeCheckpointError, load_state_dict, save_state_dict
from osteo.models.module import DprClassifier


class Payload:
    """Unpickling this runs os.system: what a crafted checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_a_pickled_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    m = DprClassifier("vgg16_tiny", depth=1, input_hw=(70, 350))
    evil = tmp_path / "best.ckpt"
    torch.save({"state_dict": m.state_dict(), "extra": Payload(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError, match="refused.*could run code"):
        load_state_dict(evil)
    assert not marker.exists()  # the payload never ran
    # the same file, unpickled without the guard, does run it: the test can fail
    with open(evil, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.exists()


def test_plain_state_dicts_and_safetensors_load(tmp_path):
    m = DprClassifier("vgg16_tiny", depth=1, input_hw=(70, 350))
    torch.save({"state_dict": m.state_dict(), "epoch": 3}, tmp_path / "plain.ckpt")
    save_state_dict(m, tmp_path / "w.safetensors")
    for f in ("plain.ckpt", "w.safetensors"):
        sd = load_state_dict(tmp_path / f)
        assert sd.keys() == m.state_dict().keys()
        assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    assert oct((tmp_path / "w.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

