"""handbook.nerf: ShapeWorld's camera, volume rendering and the voxel radiance field of chapter 8."""

import pytest
import torch

from handbook import nerf, shapeworld


def test_compositing_weights_match_nerfacc_documented_example():
    # nerfacc's render_weight_from_density example: sigma = [0.4, 0.8, 0.1], delta = 1
    weights = nerf.compositing_weights(torch.tensor([0.4, 0.8, 0.1]), torch.ones(3))
    assert torch.allclose(weights, torch.tensor([0.32968, 0.36913, 0.02866]), atol=1e-5)


def test_rays_are_shapeworld_camera_rays_with_the_light_in_the_world():
    rays = nerf.camera_rays(40.0, 25.0, resolution=8)
    origin, directions = shapeworld.camera_rays(40.0, 25.0, resolution=8)
    assert torch.equal(rays.origin, origin) and torch.equal(rays.directions, directions)
    assert rays.light.norm().item() == pytest.approx(1.0, abs=1e-6)
    # the light sits above the camera's view and towards the camera: positive on the backward axis
    assert (rays.light @ (rays.origin / rays.origin.norm())).item() > 0.5


def _match(field, shape, views):
    """Silhouette IoU (opacity > 0.5 against the render's mask) and PSNR of each view, against shapeworld.render."""
    ious, psnrs = [], []
    for azimuth, elevation in views:
        with torch.no_grad():
            ours = nerf.volume_render(field, nerf.camera_rays(azimuth, elevation, resolution=32), samples=256)
        truth = shapeworld.render(shape, "orange", "large", azimuth, elevation, resolution=32)
        mask = ours.opacity > 0.5
        ious.append(((mask & truth.mask).sum() / (mask | truth.mask).sum()).item())
        psnrs.append((10 * torch.log10(1 / ((ours.image - truth.image) ** 2).mean().clamp_min(1e-12))).item())
    return ious, psnrs


def _random_views(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(float(a), float(e)) for a, e in zip(torch.rand(n, generator=g) * 360, torch.rand(n, generator=g) * 180 - 90)]


@pytest.mark.parametrize("shape", shapeworld.SHAPES)
def test_the_field_of_the_exact_occupancy_renders_as_shapeworld_draws_it(shape):
    # same camera, pose convention, light, shading and background: every view matches (the bar)
    ious, psnrs = _match(nerf.ExactField(shape, "orange", "large"), shape, _random_views(8, seed=7))
    assert min(ious) >= 0.95 and min(psnrs) >= 28.0, (ious, psnrs)


@pytest.mark.parametrize("shape", shapeworld.SHAPES)
def test_a_voxel_grid_of_the_object_renders_close_to_it(shape):
    # a 128^3 grid blurs the surface by a voxel: at 32x32 a few silhouette pixels flip (measured: mean IoU
    # 0.96-1.0, mean PSNR 26-37 dB over these three views)
    field = nerf.VoxelField.from_object(shape, "orange", "large")
    ious, psnrs = _match(field, shape, ((30.0, 20.0), (250.0, 70.0), (100.0, -30.0)))
    assert sum(ious) / 3 >= 0.95 and min(ious) >= 0.9, ious
    assert sum(psnrs) / 3 >= 25.0, psnrs


def test_stratified_samples_are_random_but_reproducible_and_gradients_reach_the_grids():
    field = nerf.VoxelField(grid=8, initial_density=1.0)
    rays = nerf.camera_rays(0.0, 0.0, resolution=4)
    a = nerf.volume_render(field, rays, samples=6, generator=torch.Generator().manual_seed(0))
    b = nerf.volume_render(field, rays, samples=6, generator=torch.Generator().manual_seed(0))
    c = nerf.volume_render(field, rays, samples=6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)
    assert a.image.shape == (3, 4, 4) and a.weights.shape == (4, 4, 6)
    assert torch.allclose(a.opacity, a.weights.sum(-1))
    a.image.sum().backward()
    assert field.density.grad.abs().sum() > 0 and field.albedo.grad.abs().sum() > 0


def test_shading_modes():
    albedo = torch.tensor([[0.5, 0.2, 1.0]])
    normal, light = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0.0, 0.0, 1.0])
    assert torch.allclose(nerf.shade(albedo, normal, light, "shaded"), albedo)            # facing the light
    assert torch.allclose(nerf.shade(albedo, -normal, light, "shaded"), 0.4 * albedo)     # ambient only
    assert torch.equal(nerf.shade(albedo, -normal, light, "albedo"), albedo)
    assert torch.allclose(nerf.shade(albedo, -normal, light, "textureless"), torch.full((1, 3), 0.4))


@pytest.mark.parametrize("call, match", [
    (lambda: nerf.camera_rays(0.0, 0.0, resolution=0), "resolution"),
    (lambda: nerf.camera_rays(0.0, 95.0), "elevation"),
    (lambda: nerf.VoxelField(grid=1), "grid"),
    (lambda: nerf.ExactField("pyramid", "red", "large"), "shape"),
    (lambda: nerf.VoxelField(grid=4)(torch.zeros(5, 2)), "points"),
    (lambda: nerf.volume_render(nerf.VoxelField(grid=4), nerf.camera_rays(0.0, 0.0, resolution=2), samples=0),
     "samples"),
    (lambda: nerf.volume_render(nerf.VoxelField(grid=4), nerf.camera_rays(0.0, 0.0, resolution=2), shading="x"),
     "shading"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
