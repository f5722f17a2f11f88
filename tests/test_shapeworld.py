"""Tests of handbook.shapeworld: geometry, rendering, captions, tokenizer, 2D points, data set."""

from __future__ import annotations

import math

import pytest
import torch

import handbook.shapeworld as sw
from handbook.shapeworld import dataset as ds
from handbook.shapeworld import geometry as geo


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


ALL_CAPTIONS = [sw.caption(s, c, z, view) for s in sw.SHAPES for c in sw.COLOURS for z in sw.SIZES
                for view in (None, *sw.VIEWS)]


VIEWPOINTS = [(30.0, 20.0), (135.0, -25.0), (250.0, 60.0)]     # (azimuth, elevation) in degrees


# ---- constants ------------------------------------------------------------------------------

def test_constants_follow_the_contract():
    assert sw.SHAPES == ("sphere", "cube", "cylinder", "cone", "torus")
    assert sw.COLOURS == ("red", "green", "blue", "yellow", "purple", "orange")
    assert sw.SIZES == ("small", "large")
    assert sw.VIEWS == ("above", "the side", "below")
    assert sw.OUTLINES == ("circle", "square", "triangle", "star", "heart")
    assert set(sw.COLOUR_RGB) == set(sw.COLOURS)
    for rgb in [*sw.COLOUR_RGB.values(), sw.BACKGROUND]:
        assert len(rgb) == 3 and all(0.0 <= v <= 1.0 for v in rgb)
    assert sw.DEFAULT_DISTANCE > max(geo.BOUNDING_RADIUS.values())


# ---- geometry -------------------------------------------------------------------------------

INSIDE = {"sphere": (0.0, 0.0, 0.0), "cube": (0.7, -0.7, 0.7), "cylinder": (0.0, 0.7, 0.7),
          "cone": (0.0, -0.5, 0.0), "torus": (0.8, 0.0, 0.0)}


@pytest.mark.parametrize("shape", sw.SHAPES)
def test_sdf_sign_inside_and_outside(shape):
    inside = torch.tensor(INSIDE[shape])
    outside = torch.tensor([[0.0, 2.0, 0.0], [1.5, 0.0, 1.5], [-2.0, -2.0, 0.0]])
    assert sw.signed_distance(inside, shape, "large") < 0
    assert (sw.signed_distance(outside, shape, "large") > 0).all()
    assert sw.occupancy(inside, shape, "large").dtype == torch.bool
    assert sw.occupancy(inside, shape, "large") and not sw.occupancy(outside, shape, "large").any()
    # The small object is the large one scaled by SIZE_SCALE["small"] about the origin.
    scale = sw.SIZE_SCALE["small"]
    assert sw.signed_distance(inside * scale, shape, "small") < 0


@pytest.mark.parametrize("shape,point,expected", [
    ("sphere", (2.0, 0.0, 0.0), 1.0), ("sphere", (0.0, 0.0, 0.0), -1.0),
    ("cube", (2.0, 0.0, 0.0), 1.2), ("cube", (1.0, 1.0, 1.0), 0.2 * math.sqrt(3)), ("cube", (0.0, 0.0, 0.0), -0.8),
    ("cylinder", (0.0, 2.0, 0.0), 1.2), ("cylinder", (0.0, 0.0, 2.0), 1.2), ("cylinder", (0.0, 0.0, 0.0), -0.8),
    ("cylinder", (1.1, 1.2, 0.0), 0.5),                         # nearest point is the rim: (0.3, 0.4) away
    ("cone", (0.0, 1.9, 0.0), 1.0), ("cone", (0.0, -1.4, 0.0), 0.5), ("cone", (2.0, -0.9, 0.0), 1.0),
    ("torus", (0.0, 0.0, 0.0), 0.5), ("torus", (0.8, 0.0, 0.0), -0.3), ("torus", (0.0, 1.0, 0.8), 0.7),
])
def test_sdf_exact_values(shape, point, expected):
    value = sw.signed_distance(torch.tensor(point, dtype=torch.float64), shape, "large")
    assert value.item() == pytest.approx(expected, abs=1e-6)
    small = sw.signed_distance(torch.tensor(point, dtype=torch.float64) * 0.6, shape, "small")
    assert small.item() == pytest.approx(expected * 0.6, abs=1e-6)


@pytest.mark.parametrize("shape", sw.SHAPES)
def test_sdf_is_exact_unit_gradient_and_projection_lands_on_surface(shape):
    # An exact SDF has |grad| = 1 almost everywhere, and stepping back by sdf along the gradient
    # lands on the surface. A mere bound (e.g. a cone approximated by a scaled sphere) fails this.
    g = torch.Generator().manual_seed(0)
    points = (torch.rand(4000, 3, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_()
    distance = sw.signed_distance(points, shape, "large")
    (gradient,) = torch.autograd.grad(distance.sum(), points)
    norm = gradient.norm(dim=-1)
    assert (norm - 1).abs().median() < 1e-6
    assert ((norm - 1).abs() < 1e-4).float().mean() > 0.99
    projected = points.detach() - distance.detach()[:, None] * gradient
    on_surface = sw.signed_distance(projected, shape, "large").abs()
    assert (on_surface < 1e-6).float().mean() > 0.98


@pytest.mark.parametrize("shape,volume", [
    ("sphere", 4 / 3 * math.pi), ("cube", 1.6**3), ("cylinder", math.pi * 0.8**2 * 1.6),
    ("cone", math.pi * 1.0**2 * 1.8 / 3), ("torus", 2 * math.pi**2 * 0.8 * 0.3**2),
])
def test_occupancy_volume_matches_formula(shape, volume):
    g = torch.Generator().manual_seed(1)
    side = 3.0
    points = torch.rand(200_000, 3, generator=g) * side - side / 2
    estimate = sw.occupancy(points, shape, "large").float().mean().item() * side**3
    assert estimate == pytest.approx(volume, rel=0.03)


def test_sdf_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="^points:"):
        sw.signed_distance(torch.zeros(4, 2), "sphere", "large")
    with pytest.raises(ValueError, match="^points:"):
        sw.signed_distance([0.0, 0.0, 0.0], "sphere", "large")
    with pytest.raises(ValueError, match="^shape:"):
        sw.signed_distance(torch.zeros(3), "cubee", "large")
    with pytest.raises(ValueError, match="^size:"):
        sw.occupancy(torch.zeros(3), "cube", "huge")


# ---- rendering --------------------------------------------------------------------------------

def test_render_fields_shapes_and_ranges():
    r = sw.render("cube", "red", "large", resolution=24)
    assert r.image.shape == (3, 24, 24) and r.image.dtype == torch.float32
    assert r.mask.shape == (24, 24) and r.mask.dtype == torch.bool
    assert r.depth.shape == (24, 24) and r.depth.dtype == torch.float32
    assert 0 <= r.image.min() and r.image.max() <= 1
    assert torch.equal(r.mask, torch.isfinite(r.depth))
    assert 0 < r.mask.float().mean() < 1
    background = torch.tensor(sw.BACKGROUND)[:, None]
    assert torch.allclose(r.image[:, ~r.mask], background)
    # Depth is a distance along the ray: around DEFAULT_DISTANCE minus about the object's size.
    depth = r.depth[r.mask]
    assert (depth > sw.DEFAULT_DISTANCE - 1.5).all() and (depth < sw.DEFAULT_DISTANCE + 1.5).all()


@pytest.mark.parametrize("colour", sw.COLOURS)
def test_object_pixels_have_the_colour_hue(colour):
    r = sw.render("sphere", colour, "large", resolution=16)
    mean = r.image[:, r.mask].mean(dim=1)
    rgb = torch.tensor(sw.COLOUR_RGB[colour])
    # Shading scales the colour (Lambert), so the direction of the RGB vector is preserved.
    cosine = torch.nn.functional.cosine_similarity(mean, rgb, dim=0)
    assert cosine > 0.999
    others = [torch.tensor(sw.COLOUR_RGB[c]) for c in sw.COLOURS if c != colour]
    assert all(torch.nn.functional.cosine_similarity(mean, o, dim=0) < cosine for o in others)


def test_shading_is_visible_and_lit_from_the_upper_left():
    r = sw.render("sphere", "blue", "large", resolution=32)
    brightness = r.image.sum(0)
    assert brightness[r.mask].std() > 0.05
    upper_left = brightness[8:16, 8:16][r.mask[8:16, 8:16]].mean()
    lower_right = brightness[16:24, 16:24][r.mask[16:24, 16:24]].mean()
    assert upper_left > lower_right


def test_render_batch_shapes_and_agreement_with_render():
    shapes = torch.tensor([0, 1, 2, 3, 4, 1])
    colours = torch.tensor([0, 1, 2, 3, 4, 5])
    sizes = torch.tensor([0, 1, 0, 1, 0, 1])
    azimuth = torch.tensor([0.0, 30.0, 60.0, 90.0, 180.0, 300.0])
    elevation = torch.tensor([-30.0, 0.0, 20.0, 45.0, 60.0, 90.0])
    batch = sw.render_batch(shapes, colours, sizes, azimuth, elevation, resolution=16)
    assert batch.images.shape == (6, 3, 16, 16) and batch.images.dtype == torch.float32
    assert batch.masks.shape == (6, 1, 16, 16) and batch.masks.dtype == torch.bool
    assert batch.depth.shape == (6, 1, 16, 16)
    assert torch.equal(batch.masks, torch.isfinite(batch.depth))
    for i in range(6):
        single = sw.render(sw.SHAPES[shapes[i]], sw.COLOURS[colours[i]], sw.SIZES[sizes[i]],
                           float(azimuth[i]), float(elevation[i]), resolution=16)
        assert torch.allclose(single.image, batch.images[i], atol=1e-5)
        assert torch.equal(single.mask, batch.masks[i, 0])


def test_render_batch_is_deterministic_and_distance_default():
    g = torch.Generator().manual_seed(0)
    n = 40
    args = (torch.arange(n) % 5, torch.randint(6, (n,), generator=g), torch.randint(2, (n,), generator=g),
            torch.rand(n, generator=g) * 360, torch.rand(n, generator=g) * 90 - 30)
    a = sw.render_batch(*args, resolution=16)
    b = sw.render_batch(*args, resolution=16)
    c = sw.render_batch(*args, distance=torch.full((n,), sw.DEFAULT_DISTANCE), resolution=16)
    for x, y in ((a, b), (a, c)):
        assert torch.equal(x.images, y.images) and torch.equal(x.masks, y.masks) and torch.equal(x.depth, y.depth)
    farther = sw.render_batch(*args, distance=2 * sw.DEFAULT_DISTANCE, resolution=16)
    assert farther.masks.sum() < a.masks.sum()


@pytest.mark.parametrize("shape", sw.SHAPES)
@pytest.mark.parametrize("size", sw.SIZES)
def test_hits_lie_on_the_surface_and_misses_never_cross_it(shape, size):
    resolution, tolerance = 16, 2e-3
    for azimuth, elevation in VIEWPOINTS:
        r = sw.render(shape, "green", size, azimuth, elevation, resolution=resolution)
        origin, directions = sw.camera_rays(azimuth, elevation, sw.DEFAULT_DISTANCE, resolution)
        assert torch.allclose(directions.norm(dim=-1), torch.ones(resolution, resolution), atol=1e-6)
        hits = origin + r.depth[r.mask][:, None] * directions[r.mask]                        # (N, 3)
        assert sw.signed_distance(hits, shape, size).abs().max() < tolerance
        # A missed ray must stay outside: sample it densely through the bounding sphere.
        radius = sw.bounding_radius(shape, size)
        t = torch.linspace(sw.DEFAULT_DISTANCE - radius, sw.DEFAULT_DISTANCE + radius, 300)
        along = origin + t[:, None, None] * directions[~r.mask][None]                       # (T, M, 3)
        assert sw.signed_distance(along, shape, size).min() > -tolerance


@pytest.mark.parametrize("shape,elevation,expected", [
    ("sphere", 90.0, 1.0), ("sphere", 0.0, 1.0), ("cube", 90.0, 0.8), ("cube", 0.0, 0.8),
    ("cylinder", 90.0, 0.8), ("cylinder", -90.0, 0.8), ("cylinder", 0.0, 0.8),
    ("cone", 90.0, 0.9), ("cone", -90.0, 0.9), ("cone", 0.0, 0.5),      # apex, base, half-way up the side
    ("torus", 0.0, 1.1), ("torus", 90.0, None),                          # from above: through the hole
])
@pytest.mark.parametrize("size", sw.SIZES)
def test_centre_pixel_depth(shape, elevation, expected, size):
    # With an odd resolution the centre ray runs straight at the origin (along an axis here),
    # so it meets the surface at the distance minus the object's extent along that axis. (The
    # tolerance allows for the cone's apex, a double root that float32 pins down to ~1e-3.)
    r = sw.render(shape, "red", size, azimuth=0.0, elevation=elevation, resolution=9)
    depth = r.depth[4, 4].item()
    if expected is None:
        assert depth == math.inf and not r.mask[4, 4]
    else:
        assert depth == pytest.approx(sw.DEFAULT_DISTANCE - expected * sw.SIZE_SCALE[size], abs=2e-3)


def test_sizes_and_framing():
    large = sw.render("sphere", "red", "large", resolution=32).mask
    small = sw.render("sphere", "red", "small", resolution=32).mask
    width = large.any(0).float().sum() / 32
    assert 0.45 <= width <= 0.65
    ratio = small.float().sum() / large.float().sum()
    assert ratio == pytest.approx(sw.SIZE_SCALE["small"] ** 2, rel=0.15)


def test_orientation_cone_apex_up_cylinder_upright_torus_flat():
    cone = sw.render("cone", "red", "large", elevation=0.0, resolution=32).mask
    rows = cone.any(1).nonzero().flatten()
    top, bottom = cone[rows[0] + 1].sum(), cone[rows[-1] - 1].sum()
    assert top < bottom / 3                        # narrow at the top, wide at the base
    cylinder = sw.render("cylinder", "red", "large", elevation=0.0, resolution=32).mask
    assert cylinder[rows[0] + 2].sum() == pytest.approx(cylinder[rows[-1] - 2].sum(), abs=1)
    torus_side = sw.render("torus", "red", "large", elevation=0.0, resolution=32).mask
    height, width = torus_side.any(1).sum(), torus_side.any(0).sum()
    assert height < width / 2.5                    # a flat band from the side
    torus_top = sw.render("torus", "red", "large", elevation=90.0, resolution=32).mask
    assert not torus_top[15:17, 15:17].any() and torus_top.any(0).sum() > 12    # a ring from above


def test_render_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="^shape:"):
        sw.render("pyramid", "red", "large")
    with pytest.raises(ValueError, match="^colour:"):
        sw.render("cube", "pink", "large")
    with pytest.raises(ValueError, match="^size:"):
        sw.render("cube", "red", "medium")
    for resolution in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="^resolution:"):
            sw.render("cube", "red", "large", resolution=resolution)
    with pytest.raises(ValueError, match="^distance:"):
        sw.render("cube", "red", "large", distance=1.2)        # inside the cube's corners
    for elevation in (90.5, -120.0):
        with pytest.raises(ValueError, match="^elevation:"):
            sw.render("cube", "red", "large", elevation=elevation)
    ok = dict(shape_idx=torch.tensor([0, 1]), colour_idx=torch.tensor([0, 1]), size_idx=torch.tensor([0, 1]),
              azimuth=torch.tensor([0.0, 1.0]), elevation=torch.tensor([0.0, 1.0]))
    bad = [("colour_idx", torch.tensor([0])), ("azimuth", torch.zeros(2, 1)), ("shape_idx", torch.tensor([0, 7])),
           ("size_idx", torch.tensor([0.0, 1.0])), ("elevation", torch.tensor([0.0, 95.0])),
           ("distance", torch.tensor([5.0, 0.5])), ("shape_idx", torch.zeros(2, 2, dtype=torch.long))]
    for name, value in bad:
        with pytest.raises(ValueError, match=f"^{name}:"):
            sw.render_batch(**{**ok, name: value})


# ---- captions and tokenizer -----------------------------------------------------------------------

def test_view_of_thresholds_and_errors():
    assert sw.view_of(60.0) == "above" and sw.view_of(90) == "above"
    assert sw.view_of(0.0) == "the side"
    assert sw.view_of(-30.0) == "below" and sw.view_of(-90) == "below"
    for bad in (90.1, -91.0, float("nan")):
        with pytest.raises(ValueError, match="^elevation"):
            sw.view_of(bad)


def test_view_index_is_view_of_for_a_tensor_at_the_thresholds():
    elevations = torch.tensor([-90.0, -10.0, -9.99, 0.0, 19.99, 20.0, 90.0])
    assert [sw.VIEWS[i] for i in sw.view_index(elevations)] == [sw.view_of(float(e)) for e in elevations]


def test_captions_valid_and_parse_round_trip():
    assert sw.caption("cube", "red", "large") == "a large red cube"
    assert sw.caption("torus", "blue", "small", "above") == "a small blue torus seen from above"
    assert len(set(ALL_CAPTIONS)) == 5 * 6 * 2 * 4
    for text in ALL_CAPTIONS:
        assert sw.is_valid_caption(text)
        parsed = sw.parse_caption(text)
        assert sw.caption(parsed["shape"], parsed["colour"], parsed["size"], parsed["view"]) == text
    assert sw.parse_caption("a small green cone seen from the side") == dict(
        shape="cone", colour="green", size="small", view="the side")


@pytest.mark.parametrize("text", [
    "a large red", "a huge red cube", "a large red cube seen from nowhere", "a large red cube cube",
    "the large red cube", "a red large cube", "a large red cube seen", "a large red cube seen from",
    "a large red cube from above", "a large red cube seen from above please", "a  large red cube",
    "A large red cube", "", "cube",
])
def test_invalid_captions_are_rejected(text):
    assert not sw.is_valid_caption(text)
    with pytest.raises(ValueError, match="^text:"):
        sw.parse_caption(text)


def test_caption_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="^colour:"):
        sw.caption("cube", "pink", "large")
    with pytest.raises(ValueError, match="^view:"):
        sw.caption("cube", "red", "large", view="nowhere")
    assert not sw.is_valid_caption(42)


def test_tokenizer_vocabulary_and_round_trip():
    tok = sw.CaptionTokenizer()
    assert tok.vocab_size == len(tok.vocab) == len(set(tok.vocab)) == 23
    assert len({tok.pad_id, tok.bos_id, tok.eos_id}) == 3
    lengths = []
    for text in ALL_CAPTIONS:
        ids = tok.encode(text)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.encode(text, add_special=False) == ids[1:-1]
        assert tok.decode(ids) == text
        lengths.append(len(ids))
    assert max(lengths) == sw.MAX_CAPTION_TOKENS == 10


def test_tokenizer_batch_padding_and_decode_rules():
    tok = sw.CaptionTokenizer()
    texts = ["a large red cube", "a small blue torus seen from the side"]
    batch = tok.encode_batch(texts)
    assert batch.dtype == torch.long and batch.shape == (2, 10)
    assert (batch[0, 6:] == tok.pad_id).all() and (batch[0, :6] != tok.pad_id).all()
    assert [tok.decode(row) for row in batch] == texts
    assert tok.encode_batch(texts, length=12).shape == (2, 12)
    with pytest.raises(ValueError, match="^length:"):
        tok.encode_batch(texts, length=9)
    # decode stops at <eos> and drops <pad>/<bos>
    red = tok.encode("red", add_special=False)[0]
    assert tok.decode([tok.bos_id, red, tok.pad_id, tok.eos_id, red]) == "red"
    with pytest.raises(ValueError, match="^ids:"):
        tok.decode([tok.vocab_size])


def test_tokenizer_unknown_word_raises():
    tok = sw.CaptionTokenizer()
    with pytest.raises(ValueError, match="^text:"):
        tok.encode("a large pink cube")
    with pytest.raises(ValueError, match="^text:"):
        tok.encode("<pad>")


# ---- 2D points ------------------------------------------------------------------------------

def _distance_to_polygon(points, vertices):
    start, end = vertices.double(), torch.roll(vertices.double(), -1, 0)                 # (V, 2)
    edge = end - start
    along = (((points.double()[:, None] - start) * edge).sum(-1) / (edge * edge).sum(-1)).clamp(0, 1)
    nearest = start + along[..., None] * edge                                             # (N, V, 2)
    return (points.double()[:, None] - nearest).norm(dim=-1).min(dim=1).values


@pytest.mark.parametrize("outline", sw.OUTLINES)
def test_outline_points_lie_on_the_outline(outline):
    g = torch.Generator().manual_seed(0)
    points = sw.outline_points(500, outline, generator=g)
    assert points.shape == (500, 2) and points.dtype == torch.float32
    assert points.abs().max() <= 1.0
    if outline == "circle":
        assert torch.allclose(points.norm(dim=-1), torch.full((500,), 0.9), atol=1e-6)
    else:
        assert _distance_to_polygon(points, sw.outline_polygon(outline)).max() < 1e-6
    noisy = sw.outline_points(2000, outline, noise=0.05, generator=g)
    assert 0.01 < _distance_to_polygon(noisy, sw.outline_polygon(outline)).mean() < 0.06


@pytest.mark.parametrize("outline", ["heart", "square", "star"])
def test_outline_points_uniform_by_arc_length(outline):
    # Where each point sits along the outline, as a fraction of its length, must be uniform.
    # The heart's polygon vertices are unevenly spaced, so per-vertex sampling would fail this.
    points = sw.outline_points(5_000, outline, generator=torch.Generator().manual_seed(0)).double()
    start = sw.outline_polygon(outline).double()
    edge = torch.roll(start, -1, 0) - start                                             # (V, 2)
    along = (((points[:, None] - start) * edge).sum(-1) / (edge * edge).sum(-1)).clamp(0, 1)   # (N, V)
    gap = (points[:, None] - (start + along[..., None] * edge)).norm(dim=-1)            # (N, V)
    nearest = gap.argmin(dim=1)                                                         # (N,)
    length = edge.norm(dim=-1)
    position = (length.cumsum(0) - length)[nearest] + along[torch.arange(len(points)), nearest] * length[nearest]
    histogram = torch.histc(position / length.sum(), bins=10, min=0, max=1) / len(points)
    assert torch.allclose(histogram, torch.full((10,), 0.1, dtype=torch.float64), atol=0.018)


def test_load_points_labels_and_determinism():
    points, labels = sw.load_points(1000, outlines=("square", "heart"), seed=3)
    noisy = sw.load_points(1000, outlines=("square", "heart"), noise=0.1, seed=3)
    assert torch.equal(noisy[0], sw.load_points(1000, outlines=("square", "heart"), noise=0.1, seed=3)[0])
    assert points.shape == (1000, 2) and labels.shape == (1000,) and labels.dtype == torch.long
    assert set(labels.tolist()) == {sw.OUTLINES.index("square"), sw.OUTLINES.index("heart")}
    for label in labels.unique().tolist():
        on = _distance_to_polygon(points[labels == label], sw.outline_polygon(sw.OUTLINES[label]))
        assert on.max() < 1e-6
    again = sw.load_points(1000, outlines=("square", "heart"), seed=3)
    assert torch.equal(points, again[0]) and torch.equal(labels, again[1])
    other = sw.load_points(1000, outlines=("square", "heart"), seed=4)
    assert not torch.equal(points, other[0])
    all_points, all_labels = sw.load_points(2000, noise=0.02)
    assert set(all_labels.tolist()) == set(range(len(sw.OUTLINES)))


def test_points_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="^outline:"):
        sw.outline_points(10, "hexagon")
    with pytest.raises(ValueError, match="^n:"):
        sw.outline_points(-1)
    with pytest.raises(ValueError, match="^noise:"):
        sw.outline_points(10, noise=-0.1)
    with pytest.raises(ValueError, match="^outlines:"):
        sw.load_points(10, outlines=("circle", "blob"))
    with pytest.raises(ValueError, match="^outlines:"):
        sw.load_points(10, outlines=())


# ---- data set -----------------------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh disk cache and an empty memory cache for each data set test."""
    monkeypatch.setenv("HANDBOOK_CACHE", str(tmp_path))
    ds.clear_memory_cache()
    yield tmp_path / "shapeworld"
    ds.clear_memory_cache()


def _keys(data):
    azimuth_step = data.azimuth.round().long()
    elevation_step = data.elevation.round().long() - ds.ELEVATION_RANGE_DEGREES[0]
    return ds.scene_keys(data.shape, data.colour, data.size, azimuth_step, elevation_step)


def test_load_images_fields(cache):
    data = sw.load_images("train", n=200, resolution=16, seed=0)
    assert isinstance(data, sw.ShapeWorldImages) and len(data) == 200
    assert data.images.shape == (200, 3, 16, 16) and data.images.dtype == torch.float32
    assert 0 <= data.images.min() and data.images.max() <= 1
    for name, count in (("shape", 5), ("colour", 6), ("size", 2)):
        values = getattr(data, name)
        assert values.dtype == torch.long and values.shape == (200,)
        assert values.min() >= 0 and values.max() < count
    for name in ("azimuth", "elevation", "distance"):
        assert getattr(data, name).dtype == torch.float32 and getattr(data, name).shape == (200,)
    assert (data.azimuth >= 0).all() and (data.azimuth < 360).all()
    assert (data.elevation >= -30).all() and (data.elevation <= 60).all()
    assert torch.equal(data.elevation, data.elevation.round())          # on the one-degree grid
    assert (data.distance == sw.DEFAULT_DISTANCE).all()
    assert torch.equal(data.class_index, data.shape * 6 + data.colour)
    item = data[3]
    assert set(item) == {"image", "shape", "colour", "size", "azimuth", "elevation", "distance", "caption"}
    assert torch.equal(item["image"], data.images[3]) and item["caption"] == data.captions[3]


def test_load_images_captions_match_labels_and_tokenize(cache):
    data = sw.load_images("val", n=300, resolution=8, seed=1)
    tok = sw.CaptionTokenizer()
    views = set()
    for i, text in enumerate(data.captions):
        parsed = sw.parse_caption(text)
        assert parsed == dict(shape=sw.SHAPES[data.shape[i]], colour=sw.COLOURS[data.colour[i]],
                              size=sw.SIZES[data.size[i]], view=sw.view_of(float(data.elevation[i])))
        assert tok.decode(tok.encode(text)) == text
        assert sw.VIEWS[data.view[i]] == parsed["view"]  # the view label says what the caption says
        views.add(parsed["view"])
    assert views == set(sw.VIEWS)


def test_load_images_are_the_rendered_scenes(cache):
    data = sw.load_images("test", n=20, resolution=16, seed=2)
    rendered = sw.render_batch(data.shape, data.colour, data.size, data.azimuth, data.elevation,
                               data.distance, resolution=16)
    assert (data.images - rendered.images).abs().max() <= 0.5 / 255 + 1e-6     # 8-bit rounding only


def test_load_images_deterministic_and_seeds_differ(cache, tmp_path, monkeypatch):
    first = sw.load_images("train", n=100, resolution=8, seed=5)
    assert sw.load_images("train", n=100, resolution=8, seed=5) is first       # memory cache
    ds.clear_memory_cache()
    monkeypatch.setenv("HANDBOOK_CACHE", str(tmp_path / "elsewhere"))           # fresh render, no disk cache
    second = sw.load_images("train", n=100, resolution=8, seed=5)
    assert second is not first
    assert torch.equal(first.images, second.images) and torch.equal(first.azimuth, second.azimuth)
    assert first.captions == second.captions
    other = sw.load_images("train", n=100, resolution=8, seed=6)
    assert not torch.equal(first.images, other.images)


def test_splits_are_disjoint_and_fixed(cache):
    keys = {split: set(_keys(sw.load_images(split, n=400, resolution=4, seed=0)).tolist()) for split in ds.SPLITS}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    for index, split in enumerate(ds.SPLITS):
        assert (ds.split_of(torch.tensor(sorted(keys[split]))) == index).all()
    fractions = torch.bincount(ds.split_of(torch.arange(ds.NUM_SCENES)), minlength=3).float() / ds.NUM_SCENES
    assert torch.allclose(fractions, torch.tensor([0.8, 0.1, 0.1]), atol=0.005)


def test_disk_cache_round_trip_and_corruption(cache):
    first = sw.load_images("train", n=50, resolution=8, seed=0)
    files = sorted(cache.iterdir())
    assert [f.suffix for f in files] == [".json", ".safetensors"]
    tensor_file = files[1]
    ds.clear_memory_cache()
    cached = sw.load_images("train", n=50, resolution=8, seed=0)
    assert cached is not first and torch.equal(cached.images, first.images) and cached.captions == first.captions

    good = tensor_file.read_bytes()
    corruptions = [b"not a safetensors file", good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 0xFF])]
    for corrupted in corruptions:
        tensor_file.write_bytes(corrupted)
        ds.clear_memory_cache()
        again = sw.load_images("train", n=50, resolution=8, seed=0)
        assert torch.equal(again.images, first.images) and again.captions == first.captions
        assert tensor_file.read_bytes() == good                                  # rewritten
    files[0].write_text("{ broken json")
    ds.clear_memory_cache()
    assert torch.equal(sw.load_images("train", n=50, resolution=8, seed=0).images, first.images)
    assert not [f for f in cache.iterdir() if f.suffix == ".tmp"]               # no temp files left


def test_load_images_bad_input_names_the_argument(cache):
    for kwargs, name in ((dict(split="training"), "split"), (dict(n=-1), "n"), (dict(n=2.5), "n"),
                         (dict(resolution=0), "resolution"), (dict(resolution=8.0), "resolution"),
                         (dict(seed="zero"), "seed")):
        with pytest.raises(ValueError, match=f"^{name}:"):
            sw.load_images(**{"n": 4, "resolution": 4, **kwargs})
    assert len(sw.load_images("val", n=0, resolution=4)) == 0


def test_classes_number_shape_major_and_invert():
    from handbook.shapeworld import NUM_CLASSES, NUM_COLOURS, class_name, class_of, shape_and_colour

    assert (NUM_CLASSES, NUM_COLOURS) == (len(sw.SHAPES) * len(sw.COLOURS), len(sw.COLOURS))
    assert class_of("cube", "green") == 1 * len(sw.COLOURS) + 1 == class_of(1, 1)
    assert class_name(class_of("cone", "purple")) == "purple cone"
    classes = torch.arange(NUM_CLASSES)
    shape, colour = shape_and_colour(classes)
    assert torch.equal(class_of(shape, colour), classes)
    assert [class_name(c) for c in (0, NUM_CLASSES - 1)] == [f"{sw.COLOURS[0]} {sw.SHAPES[0]}", f"{sw.COLOURS[-1]} {sw.SHAPES[-1]}"]
    data = sw.load_images("train", n=8, resolution=8, seed=0)
    assert torch.equal(data.class_index, class_of(data.shape, data.colour))
    for bad, call in [("shape", lambda: class_of("cubee", "red")), ("c:", lambda: class_name(NUM_CLASSES)),
                      ("classes", lambda: shape_and_colour(torch.tensor([1.5])))]:
        with pytest.raises(ValueError, match=bad):
            call()
