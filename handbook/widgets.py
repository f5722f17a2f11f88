"""Interactive explorers the chapters share, built on ``ipywidgets.interactive``.

``explorer(fn, **controls)`` is the one building block: ``fn`` draws a matplotlib figure from the
controls' values, and each change of a control redraws it. ``shapeworld_explorer()`` uses it to
look at the course's world from any camera.

Everything also runs headless (nbclient, nbval, pytest): each figure is displayed once and then
closed, so moving a slider a thousand times leaves no open figures behind.
"""

from __future__ import annotations

import inspect

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

__all__ = ["explorer", "shapeworld_explorer"]

# Camera distances the explorer offers, as multiples of the data set's distance: from a close-up
# (3 units, still well outside every object) to twice as far away.
NEAREST_DISTANCE_FACTOR = 0.6
FARTHEST_DISTANCE_FACTOR = 2.0
ANGLE_STEP_DEGREES = 5.0


def explorer(fn, **controls) -> widgets.interactive:
    """A widget that calls ``fn(**values)`` whenever a control changes and shows its figure.

    fn: returns a matplotlib Figure, or draws with pyplot (``plt.plot(...)``) and returns None.
        Parameters of ``fn`` not named in ``controls`` keep their defaults.
    controls: name -> an ipywidgets control, or an ``interact`` abbreviation
        (``(0.0, 1.0)`` a float slider, ``(0, 10, 2)`` an int slider, ``["a", "b"]`` a dropdown,
        ``True`` a checkbox, ``ipywidgets.fixed(x)`` a constant). A control built from an
        abbreviation starts at fn's default for that parameter, if it has one; a control given as
        a widget keeps the value it was given.

    The figure is drawn once when the widget is built (so a notebook executed headless still
    shows it). The returned widget is an ``ipywidgets.interactive`` (a VBox of the controls and an
    output area); ``.kwargs_widgets`` are the controls, ``.result`` the last figure drawn, and
    ``.update()`` redraws. Errors raised by ``fn`` while it redraws are shown in the output area.
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable that draws a figure, got {type(fn).__name__}")
    if not controls:
        raise ValueError("controls: expected at least one control, e.g. explorer(fn, t=(0, 10))")
    try:
        inspect.signature(fn).bind(**controls)
    except TypeError as err:
        raise ValueError(f"controls: {sorted(controls)} do not fit the parameters of fn: {err}") from err
    except ValueError:
        pass  # a builtin without a signature: the first call will tell

    def draw(**values):
        before = set(plt.get_fignums())
        plt.figure()  # a fresh current figure, so that plt.plot(...) in fn never draws on an old one
        result = None
        try:
            result = fn(**values)
            made = [plt.figure(n) for n in sorted(set(plt.get_fignums()) - before)]
            # The returned figure, and any figure fn drew on with pyplot and did not return.
            figures = ([result] if isinstance(result, Figure) else []) + [
                f for f in made if f is not result and f.axes
            ]
            for fig in figures:
                display(fig)
        finally:
            # Shown as an image already; an open figure would leak memory on every redraw.
            for n in set(plt.get_fignums()) - before:
                plt.close(n)
            if isinstance(result, Figure):
                plt.close(result)
        return figures[0] if figures else result

    # interactive builds one control per parameter of the function it is given: expose exactly
    # the controls asked for (keyword-only), not every defaulted parameter of fn. Each carries
    # fn's default, which interactive makes the initial value of a slider or a dropdown built
    # from an abbreviation (without it, every slider would open mid-range).
    defaults = _defaults(fn)
    draw.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(name, inspect.Parameter.empty))
         for name in controls]
    )
    draw.__name__ = getattr(fn, "__name__", "draw")
    # A single value (True: a checkbox) is its own initial value to interactive: give it fn's.
    controls = {name: widgets.Checkbox(value=bool(defaults[name]), description=name)
                if isinstance(control, bool) and name in defaults else control
                for name, control in controls.items()}
    return widgets.interactive(draw, **controls)


def _defaults(fn) -> dict:
    """fn's parameters that have a default, with it."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _depth_for_display(depth: np.ndarray) -> np.ndarray:
    """Depth with the background (+inf, no hit) as NaN, which imshow leaves blank."""
    return np.where(np.isfinite(depth), depth, np.nan)


def shapeworld_explorer(resolution: int = 64, continuous_update: bool = False) -> widgets.interactive:
    """Look at one ShapeWorld object from any camera: image, mask and depth, with its caption.

    Dropdowns choose the shape, colour and size; sliders move the camera (azimuth and elevation
    in degrees, distance from the origin). The title is the caption the dataset would give the
    view. ``continuous_update=False`` redraws when a slider is released, not while it moves.
    """
    if not isinstance(resolution, int) or isinstance(resolution, bool) or not 8 <= resolution <= 512:
        raise ValueError(f"resolution: expected an int in [8, 512], got {resolution!r}")
    # Imported here, not at the top: the generic explorer needs no data package.
    from handbook import shapeworld as sw
    from handbook.shapeworld.render import ELEVATION_LIMIT_DEGREES

    def view(shape, colour, size, azimuth, elevation, distance):
        r = sw.render(shape, colour, size, azimuth=azimuth, elevation=elevation, distance=distance,
                      resolution=resolution)
        # Constrained layout keeps the caption, the panel titles and the colour bar apart.
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), layout="constrained")
        axes[0].imshow(r.image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")  # (Hh, Ww, 3)
        axes[0].set_title("image")
        axes[1].imshow(r.mask.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1].set_title("mask")
        depth = axes[2].imshow(_depth_for_display(r.depth.numpy()), cmap="viridis", interpolation="nearest")
        axes[2].set_title("depth (ray length)")
        fig.colorbar(depth, ax=axes[2], shrink=0.9)
        for ax in axes:
            ax.set_axis_off()
        fig.suptitle(sw.caption(shape, colour, size, view=sw.view_of(elevation)))
        return fig

    def slider(low, high, value, step, description):
        return widgets.FloatSlider(min=low, max=high, value=value, step=step, description=description,
                                   continuous_update=continuous_update)

    d = float(sw.DEFAULT_DISTANCE)
    nearest, farthest = NEAREST_DISTANCE_FACTOR * d, FARTHEST_DISTANCE_FACTOR * d
    # The slider must never put the camera inside an object (the renderer refuses that).
    assert nearest > max(sw.bounding_radius(s, "large") for s in sw.SHAPES)
    return explorer(
        view,
        shape=widgets.Dropdown(options=list(sw.SHAPES), value=sw.SHAPES[1], description="shape"),
        colour=widgets.Dropdown(options=list(sw.COLOURS), value=sw.COLOURS[0], description="colour"),
        size=widgets.Dropdown(options=list(sw.SIZES), value=sw.SIZES[-1], description="size"),
        azimuth=slider(-180.0, 180.0, 30.0, ANGLE_STEP_DEGREES, "azimuth"),
        elevation=slider(-ELEVATION_LIMIT_DEGREES, ELEVATION_LIMIT_DEGREES, 20.0, ANGLE_STEP_DEGREES, "elevation"),
        distance=slider(nearest, farthest, d, 0.1, "distance"),
    )
