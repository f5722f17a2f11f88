"""Device selection and explicit generators."""

import pytest
import torch

from handbook.device import default_device, make_generator


def test_cpu_is_chosen_when_no_accelerator_or_when_asked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")
    monkeypatch.setenv("HANDBOOK_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")


def test_an_accelerator_is_preferred_when_present(monkeypatch):
    monkeypatch.delenv("HANDBOOK_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert default_device() == torch.device("mps")


def test_bad_device_names_the_argument(monkeypatch):
    with pytest.raises(ValueError, match="device"):
        default_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda"):
        default_device("cuda")


def test_generator_is_seeded_and_on_cpu():
    a = torch.randn(5, generator=make_generator(3))
    b = torch.randn(5, generator=make_generator(3))
    c = torch.randn(5, generator=make_generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert make_generator(0).device.type == "cpu"


@pytest.mark.parametrize("seed", [1.5, "7", True])
def test_bad_seed_names_the_argument(seed):
    with pytest.raises(ValueError, match="seed"):
        make_generator(seed)
