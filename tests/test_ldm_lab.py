"""handbook.ldm_lab: the peak-memory counter, the occupancy grids and the 3D autoencoder of chapter 7's lab."""

import math

import pytest
import torch

from handbook import ldm_lab
from handbook.ldm_lab import LabAutoencoder
from handbook.shapeworld import SHAPES, SIZES, occupancy
from handbook.vae import vae_loss


def test_peak_memory_counts_what_is_alive_at_once():
    def work():
        a = torch.zeros(1000)          # 4,000 bytes
        b = torch.zeros(2000)          # 8,000: 12,000 alive
        del a                          # 8,000
        c = torch.zeros(500)           # 10,000
        c.view(10, 50)                 # a view allocates nothing
        return b.sum() + c.sum()

    result, peak = ldm_lab.peak_memory(work)
    assert result.item() == 0.0
    assert peak == 12_000


def test_peak_memory_of_attention_grows_with_the_square_of_the_tokens():
    def scores(T):
        q = torch.randn(1, T, 8)
        return ldm_lab.peak_memory(lambda: (q @ q.transpose(1, 2)).softmax(-1))[1]

    assert scores(64) == 2 * 64 * 64 * 4            # the scores and their softmax
    assert scores(128) == 4 * scores(64)


def test_peak_memory_ignores_tensors_made_before_the_call():
    big = torch.zeros(10_000)
    _, peak = ldm_lab.peak_memory(lambda: big[:10].sum())
    assert peak < 1000


def test_peak_memory_rejects_a_non_callable():
    with pytest.raises(ValueError, match="fn"):
        ldm_lab.peak_memory(3)


def test_rotations_are_orthogonal_and_turn_as_stated():
    R = ldm_lab.rotation_matrices(torch.tensor([0.3, math.pi / 2]), torch.tensor([0.7, 0.0]))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(R[1] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)


def test_occupancy_grids_are_the_true_shapes_in_their_poses():
    data = ldm_lab.occupancy_grids(6, resolution=8, seed=3, max_tilt_degrees=0.0)
    grids = data["grids"]
    assert grids.shape == (6, 1, 8, 8, 8) and set(grids.unique().tolist()) <= {0.0, 1.0}
    points = ldm_lab.grid_points(8).reshape(-1, 3)
    for i in range(6):
        shape, size = SHAPES[data["shape"][i]], SIZES[data["size"][i]]
        if shape in ("sphere", "cylinder", "cone", "torus"):   # symmetric about y: any yaw gives the same grid
            assert torch.equal(grids[i, 0].flatten().bool(), occupancy(points, shape, size))
    again = ldm_lab.occupancy_grids(6, resolution=8, seed=3, max_tilt_degrees=0.0)
    assert torch.equal(again["grids"], grids)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_lab_autoencoder_of_images_shapes_gradients_and_vae_loss(levels):
    model = LabAutoencoder(in_channels=3, latent_channels=2, levels=levels, width=4, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    f = model.downsampling
    assert f == 2 ** levels
    posterior = model.encode(x)
    assert posterior.mean.shape == (2, 2, 16 // f, 16 // f)
    assert model.decode(posterior.mode()).shape == x.shape
    loss, parts = vae_loss(model, x, beta=1e-3, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and parts["kl"] > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_lab_autoencoder_is_seeded():
    a, b = (LabAutoencoder(generator=torch.Generator().manual_seed(5)) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_lab_autoencoder_of_grids_and_its_loss():
    model = LabAutoencoder(in_channels=1, latent_channels=3, levels=2, width=4, dims=3,
                           generator=torch.Generator().manual_seed(0))
    x = ldm_lab.occupancy_grids(2, resolution=8, seed=0)["grids"]
    posterior = model.encode(x)
    assert posterior.mean.shape == (2, 3, 2, 4)             # (B, L, r, r*r) for r = R / 4 = 2
    assert model.decode(posterior.mode().reshape(2, 3, 2, 2, 2)).shape == (2, 1, 8, 8, 8)
    assert torch.equal(model.decode(posterior.mode()), model.decode(posterior.mode().reshape(2, 3, 2, 2, 2)))
    loss = ldm_lab.voxel_vae_loss(model, x, beta=1e-3, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("dims", [2, 3])
def test_lab_autoencoder_without_a_stem_starts_and_ends_at_the_stride_2_layers(dims):
    model = LabAutoencoder(in_channels=1, latent_channels=2, levels=2, width=4, dims=dims, stem=False,
                           generator=torch.Generator().manual_seed(0))
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d,
                                                          torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))]
    assert convs[0].stride[0] == 2 and convs[-1].stride[0] == 2 and convs[-1].out_channels == 1
    x = torch.zeros(2, 1, *[8] * dims)
    assert model(x)[0].shape == x.shape


def test_lab_autoencoder_rejects_what_it_cannot_halve():
    with pytest.raises(ValueError, match="side of x"):
        LabAutoencoder(width=4, levels=2).encode(torch.zeros(1, 3, 6, 6))
    with pytest.raises(ValueError, match="x"):
        LabAutoencoder(width=4, dims=3).encode(torch.zeros(1, 1, 8, 8))
