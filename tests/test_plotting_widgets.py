"""handbook.plotting and handbook.widgets: the figures they draw and the widgets they build."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless, as under nbval/CI

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from handbook.plotting import moving_average, plot_losses, show_images  # noqa: E402
from handbook.widgets import explorer, shapeworld_explorer  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    plt.close("all")
    yield
    plt.close("all")


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


# ---------------------------------------------------------------- show_images


def test_show_images_grid_titles_and_layout():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 6, 7, generator=g)
    titles = [f"image {i}" for i in range(5)]
    fig = show_images(images, titles=titles, ncols=3, title="a grid")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6  # 2 rows x 3 columns, the last cell left empty
    shown = _image_axes(fig)
    assert len(shown) == 5
    assert [ax.get_title() for ax in shown] == titles
    assert fig._suptitle is not None and fig._suptitle.get_text() == "a grid"
    first = shown[0].images[0].get_array()
    assert first.shape == (6, 7, 3)  # channels moved last for imshow
    np.testing.assert_allclose(first, images[0].permute(1, 2, 0).numpy(), atol=1e-6)


def test_show_images_wraps_long_titles_to_the_image_width():
    caption = "a small purple cylinder seen from the side"
    fig = show_images(torch.zeros(2, 3, 4, 4), titles=[caption, "short"], scale=1.5)
    wrapped = fig.axes[0].get_title()
    assert "\n" in wrapped and wrapped.split() == caption.split()
    assert fig.axes[1].get_title() == "short"


def test_show_images_ncols_larger_than_batch_gives_one_row():
    fig = show_images(np.zeros((2, 3, 4, 4)), ncols=8)
    assert len(fig.axes) == 2


def test_show_images_clamps_rgb_to_unit_range():
    images = torch.tensor([-1.0, 0.5, 2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    data = np.asarray(show_images(images).axes[0].images[0].get_array())
    assert data.min() >= 0.0 and data.max() <= 1.0
    np.testing.assert_allclose(data[0, 0], [0.0, 0.5, 1.0])


@pytest.mark.parametrize("shape", [(3, 5, 5), (3, 1, 5, 5)])
def test_show_images_single_channel_maps(shape):
    maps = torch.linspace(0, 1, int(np.prod(shape))).view(shape)
    fig = show_images(maps, titles=["a", "b", "c"])
    shown = _image_axes(fig)
    assert len(shown) == 3
    assert shown[0].images[0].get_array().shape == (5, 5)
    assert shown[0].images[0].get_clim() == (0.0, 1.0)


def test_show_images_heat_map_range_is_shared_and_ignores_inf():
    maps = torch.tensor([[[-2.0, 0.0], [1.0, float("inf")]], [[0.5, 3.0], [0.0, 0.0]]])  # (2, 2, 2)
    fig = show_images(maps, vmin=None, vmax=None, cmap="RdBu", colorbar=True)
    shown = _image_axes(fig)
    assert [im.get_clim() for ax in shown for im in ax.images] == [(-2.0, 3.0), (-2.0, 3.0)]
    assert np.isnan(np.asarray(shown[0].images[0].get_array(), dtype=float)[1, 1])  # inf drawn blank
    assert len(fig.axes) == 3  # two panels and one colour bar


def test_show_images_accepts_boolean_masks():
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[0, 0, 1:3, 1:3] = True
    fig = show_images(masks)
    assert np.asarray(fig.axes[0].images[0].get_array()).max() == 1.0


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(images=torch.zeros(2, 4, 5, 5)), "images"),  # four channels
        (dict(images=torch.zeros(5, 5)), "images"),  # no batch axis
        (dict(images=torch.zeros(0, 3, 5, 5)), "images"),  # empty batch
        (dict(images="not an image"), "images"),
        (dict(images=torch.zeros(2, 3, 5, 5), titles=["only one"]), "titles"),
        (dict(images=torch.zeros(2, 3, 5, 5), titles="ab"), "titles"),
        (dict(images=torch.zeros(2, 3, 5, 5), ncols=0), "ncols"),
        (dict(images=torch.zeros(2, 3, 5, 5), scale=-1.0), "scale"),
        (dict(images=torch.zeros(2, 5, 5), vmin=1.0, vmax=0.0), "vmin"),
    ],
)
def test_show_images_bad_input_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        show_images(**kwargs)
    assert plt.get_fignums() == []  # nothing half-drawn left open


# ---------------------------------------------------------------- plot_losses


def test_plot_losses_one_curve():
    losses = [3.0, 2.0, 1.5, 1.2]
    fig = plot_losses(losses, title="training")
    (ax,) = fig.axes
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_ydata(), losses)
    assert ax.get_title() == "training"
    assert ax.get_legend() is None  # nothing to tell apart


def test_plot_losses_several_curves_smoothed_on_log_scale():
    g = torch.Generator().manual_seed(0)
    curves = {"train": torch.rand(50, generator=g) + 0.1, "val": np.linspace(2.0, 1.0, 50)}
    fig = plot_losses(curves, smooth=5, log=True)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 4  # a faint raw curve and its moving average, per curve
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val"]
    smoothed = [line for line in ax.lines if line.get_label() == "val"][0]
    np.testing.assert_allclose(smoothed.get_xdata(), np.arange(4, 50))
    np.testing.assert_allclose(smoothed.get_ydata(), moving_average(curves["val"], 5))


def test_plot_losses_accepts_a_training_history():
    class History:
        losses = [1.0, 0.5]

    fig = plot_losses(History())
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1.0, 0.5])


def test_moving_average_values():
    np.testing.assert_allclose(moving_average([1, 2, 3, 4, 5], 2), [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(moving_average([1, 2, 3], 1), [1, 2, 3])
    with pytest.raises(ValueError, match="window"):
        moving_average([1, 2, 3], 4)


@pytest.mark.parametrize(
    "args, kwargs, argument",
    [
        (([],), {}, "losses"),
        (({},), {}, "losses"),
        (([[1.0, 2.0], [3.0, 4.0]],), {}, "losses"),  # not 1-D
        (({"train": [1.0, -1.0]},), dict(log=True), "train"),
        (([1.0, 2.0],), dict(smooth=-1), "smooth"),
        (([1.0, 2.0],), dict(smooth=1.5), "smooth"),
        ((["a", "b"],), {}, "losses"),
    ],
)
def test_plot_losses_bad_input_names_the_argument(args, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        plot_losses(*args, **kwargs)


# ---------------------------------------------------------------- explorer


def test_explorer_builds_the_controls_asked_for_and_draws_once():
    calls = []

    def draw(amplitude, frequency=1, phase=0.0):
        calls.append((amplitude, frequency, phase))
        fig, ax = plt.subplots()
        t = np.linspace(0, 1, 50)
        ax.plot(t, amplitude * np.sin(2 * np.pi * frequency * t + phase))
        return fig

    w = explorer(draw, amplitude=(0.0, 2.0), frequency=widgets.IntSlider(value=3, min=1, max=5))
    assert isinstance(w, widgets.interactive)
    # exactly the controls asked for: phase keeps its default and gets no widget
    assert [c.description for c in w.kwargs_widgets] == ["amplitude", "frequency"]
    assert isinstance(w.kwargs_widgets[0], widgets.FloatSlider)
    assert (w.kwargs_widgets[0].min, w.kwargs_widgets[0].max) == (0.0, 2.0)
    assert calls == [(1.0, 3, 0.0)]  # drawn once when built
    assert isinstance(w.result, Figure)
    assert plt.get_fignums() == []  # displayed and closed, nothing leaks


def test_explorer_controls_start_at_the_functions_defaults():
    calls = []

    def draw(t=250, shape="cube", shaded=False, scale=1.5, untouched=3):
        calls.append((t, shape, shaded, scale))
        plt.plot([t, t])

    w = explorer(draw, t=(0, 980, 10), shape=["sphere", "cube", "torus"], shaded=True, scale=(0.0, 6.0, 0.5))
    slider, dropdown, checkbox, float_slider = w.kwargs_widgets
    assert (slider.value, dropdown.value, checkbox.value, float_slider.value) == (250, "cube", False, 1.5)
    assert isinstance(checkbox, widgets.Checkbox) and checkbox.description == "shaded"
    assert calls == [(250, "cube", False, 1.5)], "the first figure is drawn at the defaults"

    def no_defaults(t, flag):
        calls.append((t, flag))

    w = explorer(no_defaults, t=(0, 10), flag=True)   # without defaults: the abbreviations decide
    assert (w.kwargs_widgets[0].value, w.kwargs_widgets[1].value) == (5, True)


def test_explorer_redraws_when_a_control_changes():
    calls = []

    def draw(n):
        calls.append(n)
        plt.plot(range(n))  # pyplot style: draws on the current figure, returns nothing

    plt.figure()  # an unrelated open figure must not be drawn on, shown or closed
    before = plt.get_fignums()
    w = explorer(draw, n=(1, 9))
    w.kwargs_widgets[0].value = 7
    assert calls == [5, 7]
    assert isinstance(w.result, Figure)
    assert len(w.result.axes[0].lines[0].get_xdata()) == 7
    assert plt.get_fignums() == before


def test_explorer_errors_in_the_callback_leave_no_open_figure():
    def draw(x):
        plt.subplots()
        raise RuntimeError("drawing failed")

    w = explorer(draw, x=(0, 3))  # the error is reported in the widget, not raised
    assert w.result is None
    assert plt.get_fignums() == []


def test_explorer_bad_arguments():
    def draw(a, b):
        return None

    with pytest.raises(ValueError, match="controls"):
        explorer(draw, a=(0, 1))  # b is missing
    with pytest.raises(ValueError, match="controls"):
        explorer(draw, a=(0, 1), b=(0, 1), c=(0, 1))  # c is not a parameter
    with pytest.raises(ValueError, match="controls"):
        explorer(draw)
    with pytest.raises(ValueError, match="fn"):
        explorer("not a function", a=(0, 1))


# ---------------------------------------------------------------- shapeworld_explorer


def test_shapeworld_explorer_controls_and_figure():
    sw = pytest.importorskip("handbook.shapeworld")
    w = shapeworld_explorer(resolution=16)
    controls = {c.description: c for c in w.kwargs_widgets}
    assert list(controls) == ["shape", "colour", "size", "azimuth", "elevation", "distance"]
    assert tuple(controls["shape"].options) == tuple(sw.SHAPES)
    assert tuple(controls["colour"].options) == tuple(sw.COLOURS)
    assert tuple(controls["size"].options) == tuple(sw.SIZES)
    for name in ("azimuth", "elevation", "distance"):
        assert isinstance(controls[name], widgets.FloatSlider)
    assert controls["distance"].min <= sw.DEFAULT_DISTANCE <= controls["distance"].max

    fig = w.result
    shown = _image_axes(fig)
    assert [ax.get_title() for ax in shown] == ["image", "mask", "depth (ray length)"]
    assert shown[0].images[0].get_array().shape == (16, 16, 3)
    expected = sw.caption(controls["shape"].value, controls["colour"].value, controls["size"].value,
                          view=sw.view_of(controls["elevation"].value))
    assert fig._suptitle.get_text() == expected

    controls["shape"].value = "sphere"
    controls["elevation"].value = 60.0
    assert w.result is not fig
    assert w.result._suptitle.get_text() == sw.caption(
        "sphere", controls["colour"].value, controls["size"].value, view=sw.view_of(60.0)
    )
    assert plt.get_fignums() == []


@pytest.mark.parametrize("resolution", [0, 4, 16.0, "64"])
def test_shapeworld_explorer_bad_resolution(resolution):
    with pytest.raises(ValueError, match="resolution"):
        shapeworld_explorer(resolution=resolution)
