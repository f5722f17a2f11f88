"""Checkpoints: bit-identical round trip, a complete manifest, and clear errors for bad files."""

import json

import pytest
import torch
from torch import nn

from handbook.checkpoints import MANIFEST_FIELDS, load_checkpoint, save_checkpoint, sha256_of
from handbook.device import make_generator


def _model(seed: int = 0) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    g = make_generator(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


MANIFEST = {
    "command": "python -m handbook.zoo train tiny",
    "seed": 0,
    "steps": 10,
    "seconds": 1.5,
    "metrics": {"accuracy": 0.5},
    "config": {"width": 8},
}


def test_round_trip_is_bit_identical_and_the_manifest_is_complete(tmp_path):
    model = _model(0)
    written = save_checkpoint(tmp_path / "tiny", model, MANIFEST)
    assert (tmp_path / "tiny.safetensors").is_file() and (tmp_path / "tiny.json").is_file()
    assert not list(tmp_path.glob("*.tmp"))

    on_disk = json.loads((tmp_path / "tiny.json").read_text())
    assert on_disk == written
    assert set(MANIFEST_FIELDS) <= set(on_disk)
    assert on_disk["name"] == "tiny" and on_disk["seed"] == 0 and on_disk["config"] == {"width": 8}
    assert on_disk["sha256"] == sha256_of(tmp_path / "tiny.safetensors")
    assert on_disk["torch_version"] == torch.__version__

    restored = _model(1)
    state, manifest = load_checkpoint(tmp_path / "tiny", model=restored)
    assert manifest == on_disk
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v)
        assert torch.equal(restored.state_dict()[k], v)
    # The suffix may be given, too.
    state2, _ = load_checkpoint(tmp_path / "tiny.safetensors")
    assert state2.keys() == state.keys()


def test_the_weights_file_is_not_a_pickle(tmp_path):
    save_checkpoint(tmp_path / "tiny", _model(0), MANIFEST)
    data = (tmp_path / "tiny.safetensors").read_bytes()
    assert not data.startswith(b"\x80")  # the pickle protocol marker
    header_len = int.from_bytes(data[:8], "little")
    assert json.loads(data[8 : 8 + header_len])["0.weight"]["dtype"] == "F32"


def test_a_flipped_byte_is_detected(tmp_path):
    save_checkpoint(tmp_path / "tiny", _model(0), MANIFEST)
    path = tmp_path / "tiny.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's bytes: the file still parses, the hash does not
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt") as err:
        load_checkpoint(tmp_path / "tiny")
    assert MANIFEST["command"] in str(err.value)
    # Without verification the (wrong) tensors load: verification is what catches it.
    state, _ = load_checkpoint(tmp_path / "tiny", verify=False)
    original = _model(0).state_dict()
    assert any(not torch.equal(state[k], original[k]) for k in original)


def test_a_truncated_file_is_detected_even_without_verification(tmp_path):
    save_checkpoint(tmp_path / "tiny", _model(0), MANIFEST)
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path / "tiny")
    with pytest.raises(ValueError, match="safetensors"):
        load_checkpoint(tmp_path / "tiny", verify=False)


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(tmp_path / "tiny", _model(0), MANIFEST)
    (tmp_path / "tiny.json").unlink()
    with pytest.raises(FileNotFoundError, match="tiny.json"):
        load_checkpoint(tmp_path / "tiny")


def test_key_and_shape_mismatches_name_the_keys(tmp_path):
    save_checkpoint(tmp_path / "tiny", _model(0), MANIFEST)
    wider = nn.Sequential(nn.Linear(3, 16), nn.LayerNorm(16), nn.Linear(16, 2))
    with pytest.raises(ValueError, match=r"'0\.weight' \(checkpoint \(8, 3\), model \(16, 3\)\)"):
        load_checkpoint(tmp_path / "tiny", model=wider)
    deeper = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"missing keys: '3\.weight', '3\.bias'"):
        load_checkpoint(tmp_path / "tiny", model=deeper)
    shallower = nn.Sequential(nn.Linear(3, 8))
    with pytest.raises(ValueError, match=r"unexpected keys: .*'2\.weight'"):
        load_checkpoint(tmp_path / "tiny", model=shallower)


def test_tied_weights_and_a_plain_state_dict_can_be_saved(tmp_path):
    embedding = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = embedding.weight  # tied: two names, one storage
    tied = nn.ModuleDict({"embedding": embedding, "head": head})
    save_checkpoint(tmp_path / "tied", tied, {})
    state, manifest = load_checkpoint(tmp_path / "tied")
    assert torch.equal(state["head.weight"], state["embedding.weight"])
    assert manifest["name"] == "tied"
    save_checkpoint(tmp_path / "plain", {"x": torch.arange(3)}, {})
    assert torch.equal(load_checkpoint(tmp_path / "plain")[0]["x"], torch.arange(3))


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="model_or_state_dict"):
        save_checkpoint(tmp_path / "x", [1, 2], {})
    with pytest.raises(ValueError, match="not tensors"):
        save_checkpoint(tmp_path / "x", {"a": 1}, {})
    with pytest.raises(ValueError, match="'bad'"):
        save_checkpoint(tmp_path / "x", _model(0), {"bad": object()})
    with pytest.raises(ValueError, match="manifest"):
        save_checkpoint(tmp_path / "x", _model(0), ["not", "a", "dict"])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_load_rejects_a_broken_manifest(tmp_path):
    save_checkpoint(tmp_path / "tiny", _model(0), MANIFEST)
    (tmp_path / "tiny.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(tmp_path / "tiny")
    (tmp_path / "tiny.json").write_text("{}")
    with pytest.raises(ValueError, match="no sha256"):
        load_checkpoint(tmp_path / "tiny")
